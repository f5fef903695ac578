"""The session manager: the SCRAPPEY_MAX_SESSIONS cap, dead sessions, waiters."""

import asyncio
import contextlib

import pytest
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Config, SessionsUnavailable, SessionWaitTimeout
from scrapy_scrappey._creation import UNREACHED_ATTEMPTS
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.exceptions import SpiderClosing
from scrapy_scrappey.local import Faults
from scrapy_scrappey.sessions import SessionManager
from tests.crawl import PagesSpider, crawl, settings_for


@pytest.mark.parametrize(("pools", "cap", "pool_size"), [(4, 2, 1), (1, 1, 3)])
@deferred_f_from_coro_f
async def test_session_cap_is_never_exceeded_and_never_deadlocks(
    tmp_path,
    pools,
    cap,
    pool_size,
    make_local_server,
    target_site,
):
    # The server refuses anything over the cap, so over_limit counts overshoots.
    server = await make_local_server(max_sessions=cap)

    class Capped(PagesSpider):
        allowed_domains = [f"d{i}.test" for i in range(pools - 1)] + ["127.0.0.1"]

    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="domain",
        SCRAPPEY_MAX_SESSIONS=cap,
        SCRAPPEY_SESSION_POOL_SIZE=pool_size,
    )
    result = await asyncio.wait_for(
        crawl(Capped, settings, urls=[target_site.url(f"/page/{i}") for i in range(4)]),
        timeout=30,
    )
    stats = server.stats()
    assert len(result.items) == 4
    assert result.stats.get("scrappey/sessions/over_limit", 0) == 0
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_dead_session_is_not_handed_to_the_next_waiter(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(expire_after_requests=1))
    urls = [target_site.url(f"/page/{i}") for i in range(8)]
    settings = settings_for(server, tmp_path, RETRY_TIMES=10, CONCURRENT_REQUESTS=8)
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 8
    gets = stats["requests"]["by_command"]["request.get"]
    failed = gets - 8
    # each expired session costs at most the one call that discovered it
    assert failed <= stats["sessions"]["expired"]
    assert result.stats["retry/count"] == failed
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_a_busy_pool_cannot_starve_another_under_the_cap(
    tmp_path, make_local_server, target_site
):
    faults = Faults(latency={"request.get": 0.1})
    server = await make_local_server(max_sessions=1, faults=faults)
    # The default pool stays busy for ~3 s, longer than the wait bound, while
    # CONCURRENT_REQUESTS keeps its own queue for its one session short
    # (every request waits for a session as soon as it reaches the
    # middleware); b's two requests are among the first ten.
    urls = [target_site.url(f"/page/{i}") for i in range(30)]
    b_urls = [
        target_site.url(f"/page/b{i}", host="localhost") for i in range(2)
    ]  # own slot
    urls[8:8] = [(url, {"scrappey_session": "b"}) for url in b_urls]
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_MAX_SESSIONS=1,
        RETRY_TIMES=0,
        CONCURRENT_REQUESTS=10,
        SCRAPPEY_SESSION_WAIT_TIMEOUT=2,
    )
    result = await asyncio.wait_for(crawl(PagesSpider, settings, urls=urls), timeout=30)
    stats = server.stats()
    assert len(result.items) == 32
    assert result.spider.errors == []
    assert result.stats.get("scrappey/sessions/over_limit", 0) == 0
    assert stats["sessions"]["open"] == 0
    # b was served while the default pool still had pages to fetch.
    hits = target_site.hits
    assert max(hits.index(f"/page/b{i}") for i in range(2)) < hits.index("/page/29")


@deferred_f_from_coro_f
async def test_a_ledger_write_failure_after_a_destroy_frees_the_cap_slot(local_server):
    from scrapy.statscollectors import MemoryStatsCollector
    from scrapy.utils.test import get_crawler

    from scrapy_scrappey import Config
    from scrapy_scrappey.sessions import SessionManager

    class FlakyLedger:
        failures = 1

        def record(self, session_id):
            pass

        def forget(self, session_id):
            if self.failures:
                self.failures -= 1
                raise OSError("disk full")

    config = Config(
        api_key="k", api_url=local_server.url, max_sessions=1, session_wait_timeout=3
    )
    client = ScrappeyClient(local_server.url, "k")
    stats = MemoryStatsCollector(get_crawler())
    manager = SessionManager(
        config, client, stats, ledger=FlakyLedger(), on_fatal=lambda *a: None
    )
    try:
        first = await manager.lease("name:a")
        manager.release(first)
        second = await asyncio.wait_for(
            manager.lease("name:b"), timeout=5
        )  # evicts "a"
        manager.release(second)
        third = await asyncio.wait_for(manager.lease("name:c"), timeout=5)
        manager.release(third)
    finally:
        await manager.close()
        await client.close()
    assert local_server.stats()["sessions"]["open"] == 0
    assert stats.get_value("scrappey/sessions/leaked") is None


@contextlib.asynccontextmanager
async def manager_for(server, prepare=None, **config):
    """A SessionManager on *server*; closed, and checked to leave 0 open."""
    client = ScrappeyClient(server.url, "k")
    manager = SessionManager(
        Config(api_key="k", api_url=server.url, **config),
        client,
        MemoryStatsCollector(get_crawler()),
        on_fatal=lambda *a: None,
        prepare=prepare,
    )
    try:
        yield manager
    finally:
        await manager.close()
        await client.close()
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_by_default_a_waiter_waits_until_the_session_is_free(local_server):
    assert Config(api_key="k").session_wait_timeout == 0  # 0: no bound
    async with manager_for(local_server, session_wait_timeout=0) as manager:
        first = await manager.lease("spider")
        waiter = asyncio.ensure_future(manager.lease("spider"))
        await asyncio.sleep(0.5)
        assert not waiter.done()  # no bound: still waiting, not failed
        manager.release(first)
        second = await asyncio.wait_for(waiter, 2)
        assert second is first
        manager.release(second)


@deferred_f_from_coro_f
async def test_session_wait_timeout_bounds_the_wait(local_server):
    async with manager_for(local_server, session_wait_timeout=0.1) as manager:
        first = await manager.lease("spider")
        with pytest.raises(
            SessionWaitTimeout, match=r"SCRAPPEY_SESSION_WAIT_TIMEOUT \(0.1s\)"
        ):
            await manager.lease("spider")
        manager.release(first)
        manager.release(await asyncio.wait_for(manager.lease("spider"), 2))


@deferred_f_from_coro_f
async def test_a_waiter_cancelled_as_it_is_granted_gives_the_session_back(local_server):
    async with manager_for(local_server) as manager:
        first = await manager.lease("spider")
        cancelled = asyncio.ensure_future(manager.lease("spider"))
        later = asyncio.ensure_future(manager.lease("spider"))
        await asyncio.sleep(0.05)
        manager.release(first)  # granted to `cancelled`...
        cancelled.cancel()  # ...which never gets to use it
        session = await asyncio.wait_for(later, 2)
        assert session is first
        assert session.in_flight == 1
        manager.release(session)
        assert session.in_flight == 0


@deferred_f_from_coro_f
async def test_abort_fails_every_waiter_and_refuses_new_leases(local_server):
    async with manager_for(local_server) as manager:
        first = await manager.lease("spider")
        waiters = [asyncio.ensure_future(manager.lease("spider")) for _ in range(3)]
        await asyncio.sleep(0.05)
        manager.abort_waiters()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, SpiderClosing) for r in results)
        with pytest.raises(SpiderClosing):
            await manager.lease("spider")
        manager.release(first)
        assert first.in_flight == 0


@deferred_f_from_coro_f
async def test_a_retired_session_is_never_handed_to_a_waiter_and_is_replaced_with_init(
    local_server,
):
    prepared = []

    async def prepare(session):
        prepared.append(session.id)
        await asyncio.sleep(0.05)  # a waiter must not get the session meanwhile
        return True

    async with manager_for(local_server, prepare=prepare) as manager:
        first = await manager.lease("spider")
        assert prepared == [first.id]
        waiter = asyncio.ensure_future(manager.lease("spider"))
        await asyncio.sleep(0)
        manager.retire(first, "check")
        manager.retire(first, "check")  # later calls are no-ops
        manager.release(first)
        second = await asyncio.wait_for(waiter, 5)
        assert second is not first
        assert prepared == [first.id, second.id]
        assert manager._stats.get_value("scrappey/sessions/retired/check") == 1
        manager.release(second)


@deferred_f_from_coro_f
async def test_an_api_that_answered_once_then_is_unreachable_gets_every_attempt(
    local_server, free_port, caplog
):
    """Only an API never reached is given up on early (UNREACHED_ATTEMPTS)."""
    client = ScrappeyClient(local_server.url, "k")
    stats = MemoryStatsCollector(get_crawler())
    fatal: list[str] = []
    manager = SessionManager(
        Config(api_key="k", api_url=local_server.url, create_backoff=0.01),
        client,
        stats,
        on_fatal=lambda reason, message: fatal.append(reason),
    )
    try:
        manager.release(await manager.lease("first"))
        client.api_url = f"http://127.0.0.1:{free_port}/api/v1"  # the API went away
        with pytest.raises(SessionsUnavailable, match=r"5 sessions\.create attempt"):
            await manager.lease("second")
    finally:
        client.api_url = local_server.url
        await manager.close()
        await client.close()
    assert Config(api_key="k").create_attempts == 5 > UNREACHED_ATTEMPTS
    assert stats.get_value("scrappey/sessions/create_failed") == 5
    assert fatal == ["scrappey_sessions_unavailable"]
    retries = [r for r in caplog.records if "sessions.create failed" in r.getMessage()]
    assert len(retries) == 5
    assert "Connection refused; check SCRAPPEY_API_URL" in retries[0].getMessage()
    assert stats.get_value("scrappey/sessions/destroy_failed") is None
    assert local_server.stats()["sessions"]["open"] == 0
