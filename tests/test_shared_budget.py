"""SCRAPPEY_MAX_COST / SCRAPPEY_MAX_REQUESTS shared by every worker through a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey._tasks import TaskGroup
from scrapy_scrappey.budget import Budget, BudgetExhausted
from scrapy_scrappey.cost import CostConfig
from scrapy_scrappey.exceptions import SpiderClosing
from scrapy_scrappey.local import Faults
from scrapy_scrappey.redis_link import RedisLink
from scrapy_scrappey.shared_budget import SharedBudget
from tests.crawl import KEY, PagesSpider, crawl, settings_for
from tests.redis_support import until
from tests.test_middleware import close, opened

CHEAP = {"scrappey": {"requestType": "request"}}  # 0.2 each, worst case too
EXHAUSTED = "scrappey_budget_exhausted"
REQUEST = {"cmd": "request.get", "requestType": "request"}


def _pages(site: Any, worker: str, count: int) -> list[Any]:
    return [(site.url(f"/page/{worker}-{i}"), dict(CHEAP)) for i in range(count)]


def _charged(server: Any) -> Any:
    return server.stats()["charged"]


def _sent(server: Any) -> int:
    return server.stats()["requests"]["by_command"].get("request.get", 0)


async def _outage(server, redis_server, back_after=None):
    """Stop Redis once 3 calls were sent; start it again, empty, *back_after* s later."""
    await until(lambda: _sent(server) >= 3, "3 calls sent")
    redis_server.stop()
    if back_after is not None:
        await asyncio.sleep(back_after)
        redis_server.start()


async def _workers(server, site, redis_url, tmp_path, count=2, pages=20, **extra):
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_REDIS_URL=redis_url,
        **{"SCRAPPEY_REDIS_HEARTBEAT": 0.2, "CONCURRENT_REQUESTS": 4, **extra},
    )
    runs = [
        crawl(PagesSpider, settings, urls=_pages(site, str(w), pages))
        for w in range(count)
    ]
    return await asyncio.wait_for(asyncio.gather(*runs), timeout=90)


# -- real crawls sharing one budget --------------------------------------------


@pytest.mark.parametrize("workers", [2, 3])
@deferred_f_from_coro_f
async def test_workers_share_max_cost(
    tmp_path, redis_server, make_local_server, target_site, api_calls, workers
):
    server = await make_local_server(faults=Faults(latency={"request.get": 0.05}))
    results = await _workers(
        server,
        target_site,
        redis_server.url,
        tmp_path,
        count=workers,
        SCRAPPEY_MAX_COST=2.0,
        SCRAPPEY_SESSION_SCOPE="none",
        CONCURRENT_REQUESTS=8,
    )
    assert api_calls.max_in_flight("request.get") > workers  # claims raced
    # Each alone may spend 2.0; together they spent 2.0 and no more.
    assert _charged(server)["total"] == 2.0
    assert sum(r.stats.get("scrappey/cost/total", 0) for r in results) == 2.0
    assert sum(len(r.items) for r in results) == 10
    for result in results:
        assert result.stats["finish_reason"] == EXHAUSTED
        assert result.stats["scrappey/budget/shared_spent"] == 2.0
    errors = [e for r in results for e in r.spider.errors]
    assert any("reached by the workers of spider 'pages'" in str(e) for e in errors)
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_two_workers_share_max_requests(
    tmp_path, redis_server, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(latency={"request.get": 0.05}))
    results = await _workers(
        server,
        target_site,
        redis_server.url,
        tmp_path,
        SCRAPPEY_MAX_REQUESTS=3,
        SCRAPPEY_SESSION_SCOPE="none",
    )
    assert server.stats()["requests"]["by_command"]["request.get"] == 3
    assert sum(len(r.items) for r in results) == 3
    for result in results:
        assert result.stats["finish_reason"] == EXHAUSTED
        assert result.stats["scrappey/budget/shared_requests"] == 3


@deferred_f_from_coro_f
async def test_a_later_crawl_starts_afresh(
    tmp_path, redis_server, make_local_server, target_site
):
    server = await make_local_server()
    for run in range(2):
        (result,) = await _workers(
            server,
            target_site,
            redis_server.url,
            tmp_path,
            count=1,
            SCRAPPEY_MAX_COST=0.4,
        )
        # The first crawl's spent budget does not stop the second one.
        assert len(result.items) == 2
        assert result.stats["finish_reason"] == EXHAUSTED
        assert _charged(server)["total"] == 0.4 * (run + 1)


@deferred_f_from_coro_f
async def test_a_worker_joining_a_spent_budget_closes_at_once(
    tmp_path, redis_server, local_server, target_site
):
    async with _shared(redis_server.url, name="pages", api_key=KEY, max_cost=0.4) as (
        peer,
        shared,
        _,
    ):
        await _book(peer, shared)
        await _book(peer, shared)
        with pytest.raises(BudgetExhausted):
            await _book(peer, shared)
        (result,) = await _workers(
            local_server,
            target_site,
            redis_server.url,
            tmp_path,
            count=1,
            SCRAPPEY_MAX_COST=0.4,
        )
    assert result.stats["finish_reason"] == EXHAUSTED
    assert result.items == []
    assert "request.get" not in local_server.stats()["requests"]["by_command"]


@deferred_f_from_coro_f
async def test_redis_lost_mid_crawl_never_overspends(
    tmp_path, redis_server, make_local_server, target_site, caplog
):
    server = await make_local_server(faults=Faults(latency={"request.get": 0.1}))
    # Back empty after 0.5 s: every worker writes its commitment back.
    cut = asyncio.ensure_future(_outage(server, redis_server, back_after=0.5))
    with caplog.at_level(logging.INFO, logger="scrapy_scrappey"):
        results = await _workers(
            server, target_site, redis_server.url, tmp_path, SCRAPPEY_MAX_COST=2.0
        )
    await cut
    assert _charged(server)["total"] == 2.0
    for result in results:
        assert result.stats["finish_reason"] == EXHAUSTED
    messages = caplog.messages
    assert any("Priced calls wait for Redis" in m for m in messages)
    assert any("sharing the budget again" in m for m in messages)
    assert any("state in Redis was lost" in m for m in messages)
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_without_a_cap_nothing_is_shared(
    tmp_path, redis_server, local_server, target_site
):
    (result,) = await _workers(
        local_server, target_site, redis_server.url, tmp_path, count=1, pages=3
    )
    assert len(result.items) == 3
    assert "scrappey/budget/shared_spent" not in result.stats
    probe = RedisLink(redis_server.url, "k")
    await probe.open()
    assert await probe.client.keys("*budget*") == []
    await probe.close()


# -- the shared budget itself ---------------------------------------------------


@contextlib.asynccontextmanager
async def _shared(url, name="spider", api_key="k", **cost):
    """A Budget and its SharedBudget joined in Redis; the closes it gets."""
    closes: list[str] = []
    stats = MemoryStatsCollector(get_crawler())
    budget = Budget(CostConfig(**cost), stats, lambda reason, _: closes.append(reason))
    link = RedisLink(url, api_key, heartbeat=0.1)
    await link.open()
    tasks = TaskGroup()
    shared = SharedBudget(budget, link, stats, tasks, name=name, extra={})
    await shared.open()
    try:
        yield budget, shared, closes
    finally:
        await shared.close()
        await tasks.close()
        await link.close()


async def _book(budget, shared):
    booking = budget.reserve(REQUEST)
    await shared.claim(booking, REQUEST)
    return booking


@deferred_f_from_coro_f
async def test_a_joining_worker_shares_the_live_budget_and_a_peer_refusal_spreads(
    redis_server,
):
    async with _shared(redis_server.url, max_cost=1.0) as (a, shared_a, closes_a):
        for _ in range(3):
            await _book(a, shared_a)
        async with _shared(redis_server.url, max_cost=1.0) as (b, shared_b, closes_b):
            await _book(b, shared_b)  # 0.8 committed in all
            await _book(b, shared_b)
            with pytest.raises(BudgetExhausted, match="by the workers of spider"):
                await _book(a, shared_a)  # the sixth 0.2 does not fit in 1.0
            assert a.commitment == (600_000, 3)  # the refused booking was undone
            # b learns it from its heartbeat, and closes once its calls settle.
            await until(lambda: b.reason is not None, "b exhausted")
            assert "SCRAPPEY_MAX_COST 1 reached" in b.reason
            assert closes_b == []  # two bookings still open
        assert closes_a == []


@deferred_f_from_coro_f
async def test_workers_of_another_spider_or_a_finished_crawl_do_not_count(
    redis_server,
):
    async with _shared(redis_server.url, max_cost=0.4) as (a, shared_a, _):
        booking = await _book(a, shared_a)
        await _book(a, shared_a)
        async with _shared(redis_server.url, name="other", max_cost=0.4) as (o, s, _):
            await _book(o, s)  # another spider: its own budget
        a.lost(booking)  # no reply: it stays counted, as uncertain
    async with _shared(redis_server.url, max_cost=0.4) as (c, shared_c, _):
        await _book(c, shared_c)  # no live member: a fresh budget
        await _book(c, shared_c)


@deferred_f_from_coro_f
async def test_the_middleware_joins_its_spiders_budget_and_leaves_at_close(
    tmp_path, redis_server, local_server
):
    mw = await opened(
        local_server, tmp_path, SCRAPPEY_REDIS_URL=redis_server.url, SCRAPPEY_MAX_COST=3
    )
    members = mw._redis.key("budget-members:unit")
    try:
        assert mw._client.shared is not None
        assert await mw._redis.client.zrange(members, 0, -1) == [
            mw._redis.worker_id.encode()
        ]
        assert mw.crawler.stats.get_value("scrappey/budget/shared_spent") == 0
    finally:
        probe = RedisLink(redis_server.url, KEY)
        await probe.open()
        await close(mw)
    assert (
        await probe.client.zrange(members, 0, -1) == []
    )  # left: a later crawl starts afresh
    await probe.close()
    bare = await opened(local_server, tmp_path, SCRAPPEY_REDIS_URL=redis_server.url)
    assert bare._client.shared is None  # no cap: nothing to share
    await close(bare)


@deferred_f_from_coro_f
async def test_a_claim_waits_for_redis_and_ends_when_the_crawl_closes(redis_server):
    async with _shared(redis_server.url, max_cost=1.0) as (budget, shared, _):
        redis_server.stop()
        waiting = asyncio.ensure_future(_book(budget, shared))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # never a priced call without its claim
        redis_server.start()  # empty: the claim waits for the state to be rebuilt
        await asyncio.wait_for(waiting, 10)
        assert budget.commitment == (200_000, 1)
        redis_server.stop()
        closed = asyncio.ensure_future(_book(budget, shared))
        await asyncio.sleep(0.1)
        await shared.close()
        with pytest.raises(SpiderClosing):
            await asyncio.wait_for(closed, 10)
        assert budget.commitment == (200_000, 1)  # its booking was undone
        assert budget.reason is None


@deferred_f_from_coro_f
async def test_the_close_ends_when_the_heartbeat_lost_its_cancel_in_a_failing_send(
    redis_server,
):
    from redis.exceptions import TimeoutError as RedisTimeout

    sending = asyncio.Event()

    def down(keys, args):  # Redis unreachable: the send drops the cancel, then fails
        async def send():
            sending.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)
            raise RedisTimeout("Timeout writing to socket")

        return send()

    async with _shared(redis_server.url, max_cost=1.0) as (_, shared, _):
        real, shared._script = shared._script, down
        await asyncio.wait_for(sending.wait(), 10)  # the heartbeat is inside a send
        closing = asyncio.ensure_future(shared.close())
        await asyncio.wait({closing}, timeout=20)  # a safeguard against the hang
        assert closing.done()
        assert shared._beat is not None
        assert shared._beat.done()
        shared._script = real


@deferred_f_from_coro_f
async def test_a_joiner_keeps_the_commitments_of_members_cut_off_from_redis(
    redis_server,
):
    async with _shared(redis_server.url, max_cost=1.0) as (a, shared_a, _):
        for _ in range(3):
            await _book(a, shared_a)
        shared_a._closing = True  # a's heartbeat stops: it is cut off from Redis
        await until(lambda: shared_a._beat.done(), "a's heartbeat stopped")
        probe = RedisLink(redis_server.url, "k")
        await probe.open()
        await probe.client.delete(probe.key("budget-members:spider"))  # expired
        await probe.close()
        async with _shared(redis_server.url, max_cost=1.0) as (j, shared_j, _):
            await _book(j, shared_j)  # a's 0.6 still counts: 0.4 left
            await _book(j, shared_j)
            with pytest.raises(BudgetExhausted):
                await _book(j, shared_j)


@deferred_f_from_coro_f
async def test_a_crawl_waiting_for_a_redis_gone_for_good_ends_when_stopped(
    tmp_path, redis_server, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(latency={"request.get": 0.1}))
    cut = asyncio.ensure_future(_outage(server, redis_server))  # and never back
    stop = {"SCRAPPEY_MAX_COST": 10.0, "CLOSESPIDER_TIMEOUT": 3}
    (result,) = await _workers(
        server, target_site, redis_server.url, tmp_path, count=1, **stop
    )
    await cut
    sent = _sent(server)
    assert result.stats["finish_reason"] == "closespider_timeout"
    assert len(result.items) == sent < 20  # the waiting calls were never sent
    assert _charged(server)["total"] == pytest.approx(0.2 * sent)
