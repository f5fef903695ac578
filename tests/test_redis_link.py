"""SCRAPPEY_REDIS_URL: the account-wide session cap shared through a real Redis."""

import asyncio
import contextlib
import logging
import os
import time

import pytest
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Config, redis_link
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.exceptions import ScrappeyConfigError
from scrapy_scrappey.local import Faults
from scrapy_scrappey.redis_link import RedisLink, RedisUnreachable, shown_url
from scrapy_scrappey.sessions import SessionManager
from tests.crawl import PagesSpider, crawl, settings_for


def _max_open(server):
    """The most sessions open at the server at once, replayed from its command log."""
    now = most = 0
    for entry in server.stats()["commands"]:
        if entry.get("outcome") != "success":
            continue
        if entry["cmd"] == "sessions.create":
            now += 1
        elif entry["cmd"] == "sessions.destroy":
            now -= 1
        most = max(most, now)
    return most


def _over_limit(server):
    """sessions.create calls the server refused with CODE-0029."""
    return sum(
        1
        for e in server.stats()["commands"]
        if e["cmd"] == "sessions.create" and "CODE-0029" in str(e.get("outcome"))
    )


async def _until(condition, what):
    # A safeguard against a hang, not a timing assertion.
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def _worker(server, url, **config):
    """A SessionManager sharing its cap through *url*, closed at the end."""
    link = RedisLink(url, "k")
    await link.open(config.get("max_sessions", 0))
    client = ScrappeyClient(server.url, "k")
    manager = SessionManager(
        Config(api_key="k", api_url=server.url, redis_url=url, **config),
        client,
        MemoryStatsCollector(get_crawler()),
        on_fatal=lambda *a: None,
        shared=link,
    )
    try:
        yield manager, link
    finally:
        await manager.close()
        await client.close()
        await link.close()


# -- settings and the link ----------------------------------------------------


def config(**settings):
    crawler = get_crawler(settings_dict={"SCRAPPEY_API_KEY": "k", **settings})
    return Config.from_settings(crawler.settings)


def test_the_url_is_optional_checked_and_shown_without_its_password():
    assert config().redis_url is None
    assert config(SCRAPPEY_REDIS_URL="redis://h/1").redis_url == "redis://h/1"
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_REDIS_URL"):
        config(SCRAPPEY_REDIS_URL="http://h")
    assert shown_url("redis://user:s3cret@h:6379/0") == "redis://user:***@h:6379/0"
    assert shown_url("redis://h:6379/0") == "redis://h:6379/0"


NASTY = ["YmFy/c2Vj+cmV0", "a#b", "q?x=1", "p@ss:w/rd", "63/79"]


@pytest.mark.parametrize("password", NASTY)
def test_a_password_with_reserved_characters_is_never_shown(password):
    url = f"redis://user:{password}@10.0.0.1:6379/0"
    assert shown_url(url) == "redis://user:***@10.0.0.1:6379/0"
    assert shown_url(f"redis://:{password}@h/0") == "redis://:***@h/0"
    assert shown_url(f"unix:///s.sock?db=1&password={password}") == (
        "unix:///s.sock?db=1&password=***"
    )
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_REDIS_URL") as info:
        config(SCRAPPEY_REDIS_URL=url)
    assert password not in str(info.value)
    assert "percent-encode" in str(info.value)


@pytest.mark.parametrize("url", ["redis://:pw-1x@h:12ab/0", "redis://:pw-1x@[h/0"])
def test_a_url_redis_py_cannot_read_is_a_config_error_without_its_password(url):
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_REDIS_URL") as info:
        config(SCRAPPEY_REDIS_URL=url)
    assert "pw-1x" not in str(info.value)


@deferred_f_from_coro_f
async def test_a_link_to_a_nasty_url_names_the_setting_and_hides_the_password(
    redis_server, free_port, caplog
):
    password = "Y/m#F?y@+:%"
    encoded = "Y%2Fm%23F%3Fy%40%2B%3A%25"
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_REDIS_URL") as bad:
        await RedisLink(f"redis://:{password}@127.0.0.1:{free_port}/0", "k").open()
    with pytest.raises(RedisUnreachable, match="SCRAPPEY_REDIS_URL") as down:
        await RedisLink(f"redis://:{encoded}@127.0.0.1:{free_port}/0", "k").open()
    redis_server.command("CONFIG", "SET", "requirepass", password)
    link = RedisLink(f"redis://:{encoded}@{redis_server.url.split('//')[1]}", "k")
    with caplog.at_level(logging.INFO, logger="scrapy_scrappey"):
        await link.open(3)  # the password, decoded, is accepted
    await link.client.config_set("requirepass", "")
    await link.close()
    shown = [str(bad.value), str(down.value), caplog.text]
    assert "shares its sessions" in caplog.text
    assert not [t for t in shown if password in t or encoded in t]


def test_worker_ids_name_the_host_and_pid_and_differ():
    a, b = RedisLink("redis://h", "k"), RedisLink("redis://h", "k")
    assert a.worker_id != b.worker_id
    assert f"-{os.getpid()}-" in a.worker_id


@deferred_f_from_coro_f
async def test_a_command_keeps_a_cancel_that_redis_py_dropped():
    async def dropping():  # as asyncio.wait_for before Python 3.12 (gh-86296)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "sent"

    task = asyncio.ensure_future(redis_link.command(dropping()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@deferred_f_from_coro_f
async def test_a_command_keeps_a_dropped_cancel_when_the_command_failed_too():
    from redis.exceptions import TimeoutError as RedisTimeout

    async def dropping():  # the cancel dropped, and the send timed out
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RedisTimeout("Timeout writing to socket") from None

    task = asyncio.ensure_future(redis_link.command(dropping()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@deferred_f_from_coro_f
async def test_an_unreachable_redis_is_named_without_its_password(free_port):
    link = RedisLink(f"redis://:s3cret@127.0.0.1:{free_port}/0", "k")
    with pytest.raises(RedisUnreachable) as info:
        await link.open()
    assert "SCRAPPEY_REDIS_URL" in str(info.value)
    assert f"127.0.0.1:{free_port}" in str(info.value)
    assert "s3cret" not in str(info.value)


@deferred_f_from_coro_f
async def test_the_worker_is_logged_and_a_missing_cap_warned(redis_server, caplog):
    for cap, level in ((3, logging.INFO), (0, logging.WARNING)):
        caplog.clear()
        link = RedisLink(redis_server.url, "k")
        with caplog.at_level(logging.INFO):
            await link.open(cap)
        await link.close()
        (record,) = [r for r in caplog.records if link.worker_id in r.getMessage()]
        assert record.levelno == level
        assert ("CODE-0029" in record.getMessage()) == (cap == 0)


@deferred_f_from_coro_f
async def test_claims_are_atomic_across_workers(redis_server):
    links = [RedisLink(redis_server.url, "k") for _ in range(4)]
    for link in links:
        await link.open()
    try:
        # 4 workers race for 1 slot each under a cap of 2: exactly 2 win.
        won = await asyncio.gather(*(link.claim(1, 2) for link in links))
        assert sorted(won) == [False, False, True, True]
        other = RedisLink(redis_server.url, "another key")
        await other.open()
        assert await other.claim(2, 2)  # another account: its own cap
        await other.close()
    finally:
        for link in links:
            await link.close()


@deferred_f_from_coro_f
async def test_a_dead_workers_slots_expire_after_the_ttl(redis_server, monkeypatch):
    monkeypatch.setattr(redis_link, "SLOT_TTL", 1.0)
    dead, live = RedisLink(redis_server.url, "k"), RedisLink(redis_server.url, "k")
    await dead.open()
    await live.open()
    try:
        assert await dead.claim(3, 4)
        await dead.close()  # killed: no release, no heartbeat
        assert not await live.claim(2, 4)
        assert await live.total() == 3
        await asyncio.sleep(1.2)
        assert await live.total() == 0
        assert await live.claim(2, 4)
    finally:
        await live.close()


# -- two session managers sharing one cap -------------------------------------


@deferred_f_from_coro_f
async def test_two_workers_never_exceed_the_shared_cap(redis_server, make_local_server):
    server = await make_local_server(max_sessions=4)
    kw = {"max_sessions": 4, "pool_size": 3}
    async with contextlib.AsyncExitStack() as stack:
        a, link_a = await stack.enter_async_context(
            _worker(server, redis_server.url, **kw)
        )
        b, link_b = await stack.enter_async_context(
            _worker(server, redis_server.url, **kw)
        )
        await asyncio.gather(a.start(["spider"]), b.start(["spider"]))
        await _until(lambda: server.stats()["sessions"]["open"] == 4, "4 open")
        await asyncio.sleep(1)  # the pools still want 2 more: they must wait
        assert server.stats()["sessions"]["open"] == 4
        assert await link_a.total() + await link_b.total() == 4
        assert _over_limit(server) == 0, server.stats()["commands"]
        await a.close()  # its sessions are destroyed: b takes the room
        await _until(lambda: server.stats()["sessions"]["open"] == 3, "b's 3 open")
        assert await link_b.total() == 0  # a released every slot
    assert _over_limit(server) == 0
    assert _max_open(server) == 4
    assert server.stats()["sessions"]["open"] == 0


@contextlib.asynccontextmanager
async def _two_under_a_cap_of_2(server, url):
    """A worker whose pool of 1 is full, and one with 1 of 2 whose create waits."""
    async with contextlib.AsyncExitStack() as stack:
        full, _ = await stack.enter_async_context(
            _worker(server, url, max_sessions=2, pool_size=1)
        )
        waiting, link = await stack.enter_async_context(
            _worker(server, url, max_sessions=2, pool_size=2)
        )
        await full.start(["spider"])
        await waiting.start(["spider"])
        yield full, waiting, link


def _created_after(server, t):
    return [
        e["session"]
        for e in server.stats()["session_events"]
        if e["event"] == "created" and e["t"] >= t
    ]


@deferred_f_from_coro_f
async def test_a_closing_worker_stops_its_create_waiting_for_peers(
    redis_server, make_local_server
):
    # The flake of test_two_workers_never_exceed_the_shared_cap: a wake-up
    # just before the close made asyncio.wait_for (Python < 3.12) drop the
    # cancel of a create waiting for peers; it went on claiming, the close
    # waited for it, and the worker's slots expired with its sessions open.
    server = await make_local_server(max_sessions=2)
    async with _two_under_a_cap_of_2(server, redis_server.url) as (_, a, link_a):
        await asyncio.sleep(0.3)  # a's second create: into its wait for peers
        a.release(await a.lease("spider"))  # a wake-up for the waiting create...
        closing = time.time()
        await asyncio.wait_for(a.close(), 10)  # ...as the close cancels it
        assert _created_after(server, closing) == []
        assert await link_a.total() == 1  # b's session only
        assert server.stats()["sessions"]["open"] == 1
    assert server.stats()["over_limit"] == 0


@deferred_f_from_coro_f
async def test_a_create_that_lost_its_cancel_is_not_admitted_once_closing(
    redis_server, make_local_server
):
    # redis-py's asyncio.wait_for drops a cancel that comes as a send ends
    # (Python < 3.12): the cap must stop such a create by itself.
    server = await make_local_server(max_sessions=2)
    async with _worker(server, redis_server.url, max_sessions=2, pool_size=1) as (
        a,
        _,
    ):
        await a.start(["spider"])
        a.abort_waiters()  # the close begins
        with pytest.raises(asyncio.CancelledError):
            async with a._cap.room():  # a create whose cancel was lost
                pytest.fail("admitted while closing")
    assert server.stats()["sessions"]["created"] == 1


@deferred_f_from_coro_f
async def test_a_heartbeat_that_lost_its_cancel_still_ends_with_the_close(
    redis_server, make_local_server, monkeypatch
):
    monkeypatch.setattr(redis_link, "HEARTBEAT_INTERVAL", 0.01)
    real_sync, lost = RedisLink.sync, []

    async def sync_losing_one_cancel(self, count):
        try:
            await real_sync(self, count)
            await asyncio.sleep(0.2)  # the heartbeat is mostly in here
        except asyncio.CancelledError:
            if lost:
                raise
            lost.append(count)  # as redis-py's asyncio.wait_for may, on 3.11

    monkeypatch.setattr(RedisLink, "sync", sync_losing_one_cancel)
    server = await make_local_server(max_sessions=2)
    async with _worker(server, redis_server.url, max_sessions=2, pool_size=1) as (
        a,
        _,
    ):
        await a.start(["spider"])
        await asyncio.wait_for(a.close(), 10)  # a safeguard against a hang
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_a_closing_worker_keeps_its_slots_until_its_sessions_are_gone(
    redis_server, make_local_server, monkeypatch
):
    monkeypatch.setattr(redis_link, "SLOT_TTL", 0.8)
    monkeypatch.setattr(redis_link, "HEARTBEAT_INTERVAL", 0.1)
    server = await make_local_server(max_sessions=2)
    async with _two_under_a_cap_of_2(server, redis_server.url) as (a, _, _):
        # b's second create waits for a's slot. a's destroy outlasts two TTLs
        # of that slot: it must stay alive until the session is gone.
        server.faults = Faults(latency={"sessions.destroy": 2.0})
        await a.close()
        await _until(lambda: server.stats()["sessions"]["open"] == 2, "b's 2 open")
        assert server.stats()["over_limit"] == 0
    assert server.stats()["max_open"] == 2


@deferred_f_from_coro_f
async def test_a_new_pool_evicts_an_idle_session_of_its_own_worker_not_a_peers(
    redis_server, make_local_server
):
    # Domain scope over more domains than the account cap: each worker holds
    # an idle session while it needs one for a new domain. Waiting for the
    # peers would deadlock; each evicts its own idle session instead.
    server = await make_local_server(max_sessions=2)
    async with contextlib.AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(
            _worker(server, redis_server.url, max_sessions=2)
        )
        b, _ = await stack.enter_async_context(
            _worker(server, redis_server.url, max_sessions=2)
        )
        await asyncio.gather(a.start(["x"]), b.start(["y"]))
        await _until(lambda: server.stats()["sessions"]["open"] == 2, "2 open")
        opened = set(server.stats()["open_sessions"])
        held = await b.lease("y")  # b's session is busy, a's is idle
        session = await asyncio.wait_for(a.lease("z"), 20)
        a.release(session)
        assert held.id in server.stats()["open_sessions"]  # the peer's stays
        assert set(server.stats()["open_sessions"]) == {held.id, session.id}
        assert opened - {held.id} <= {
            e["session"]
            for e in server.stats()["commands"]
            if e["cmd"] == "sessions.destroy"
        }
        b.release(held)
    assert _over_limit(server) == 0
    assert _max_open(server) == 2


@deferred_f_from_coro_f
async def test_heartbeats_keep_the_slots_of_a_live_worker(
    redis_server, make_local_server, monkeypatch
):
    monkeypatch.setattr(redis_link, "SLOT_TTL", 0.6)
    monkeypatch.setattr(redis_link, "HEARTBEAT_INTERVAL", 0.05)
    server = await make_local_server(max_sessions=2)
    async with _worker(server, redis_server.url, max_sessions=2, pool_size=2) as (
        a,
        _,
    ):
        await a.start(["spider"])
        await _until(lambda: server.stats()["sessions"]["open"] == 2, "2 open")
        probe = RedisLink(redis_server.url, "k")
        await probe.open()
        await asyncio.sleep(1.5)  # over two TTLs
        assert await probe.total() == 2
        await probe.close()
    assert _over_limit(server) == 0


@deferred_f_from_coro_f
async def test_redis_lost_mid_crawl_keeps_what_is_open_and_leaks_nothing(
    redis_server, make_local_server, monkeypatch, caplog
):
    monkeypatch.setattr(redis_link, "HEARTBEAT_INTERVAL", 0.1)
    server = await make_local_server(max_sessions=5)
    async with _worker(server, redis_server.url, max_sessions=5) as (a, _):
        await a.start(["spider"])
        redis_server.stop()
        session = await a.lease("spider")  # what is open keeps serving
        a.release(session)
        other = asyncio.ensure_future(a.lease("other"))  # a new pool waits for Redis
        await asyncio.sleep(0.5)
        assert not other.done()
        redis_server.start()  # empty: the heartbeat writes the count again
        a.release(await other)
        await _until(lambda: server.stats()["sessions"]["open"] == 2, "2 open")
        probe = RedisLink(redis_server.url, "k")
        await probe.open()
        await _until_async(probe, 2)
        await probe.close()
    assert server.stats()["sessions"]["open"] == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("SCRAPPEY_REDIS_URL" in m and "back-off" in m for m in messages)
    assert any("Redis is back" in m for m in messages)


async def _until_async(probe, total):
    for _ in range(400):
        if await probe.total() == total:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"Redis never held {total} slots")


# -- real crawls ----------------------------------------------------------------


@deferred_f_from_coro_f
async def test_two_crawls_share_one_account_cap(
    tmp_path, redis_server, make_local_server, target_site
):
    cap = 3
    server = await make_local_server(
        max_sessions=cap, faults=Faults(latency={"request.get": 0.05})
    )
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_MAX_SESSIONS=cap,
        SCRAPPEY_SESSION_POOL_SIZE=2,
        SCRAPPEY_REDIS_URL=redis_server.url,
        CONCURRENT_REQUESTS=4,
    )
    urls = [[target_site.url(f"/page/{w}-{i}") for i in range(15)] for w in "ab"]
    results = await asyncio.wait_for(
        asyncio.gather(*(crawl(PagesSpider, settings, urls=u) for u in urls)),
        timeout=60,
    )
    for result, wanted in zip(results, urls, strict=True):
        assert sorted(i["request_url"] for i in result.items) == sorted(wanted)
        assert result.stats.get("scrappey/sessions/over_limit", 0) == 0
    assert _over_limit(server) == 0
    assert _max_open(server) <= cap
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_an_unreachable_redis_stops_the_crawl_naming_the_setting(
    tmp_path, caplog, free_port, local_server, target_site
):
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_REDIS_URL=f"redis://:s3cret@127.0.0.1:{free_port}/0",
    )
    with caplog.at_level(logging.ERROR):
        result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert result.stats["finish_reason"] == "scrappey_redis_unreachable"
    assert result.items == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("SCRAPPEY_REDIS_URL" in m for m in errors)
    assert not any("s3cret" in m for m in errors)
    # One error: closing does not then complain about the Redis it never had.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("back-off" in r.getMessage() for r in warnings)
    assert local_server.stats()["sessions"]["created"] == 0


@deferred_f_from_coro_f
async def test_a_late_write_cannot_overwrite_a_newer_count(redis_server):
    link, probe = RedisLink(redis_server.url, "k"), RedisLink(redis_server.url, "k")
    await link.open()
    await probe.open()
    try:
        await link.sync(3)
        link._seq -= 2  # a write sent before the last one, run by Redis after it
        await link.sync(1)
        assert await probe.total() == 3
        link._seq += 2
        await link.sync(1)
        assert await probe.total() == 1
    finally:
        await link.close()
        await probe.close()


def test_the_heartbeat_setting_is_checked_and_sets_the_slot_ttl():
    assert config().redis_heartbeat is None
    assert RedisLink("redis://h", "k").heartbeat == redis_link.HEARTBEAT_INTERVAL
    assert RedisLink("redis://h", "k").slot_ttl == redis_link.SLOT_TTL
    beat = config(SCRAPPEY_REDIS_HEARTBEAT="0.5").redis_heartbeat
    assert beat == 0.5
    link = RedisLink("redis://h", "k", heartbeat=beat)
    assert (link.heartbeat, link.slot_ttl) == (0.5, 1.5)
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_REDIS_HEARTBEAT"):
        config(SCRAPPEY_REDIS_HEARTBEAT="soon")
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_REDIS_HEARTBEAT"):
        config(SCRAPPEY_REDIS_HEARTBEAT=0)


@deferred_f_from_coro_f
async def test_after_redis_restarts_empty_no_claim_over_fills_the_cap(redis_server):
    a = RedisLink(redis_server.url, "k", worker_id="a", heartbeat=0.5)
    b = RedisLink(redis_server.url, "k", worker_id="b", heartbeat=0.5)
    for link in (a, b):
        await link.open(8)
    try:
        assert await a.claim(6, 8)
        assert not await b.claim(8, 8)
        redis_server.stop()
        redis_server.start()  # empty: a's 6 sessions are not counted there
        for link in (a, b):  # the first command on a dropped connection fails
            with contextlib.suppress(OSError):
                await link.total()
        assert not await b.claim(8, 8)  # it saw the state before: the grace
        assert b.rebuilding
        claims = []
        while not claims or not claims[-1]:  # the grace ends after one slot TTL
            await a.sync(6)  # a's heartbeat writes its count back
            claims.append(await b.claim(2, 8))
            await asyncio.sleep(0.05)
        assert len(claims) > 1  # refused during the grace, a's count written or not
        assert not b.rebuilding
        assert not await b.claim(3, 8)
        fresh = RedisLink(redis_server.url, "another-account", heartbeat=0.5)
        await fresh.open(8)
        assert await fresh.claim(8, 8)  # a first start does not wait
        await fresh.close()
    finally:
        for link in (a, b):
            await link.close()


@deferred_f_from_coro_f
async def test_after_an_empty_restart_a_new_pool_waits_and_evicts_nothing(
    redis_server, make_local_server, monkeypatch, caplog
):
    monkeypatch.setattr(redis_link, "SLOT_TTL", 0.6)
    monkeypatch.setattr(redis_link, "HEARTBEAT_INTERVAL", 0.05)
    server = await make_local_server(max_sessions=3)
    with caplog.at_level(logging.INFO, logger="scrapy_scrappey"):
        async with _worker(server, redis_server.url, max_sessions=3) as (a, _):
            await a.start(["x"])
            await _until(lambda: server.stats()["sessions"]["open"] == 1, "1 open")
            redis_server.stop()
            redis_server.start()  # empty: the others' counts are missing
            session = await asyncio.wait_for(a.lease("z"), 20)
            a.release(session)
            assert server.stats()["sessions"]["open"] == 2  # x's idle one stays
    assert "Redis lost the session counts" in caplog.text
    destroyed = [
        e for e in server.stats()["commands"] if e["cmd"] == "sessions.destroy"
    ]
    assert len(destroyed) == 2  # both at the close, none evicted
