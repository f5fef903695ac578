"""Shared fixtures: the local Scrappey server and the target site.

Every server here listens on 127.0.0.1 on a free port, lives for one test and
is stopped after it, whether the test passed or not.

* ``local_server`` / ``target_site``: started with their defaults.
* ``make_local_server(**kwargs)`` / ``make_target_site(**kwargs)``: await them
  inside the test for a server with other arguments (faults, a key, a cap…).
* ``demo_site``: the example project's demo website; ``make_demo_site(**kw)``
  one with options (``logout_after``, ``ban_after``).
* ``started(cm)``: enter any other async context manager for the rest of the
  test.
* ``make_server_process(*flags)``: ``python -m scrapy_scrappey.local`` in a
  subprocess, for tests that kill or signal processes.
* ``scripted_api``: a fake API answering each URL with the reply a test
  scripted for it (replies the local server would never send).
* ``browser_engine``: one Chromium (the local server's browser engine) per
  test module, for ``make_local_server(engine=browser_engine)``; the test is
  skipped, with the reason, when Chromium or Playwright cannot run here.
  ``browser_site``: the :class:`~tests.browser_site.BrowserSite` (JS pages,
  a JS challenge).
* ``api_calls``: the order in which the crawl's API calls start and end, so
  that tests assert on overlap and order instead of on elapsed time, and the
  payloads they sent.
* ``redis_server``: a real ``redis-server`` (127.0.0.1, free port, no
  persistence), killed by PID after the test; ``.url`` to connect, ``.stop()``
  and ``.start()`` to take it away and back. Skipped, with the reason, only
  when ``redis-server`` (or the ``redis`` extra) is not installed.
* ``free_port``: a port of 127.0.0.1 that nothing listens on (connections
  to it are refused).
* ``make_scale_run(**config)``: the scale-out runner
  (:class:`example_project.scale.ScaleRun`: redis-server, the shops site, the
  local server as a process; ``start_workers()`` then starts ``scrapy crawl
  shops`` processes), with a :class:`~example_project.scale.ScaleConfig` of
  *config*, stopped after the test. Skipped, with the reason, only when
  ``redis-server`` or scrapy-redis is not installed.

Servers started as processes use the http engine unless a test passes
``--engine`` (``SCRAPPEY_LOCAL_ENGINE`` is set to ``http`` here), so that
the CLI's ``auto`` default does not launch Chromium in every such test.

Tests use them from ``@deferred_f_from_coro_f`` coroutines; the fixtures
themselves are plain ones that block on the reactor through pytest-twisted,
because its own async fixtures drive coroutines with Twisted, which cannot
await the asyncio futures aiohttp needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from scrapy.utils.defer import deferred_from_coro

from example_project.demo_site import DemoSite
from example_project.scale import ScaleConfig, ScaleRun
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.local import LocalScrappey
from scrapy_scrappey.local.engine_choice import (
    EngineUnavailable,
    start_browser_engine,
)
from tests.browser_site import BrowserSite
from tests.crawl import max_overlap
from tests.fake_api import ScriptedApi
from tests.redis_support import RedisServer, find_redis_server, free_tcp_port
from tests.reliability_support import ServerProcess
from tests.site import TargetSite

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterator
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path


os.environ.setdefault("SCRAPPEY_LOCAL_ENGINE", "http")


def _wait(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run *coro* on the asyncio loop from a (synchronous) fixture."""
    return pytest_twisted.blockon(deferred_from_coro(coro))


@pytest.fixture
def started() -> Iterator[Callable[[AbstractAsyncContextManager[Any]], Awaitable[Any]]]:
    """``await started(cm)`` enters *cm* now and exits it after the test, last first."""
    stack = contextlib.AsyncExitStack()
    yield stack.enter_async_context
    _wait(stack.aclose())


@pytest.fixture
def make_local_server(started: Any) -> Callable[..., Awaitable[LocalScrappey]]:
    """``await make_local_server(**kwargs)``: a running ``LocalScrappey(**kwargs)``."""

    async def make(**kwargs: Any) -> LocalScrappey:
        server: LocalScrappey = await started(LocalScrappey(**kwargs))
        return server

    return make


@pytest.fixture
def local_server(make_local_server: Any) -> LocalScrappey:
    """A running ``LocalScrappey()``: any key, no faults."""
    server: LocalScrappey = _wait(make_local_server())
    return server


@pytest.fixture
def make_target_site(started: Any) -> Callable[..., Awaitable[TargetSite]]:
    """``await make_target_site(delay=…)``: a running :class:`TargetSite`."""

    async def make(**kwargs: Any) -> TargetSite:
        site: TargetSite = await started(TargetSite(**kwargs))
        return site

    return make


@pytest.fixture
def target_site(make_target_site: Any) -> TargetSite:
    """A running :class:`TargetSite` that answers at once."""
    site: TargetSite = _wait(make_target_site())
    return site


@pytest.fixture
def make_demo_site(started: Any) -> Callable[..., Awaitable[DemoSite]]:
    """``await make_demo_site(logout_after=…, ban_after=…)``: a running :class:`DemoSite`."""

    async def make(**kwargs: Any) -> DemoSite:
        site: DemoSite = await started(DemoSite(**kwargs))
        return site

    return make


@pytest.fixture
def demo_site(make_demo_site: Any) -> DemoSite:
    """The example project's demo website, which ``python3 dev.py demo`` crawls."""
    site: DemoSite = _wait(make_demo_site())
    return site


@pytest.fixture
def make_server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``make_server_process(*flags)``: the local server as a process, logging to tmp_path."""
    with contextlib.ExitStack() as stack:
        count = 0

        def make(*flags: str) -> ServerProcess:
            nonlocal count
            count += 1
            log = tmp_path / ("server.log" if count == 1 else f"server-{count}.log")
            return stack.enter_context(ServerProcess(log, *flags))

        yield make


@dataclass
class ApiCalls:
    """``(event, cmd)`` for every ``ScrappeyClient.call``, in order.

    The event is ``"start"``, then ``"end"`` (answered or failed) or
    ``"cancelled"`` (given up on by the crawl).
    """

    events: list[tuple[str, str]] = field(default_factory=list)
    #: A copy of every payload sent, in order.
    payloads: list[dict[str, Any]] = field(default_factory=list)

    def count(self, event: str, cmd: str) -> int:
        return self.events.count((event, cmd))

    def max_in_flight(self, cmd: str) -> int:
        """The most calls of *cmd* that were under way at the same time."""
        return max_overlap(self.events, cmd)

    def sent(self, prefix: str) -> list[dict[str, Any]]:
        """The payloads whose ``cmd`` starts with *prefix* (``"sessions.create"``, ``"request."``)."""
        return [p for p in self.payloads if str(p.get("cmd")).startswith(prefix)]


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    """Records the API calls of every client made during the test."""
    record = ApiCalls()
    call = ScrappeyClient.call

    async def recorded(self: ScrappeyClient, payload: dict[str, Any], **kw: Any) -> Any:
        cmd = str(payload.get("cmd"))
        record.events.append(("start", cmd))
        record.payloads.append(dict(payload))
        outcome = "end"
        try:
            return await call(self, payload, **kw)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            record.events.append((outcome, cmd))

    monkeypatch.setattr(ScrappeyClient, "call", recorded)
    return record


@pytest.fixture
def scripted_api(started: Any) -> ScriptedApi:
    """A running :class:`~tests.fake_api.ScriptedApi`: replies scripted per URL."""
    api: ScriptedApi = _wait(started(ScriptedApi()))
    return api


@pytest.fixture
def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago: bound, then closed."""
    return free_tcp_port()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` for this test (see the module docstring)."""
    pytest.importorskip("redis", reason="the redis extra is not installed")
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer(binary, tmp_path) as server:
        yield server


@pytest.fixture
def make_scale_run(tmp_path: Path) -> Iterator[Callable[..., ScaleRun]]:
    """``make_scale_run(**config)``: a started scale-out run (see the module docstring)."""
    pytest.importorskip("scrapy_redis", reason="scrapy-redis is not installed")
    if find_redis_server() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with contextlib.ExitStack() as stack:
        runs: list[ScaleRun] = []

        def make(**config: Any) -> ScaleRun:
            folder = tmp_path / f"run-{len(runs) + 1}"
            folder.mkdir()
            runs.append(stack.enter_context(ScaleRun(ScaleConfig(**config), folder)))
            return runs[-1]

        yield make


@pytest.fixture(scope="module")
def browser_engine() -> Iterator[Any]:
    """The browser engine, launched once per module (skips when it cannot run)."""

    async def no_owner(session: Any) -> None:
        """Replaced by each server that uses the engine."""

    try:
        engine = _wait(start_browser_engine("browser", None, no_owner))
    except EngineUnavailable as exc:
        pytest.skip(f"browser engine unavailable: {exc}")
    yield engine
    _wait(engine.close())


@pytest.fixture
def browser_site(started: Any) -> BrowserSite:
    """A running :class:`~tests.browser_site.BrowserSite`."""
    site: BrowserSite = _wait(started(BrowserSite()))
    return site
