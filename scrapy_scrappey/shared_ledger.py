"""The shared session ledger in Redis (``SCRAPPEY_REDIS_URL``): who owns which session.

Every worker records its sessions in Redis under its worker id and keeps a
heartbeat there; the sessions of a worker whose heartbeat stopped (``kill -9``,
a lost machine) are destroyed by a live worker, or by
``python -m scrapy_scrappey sessions cleanup --redis URL``.

Keys, per account, in the hash slot of ``redis_link.py``:

* ``owners`` — a hash: session id → worker id.
* ``workers`` — a sorted set: worker id → the Redis-clock time (ms) until
  which it counts as alive: each write of a worker moves it to now +
  :data:`LIVENESS` heartbeats. A worker missing from it, or past its time,
  is dead (a deadline rather than the last beat, so that the command line
  need not know the workers' heartbeat).
* ``reaped`` — a hash: worker id → when it was judged dead, so that a worker
  that was only cut off learns it on its next write.

Invariants:

* Every id in ``_held`` may exist at the API (its create is about to be sent,
  or was; its destroy was not confirmed). Redis holds ``owners[id] = me`` for
  each of them, except those in ``_unwritten`` (Redis failed or the id came
  without an await), which the next write carries; every tick rewrites them
  all, which also repairs a Redis that restarted empty.
* An id is recorded before its create is sent and leaves ``_held`` only once
  its destroy is confirmed; its owner entry is then deleted by a later write
  (``_forgotten``), and only if this worker still owns it.
* The writes of one worker hold ``_lock``: a record cannot overtake the
  delete that followed it. Each write gives up after :meth:`_call_timeout`
  (half a heartbeat at most) and the next try comes a quarter heartbeat
  later: a tick half a heartbeat after the last beat, its timeout and the
  retry stay under the 1.5 heartbeats of :data:`LIVENESS`, so one lost
  write never makes a live worker dead. (A write that timed out here may still run there late and
  leave a stale entry: it is destroyed, "not found", once this worker is gone.)
* A write never takes an id back from another worker: an owner changes only
  when the tick script's reap takes every id of the dead workers for the
  caller, so one worker at a time destroys a session; if it dies meanwhile,
  the ids are its own and the next live worker takes them. A worker reaps
  only after :data:`_STEADY_TICKS` successful ticks in a row: after an
  outage, its peers get one liveness period to beat again.
* A worker told it was judged dead retires the sessions it held (fenced:
  their ids were taken, they are or will be destroyed) and its pools refill.
* ``_taken`` holds the ids taken from dead workers whose destroy is not
  confirmed; each write pins (keeps counting) the cap slots of their dead
  owners for one slot TTL, and a dead worker's slots are released only once
  none of its ids is left in ``_taken``. If this worker dies too, the pin
  expires and the next reaper takes the ids (and pins again). A pin also
  writes the dead worker's slot count back up to its taken ids (Redis may
  have lost it: restarted empty, or the slots expired), and a release spares
  a worker that is alive in the ledger again (judged dead, then back).
* At close the worker keeps beating (without reaping) while its sessions and
  ``_taken`` are destroyed, then writes its last state and leaves
  ``workers``: what it could not destroy is at once a dead worker's, for a
  peer or the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, TypeVar

from . import redis_link
from ._ledger_script import TICK_LUA, ledger_keys, parse_tick, tick_args
from .redis_link import command

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from scrapy.statscollectors import StatsCollector

    from ._tasks import TaskGroup
    from .redis_link import RedisLink

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Heartbeats a worker stays alive after its last write.
LIVENESS = 1.5
#: Ticks (beat, then reap) per heartbeat.
TICKS_PER_BEAT = 2
#: Successful ticks in a row before a worker reaps: one liveness period.
_STEADY_TICKS = round(LIVENESS * TICKS_PER_BEAT)


class SharedLedger:
    """This worker's sessions in Redis, and the reaper of dead workers' sessions."""

    def __init__(
        self, link: RedisLink, stats: StatsCollector, *, extra: dict[str, Any]
    ) -> None:
        self._link = link
        self._stats = stats
        self._extra = extra
        self._held: set[str] = set()
        self._unwritten: set[str] = set()
        self._forgotten: set[str] = set()
        self._taken: dict[str, str] = {}  # id → its dead owner, not yet destroyed
        self._release: set[str] = set()  # dead workers whose slots to free
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._failures = 0
        self._steady = 0
        self._warned = False
        self._reaping = 0
        self._retry_tick = 0  # failed destroys are retried from this tick on
        self._retry_gap = 1
        self._script: Any = None
        self._destroy: Callable[[list[str]], Awaitable[list[str]]] | None = None
        self._fence: Callable[[list[str]], None] = lambda ids: None
        self._tasks: TaskGroup | None = None
        #: Ticks so far (:data:`TICKS_PER_BEAT` per heartbeat), for tests and logs.
        self.ticks = 0

    @property
    def worker_id(self) -> str:
        return self._link.worker_id

    def start(
        self,
        tasks: TaskGroup,
        destroy: Callable[[list[str]], Awaitable[list[str]]],
        fence: Callable[[list[str]], None] | None = None,
    ) -> None:
        """Beat and reap in the background; *destroy* destroys ids, returns those
        gone; *fence* retires this worker's sessions once it was judged dead."""
        self._tasks, self._destroy = tasks, destroy
        self._fence = fence or self._fence
        tasks.spawn(self._ticking(self._stop, reap=True), name="scrappey-redis-ledger")

    def hold(self, session_id: str) -> None:
        """Hold *session_id* (written by the next :meth:`flush` or tick)."""
        self._held.add(session_id)
        self._unwritten.add(session_id)
        self._forgotten.discard(session_id)

    def forget(self, session_id: str) -> None:
        """Drop *session_id*, destroyed or known gone (deleted by the next write)."""
        self._held.discard(session_id)
        self._unwritten.discard(session_id)
        self._forgotten.add(session_id)
        owner = self._taken.pop(session_id, None)
        if owner is not None and owner not in self._taken.values():
            self._release.add(owner)  # its last session is gone: free its slots

    async def flush(self) -> None:
        """Write the held ids not yet in Redis; while Redis fails, leave them to the tick."""
        if not self._unwritten or self._failures or not self._link.is_open:
            return
        async with self._lock:
            if self._unwritten and not self._failures:
                await self._write(sorted(self._unwritten))

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Beat, without reaping, inside the block (the close destroys meanwhile)."""
        if not self._link.is_open:
            yield
            return
        done = asyncio.Event()
        beat = asyncio.ensure_future(self._ticking(done, reap=False))
        try:
            yield
        finally:
            done.set()
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def destroy_taken(self, timeout: float) -> list[str]:
        """Destroy the ids taken from dead workers (the crawl closes); return those left.

        What is left is counted as leaked and logged; it stays recorded for a
        live worker or ``sessions cleanup --redis``.
        """
        ids = sorted(self._taken)
        if ids and self._destroy is not None:
            with contextlib.suppress(OSError):
                await _within(self._destroy(ids), timeout)
        left = sorted(i for i in ids if i in self._taken)
        if left:
            self._stats.inc_value("scrappey/sessions/leaked", len(left))
            logger.error(
                "Could not destroy %(n)d session(s) of dead workers within "
                "SCRAPPEY_CLOSE_TIMEOUT (%(timeout)gs): %(ids)s. They stay recorded "
                "in Redis for a live worker or `sessions cleanup --redis`.",
                {"n": len(left), "timeout": timeout, "ids": ", ".join(left[:10])},
                extra=self._extra,
            )
        return left

    async def close(self) -> None:
        """Write the last state and leave: what is still held is a dead worker's now."""
        if not self._link.is_open:
            return
        async with self._lock:
            await self._write(sorted(self._held), live=False)
        if self._held:
            logger.info(
                "Scrappey: %(n)d session(s) stay recorded in Redis for a live worker "
                "or `sessions cleanup --redis` to destroy",
                {"n": len(self._held)},
                extra=self._extra,
            )

    def stop(self) -> None:
        """End the ticks (the crawl closes), even if a cancellation got lost."""
        self._stop.set()

    async def _ticking(self, done: asyncio.Event, *, reap: bool) -> None:
        # A cancellation can get lost in redis-py's timeouts (asyncio.wait_for
        # before Python 3.12; seen in tests, Redis cut off): *done* still ends
        # the loop, and the pause below is no wait_for, which could lose one too.
        while not done.is_set():
            await self._tick(reap)
            beat = self._link.heartbeat
            delay = beat / TICKS_PER_BEAT
            if self._failures:  # a quarter heartbeat first: see the invariants
                delay = min(beat / 4 * 2 ** (self._failures - 1), beat)
            waiter = asyncio.ensure_future(done.wait())
            try:
                await asyncio.wait({waiter}, timeout=delay)
            finally:
                waiter.cancel()

    async def _tick(self, may_reap: bool) -> None:
        self.ticks += 1
        reap = may_reap and self._steady >= _STEADY_TICKS
        async with self._lock:
            reply = await self._write(sorted(self._held), reap=reap)
        if reply is None:
            return
        self._steady += 1
        # A dead worker without recorded ids keeps its slots until they expire
        # (its last ids may be unwritten): released only after a destroy.
        taken = reply[1]
        due = may_reap and not self._reaping and self.ticks >= self._retry_tick
        retry = sorted(i for i in self._taken if i not in taken) if due else []
        self._taken.update(taken)
        if taken or retry:
            self._held.update(taken)
            self._reaping += 1
            assert self._tasks is not None
            self._tasks.spawn(self._reap(taken, retry), name="scrappey-redis-reap")

    async def _reap(self, taken: dict[str, str], retry: list[str]) -> None:
        assert self._destroy is not None
        _log_taken(taken, self._extra)
        ids = [*sorted(taken), *retry]
        try:
            gone = set(await self._destroy(ids))
        finally:
            self._reaping -= 1
        self._stats.inc_value("scrappey/redis/reaped", len(gone & set(ids)))
        for session_id in gone & set(self._taken):
            self.forget(session_id)
        # A destroy that keeps failing is retried ever less often (warned each
        # time); the dead owners' slots stay pinned meanwhile.
        self._retry_gap = min(self._retry_gap * 2, 64) if self._taken else 1
        self._retry_tick = self.ticks + self._retry_gap

    async def _write(
        self, record: list[str], *, reap: bool = False, live: bool = True
    ) -> tuple[bool, dict[str, str], list[str]] | None:
        """One run of the tick script; ``None`` when Redis failed (retried later)."""
        forget, release = sorted(self._forgotten), sorted(self._release)
        try:
            if self._script is None:
                self._script = self._link.client.register_script(TICK_LUA)
            args = self._args(record, forget, release, reap=reap, live=live)
            call = self._script(keys=ledger_keys(self._link), args=args)
            reply = parse_tick(await _within(command(call), self._call_timeout()))
        except OSError as ex:
            self._failed(ex, record)
            return None
        self._forgotten.difference_update(forget)
        self._release.difference_update(release)
        self._unwritten.difference_update(record)
        self._failures = 0
        if reply[0]:
            self._judged_dead()
        return reply

    def _args(
        self,
        record: list[str],
        forget: list[str],
        release: list[str],
        *,
        reap: bool,
        live: bool,
    ) -> list[str | int]:
        live_ms = round(LIVENESS * self._link.heartbeat * 1000) if live else 0
        return tick_args(
            self.worker_id,
            live_ms,
            reap=reap,
            record=record,
            forget=forget,
            release=release,
            pin=Counter(self._taken.values()),
            pin_ms=round(self._link.slot_ttl * 1000),
        )

    def _call_timeout(self) -> float:
        """Seconds one ledger write may take: well within a tick (see the invariants)."""
        return min(redis_link.COMMAND_TIMEOUT, self._link.heartbeat / 2)

    def _failed(self, error: Exception, record: list[str]) -> None:
        self._unwritten.update(i for i in record if i in self._held)
        self._steady = 0
        if not self._failures:
            logger.info(
                "Redis failed for the shared session ledger (%(error)s): new sessions "
                "are written there once it is back",
                {"error": error},
                extra=self._extra,
            )
        self._failures += 1

    def _judged_dead(self) -> None:
        # Its ids were taken: the sessions are, or soon will be, destroyed.
        self._fence(sorted(i for i in self._held if i not in self._taken))
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "Scrappey: another worker judged this one (%(worker)s) dead: no write to "
            "Redis for %(s)gs (Redis unreachable, or the event loop blocked); it may "
            "have destroyed this worker's sessions. Retiring them: the pools refill.",
            {"worker": self.worker_id, "s": LIVENESS * self._link.heartbeat},
            extra=self._extra,
        )


async def _within(call: Awaitable[T], timeout: float) -> T:
    """Await *call* for *timeout* seconds at most (``ConnectionError`` after).

    Not asyncio.wait_for: before Python 3.12 it can lose a cancel.
    """
    task = asyncio.ensure_future(call)
    try:
        await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ConnectionError(f"Redis: no answer within {timeout:g}s")
    return task.result()


def _log_taken(taken: dict[str, str], extra: dict[str, Any]) -> None:
    by_worker: dict[str, list[str]] = {}
    for session_id, worker in taken.items():
        by_worker.setdefault(worker, []).append(session_id)
    for worker, ids in sorted(by_worker.items()):
        logger.info(
            "Scrappey: worker %(worker)s stopped beating; destroying its %(n)d "
            "session(s): %(ids)s",
            {"worker": worker, "n": len(ids), "ids": ", ".join(sorted(ids)[:10])},
            extra=extra,
        )
