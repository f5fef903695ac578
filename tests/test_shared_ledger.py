"""The shared session ledger in a real Redis: records, heartbeats, the reaper."""

import asyncio
import contextlib
import inspect
import logging
import socket
from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Config, redis_link
from scrapy_scrappey._ledger_script import TICK_LUA, ledger_keys, owner_of, tick_args
from scrapy_scrappey._tasks import TaskGroup
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.local import Faults
from scrapy_scrappey.redis_link import RedisLink, new_worker_id
from scrapy_scrappey.session_api import SESSION_ID_PREFIX, SessionAPI
from scrapy_scrappey.sessions import SessionManager
from scrapy_scrappey.shared_ledger import TICKS_PER_BEAT, SharedLedger
from tests.crawl import KEY, PagesSpider, crawl, settings_for

#: A short heartbeat: the tests count ticks, never seconds.
BEAT = 0.2


@dataclass
class Worker:
    manager: SessionManager
    link: RedisLink
    stats: MemoryStatsCollector
    killed: bool = False

    @property
    def ledger(self):
        return self.manager._shared

    async def kill(self):
        """Stop every background task, as ``kill -9`` would: no close, no last write."""
        self.killed = True
        await self.manager._tasks.close()


@contextlib.asynccontextmanager
async def _worker(server, url, **config):
    link = RedisLink(url, "k", heartbeat=BEAT)
    await link.open()
    client = ScrappeyClient(server.url, "k")
    stats = MemoryStatsCollector(get_crawler())
    manager = SessionManager(
        Config(api_key="k", api_url=server.url, redis_url=url, **config),
        client,
        stats,
        on_fatal=lambda *a: None,
        shared=link,
    )
    worker = Worker(manager, link, stats)
    try:
        yield worker
    finally:
        if not worker.killed:
            await manager.close()
        await client.close()
        await link.close()


async def _started(stack, server, url, n, *, pool_size=2):
    """*n* workers whose pool is filled, closed with *stack*."""
    workers = []
    for _ in range(n):
        worker = await stack.enter_async_context(
            _worker(server, url, pool_size=pool_size)
        )
        await worker.manager.start(["spider"])
        workers.append(worker)
    return workers


@contextlib.asynccontextmanager
async def _probe(url, api_key="k"):
    """A plain client reading the ledger's keys."""
    link = RedisLink(url, api_key)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        yield client, link.key
    finally:
        await client.aclose()


async def _until(condition, what, *, step=0.05):
    # A safeguard against a hang, not a timing assertion.
    for _ in range(int(20 / step)):
        met = condition()
        if await met if inspect.isawaitable(met) else met:
            return
        await asyncio.sleep(step)
    raise AssertionError(f"never happened: {what}")


async def _ticks(worker, n):
    start = worker.ledger.ticks
    await _until(lambda: worker.ledger.ticks >= start + n, f"{n} ticks")


def _open_ids(server):
    return set(server.stats()["open_sessions"])


def _destroys(api_calls):
    return Counter(p["session"] for p in api_calls.sent("sessions.destroy"))


# -- (f) session ids name their worker ----------------------------------------------


def test_session_ids_name_their_worker(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "Build_Box.EXAMPLE.com" * 3)
    worker = new_worker_id()
    host, pid, rand = worker.rsplit("-", 2)
    assert host == "build-box-example-combui"  # [a-z0-9-], 24 characters at most
    assert pid.isdigit()
    assert len(rand) == 6
    session_id = f"{SESSION_ID_PREFIX}{worker}-0123456789abcdef"
    assert owner_of(session_id, SESSION_ID_PREFIX) == worker
    assert owner_of(SESSION_ID_PREFIX + "0123456789abcdef", SESSION_ID_PREFIX) is None
    assert owner_of("another-id", SESSION_ID_PREFIX) is None
    monkeypatch.setattr(socket, "gethostname", lambda: "...")
    assert new_worker_id().startswith("host-")


@deferred_f_from_coro_f
async def test_sessions_created_without_redis_name_the_worker(local_server):
    client = ScrappeyClient(local_server.url, "k")
    config = Config(api_key="k", api_url=local_server.url)
    stats = MemoryStatsCollector(get_crawler())
    api = SessionAPI(config, client, stats, ledger=None, extra={}, worker_id="w-1-ab")
    try:
        session_id = await api.create()
        assert session_id.startswith(f"{SESSION_ID_PREFIX}w-1-ab-")
        assert owner_of(session_id, SESSION_ID_PREFIX) == "w-1-ab"
        assert await api.destroy(session_id)
        other = SessionAPI(config, client, stats, ledger=None, extra={})
        assert owner_of(await other.create(), SESSION_ID_PREFIX) is not None
    finally:
        await client.close()


# -- (a) recorded before the create, forgotten after the destroy ------------------


@deferred_f_from_coro_f
async def test_a_crawl_records_before_create_and_forgets_after_destroy(
    tmp_path, redis_server, make_local_server, target_site, monkeypatch
):
    server = await make_local_server()
    seen = []  # (cmd, session, its owner in Redis when the command was sent)
    call = ScrappeyClient.call
    async with _probe(redis_server.url, KEY) as (probe, key):

        async def spying(self, payload, **kw):
            if str(payload.get("cmd")).startswith("sessions."):
                session = payload.get("session")
                owner = await probe.hget(key("owners"), session) if session else None
                seen.append((payload["cmd"], session, owner))
            return await call(self, payload, **kw)

        monkeypatch.setattr(ScrappeyClient, "call", spying)
        settings = settings_for(
            server,
            tmp_path,
            SCRAPPEY_REDIS_URL=redis_server.url,
            SCRAPPEY_SESSION_POOL_SIZE=2,
            SCRAPPEY_SESSION_MAX_REQUESTS=3,  # rotation: destroys during the crawl
        )
        urls = [target_site.url(f"/page/{i}") for i in range(8)]
        result = await crawl(PagesSpider, settings, urls=urls)
        assert len(result.items) == 8
        creates = [(s, o) for cmd, s, o in seen if cmd == "sessions.create"]
        destroys = [(s, o) for cmd, s, o in seen if cmd == "sessions.destroy"]
        assert len(creates) >= 3  # rotated at least once
        for session, owner in creates + destroys:
            assert owner is not None, seen
            assert owner_of(session, SESSION_ID_PREFIX) == owner
        assert sorted(s for s, _ in destroys) == sorted(s for s, _ in creates)
        # After the close: nothing recorded, and the worker left.
        assert await probe.hgetall(key("owners")) == {}
        assert await probe.zcard(key("workers")) == 0
    assert server.stats()["sessions"]["open"] == 0


# -- (b) a dead worker's sessions are destroyed by a live one ----------------------


@deferred_f_from_coro_f
async def test_a_dead_workers_sessions_are_destroyed_once_within_two_heartbeats(
    redis_server, make_local_server, api_calls, caplog
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        live = await _started(stack, server, redis_server.url, 2)
        (dead,) = await _started(stack, server, redis_server.url, 1, pool_size=3)
        await _ticks(live[0], 6)  # both live workers may reap by now
        await _ticks(dead, 1)
        doomed = _open_ids(server) - {sid for w in live for sid in w.ledger._held}
        assert len(doomed) == 3
        assert {owner_of(s, SESSION_ID_PREFIX) for s in doomed} == {dead.link.worker_id}
        with caplog.at_level(logging.INFO):
            await dead.kill()
            start = [w.ledger.ticks for w in live]
            await _until(lambda: not doomed & _open_ids(server), "reaped", step=0.01)
            spent = [w.ledger.ticks - s for w, s in zip(live, start, strict=True)]
        # Dead 1.5 heartbeats after its last write, taken by the next tick.
        assert min(spent) <= 2 * TICKS_PER_BEAT + 1, spent
        assert all(_destroys(api_calls)[s] == 1 for s in doomed), api_calls.payloads

        def reaped():
            return sum(w.stats.get_value("scrappey/redis/reaped", 0) for w in live)

        await _until(lambda: reaped() >= 3, "counted")
        assert reaped() == 3
        (line,) = [
            r.getMessage()
            for r in caplog.records
            if "stopped beating" in r.getMessage()
        ]
        assert dead.link.worker_id in line
        assert all(s in line for s in doomed)
        # The live workers' own sessions are untouched.
        assert len(_open_ids(server)) == 4
        assert not any(_destroys(api_calls)[s] for w in live for s in w.ledger._held)
        for worker in live:
            await _ticks(worker, 1)  # the reaper's next write frees the slots
        async with _probe(redis_server.url) as (probe, key):
            owners = await probe.hgetall(key("owners"))
            assert set(owners.values()) == {w.link.worker_id for w in live}
            assert await probe.hget(key("slots"), dead.link.worker_id) is None
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_a_reaper_that_dies_while_destroying_is_reaped_in_turn(
    redis_server, make_local_server, caplog
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        (dead,) = await _started(stack, server, redis_server.url, 1)
        doomed = _open_ids(server)
        (first,) = await _started(stack, server, redis_server.url, 1, pool_size=1)
        server.faults = Faults(latency={"sessions.destroy": 1.0})
        await dead.kill()
        async with _probe(redis_server.url) as (probe, key):

            async def taken():
                owners = await probe.hgetall(key("owners"))
                return {owners.get(s) for s in doomed} == {first.link.worker_id}

            await _until(taken, "taken by the first reaper", step=0.01)
        await first.kill()  # while its destroys wait for the server
        server.faults = Faults()
        with caplog.at_level(logging.INFO):
            (second,) = await _started(stack, server, redis_server.url, 1)
            await _until(lambda: not doomed & _open_ids(server), "reaped again")
            await _until(
                # Those it took, and its own session.
                lambda: second.stats.get_value("scrappey/redis/reaped") == 3,
                "counted",
            )
        lines = [r.getMessage() for r in caplog.records]
        assert any(
            f"worker {first.link.worker_id} stopped beating" in m
            and all(s in m for s in doomed)
            for m in lines
        ), lines


# -- (c) a live worker's sessions are never taken, even after an outage -------------


def _cut_off(worker, port):
    """Point the worker's ledger at a closed port: a real connection failure."""
    ledger = worker.ledger
    ledger._saved = worker.link._client
    worker.link._client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    ledger._script = None


async def _reconnect(worker):
    await worker.link._client.aclose()
    worker.link._client = worker.ledger._saved
    worker.ledger._script = None


@deferred_f_from_coro_f
async def test_after_an_outage_a_worker_waits_for_its_peers_to_beat_again(
    redis_server, make_local_server, api_calls, free_port, caplog
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await _started(stack, server, redis_server.url, 2)
        await _ticks(a, 6)
        for worker in (a, b):
            _cut_off(worker, free_port)
        # Longer than the liveness: both look dead in Redis, and both retry
        # at their longest back-off (one heartbeat).
        await _ticks(a, 4)
        await _ticks(b, 4)
        await _reconnect(a)  # Redis is back: a writes first, b up to a beat later
        await _ticks(a, 1)
        await _reconnect(b)
        await _ticks(a, 8)
        await _ticks(b, 2)
        assert _destroys(api_calls) == Counter()
        assert a.stats.get_value("scrappey/redis/reaped", 0) == 0
        assert len(_open_ids(server)) == 4
        assert not any("judged this one" in r.getMessage() for r in caplog.records)
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_a_worker_judged_dead_warns_once_and_retires_its_sessions(
    redis_server, make_local_server, free_port, caplog
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await _started(stack, server, redis_server.url, 2)
        await _ticks(b, 6)
        _cut_off(a, free_port)  # a alone is cut off: b judges it dead
        held = set(a.ledger._held)
        await _until(lambda: not held & _open_ids(server), "a's sessions reaped")
        await _reconnect(a)
        # Fenced: a no longer uses (nor records) the ids b took; its pool refills.
        await _until(lambda: not held & a.ledger._held, "a's old ids dropped")
        assert a.stats.get_value("scrappey/sessions/retired/judged_dead") == 2
        lease = await a.manager.lease("spider")
        assert lease.id not in held
        a.manager.release(lease)
        await _ticks(a, 2)
        async with _probe(redis_server.url) as (probe, key):
            owners = await probe.hgetall(key("owners"))
        assert not held & set(owners)
        assert {owners[s] for s in a.ledger._held} == {a.link.worker_id}
        assert len(a.ledger._held) == 2
        warnings = [r for r in caplog.records if "judged this one" in r.getMessage()]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
    assert server.stats()["sessions"]["open"] == 0


# -- (d) Redis down during creates ---------------------------------------------------


@deferred_f_from_coro_f
async def test_ids_created_while_redis_is_down_are_written_when_it_is_back(
    redis_server, make_local_server, monkeypatch
):
    monkeypatch.setattr(redis_link, "COMMAND_TIMEOUT", 1.0)
    server = await make_local_server()
    async with _worker(server, redis_server.url) as worker:
        await worker.manager.start(["spider"])
        before = _open_ids(server)
        redis_server.stop()
        for pool in ("other", "third"):  # no cap: the creates do not wait for Redis
            worker.manager.release(await worker.manager.lease(pool))
        assert len(_open_ids(server)) == 3
        assert _open_ids(server) - before <= worker.ledger._unwritten
        redis_server.start()  # empty: every held id is written again
        async with _probe(redis_server.url) as (probe, key):

            async def written():
                return set(await probe.hkeys(key("owners"))) == _open_ids(server)

            await _until(written, "the ids written")
        assert worker.ledger._unwritten == set()
    assert server.stats()["sessions"]["open"] == 0


# -- (e) review fixes: close, stalls, the dead worker's slots -------------------------


@deferred_f_from_coro_f
async def test_the_last_worker_closing_during_a_reap_leaves_nothing_open(
    redis_server, make_local_server
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        (dead,) = await _started(stack, server, redis_server.url, 1, pool_size=3)
        doomed = _open_ids(server)
        (last,) = await _started(stack, server, redis_server.url, 1, pool_size=1)
        await dead.kill()
        server.faults = Faults(fail_destroys=3)  # the reaper's first destroys fail
        async with _probe(redis_server.url) as (probe, key):

            async def taken():
                owners = await probe.hgetall(key("owners"))
                return {owners.get(s) for s in doomed} == {last.link.worker_id}

            await _until(taken, "taken by the last worker", step=0.01)
        await _until(
            lambda: last.stats.get_value("scrappey/sessions/destroy_failed", 0) >= 3,
            "the first destroys failed",
        )
        # The last worker closes now, before its reaper retries.
    assert server.stats()["sessions"]["open"] == 0, server.stats()["open_sessions"]
    assert last.stats.get_value("scrappey/sessions/leaked", 0) == 0


@deferred_f_from_coro_f
async def test_what_the_last_worker_cannot_destroy_at_close_is_counted_leaked(
    redis_server, make_local_server, caplog
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        (dead,) = await _started(stack, server, redis_server.url, 1, pool_size=3)
        doomed = _open_ids(server)
        last = await stack.enter_async_context(
            _worker(server, redis_server.url, pool_size=1, close_timeout=0.5)
        )
        await last.manager.start(["spider"])
        await dead.kill()
        server.faults = Faults(fail_destroys=10_000)  # the API never destroys
        await _until(lambda: doomed <= set(last.ledger._taken), "taken")
        with caplog.at_level(logging.ERROR):
            await last.manager.close()
            last.killed = True  # closed already
    assert doomed <= _open_ids(server)
    # The 3 taken, and its own session.
    assert last.stats.get_value("scrappey/sessions/leaked") == 4
    (line,) = [
        r.getMessage() for r in caplog.records if "of dead workers" in r.getMessage()
    ]
    assert all(s in line for s in doomed)


@deferred_f_from_coro_f
async def test_a_closing_worker_is_not_reaped_while_it_destroys_its_own_sessions(
    redis_server, make_local_server, api_calls
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        (peer,) = await _started(stack, server, redis_server.url, 1, pool_size=1)
        (closing,) = await _started(stack, server, redis_server.url, 1, pool_size=3)
        await _ticks(peer, 6)
        mine = set(closing.ledger._held)
        # A slow API at close: 5 heartbeats, far past the liveness.
        server.faults = Faults(latency={"sessions.destroy": 5 * BEAT})
        await closing.manager.close()
        closing.killed = True  # closed already
        server.faults = Faults()
        await _ticks(peer, 4)
        assert peer.stats.get_value("scrappey/redis/reaped", 0) == 0
        assert all(_destroys(api_calls)[s] == 1 for s in mine), _destroys(api_calls)


@deferred_f_from_coro_f
async def test_one_slow_ledger_write_does_not_make_a_live_worker_dead(
    redis_server, make_local_server, api_calls, caplog
):
    server = await make_local_server()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await _started(stack, server, redis_server.url, 2)
        await _ticks(b, 6)
        real, stalls = a.ledger._script, []

        def slow_once(**kw):
            if stalls:
                return real(**kw)
            stalls.append(kw)

            async def hang():  # Redis answers after 20 heartbeats, once
                await asyncio.sleep(20 * BEAT)
                return await real(**kw)

            return hang()

        a.ledger._script = slow_once
        await _until(lambda: stalls, "a slow write")
        await _ticks(a, 3)
        await _ticks(b, 6)
        assert b.stats.get_value("scrappey/redis/reaped", 0) == 0
        assert _destroys(api_calls) == Counter()
        assert not any("judged this one" in r.getMessage() for r in caplog.records)


async def _ledger(url, worker_id, tasks, destroy):
    link = RedisLink(url, "k", worker_id=worker_id, heartbeat=BEAT)
    await link.open(4)
    ledger = SharedLedger(link, MemoryStatsCollector(get_crawler()), extra={})
    ledger.start(tasks, destroy)
    return link, ledger


@deferred_f_from_coro_f
async def test_a_dead_workers_slots_count_until_its_sessions_are_destroyed(
    redis_server,
):
    url = redis_server.url
    claimant = RedisLink(url, "k", worker_id="C", heartbeat=BEAT)
    await claimant.open(4)
    dead_tasks, reaper_tasks = TaskGroup(), TaskGroup()
    dead_link, dead = await _ledger(url, "W", dead_tasks, None)
    reaper_link, reaper = None, None
    calls, fail = [], [True]

    async def destroy(ids):
        calls.append(ids)
        if fail[0]:
            return []  # the API fails
        for session_id in ids:
            reaper.forget(session_id)
        return ids

    try:
        assert await dead_link.claim(3, 4)
        for session_id in ("w1", "w2", "w3"):
            dead.hold(session_id)
        await dead.flush()
        await dead_tasks.close()  # kill -9: no close, no last write
        reaper_link, reaper = await _ledger(url, "R", reaper_tasks, destroy)
        await _until(lambda: calls, "a failed destroy")
        ticks = reaper.ticks
        # Longer than a slot TTL (3 heartbeats) after W's last write.
        await _until(lambda: reaper.ticks >= ticks + 8, "8 ticks")
        assert len(calls) >= 2  # retried
        assert not await claimant.claim(4, 4)  # W's slots pinned by the reaper
        fail[0] = False
        await _until(lambda: not reaper._taken, "destroyed")
        ticks = reaper.ticks
        await _until(lambda: reaper.ticks >= ticks + 2, "the release written")
        assert await claimant.claim(4, 4)
    finally:
        if reaper is not None:
            reaper.stop()
        await reaper_tasks.close()
        for link in (claimant, dead_link, reaper_link):
            if link is not None:
                await link.close()


# -- the tick script's pins and releases of a dead worker's cap slots ---------


async def _tick(link, me, **kw):
    script = link.client.register_script(TICK_LUA)
    return await script(keys=ledger_keys(link), args=tick_args(me, **kw))


@deferred_f_from_coro_f
async def test_a_release_spares_a_worker_alive_again(redis_server):
    # W was judged dead, came back (fenced, writing again) and holds 3 slots:
    # the reaper's release of its old ids must not delete them.
    w, peer = RedisLink(redis_server.url, "k"), RedisLink(redis_server.url, "k")
    for link in (w, peer):
        await link.open()
    try:
        assert await w.claim(3, 4)
        await _tick(w, w.worker_id, live_ms=60_000)  # in the ledger's workers again
        await _tick(peer, "R", live_ms=60_000, release=[w.worker_id])
        assert not await peer.claim(4, 4)  # W's 3 still count
        assert await peer.total() == 3
        await _tick(w, w.worker_id, live_ms=0)  # W leaves: now it may be released
        await _tick(peer, "R", live_ms=60_000, release=[w.worker_id])
        assert await peer.claim(4, 4)
    finally:
        for link in (w, peer):
            await link.close()


@deferred_f_from_coro_f
async def test_a_pin_writes_back_the_slots_of_a_dead_workers_taken_sessions(
    redis_server,
):
    # Redis lost the dead worker's slots (restarted empty, or they expired)
    # while its 3 sessions are still being destroyed: the pin counts them.
    reaper, peer = RedisLink(redis_server.url, "k"), RedisLink(redis_server.url, "k")
    for link in (reaper, peer):
        await link.open()
    try:
        await _tick(reaper, "R", live_ms=60_000, pin={"dead": 3}, pin_ms=60_000)
        assert not await peer.claim(2, 4)  # 3 + 2 > 4
        assert await peer.claim(1, 4)
        # Once its sessions are gone the dead worker's slots are released.
        await _tick(reaper, "R", live_ms=60_000, release=["dead"])
        assert await peer.claim(4, 4)
    finally:
        for link in (reaper, peer):
            await link.close()
