"""The server as a whole: API key, stats and reset, static mode, lifecycle."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults, LocalScrappey
from scrapy_scrappey.local.stats import COMMAND_LOG_SIZE, LOGGED_CHARS, Stats

from ._support import harness

KEY = "sekrit-key-0123456789"


@deferred_f_from_coro_f
async def test_wrong_or_missing_key_is_401(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with harness(key=KEY) as h:
        body = '{"cmd": "sessions.list"}'
        good = await h.api.raw(body)
        h.api.key = None
        missing = await h.api.raw(body)
        wrong = await h.api.raw(body, key="not-the-key")
        async with h.api.http.get(
            h.server.url + "/balance", params={"key": "bad"}
        ) as r:
            balance_status, balance_body = r.status, await r.json()
        async with h.api.http.get(h.server.url + "/balance", params={"key": KEY}) as r:
            balance_ok = await r.json()
        stats = h.server.stats()
    assert good[0] == 200
    for status, content_type, text in (missing, wrong):
        assert (status, content_type) == (401, "application/json")
        assert text == '{"data": "error", "error": "invalid api key"}'
    assert (balance_status, balance_body) == (
        401,
        {"data": "error", "error": "invalid api key"},
    )
    assert balance_ok == {"balance": 1000.0}
    assert stats["requests"]["total"] == 1  # rejected calls are not commands
    assert KEY not in caplog.text
    assert "sekr…" in caplog.text


@deferred_f_from_coro_f
async def test_key_can_be_rotated_at_runtime(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with harness() as h:
        body = '{"cmd": "sessions.list"}'
        assert h.server.api_key is None
        assert (await h.api.raw(body, key="old"))[0] == 200
        h.server.api_key = KEY
        assert (await h.api.raw(body, key="old"))[0] == 401
        assert (await h.api.raw(body, key=KEY))[0] == 200
        h.server.api_key = None
        assert (await h.api.raw(body, key="old"))[0] == 200
    assert KEY not in caplog.text


@deferred_f_from_coro_f
async def test_any_key_is_accepted_without_a_configured_key() -> None:
    async with harness() as h:
        assert (await h.api.raw('{"cmd": "sessions.list"}', key="whatever"))[0] == 200
        assert (await h.api.raw('{"cmd": "sessions.list"}'))[0] == 200


@deferred_f_from_coro_f
async def test_stats_show_order_sessions_and_counts() -> None:
    async with harness() as h:
        sid = await h.api.create("s")
        await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        await h.api.cmd(
            "request.post", url=h.site.url("/echo"), session=sid, postData="x"
        )
        await h.api.cmd("request.get", url=h.site.url("/html"))
        await h.api.cmd("sessions.destroy", session=sid)
        stats = h.server.stats()
        status, over_http = await h.api.local("GET", "/__local__/stats")
    assert status == 200
    assert over_http["requests"] == stats["requests"]
    assert over_http["sessions"] == stats["sessions"]
    assert over_http["commands"] == stats["commands"]
    assert stats["sessions"] == {"created": 1, "destroyed": 1, "expired": 0, "open": 0}
    assert stats["requests"] == {
        "total": 5,
        "by_command": {
            "sessions.create": 1,
            "request.get": 2,
            "request.post": 1,
            "sessions.destroy": 1,
        },
    }
    assert stats["requests_per_session"] == {"s": 2}
    assert stats["max_concurrent_per_session"] == 1
    commands = stats["commands"]
    assert [(c["cmd"], c["session"]) for c in commands] == [
        ("sessions.create", "s"),
        ("request.get", "s"),
        ("request.post", "s"),
        ("request.get", None),
        ("sessions.destroy", "s"),
    ]
    assert commands[1]["url"] == h.site.url("/html")
    assert commands[0]["url"] is None
    times = [c["t"] for c in commands]
    assert times == sorted(times)
    assert set(stats["faults"]) == {
        "errors",
        "http_502",
        "truncated",
        "slow",
        "create_failures",
        "destroy_failures",
    }


@deferred_f_from_coro_f
async def test_reset_zeroes_counters_but_keeps_sessions() -> None:
    async with harness(faults=Faults(fail_creates=1)) as h:
        await h.api.cmd("sessions.create")
        sid = await h.api.create()
        await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        status, body = await h.api.local("POST", "/__local__/reset")
        after_http = h.server.stats()
        await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        h.server.reset()
        after_python = h.server.stats()
    assert (status, body) == (200, {"reset": True})
    assert after_http["requests"] == {"total": 0, "by_command": {}}
    assert after_http["sessions"] == {
        "created": 0,
        "destroyed": 0,
        "expired": 0,
        "open": 1,
    }
    assert after_http["open_sessions"] == [sid]
    assert after_http["faults"]["create_failures"] == 0
    assert after_http["commands"] == []
    assert after_http["requests_per_session"] == {}
    assert after_http["max_concurrent_by_session"] == {}
    assert after_python["requests"]["total"] == 0


def test_command_log_is_bounded() -> None:
    stats = Stats()
    for i in range(COMMAND_LOG_SIZE + 5):
        stats.command("request.get", None, f"http://127.0.0.1/{i}")
    snapshot = stats.snapshot([])
    assert len(snapshot["commands"]) == COMMAND_LOG_SIZE
    assert snapshot["commands"][0]["url"] == "http://127.0.0.1/5"
    assert snapshot["requests"]["total"] == COMMAND_LOG_SIZE + 5


def test_command_log_keeps_a_prefix_of_long_strings() -> None:
    stats = Stats()
    url = "http://127.0.0.1/" + "u" * 5_000_000
    stats.command("request.get", "s" * 5_000_000, url)
    stats.command("request.get", "short", "http://127.0.0.1/" + "u" * 495)
    long_entry, short_entry = stats.snapshot([])["commands"]
    assert long_entry["url"] == url[: LOGGED_CHARS - 1] + "…"
    assert long_entry["session"] == "s" * (LOGGED_CHARS - 1) + "…"
    assert short_entry["url"] == "http://127.0.0.1/" + "u" * 495  # 512: kept whole
    assert short_entry["session"] == "short"


@deferred_f_from_coro_f
async def test_stats_stay_small_after_huge_commands() -> None:
    # Under 1 MB a body: aiohttp warns about bigger ones sent as bytes.
    url = "http://127.0.0.1:1/" + "u" * 400_000
    async with harness(static_body="<p>static</p>") as h:
        for _ in range(5):
            reply = await h.api.cmd("request.get", url=url)
            assert reply["data"] == "success"
        too_long = await h.api.cmd("request.get", url=url, session="s" * 400_000)
        status, stats = await h.api.local("GET", "/__local__/stats")
    assert status == 200
    assert too_long["error"] == (
        "Invalid parameter 'session': must be at most 256 characters"
    )
    assert "session" not in too_long  # not echoed back either
    assert len(stats["commands"]) == 6
    assert {len(c["url"]) for c in stats["commands"]} == {LOGGED_CHARS}
    assert len(stats["commands"][-1]["session"]) == LOGGED_CHARS
    assert len(json.dumps(stats)) < 10 * LOGGED_CHARS


@deferred_f_from_coro_f
async def test_static_mode_fetches_nothing() -> None:
    page = "<html><body><h1>Static</h1></body></html>"
    async with harness(static_body=page, max_sessions=1) as h:
        url = "http://127.0.0.1:1/nothing/listens/here?q=1"
        reply = await h.api.cmd(
            "request.get", url=url, innerText=True, listAllRedirects=True
        )
        sid = await h.api.create()
        in_session = await h.api.cmd("request.post", url=url, session=sid, postData="x")
        unknown = await h.api.cmd("request.get", url=url, session="ghost")
        over = await h.api.cmd("sessions.create")
        balance = h.server.balance
    solution = reply["solution"]
    assert solution["statusCode"] == 200
    assert solution["currentUrl"] == url
    assert solution["response"] == page
    assert solution["responseHeaders"]["content-type"] == "text/html; charset=utf-8"
    assert solution["innerText"] == "Static"
    assert solution["listAllRedirectsResponse"] == [url]
    assert solution["cookies"] == []
    assert solution["cookieString"] == ""
    assert in_session["session"] == sid
    assert in_session["solution"]["response"] == page
    assert unknown["error"] == "Session not found: ghost"
    assert over["error"].startswith("CODE-0029")
    assert balance == 999.6  # two successful request-type replies at 0.2


@deferred_f_from_coro_f
async def test_explicit_start_stop_and_properties() -> None:
    server = LocalScrappey()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    await server.start()
    try:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.url == f"http://127.0.0.1:{server.port}/api/v1"
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                server.url, json={"cmd": "sessions.create", "session": "a"}
            ) as response,
        ):
            assert (await response.json())["session"] == "a"
    finally:
        await server.stop()
    await server.stop()  # idempotent
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.post(server.url, json={"cmd": "sessions.list"})


@deferred_f_from_coro_f
async def test_stop_closes_sessions_with_clients() -> None:
    # filterwarnings=error turns an unclosed aiohttp session into a failure.
    async with harness() as h:
        for name in ("a", "b"):
            await h.api.create(name)
            await h.api.cmd("request.get", url=h.site.url("/set-cookie"), session=name)
    assert h.server.stats()["open_sessions"] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"session_ttl": -1}, "session_ttl"),
        ({"max_sessions": -1}, "max_sessions"),
        ({"unknown_session": "ignore"}, "unknown_session"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"read_timeout": float("nan")}, "read_timeout"),
    ],
)
def test_invalid_constructor_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalScrappey(**kwargs)  # type: ignore[arg-type]
