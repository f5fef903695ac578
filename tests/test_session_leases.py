"""SessionManager leases: how a request waits for its turn on a session."""

import asyncio
import contextlib

import pytest
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Config, SessionWaitTimeout
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.exceptions import SpiderClosing
from scrapy_scrappey.local import LocalScrappey
from scrapy_scrappey.sessions import SessionManager


@contextlib.asynccontextmanager
async def manager_for(prepare=None, **config):
    async with LocalScrappey() as server:
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
async def test_by_default_a_waiter_waits_until_the_session_is_free():
    assert Config(api_key="k").session_wait_timeout == 0  # 0: no bound
    async with manager_for(session_wait_timeout=0) as manager:
        first = await manager.lease("spider")
        waiter = asyncio.ensure_future(manager.lease("spider"))
        await asyncio.sleep(0.5)
        assert not waiter.done()  # no bound: still waiting, not failed
        manager.release(first)
        second = await asyncio.wait_for(waiter, 2)
        assert second is first
        manager.release(second)


@deferred_f_from_coro_f
async def test_session_wait_timeout_bounds_the_wait():
    async with manager_for(session_wait_timeout=0.1) as manager:
        first = await manager.lease("spider")
        with pytest.raises(
            SessionWaitTimeout, match=r"SCRAPPEY_SESSION_WAIT_TIMEOUT \(0.1s\)"
        ):
            await manager.lease("spider")
        manager.release(first)
        manager.release(await asyncio.wait_for(manager.lease("spider"), 2))


@deferred_f_from_coro_f
async def test_a_waiter_cancelled_as_it_is_granted_gives_the_session_back():
    async with manager_for() as manager:
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
async def test_abort_fails_every_waiter_and_refuses_new_leases():
    async with manager_for() as manager:
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
async def test_a_retired_session_is_never_handed_to_a_waiter_and_is_replaced_with_init():
    prepared = []

    async def prepare(session):
        prepared.append(session.id)
        await asyncio.sleep(0.05)  # a waiter must not get the session meanwhile
        return True

    async with manager_for(prepare=prepare) as manager:
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
