"""Remote Scrappey sessions: pools, exclusive leases, replacement and teardown.

A :class:`SessionManager` owns every session a crawl creates. Requests lease a
session from a pool (one per spider, per domain, or per name), use it for one
API call and release it. Dead sessions are replaced once however many requests
report them, and everything still open is destroyed by :meth:`close`. A
session unfit for use (a failed check, too many errors, a failed init) is
retired with :meth:`retire`. An optional ``prepare`` coroutine (the session
init) runs on every new session before it joins its pool. A pool's own
settings (``SCRAPPEY_SESSION_POOLS`` over the global ones: size, concurrency,
create parameters, rotation, idle TTL, error budget) are resolved once, when
the pool is made, and read from ``pool.settings``. A lease may ask for one
session by id (affinity, ``_affinity.py``): it gets that session, or the one
that replaced it.

The work is split by seam, each module stating its invariants: pools and
leases (state and invariants in ``_pools.py``, the logic here), creating one
session with retries (``_creation.py``), filling pools with new sessions:
refill, init, joining and failure (``_filling.py``), and the open sessions
under SCRAPPEY_MAX_SESSIONS with eviction and destruction (``_cap.py``), and,
with Redis, the sessions recorded per worker (``shared_ledger.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from . import _affinity
from ._cap import SessionCap
from ._creation import SessionCreator
from ._filling import PoolFilling
from ._pool_stats import PoolStats
from ._pools import Pool, Session
from ._tasks import TaskGroup
from ._waiters import WaiterQueue
from .exceptions import (
    SessionWaitTimeout,
    SpiderClosing,
)
from .session_api import Ledger, SessionAPI
from .shared_ledger import SharedLedger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from scrapy.statscollectors import StatsCollector

    from .client import ScrappeyClient
    from .config import Config
    from .pool_config import PoolSettings
    from .redis_link import RedisLink

__all__ = ["Session", "SessionManager"]

logger = logging.getLogger(__name__)


class SessionManager(PoolFilling):
    """Creates, leases, replaces and destroys the sessions of one crawl."""

    def __init__(
        self,
        config: Config,
        client: ScrappeyClient,
        stats: StatsCollector,
        *,
        ledger: Ledger | None = None,
        on_fatal: Callable[[str, str], None],
        prepare: Callable[[Session], Awaitable[bool]] | None = None,
        extra: dict[str, Any] | None = None,
        shared: RedisLink | None = None,
    ) -> None:
        self._config = config
        self._prepare = prepare
        self._stats = stats
        self._pool_stats = PoolStats(
            stats, per_pool=config.session_pools.stats_per_pool
        )
        self._on_fatal = on_fatal
        self._extra = extra or {}
        self._tasks = TaskGroup(extra=self._extra)
        self._shared = (
            SharedLedger(shared, stats, extra=self._extra) if shared else None
        )
        self._api = SessionAPI(
            config,
            client,
            stats,
            ledger=ledger,
            extra=self._extra,
            worker_id=shared.worker_id if shared else None,
            shared=self._shared,
        )
        self._cap = SessionCap(
            config,
            self._api,
            stats,
            self._tasks,
            on_evict=self._evicted,
            extra=self._extra,
            shared=shared,
        )
        self._creator = SessionCreator(
            config, self._api, self._cap, stats, self._tasks, extra=self._extra
        )
        self._pools: dict[str, Pool] = {}
        self._known: OrderedDict[str, Session] = OrderedDict()
        self._closing = False

    # -- public API ---------------------------------------------------------

    def pool_of(self, session_id: str) -> str | None:
        """The pool of a session this crawl created (``None``: not one of them)."""
        session = self._known.get(session_id)
        return None if session is None else session.pool

    async def start(self, pool_keys: list[str]) -> None:
        """Create the initial pools concurrently; raise if one cannot be filled."""
        self._cap.start()
        if self._shared is not None:
            self._shared.start(self._tasks, self.destroy_ids, self._fenced)
        cap = self._config.max_sessions
        fit = self._fitting(pool_keys) if cap else len(pool_keys)
        if len(pool_keys) > fit:
            logger.info(
                "SCRAPPEY_MAX_SESSIONS (%(cap)d) leaves room for %(fit)d of %(n)d pools "
                "at start; the others are created on first use",
                {"cap": cap, "fit": fit, "n": len(pool_keys)},
                extra=self._extra,
            )
            pool_keys = pool_keys[:fit]
        for key in pool_keys:
            self._fill(self._pool(key))
        results = await asyncio.gather(
            *(self._wait_ready(self._pool(key)) for key in pool_keys),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def lease(self, pool_key: str, session_id: str | None = None) -> Session:
        """Wait, in arrival order, for a free session of *pool_key*.

        With *session_id* (a session of that pool this crawl created), wait
        for that session instead, or for the one that replaced it once it has
        joined the pool; when no replacement is under way, for any session of
        the pool. The caller compares the ids to tell. The wait has no bound
        unless ``SCRAPPEY_SESSION_WAIT_TIMEOUT`` is set (then
        :class:`SessionWaitTimeout`); closing ends it with SpiderClosing.
        """
        if self._closing:
            raise SpiderClosing
        pool = self._pool(pool_key)
        start = self._known.get(session_id) if session_id else None
        if start is not None and start.pool == pool.key:
            if _affinity.latest(start).retired:
                self._fill(pool)  # so that its replacement is under way if it can be
            queue = _affinity.queue_for(pool, start, lambda: self._queue(pool, start))
            if queue is not None:
                return await self._wait(queue, f"session {start.id}")
        session = self._pick(pool)
        if session is not None and not pool.waiters.waiting():
            return self._grant(session)
        self._fill(pool)
        if pool.error is not None and not pool.live() and not pool.creating:
            raise pool.error
        return await self._wait(pool.waiters, f"session of pool {pool.key!r}")

    def release(self, session: Session) -> None:
        """End one lease of *session*."""
        session.in_flight -= 1
        session.last_used = time.monotonic()
        if session.retired and not session.in_flight and not session.dead:
            self._discard(session)
        self._cap.notify()
        pool = self._pools.get(session.pool)
        if pool is not None:
            _affinity.serve(pool, session)

    def report_dead(self, session: Session, reason: str) -> None:
        """Replace a session the API says is gone; later reports are no-ops."""
        if session.dead:
            return
        self._mark_retired(session)
        session.dead = True
        self._pool_stats.inc("scrappey/sessions/recreated", session.pool)
        logger.info(
            "Scrappey session %(session)s is gone (%(reason)s); replacing it",
            {"session": session.id, "reason": reason},
            extra=self._extra,
        )
        self._discard(session)
        pool = self._pools.get(session.pool)
        if pool is not None:
            self._fill(pool)

    def retire(self, session: Session, reason: str) -> None:
        """Replace a session unfit for use (*reason*: check, errors, init…).

        Call it before releasing the lease, so that no waiter gets the
        session; it is destroyed once its last lease ends and its pool filled
        again (with init). Counted as ``scrappey/sessions/retired/<reason>``.
        """
        if session.retired:
            return
        self._pool_stats.inc(f"scrappey/sessions/retired/{reason}", session.pool)
        logger.info(
            "Retiring Scrappey session %(session)s (%(reason)s)",
            {"session": session.id, "reason": reason},
            extra=self._extra,
        )
        self._retire(session)

    def report_error(self, session: Session) -> None:
        """Count a session-bound API error; retire the session at its pool's ``max_errors``."""
        session.errors += 1
        if session.errors >= self._settings_of(session).max_errors:
            self.retire(session, "errors")

    def abort_waiters(self) -> None:
        """Fail every waiting lease at once: the spider is closing."""
        self._closing = True
        self._cap.begin_close()
        self._tasks.cancel("scrappey-create")
        for pool in self._pools.values():
            self._fail_waiters(pool, SpiderClosing())

    async def close(self) -> None:
        """Destroy every session this crawl created, within ``close_timeout``."""
        self.abort_waiters()
        if self._shared is not None:
            self._shared.stop()
        await self._tasks.close()
        if self._shared is None:
            await self._cap.close()
            return
        try:
            async with self._shared.kept():  # peers must not reap a closing worker
                timeout = self._config.close_timeout
                closing = self._cap.close(), self._shared.destroy_taken(timeout)
                failed = await asyncio.gather(*closing, return_exceptions=True)
        finally:
            await self._shared.close()  # leave, whatever happened above
        for error in failed:
            if isinstance(error, BaseException):
                raise error

    async def destroy_ids(self, session_ids: list[str]) -> list[str]:
        """Destroy sessions by id (orphans of a dead run); return those destroyed."""
        return await self._api.destroy_many(session_ids, orphans=True)

    def _fenced(self, session_ids: list[str]) -> None:
        """Retire the sessions a peer took: this worker was judged dead."""
        for session_id in session_ids:
            session = self._known.get(session_id)
            if session is not None:
                self.retire(session, "judged_dead")

    # -- leasing -------------------------------------------------------------

    def _pool(self, key: str) -> Pool:
        if key in self._pools:
            return self._pools[key]
        settings = self._config.pool_settings(key)
        pool = self._pools[key] = Pool(key, settings.size, settings)
        pool.waiters = WaiterQueue(lambda: self._take(pool), self.release)
        return pool

    def _fitting(self, pool_keys: list[str]) -> int:
        """How many of the first *pool_keys* fill up within SCRAPPEY_MAX_SESSIONS (at least 1)."""
        room, fit = self._config.max_sessions, 0
        for key in pool_keys:
            room -= self._pool(key).size
            if room < 0:
                break
            fit += 1
        return max(1, fit)

    def _settings_of(self, session: Session) -> PoolSettings:
        return self._pools[session.pool].settings

    def _take(self, pool: Pool) -> Session | None:
        session = self._pick(pool)
        return None if session is None else self._grant(session)

    def _queue(self, pool: Pool, start: Session) -> WaiterQueue[Session]:
        """A queue for the leases of *start*, or of whatever replaced it."""
        return WaiterQueue(lambda: self._take_exact(start), self.release)

    def _take_exact(self, start: Session) -> Session | None:
        session = _affinity.latest(start)
        if (
            session.retired
            or session.in_flight >= self._settings_of(session).concurrency
        ):
            return None
        if self._idle_too_long(session):
            return None  # retired: the waiters now wait for its replacement
        return self._grant(session)

    async def _wait(self, queue: WaiterQueue[Session], what: str) -> Session:
        timeout = self._config.session_wait_timeout or None
        try:
            return await queue.wait(timeout)
        except TimeoutError:
            raise SessionWaitTimeout(
                f"no Scrappey {what} became free within "
                f"SCRAPPEY_SESSION_WAIT_TIMEOUT ({timeout:g}s)"
            ) from None

    def _fail_waiters(self, pool: Pool, error: BaseException) -> None:
        for queue in _affinity.queues(pool):
            queue.fail_all(error)

    def _pick(self, pool: Pool) -> Session | None:
        best: Session | None = None
        for session in list(pool.sessions):
            if session.retired or session.in_flight >= pool.settings.concurrency:
                continue
            if self._idle_too_long(session):
                continue
            if best is None or (session.in_flight, session.last_used) < (
                best.in_flight,
                best.last_used,
            ):
                best = session
        return best

    def _idle_too_long(self, session: Session) -> bool:
        ttl = self._settings_of(session).idle_ttl
        if not ttl or session.in_flight or time.monotonic() - session.last_used <= ttl:
            return False
        # The server may already have closed it; replace it before use.
        self._pool_stats.inc("scrappey/sessions/expired_idle", session.pool)
        self._retire(session)
        return True

    def _grant(self, session: Session) -> Session:
        session.in_flight += 1
        session.leases += 1
        limit = self._settings_of(session).max_requests
        if limit and session.leases >= limit:
            self._pool_stats.inc("scrappey/sessions/rotated", session.pool)
            self._retire(session)
        return session

    def _mark_retired(self, session: Session) -> None:
        pool = self._pools.get(session.pool)
        if pool is not None and not session.retired:
            _affinity.note_retired(pool, session)
        session.retired = True

    def _retire(self, session: Session, *, refill: bool = True) -> None:
        self._mark_retired(session)
        if not session.in_flight:
            self._discard(session)
        pool = self._pools.get(session.pool)
        if pool is not None and (refill or _affinity.waited_for(pool, session)):
            self._fill(pool)

    def _evicted(self, session: Session) -> None:
        # The room is wanted by another pool: refill only for waiters, who then
        # compete for room like everybody else.
        self._retire(session, refill=False)

    def _discard(self, session: Session) -> None:
        pool = self._pools.get(session.pool)
        if pool is not None and session in pool.sessions:
            pool.sessions.remove(session)
        self._cap.destroy_soon(session)

    async def _wait_ready(self, pool: Pool) -> None:
        while not pool.live():
            if pool.error is not None and not pool.creating:
                raise pool.error
            if self._closing:
                raise SpiderClosing
            await self._cap.wait_change()
