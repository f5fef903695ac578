"""The open sessions of a crawl: the SCRAPPEY_MAX_SESSIONS cap, eviction, destruction.

Invariants (the cap and close logic needed three fixes; these are what hold it):

* Counted against the cap: every session in ``_open`` (its create was confirmed,
  its destroy was not; retired ones and those being destroyed included) plus
  every create admitted by :meth:`SessionCap.room` that has not left it yet
  (``_admitted``). A create is admitted only while ``len(_open) + _admitted``
  is under the cap, so the cap is never exceeded; a new session is counted
  twice for the instant between its confirmation and leaving ``room()``, never
  zero times.
* A session leaves ``_open`` once the API confirmed its destroy (or said it does
  not exist), or, before close, once its destroy failed for good: it then waits
  in ``_undestroyed``, out of the cap's count so that a failing destroy cannot
  hold room for ever, and is tried once more by :meth:`SessionCap.close`.
* At most one destroy per session runs (``_destroying``), and none is started
  once closing begins: :meth:`SessionCap.close` destroys everything itself.
* At most one eviction is pending: ``room()`` evicts only when no retired
  session is still counted. A session under init (``preparing``) is counted
  but never evicted: its init ends, and it either joins its pool or is
  retired and destroyed. Its room appears when that session's destroy ends,
  which always happens: a retired session is destroyed as soon as its last
  lease ends (see ``_pools.py``) and a destroy ends within its attempts.
* ``_changed`` is set whenever the count may have dropped or a create ended;
  a waiter clears it and re-checks its condition after every wake-up.
* :meth:`SessionCap.close` destroys every session in ``_open`` and
  ``_undestroyed`` and whatever abandoned creates may have made, within
  ``SCRAPPEY_CLOSE_TIMEOUT``; what is left is counted as leaked, logged, and
  stays in the ledger for the next crawl or the CLI.

With ``SCRAPPEY_REDIS_URL`` (``shared``, see ``redis_link.py``) the cap is the
account's, over every worker sharing the Redis:

* A create is admitted only once Redis accepted this worker's count plus one
  (a claim: the other live workers' total plus it within the cap), on top of
  the local rule above; the claim and ``_admitted += 1`` run without an await
  between them, so what Redis holds for this worker is never below the
  sessions it has open or being created.
* Every Redis write of this worker holds ``_redis_lock`` and reads the count
  under it, just before sending, and carries a sequence number that Redis
  checks: writes cannot overtake one another with stale counts, even when one
  timed out here and still runs there. A drop in the count schedules one write (``_sync_due``); the
  heartbeat rewrites the count every ``SCRAPPEY_REDIS_HEARTBEAT``, which also
  repairs any write lost to a Redis outage, and keeps the slots alive (they
  expire after three missed heartbeats: a dead worker's slots free themselves).
* Redis restarted empty: the others' counts are missing there until their next
  heartbeat. A worker that saw the state's epoch (``redis_link.py``) and finds
  it gone starts a grace of one slot TTL in Redis, during which every claim is
  refused (``RedisLink.rebuilding``): creates wait, never evict, while every
  live worker's heartbeat writes its count back. A worker that starts then
  (it saw no epoch) cannot tell; the first one that saw it starts the grace.
* Peers holding the rest of the cap make a create wait (polling Redis), except
  the first session of a pool while this worker has an idle session of another
  pool: that one is evicted (least recently used, as the local cap does), so
  workers that each hold idle sessions while waiting for a new pool (domain
  scope over many domains) cannot deadlock. A worker never evicts another's
  sessions. A Redis failure also makes a create wait, with back-off; what is
  already open keeps serving.
* No create is admitted once the close began (``_closing``): the close cancels
  the creates, and :meth:`SessionCap.room` also ends them itself, before each
  claim and before admitting, because a cancel can be lost. Before Python 3.12
  ``asyncio.wait_for`` drops a cancel that comes as its wait ends; redis-py
  uses it, and ``_wait_peers`` must not.
* A worker's slots outlive its sessions: :meth:`SessionCap.close` runs the
  heartbeat while it destroys them (the crawl's tasks, the heartbeat among
  them, are cancelled first), then writes the final count. Slots expired
  while sessions still exist would let peers create past the account's cap.
  Each heartbeat also stops by itself once its flag says so, lest a lost
  cancel keep it (and the close waiting for it) going for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from scrapy.statscollectors import StatsCollector

    from ._pools import Session
    from ._tasks import TaskGroup
    from .config import Config
    from .redis_link import RedisLink
    from .session_api import SessionAPI

logger = logging.getLogger(__name__)

#: Seconds between two claims while the other workers hold the rest of the cap.
PEER_POLL = 0.25
#: The longest wait between two tries while Redis fails.
_REDIS_BACKOFF_MAX = 5.0


class SessionCap:
    """Counts open sessions, makes room under the cap, destroys sessions."""

    def __init__(
        self,
        config: Config,
        api: SessionAPI,
        stats: StatsCollector,
        tasks: TaskGroup,
        *,
        on_evict: Callable[[Session], None],
        extra: dict[str, Any],
        shared: RedisLink | None = None,
    ) -> None:
        self._config = config
        self._api = api
        self._stats = stats
        self._tasks = tasks
        self._on_evict = on_evict
        self._extra = extra
        self._open: dict[str, Session] = {}
        self._admitted = 0
        self._destroying: set[str] = set()
        self._undestroyed: dict[str, Session] = {}
        self._changed = asyncio.Event()
        self._closing = False
        self._shared = shared
        self._redis_lock = asyncio.Lock()
        self._sync_due = False
        self._redis_failures = 0

    def add(self, session: Session) -> None:
        """Count a session whose create the API confirmed (inside ``room()``)."""
        self._open[session.id] = session

    def notify(self) -> None:
        """Wake whoever waits for room or for a pool to fill."""
        self._changed.set()

    async def wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    @contextlib.asynccontextmanager
    async def room(self, pool: str | None = None) -> AsyncIterator[None]:
        """Admit one create (for *pool*) under SCRAPPEY_MAX_SESSIONS, evicting one
        session at a time."""
        cap = self._config.max_sessions
        while cap and not await self._claim(cap):
            # Redis down: wait for it rather than evict on a count not read.
            if self._count() < cap and (
                self._redis_waits() or not self._idle_elsewhere(pool)
            ):
                await self._wait_peers()
                continue
            if not any(s.retired for s in self._open.values()):
                self.evict()
            await self.wait_change()
        self._admit()
        try:
            yield
        finally:
            self._admitted -= 1
            self.notify()
            self._release()

    def _redis_waits(self) -> bool:
        """Whether Redis fails or rebuilds its counts: wait for it, never evict."""
        return bool(self._redis_failures) or bool(
            self._shared is not None and self._shared.rebuilding
        )

    def _count(self) -> int:
        return len(self._open) + self._admitted

    def _admit(self) -> None:
        self._stop_if_closing()
        self._admitted += 1

    def _stop_if_closing(self) -> None:
        """End a create once the close began, even if its task's cancel was lost."""
        if self._closing:
            # A cancel can be lost: redis-py's asyncio.wait_for drops one that
            # comes as a send ends (Python < 3.12). The create would go on
            # claiming, and close() would wait for it while the slots expire.
            raise asyncio.CancelledError("the Scrappey sessions are closing")

    def _idle_elsewhere(self, pool: str | None) -> bool:
        """Whether *pool* has no session here while another pool has an idle one.

        Then the peers' share of the cap is no reason to wait: evicting that
        idle session (this worker's own) makes room. Filling a pool that has
        a session already never evicts for peers, or pools would churn.
        """
        live = [s for s in self._open.values() if not s.retired]
        if pool is None or any(s.pool == pool for s in live):
            return False
        return any(not s.preparing and not s.in_flight for s in live)

    def start(self) -> None:
        """Start the heartbeat that keeps this worker's shared slots alive."""
        if self._shared is not None:
            self._tasks.spawn(
                self._heartbeat(lambda: self._closing), name="scrappey-redis-heartbeat"
            )

    async def _claim(self, cap: int) -> bool:
        """Whether one more create fits, locally and (when shared) account-wide."""
        self._stop_if_closing()
        if self._count() >= cap:
            return False
        if self._shared is None:
            return True
        async with self._redis_lock:
            if self._count() >= cap:
                return False
            return bool(await self._write(self._count() + 1, cap))

    async def _wait_peers(self) -> None:
        """Wait for the other workers to free a slot, or for Redis to come back."""
        delay = PEER_POLL
        if self._redis_failures:
            delay = min(PEER_POLL * 2**self._redis_failures, _REDIS_BACKOFF_MAX)
        # Not asyncio.wait_for: before Python 3.12 it loses a cancel that comes
        # once the wait is over (a notify() just before a close), and the
        # create would go on claiming while its worker closes.
        changed = asyncio.ensure_future(self.wait_change())
        try:
            await asyncio.wait({changed}, timeout=delay)
        finally:
            changed.cancel()

    def _release(self) -> None:
        """Tell Redis this worker's count dropped (one write for many drops)."""
        if self._shared is not None and not (self._sync_due or self._closing):
            self._sync_due = True
            self._tasks.spawn(self._sync(), name="scrappey-redis-sync")

    async def _sync(self) -> None:
        async with self._redis_lock:
            self._sync_due = False
            await self._write(self._count(), 0)

    async def _heartbeat(self, done: Callable[[], bool]) -> None:
        """Rewrite this worker's count until *done*: its cancel may be lost too."""
        assert self._shared is not None
        while not done():
            async with self._redis_lock:
                await self._write(self._count(), 0)
            if not done():
                await asyncio.sleep(
                    self._shared.heartbeat
                    if not self._redis_failures
                    else min(PEER_POLL * 2**self._redis_failures, _REDIS_BACKOFF_MAX)
                )

    async def _write(self, count: int, cap: int) -> bool | None:
        """Claim (*cap*) or set this worker's count; ``None`` when Redis failed."""
        assert self._shared is not None
        try:
            if cap:
                written = await self._shared.claim(count, cap)
            else:
                await self._shared.sync(count)
                written = True
        except OSError as ex:
            self._redis_failed(ex)
            return None
        if self._redis_failures:
            self._redis_failures = 0
            logger.warning(
                "Redis is back: sharing the session cap again", extra=self._extra
            )
        return written

    def _redis_failed(self, error: OSError) -> None:
        if not self._redis_failures:
            self._stats.inc_value("scrappey/redis/lost")
            logger.warning(
                "Redis (SCRAPPEY_REDIS_URL) failed: %(error)s; retrying with back-off. "
                "Open sessions keep serving; new ones wait for Redis.",
                {"error": error},
                extra=self._extra,
            )
        self._redis_failures += 1

    def evict(self) -> bool:
        """Retire the least recently used session to make room for another pool.

        An idle one is preferred; a busy one is destroyed when its lease ends,
        since a busy pool would otherwise keep the room for ever.
        """
        candidates = [
            s for s in self._open.values() if not s.retired and not s.preparing
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda s: (s.in_flight > 0, s.last_used))
        self._stats.inc_value("scrappey/sessions/evicted")
        self._on_evict(victim)
        return True

    def destroy_soon(self, session: Session) -> None:
        """Destroy *session* in the background, unless already under way or closing."""
        if (
            session.id in self._open
            and session.id not in self._destroying
            and not self._closing
        ):
            self._destroying.add(session.id)
            self._tasks.spawn(self._destroy(session), name="scrappey-destroy")

    def begin_close(self) -> None:
        """Start no more destroys: :meth:`close` does them all."""
        self._closing = True

    async def close(self) -> None:
        """Destroy every session still open, within ``close_timeout``."""
        self._closing = True
        self._open.update(self._undestroyed)  # one more try for earlier failures
        self._undestroyed.clear()
        work = [self._destroy(s) for s in list(self._open.values())]
        async with self._slots_kept():
            await _bounded([*work, self._api.settle()], self._config.close_timeout)
        leaked = [*self._open, *self._undestroyed, *self._api.unsettled_ids()]
        if self._shared is not None and self._shared.is_open:
            # The leaked ones still hold their slots until their TTL ends.
            await _bounded([self._sync()], self._config.close_timeout)
        if leaked:
            self._stats.inc_value("scrappey/sessions/leaked", len(leaked))
            logger.error(
                "Could not destroy %(n)d Scrappey session(s) within SCRAPPEY_CLOSE_TIMEOUT "
                "(%(timeout)gs): %(ids)s. They stay in the session ledger; the next crawl "
                "or `python -m scrapy_scrappey sessions cleanup` destroys them.",
                {
                    "n": len(leaked),
                    "timeout": self._config.close_timeout,
                    "ids": ", ".join(leaked[:10]),
                },
                extra=self._extra,
            )

    @contextlib.asynccontextmanager
    async def _slots_kept(self) -> AsyncIterator[None]:
        """Run the heartbeat (cancelled with the other tasks) inside the block."""
        if self._shared is None or not self._shared.is_open:
            yield
            return
        done = False
        beat = asyncio.ensure_future(self._heartbeat(lambda: done))
        try:
            yield
        finally:
            done = True
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def _destroy(self, session: Session) -> None:
        gone = False
        try:
            gone = await self._api.destroy(session.id, pool=session.pool)
        finally:
            self._destroying.discard(session.id)
            if gone or not self._closing:
                self._open.pop(session.id, None)
                if not gone:
                    self._undestroyed[session.id] = session
            self.notify()
            self._release()


async def _bounded(coros: list[Coroutine[Any, Any, Any]], timeout: float) -> None:
    """Run *coros* concurrently; cancel what is still running after *timeout*."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
