"""sessions.* commands and the session rules: ids, cookies, expiry, cap."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.sessions import LocalSession, SessionRegistry
from scrapy_scrappey.local.stats import Stats

from ._support import harness

LIMIT_TEXT = (
    "CODE-0029 Too many sessions open; sessions will automatically close after "
    "240 seconds. Contact support for more sessions."
)


@deferred_f_from_coro_f
async def test_create_generates_uuid_and_replies_documented_shape() -> None:
    async with harness() as h:
        reply = await h.api.cmd("sessions.create", proxyCountry="UnitedStates")
        assert h.server.stats()["open_sessions"] == [reply["session"]]
    assert set(reply) == {
        "data",
        "session",
        "fingerprint",
        "context",
        "solution",
        "timeElapsed",
    }
    assert reply["data"] == "success"
    assert uuid.UUID(reply["session"]).version == 4
    assert reply["fingerprint"]["userAgent"].startswith("Mozilla/5.0")
    assert reply["context"] == {}
    assert reply["solution"] == {}
    assert isinstance(reply["timeElapsed"], int)


@deferred_f_from_coro_f
async def test_create_with_client_id_is_idempotent() -> None:
    async with harness() as h:
        first = await h.api.create("mine")
        second = await h.api.create("mine")
        stats = h.server.stats()
    assert first == second == "mine"
    assert stats["sessions"]["created"] == 1
    assert stats["open_sessions"] == ["mine"]


@deferred_f_from_coro_f
async def test_browser_choice_sets_user_agent_and_bad_name_is_code_0030() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "sessions.create", session="ff", browser=[{"name": "firefox"}]
        )
        fetched = await h.api.cmd("request.get", url=h.site.url("/echo"), session="ff")
        bad = await h.api.cmd("sessions.create", browser=[{"name": "opera"}])
    assert "Firefox/" in reply["fingerprint"]["userAgent"]
    assert (
        json.loads(fetched["solution"]["response"])["headers"]["User-Agent"]
        == (reply["fingerprint"]["userAgent"])
    )
    assert bad["data"] == "error"
    assert bad["error"].startswith(
        "CODE-0030 Browser name must be: firefox, chrome or safari"
    )


@deferred_f_from_coro_f
async def test_destroy_then_unknown() -> None:
    async with harness() as h:
        sid = await h.api.create()
        reply = await h.api.cmd("sessions.destroy", session=sid)
        again = await h.api.cmd("sessions.destroy", session=sid)
        stats = h.server.stats()
    assert reply == {"data": "success", "timeElapsed": reply["timeElapsed"]}
    assert again["data"] == "error"
    assert again["error"] == f"Session not found: {sid}"
    assert again["session"] == sid
    assert again["solution"] == {"verified": False}
    assert stats["sessions"] == {"created": 1, "destroyed": 1, "expired": 0, "open": 0}


@deferred_f_from_coro_f
async def test_list_and_active() -> None:
    async with harness(max_sessions=7) as h:
        before = time.time() * 1000
        await h.api.create("a")
        await h.api.create("b")
        listed = await h.api.cmd("sessions.list")
        active = await h.api.cmd("sessions.active", session="a")
        await h.api.cmd("sessions.destroy", session="a")
        gone = await h.api.cmd("sessions.active", session="a")
        never = await h.api.cmd("sessions.active", session="never")
    assert set(listed) == {"data", "sessions", "open", "limit", "timeElapsed"}
    assert [s["session"] for s in listed["sessions"]] == ["a", "b"]
    assert all(
        before - 1000 <= s["lastAccessed"] <= time.time() * 1000
        for s in listed["sessions"]
    )
    assert (listed["open"], listed["limit"]) == (2, 7)
    assert active == {
        "data": "success",
        "active": True,
        "timeElapsed": active["timeElapsed"],
    }
    assert gone["active"] is False
    assert never["active"] is False


@deferred_f_from_coro_f
async def test_cookies_persist_within_a_session_and_stay_isolated() -> None:
    async with harness() as h:
        one, two = await h.api.create("one"), await h.api.create("two")
        await h.api.cmd(
            "request.get", url=h.site.url("/set-cookie?name=k&value=1"), session=one
        )
        await h.api.cmd(
            "request.get", url=h.site.url("/set-cookie?name=k&value=2"), session=two
        )
        echo_one = await h.api.cmd("request.get", url=h.site.url("/echo"), session=one)
        echo_two = await h.api.cmd("request.get", url=h.site.url("/echo"), session=two)
        await h.api.cmd("request.get", url=h.site.url("/set-cookie?name=k&value=3"))
        echo_none = await h.api.cmd("request.get", url=h.site.url("/echo"))
    assert json.loads(echo_one["solution"]["response"])["cookies"] == {
        "k": "1",
        "plain": "1",
    }
    assert json.loads(echo_two["solution"]["response"])["cookies"] == {
        "k": "2",
        "plain": "1",
    }
    assert {c["name"]: c["value"] for c in echo_one["solution"]["cookies"]} == {
        "k": "1",
        "plain": "1",
    }
    assert echo_one["session"] == one
    # Session-less requests get a throw-away jar each.
    assert json.loads(echo_none["solution"]["response"])["cookies"] == {}


@deferred_f_from_coro_f
async def test_cookiejar_entries_persist_in_the_session() -> None:
    async with harness() as h:
        sid = await h.api.create()
        await h.api.cmd(
            "request.get",
            url=h.site.url("/html"),
            session=sid,
            cookiejar=[
                {"key": "k1", "value": "v1", "domain": "127.0.0.1", "path": "/"},
                {"name": "k2", "value": "v2"},
                {"key": "other", "value": "x", "domain": "example.com", "path": "/"},
            ],
        )
        echo = await h.api.cmd("request.get", url=h.site.url("/echo"), session=sid)
    assert json.loads(echo["solution"]["response"])["cookies"] == {
        "k1": "v1",
        "k2": "v2",
    }


@deferred_f_from_coro_f
async def test_cookies_string_is_for_that_request_only() -> None:
    async with harness() as h:
        sid = await h.api.create()
        first = await h.api.cmd(
            "request.get", url=h.site.url("/echo"), session=sid, cookies="x=1"
        )
        second = await h.api.cmd("request.get", url=h.site.url("/echo"), session=sid)
    assert json.loads(first["solution"]["response"])["cookies"] == {"x": "1"}
    assert json.loads(second["solution"]["response"])["cookies"] == {}


@deferred_f_from_coro_f
async def test_unknown_session_is_an_error_by_default() -> None:
    async with harness() as h:
        reply = await h.api.cmd("request.get", url=h.site.url("/html"), session="ghost")
        stats = h.server.stats()
    assert reply["data"] == "error"
    assert reply["error"] == "Session not found: ghost"
    assert reply["session"] == "ghost"
    assert stats["sessions"]["created"] == 0


@deferred_f_from_coro_f
async def test_unknown_session_can_be_created_on_the_fly() -> None:
    async with harness(unknown_session="create") as h:
        reply = await h.api.cmd("request.get", url=h.site.url("/html"), session="ghost")
        stats = h.server.stats()
    assert reply["data"] == "success"
    assert reply["session"] == "ghost"
    assert stats["sessions"]["created"] == 1
    assert stats["open_sessions"] == ["ghost"]


@deferred_f_from_coro_f
async def test_idle_session_expires() -> None:
    async with harness(session_ttl=0.3) as h:
        sid = await h.api.create()
        ok = await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        await asyncio.sleep(0.4)
        late = await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        stats = h.server.stats()
    assert ok["data"] == "success"
    assert late["error"] == f"Session not found: {sid}"
    assert stats["sessions"]["expired"] == 1
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_registry_expires_lazily_on_lookup() -> None:
    # The registry alone has no sweeper: only the lookup can expire the session.
    stats = Stats()
    released: list[str] = []

    async def closer(session: LocalSession) -> None:
        released.append(session.id)

    registry = SessionRegistry(ttl=0.05, max_sessions=5, stats=stats, closer=closer)
    await registry.create("a", {})
    assert await registry.get("a") is not None
    await asyncio.sleep(0.1)
    assert [s.id for s in registry.sessions()] == ["a"]  # still there until looked up
    assert await registry.get("a") is None
    assert released == ["a"]
    assert stats.snapshot([])["sessions"]["expired"] == 1


@deferred_f_from_coro_f
async def test_idle_sessions_are_swept_without_any_access() -> None:
    async with harness(session_ttl=0.2) as h:
        await h.api.create("a")
        await h.api.create("b")
        await asyncio.sleep(0.5)
        stats = h.server.stats()
    assert stats["sessions"] == {"created": 2, "destroyed": 0, "expired": 2, "open": 0}
    assert stats["open_sessions"] == []


@deferred_f_from_coro_f
async def test_use_keeps_a_session_alive_and_in_flight_is_never_idle() -> None:
    async with harness(session_ttl=0.5) as h:
        sid = await h.api.create()
        for _ in range(3):
            await asyncio.sleep(0.2)
            reply = await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
            assert reply["data"] == "success"
        slow = await h.api.cmd(
            "request.get", url=h.site.url("/slow?seconds=0.8"), session=sid
        )
        after = await h.api.cmd("sessions.active", session=sid)
    assert slow["data"] == "success"
    assert after["active"] is True


@deferred_f_from_coro_f
async def test_session_cap_is_code_0029() -> None:
    async with harness(max_sessions=2) as h:
        await h.api.create("a")
        await h.api.create("b")
        over = await h.api.cmd("sessions.create", session="c")
        again = await h.api.create("a")  # an open id is not a new session
        await h.api.cmd("sessions.destroy", session="b")
        fits = await h.api.create("c")
        listed = await h.api.cmd("sessions.list")
    assert over["data"] == "error"
    assert over["error"] == LIMIT_TEXT
    assert over["session"] == "c"
    assert again == "a"
    assert fits == "c"
    assert (listed["open"], listed["limit"]) == (2, 2)


@deferred_f_from_coro_f
async def test_expired_sessions_free_their_slot() -> None:
    async with harness(max_sessions=1, session_ttl=0.2) as h:
        await h.api.create("a")
        await asyncio.sleep(0.3)
        assert await h.api.create("b") == "b"


@deferred_f_from_coro_f
async def test_cap_applies_to_sessions_created_on_the_fly() -> None:
    async with harness(max_sessions=1, unknown_session="create") as h:
        await h.api.create("a")
        reply = await h.api.cmd("request.get", url=h.site.url("/html"), session="b")
    assert reply["error"] == LIMIT_TEXT


@deferred_f_from_coro_f
async def test_close_after_use_destroys_the_session() -> None:
    async with harness() as h:
        sid = await h.api.create()
        reply = await h.api.cmd(
            "request.get", url=h.site.url("/html"), session=sid, closeAfterUse=True
        )
        stats = h.server.stats()
    assert reply["data"] == "success"
    assert stats["sessions"]["destroyed"] == 1
    assert stats["open_sessions"] == []


@deferred_f_from_coro_f
async def test_concurrency_per_session_is_measured() -> None:
    async with harness(faults=Faults(latency={"request.get": 0.2})) as h:
        sid = await h.api.create("busy")
        other = await h.api.create("calm")
        url = h.site.url("/html")
        replies = await asyncio.gather(
            *(h.api.cmd("request.get", url=url, session=sid) for _ in range(3))
        )
        await h.api.cmd("request.get", url=url, session=other)
        stats = h.server.stats()
    assert all(r["data"] == "success" for r in replies)
    assert stats["max_concurrent_per_session"] == 3
    assert stats["max_concurrent_by_session"] == {"busy": 3, "calm": 1}
    assert stats["requests_per_session"] == {"busy": 3, "calm": 1}


@deferred_f_from_coro_f
async def test_destroy_during_a_request_lets_it_finish() -> None:
    async with harness() as h:
        sid = await h.api.create()
        request = asyncio.ensure_future(
            h.api.cmd("request.get", url=h.site.url("/slow?seconds=0.3"), session=sid)
        )
        for _ in range(500):  # until the request holds the session
            if h.server.stats()["requests_per_session"].get(sid):
                break
            await asyncio.sleep(0.01)
        destroyed = await h.api.cmd("sessions.destroy", session=sid)
        reply = await request
    assert destroyed["data"] == "success"
    assert reply["data"] == "success"
    assert reply["solution"]["response"] == "late"
