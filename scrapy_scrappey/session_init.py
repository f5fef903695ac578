"""Session init: make every new session ready before it serves a request.

:class:`SessionInit` is the ``prepare`` coroutine of the session manager: it
runs, on one new session, the ``init`` steps of its pool in
``SCRAPPEY_SESSION_POOLS`` when the pool has its own, else the spider's
``scrappey_session_init`` method, else the steps of ``SCRAPPEY_SESSION_INIT``
(the spider attribute of that name overrides the setting). Init requests go straight to the API with the
plugin's own client, never through the engine, so they reach no callback,
scheduler or dupefilter. At most ``SCRAPPEY_API_CONCURRENCY`` of them run at
once, and each one takes its page's target slot (see throttle.py) just before
its call, as crawl requests do, so ``DOWNLOAD_DELAY`` and
``CONCURRENT_REQUESTS_PER_DOMAIN`` count init requests too. Every page an init
fetches goes through the session checks.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from typing import TYPE_CHECKING, Any

from scrapy import Request

from ._pool_stats import PoolStats
from .exceptions import ScrappeyConfigError, ScrappeyError, SessionCheckFailed
from .payload import METHOD_COMMANDS, build_payload, merge_params

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from scrapy import Spider
    from scrapy.http import Response
    from scrapy.statscollectors import StatsCollector

    from ._health_config import InitStep
    from ._pools import Session
    from .client import ApiReply, ScrappeyClient
    from .config import Config
    from .session_check import SessionChecks
    from .throttle import TargetThrottle

logger = logging.getLogger(__name__)

_METHODS = {cmd: method for method, cmd in reversed(METHOD_COMMANDS.items())}
_METHOD_NAME = "the scrappey_session_init spider method"


def _init_method(spider: Spider | None) -> Callable[..., Awaitable[object]] | None:
    method = getattr(spider, "scrappey_session_init", None)
    if not callable(method):
        return None  # a list of steps (config.py reads it) or nothing
    if not inspect.iscoroutinefunction(method):
        raise ScrappeyConfigError(
            f"{_METHOD_NAME} must be a coroutine: `async def "
            f"scrappey_session_init(self, session_id, pool, download) -> bool`."
        )
    init: Callable[..., Awaitable[object]] = method
    return init


class InitFailed(ScrappeyError):
    """One init step got a page that shows the session is not ready."""


class SessionInit:
    """Runs the init of one session; ``await init(session)`` is True once it is ready."""

    def __init__(
        self,
        config: Config,
        client: ScrappeyClient,
        checks: SessionChecks,
        stats: StatsCollector,
        spider: Spider | None,
        *,
        page: Callable[[Request, ApiReply], Response],
        throttle: TargetThrottle,
    ) -> None:
        """*page* turns a successful reply into the response (the middleware's own,
        so init pages are read and counted exactly like crawl pages); *throttle*
        is the crawl's target throttle, which init requests share."""
        self._config = config
        self._client = client
        self._checks = checks
        self._page = page
        self._throttle = throttle
        self._stats = PoolStats(stats, per_pool=config.session_pools.stats_per_pool)
        self._extra = {"spider": spider}
        self._method = _init_method(spider)
        self._slots = asyncio.Semaphore(config.api_concurrency)
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether sessions need an init at all."""
        pools = self._config.session_pools.pools.values()
        return (
            self._method is not None
            or bool(self._config.session_init)
            or any(p.init for p in pools)
        )

    async def __call__(self, session: Session) -> bool:
        steps = self._steps(session)
        if steps == ():
            return True  # a pool without init among pools with one
        try:
            ok = await self._run(session, steps)
        except Exception as ex:  # noqa: BLE001 - a failed init, never a failed crawl
            self._failed(
                session, str(ex) if isinstance(ex, ScrappeyError) else repr(ex)
            )
            return False
        if ok is True:
            self._stats.inc("scrappey/sessions/init/ok", session.pool)
            return True
        if ok is not False:
            self._warn_once(f"{_METHOD_NAME} returned {ok!r:.60}, not True or False")
        self._failed(session, f"{_METHOD_NAME} returned {ok!r:.60}")
        return False

    async def download(self, session: Session, request: Request) -> Response:
        """Fetch *request* on *session* and return its page, checked.

        Raises the API's error, or :class:`SessionCheckFailed` for a page the
        session checks reject.
        """
        choice = request.meta.get("scrappey")
        params = merge_params(
            self._defaults(session),
            True if choice in (None, False) else choice,
            request,
        )
        return await self._fetch(session, build_payload(request, params), request)

    def _defaults(self, session: Session) -> dict[str, Any]:
        """``SCRAPPEY_DEFAULT_PARAMS`` and the pool's ``request_params``."""
        own = self._config.pool_settings(session.pool).request_params
        return {**(self._config.default_params or {}), **own}

    def _steps(self, session: Session) -> tuple[InitStep, ...] | None:
        """The init of *session*'s pool: its own steps, else the method (None), else the crawl's steps."""
        own = self._config.pool_settings(session.pool).init
        if own is not None or self._method is not None:
            return own
        return self._config.session_init

    async def _run(
        self, session: Session, steps: tuple[InitStep, ...] | None
    ) -> object:
        if steps is None:
            assert self._method is not None
            download = functools.partial(self.download, session)
            return await self._method(session.id, session.pool, download)
        for step in steps:
            response = await self._step(session, step)
            if response.status >= 400:
                raise InitFailed(f"{response.url} answered HTTP {response.status}")
        return True

    async def _step(self, session: Session, step: InitStep) -> Response:
        if isinstance(step, Request):
            return await self.download(session, step)
        payload = {**self._defaults(session), **step}
        request = Request(step["url"], method=_METHODS[step["cmd"]], dont_filter=True)
        return await self._fetch(session, payload, request)

    async def _fetch(
        self, session: Session, payload: dict[str, Any], request: Request
    ) -> Response:
        payload["session"] = session.id
        timeout = self._config.timeout_for(request)
        # The API slot before the target's gate: a start stamps the target's
        # delay, so it is taken only when the call can go out at once.
        async with self._slots, self._throttle.slot(request, request):
            self._stats.inc("scrappey/requests", session.pool)
            self._stats.inc("scrappey/sessions/init/requests", session.pool)
            reply = await self._client.call(payload, timeout=timeout)
        error = reply.page_error()
        if error is not None:
            self._stats.inc(f"scrappey/errors/{error.code or error.kind.value}", None)
            raise error
        response = self._page(request, reply)
        if not self._checks.passes(response, request, pool=session.pool):
            raise SessionCheckFailed(f"the session check rejected {response.url}")
        return response

    def _failed(self, session: Session, why: str) -> None:
        self._stats.inc("scrappey/sessions/init/failed", session.pool)
        logger.warning(
            "The init of Scrappey session %(session)s (pool %(pool)r) failed: %(why)s",
            {"session": session.id, "pool": session.pool, "why": why},
            extra=self._extra,
        )

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.error(message, extra=self._extra)
