"""Session stats: ``max_open``, ``over_limit`` and the timestamped ``session_events``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.sessions import LocalSession, SessionRegistry
from scrapy_scrappey.local.stats import Stats

from ._support import harness

if TYPE_CHECKING:
    import pytest

    from tests.reliability_support import ServerProcess


def _events(stats: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["event"], e["session"]) for e in stats["session_events"]]


@deferred_f_from_coro_f
async def test_max_open_over_limit_and_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scrapy_scrappey.local.sessions")
    before = time.time()
    async with harness(max_sessions=2, faults=Faults(fail_creates=1)) as h:
        refused = await h.api.cmd("sessions.create", session="a")  # injected
        await h.api.create("a")
        await h.api.create("b")
        refused_too = await h.api.cmd("sessions.create", session="c")  # at the cap
        await h.api.cmd("sessions.destroy", session="a")
        await h.api.create("c")
        await h.api.cmd("request.get", url=h.site.url("/html"), session="nope")
        stats = h.server.stats()
        _, over_http = await h.api.local("GET", "/__local__/stats")
    after = time.time()
    assert "CODE-0029" in refused["error"]
    assert "CODE-0029" in refused_too["error"]
    assert (stats["max_open"], stats["over_limit"]) == (2, 2)
    assert _events(stats) == [
        ("created", "a"),
        ("created", "b"),
        ("destroyed", "a"),
        ("created", "c"),
    ]
    times = [e["t"] for e in stats["session_events"]]
    assert times == sorted(times)
    assert before <= times[0]
    assert times[-1] <= after
    assert over_http["session_events"] == stats["session_events"]
    assert (over_http["max_open"], over_http["over_limit"]) == (2, 2)
    assert "Session a destroyed" in caplog.messages


@deferred_f_from_coro_f
async def test_expiry_is_an_event_and_reset_clears_them() -> None:
    stats = Stats()

    async def closer(session: LocalSession) -> None:
        pass

    registry = SessionRegistry(ttl=0.05, max_sessions=5, stats=stats, closer=closer)
    await registry.create("old", {})
    await registry.create("new", {})
    await asyncio.sleep(0.1)
    await registry.sweep()
    expired = stats.snapshot([])
    stats.reset()
    cleared = stats.snapshot([])
    assert _events(expired)[2:] == [("expired", "old"), ("expired", "new")]
    assert expired["max_open"] == 2
    assert (cleared["session_events"], cleared["max_open"], cleared["over_limit"]) == (
        [],
        0,
        0,
    )


@deferred_f_from_coro_f
async def test_cli_server_logs_destroys_with_the_session_id(
    make_server_process: Any,
) -> None:
    server: ServerProcess = make_server_process()
    async with aiohttp.ClientSession() as http:
        for cmd in ("sessions.create", "sessions.destroy"):
            async with http.post(server.url, json={"cmd": cmd, "session": "w1-s1"}):
                pass
        base = server.url.removesuffix("/api/v1")
        async with http.get(base + "/__local__/stats") as response:
            stats = await response.json()
    assert _events(stats) == [("created", "w1-s1"), ("destroyed", "w1-s1")]
    destroyed_at = stats["session_events"][1]["t"]
    assert destroyed_at >= stats["session_events"][0]["t"]
    assert "Session w1-s1 destroyed" in server.log_path.read_text()
