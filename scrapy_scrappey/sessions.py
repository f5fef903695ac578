"""Remote Scrappey sessions: pools, exclusive leases, replacement and teardown.

A :class:`SessionManager` owns every session a crawl creates. Requests lease a
session from a pool (one per spider, per domain, or per name), use it for one
API call and release it. Dead sessions are replaced once however many requests
report them, and everything still open is destroyed by :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .codes import ErrorKind
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAuthError,
    ScrappeyError,
    ScrappeyTransportError,
    SessionsUnavailable,
    SessionWaitTimeout,
)
from .session_api import Ledger, SessionAPI

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from scrapy.statscollectors import StatsCollector

    from .client import ScrappeyClient
    from .config import Config

logger = logging.getLogger(__name__)

#: How many past session ids still map to their pool (for copied meta).
_POOL_MEMORY = 10_000


class SpiderClosing(ScrappeyError):
    """The spider is closing; the request will not be sent."""


@dataclass(eq=False)
class Session:
    """One remote session and its lease bookkeeping."""

    id: str
    pool: str
    last_used: float
    leases: int = 0
    in_flight: int = 0
    #: No new leases; destroyed as soon as nothing uses it.
    retired: bool = False
    dead: bool = False


@dataclass(eq=False)
class _Pool:
    key: str
    size: int
    sessions: list[Session] = field(default_factory=list)
    creating: int = 0
    waiters: deque[asyncio.Future[Session]] = field(default_factory=deque)
    error: ScrappeyError | None = None

    def live(self) -> int:
        return sum(not s.retired for s in self.sessions)


class SessionManager:
    """Creates, leases, replaces and destroys the sessions of one crawl."""

    def __init__(
        self,
        config: Config,
        client: ScrappeyClient,
        stats: StatsCollector,
        *,
        ledger: Ledger | None = None,
        on_fatal: Callable[[str, str], None],
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._config = config
        self._stats = stats
        self._on_fatal = on_fatal
        self._extra = extra or {}
        self._api = SessionAPI(config, client, stats, ledger=ledger, extra=self._extra)
        self._pools: dict[str, _Pool] = {}
        self._open: dict[str, Session] = {}  # created and not yet destroyed
        self._pool_by_id: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._capacity = asyncio.Event()
        self._closing = False
        self._admitted = 0  # creates let through by SCRAPPEY_MAX_SESSIONS
        self._destroying: set[str] = set()
        # Destroys that failed for good: out of the cap's count, retried at close.
        self._undestroyed: dict[str, Session] = {}

    # -- public API ---------------------------------------------------------

    def pool_of(self, session_id: str) -> str | None:
        """The pool a session id belonged to, so copied meta keeps its pool."""
        return self._pool_by_id.get(session_id)

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def start(self, pool_keys: list[str]) -> None:
        """Create the initial pools concurrently; raise if one cannot be filled."""
        cap = self._config.max_sessions
        fit = max(1, cap // self._pool_size()) if cap else len(pool_keys)
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

    async def lease(self, pool_key: str) -> Session:
        """Wait (in order, bounded) for a free session of *pool_key*."""
        if self._closing:
            raise SpiderClosing("the spider is closing")
        pool = self._pool(pool_key)
        session = self._pick(pool)
        if session is not None and not pool.waiters:
            return self._grant(session)
        self._fill(pool)
        if pool.error is not None and not pool.live() and not pool.creating:
            raise pool.error
        return await self._wait(pool)

    def release(self, session: Session) -> None:
        session.in_flight -= 1
        session.last_used = time.monotonic()
        if session.retired and not session.in_flight and not session.dead:
            self._destroy_soon(session)
        self._capacity.set()
        pool = self._pools.get(session.pool)
        if pool is not None:
            self._dispatch(pool)

    def report_dead(self, session: Session, reason: str) -> None:
        """Replace a session the API says is gone; later reports are no-ops."""
        if session.dead:
            return
        session.dead = session.retired = True
        self._stats.inc_value("scrappey/sessions/recreated")
        logger.info(
            "Scrappey session %(session)s is gone (%(reason)s); replacing it",
            {"session": session.id, "reason": reason},
            extra=self._extra,
        )
        self._destroy_soon(session)
        pool = self._pools.get(session.pool)
        if pool is not None:
            self._fill(pool)

    def abort_waiters(self) -> None:
        """Fail every waiting lease at once: the spider is closing."""
        self._closing = True
        for task in list(self._tasks):
            if task.get_name().startswith("scrappey-create"):
                task.cancel()
        for pool in self._pools.values():
            self._fail_waiters(pool, SpiderClosing("the spider is closing"))

    async def close(self) -> None:
        """Destroy every session this crawl created, within ``close_timeout``."""
        self.abort_waiters()
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._open.update(self._undestroyed)  # one more try for earlier failures
        self._undestroyed.clear()
        work = [self._destroy(s) for s in list(self._open.values())]
        await _bounded([*work, self._api.settle()], self._config.close_timeout)
        leaked = [*self._open, *self._undestroyed, *self._api.unsettled_ids()]
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

    async def destroy_ids(self, session_ids: list[str]) -> list[str]:
        """Destroy sessions by id (orphans of a dead run); return those destroyed."""
        return await self._api.destroy_many(session_ids)

    # -- leasing -------------------------------------------------------------

    def _pool(self, key: str) -> _Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(key, self._pool_size())
        return pool

    def _pool_size(self) -> int:
        cap = self._config.max_sessions
        return min(self._config.pool_size, cap) if cap else self._config.pool_size

    def _pick(self, pool: _Pool) -> Session | None:
        best: Session | None = None
        for session in list(pool.sessions):
            if session.retired or session.in_flight >= self._config.session_concurrency:
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
        ttl = self._config.session_idle_ttl
        if not ttl or session.in_flight or time.monotonic() - session.last_used <= ttl:
            return False
        # The server may already have closed it; replace it before use.
        self._stats.inc_value("scrappey/sessions/expired_idle")
        self._retire(session)
        return True

    def _grant(self, session: Session) -> Session:
        session.in_flight += 1
        session.leases += 1
        limit = self._config.session_max_requests
        if limit and session.leases >= limit:
            self._stats.inc_value("scrappey/sessions/rotated")
            self._retire(session)
        return session

    def _retire(self, session: Session) -> None:
        session.retired = True
        pool = self._pools.get(session.pool)
        if not session.in_flight:
            self._destroy_soon(session)
        if pool is not None:
            self._fill(pool)

    async def _wait(self, pool: _Pool) -> Session:
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        pool.waiters.append(future)
        self._dispatch(pool)
        try:
            done, _ = await asyncio.wait(
                {future}, timeout=self._config.session_wait_timeout
            )
        except BaseException:
            self._abandon(pool, future)
            raise
        if not done:
            self._abandon(pool, future)
            raise SessionWaitTimeout(
                f"no Scrappey session of pool {pool.key!r} became free within "
                f"SCRAPPEY_SESSION_WAIT_TIMEOUT ({self._config.session_wait_timeout:g}s)"
            )
        return future.result()

    def _abandon(self, pool: _Pool, future: asyncio.Future[Session]) -> None:
        if future.done() and not future.cancelled() and future.exception() is None:
            self.release(future.result())  # granted just as we gave up
        else:
            future.cancel()
        if future in pool.waiters:
            pool.waiters.remove(future)

    def _dispatch(self, pool: _Pool) -> None:
        while pool.waiters:
            if pool.waiters[0].done():
                pool.waiters.popleft()
                continue
            session = self._pick(pool)
            if session is None:
                return
            pool.waiters.popleft().set_result(self._grant(session))

    def _fail_waiters(self, pool: _Pool, error: ScrappeyError) -> None:
        while pool.waiters:
            future = pool.waiters.popleft()
            if not future.done():
                future.set_exception(error)

    async def _wait_ready(self, pool: _Pool) -> None:
        while not pool.live():
            if pool.error is not None and not pool.creating:
                raise pool.error
            if self._closing:
                raise SpiderClosing("the spider is closing")
            self._capacity.clear()
            await self._capacity.wait()

    # -- creation ------------------------------------------------------------

    def _fill(self, pool: _Pool) -> None:
        if self._closing:
            return
        missing = pool.size - pool.live() - pool.creating
        for _ in range(max(0, missing)):
            pool.creating += 1
            self._spawn(self._create(pool), name=f"scrappey-create-{pool.key}")

    async def _create(self, pool: _Pool) -> None:
        try:
            session = await self._create_with_retries(pool)
        except asyncio.CancelledError:
            raise
        except ScrappeyAuthError as ex:
            self._creation_failed(pool, ex, "scrappey_bad_api_key")
        except ScrappeyError as ex:
            self._creation_failed(pool, ex, "scrappey_sessions_unavailable")
        except Exception as ex:  # a bug or the disk: fail loudly, never hang
            logger.exception(
                "Unexpected error creating a Scrappey session", extra=self._extra
            )
            error = SessionsUnavailable(f"unexpected error creating a session: {ex!r}")
            self._creation_failed(pool, error, "scrappey_sessions_unavailable")
        else:
            pool.error = None
            pool.sessions.append(session)
            self._dispatch(pool)
        finally:
            pool.creating -= 1
            self._capacity.set()

    def _creation_failed(self, pool: _Pool, error: ScrappeyError, reason: str) -> None:
        if pool.live() or pool.creating > 1:
            return  # the pool still has (or will have) sessions to work with
        if not isinstance(error, (SessionsUnavailable, ScrappeyAuthError)):
            error = SessionsUnavailable(str(error))
        pool.error = error
        self._fail_waiters(pool, error)
        self._on_fatal(
            reason,
            f"could not create a Scrappey session for pool {pool.key!r}: {error}",
        )

    async def _create_with_retries(self, pool: _Pool) -> Session:
        attempts = self._config.create_attempts
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._api.backoff(attempt))
            try:
                async with self._room():
                    return await self._create_once(pool)
            except (ScrappeyTransportError, ScrappeyAPIError) as ex:
                last = ex
                self._stats.inc_value("scrappey/sessions/create_failed")
                if isinstance(ex, ScrappeyTransportError):
                    # It may have been created before the connection broke.
                    self._spawn(self._api.destroy_uncertain(), name="scrappey-destroy")
                if isinstance(ex, ScrappeyAPIError) and ex.kind is ErrorKind.CONFIG:
                    raise SessionsUnavailable(
                        f"sessions.create was refused ({ex}); check SCRAPPEY_SESSION_PARAMS"
                    ) from ex
                if (
                    isinstance(ex, ScrappeyAPIError)
                    and ex.kind is ErrorKind.SESSION_LIMIT
                ):
                    self._stats.inc_value("scrappey/sessions/over_limit")
                    self._evict()
                logger.warning(
                    "sessions.create failed for pool %(pool)r (attempt %(n)d of %(of)d): %(error)s",
                    {"pool": pool.key, "n": attempt + 1, "of": attempts, "error": ex},
                    extra=self._extra,
                )
        raise SessionsUnavailable(
            f"{attempts} sessions.create attempt(s) failed "
            f"(SCRAPPEY_SESSION_CREATE_ATTEMPTS); last error: {last}"
        )

    async def _create_once(self, pool: _Pool) -> Session:
        session_id = await self._api.create()
        session = Session(session_id, pool.key, last_used=time.monotonic())
        self._open[session_id] = session
        self._pool_by_id[session_id] = pool.key
        if len(self._pool_by_id) > _POOL_MEMORY:
            self._pool_by_id.popitem(last=False)
        logger.debug(
            "Created Scrappey session %(session)s for pool %(pool)r",
            {"session": session_id, "pool": pool.key},
            extra=self._extra,
        )
        return session

    @contextlib.asynccontextmanager
    async def _room(self) -> AsyncIterator[None]:
        """Honour SCRAPPEY_MAX_SESSIONS: wait for room, evicting one session at a time."""
        cap = self._config.max_sessions
        while cap and len(self._open) + self._admitted >= cap:
            # One eviction at a time: room appears when its destroy completes.
            if not any(s.retired for s in self._open.values()):
                self._evict()
            self._capacity.clear()
            await self._capacity.wait()
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1
            self._capacity.set()

    def _evict(self) -> bool:
        """Retire the least recently used session to make room for another pool.

        An idle one is destroyed at once; a busy one when its lease ends, since
        a busy pool would otherwise keep the room for ever.
        """
        candidates = [s for s in self._open.values() if not s.retired]
        if not candidates:
            return False
        victim = min(candidates, key=lambda s: (s.in_flight > 0, s.last_used))
        self._stats.inc_value("scrappey/sessions/evicted")
        victim.retired = True
        if not victim.in_flight:
            self._destroy_soon(victim)
        pool = self._pools.get(victim.pool)
        if pool is not None and pool.waiters:
            self._fill(pool)  # its waiters compete for room like everybody else
        return True

    # -- destruction ---------------------------------------------------------

    def _destroy_soon(self, session: Session) -> None:
        pool = self._pools.get(session.pool)
        if pool is not None and session in pool.sessions:
            pool.sessions.remove(session)
        if (
            session.id in self._open
            and session.id not in self._destroying
            and not self._closing
        ):
            self._destroying.add(session.id)
            self._spawn(self._destroy(session), name="scrappey-destroy")

    async def _destroy(self, session: Session) -> None:
        gone = False
        try:
            gone = await self._api.destroy(session.id)
        finally:
            self._destroying.discard(session.id)
            if gone or not self._closing:
                # Failed for good: out of the cap's count, retried at close.
                self._open.pop(session.id, None)
                if not gone:
                    self._undestroyed[session.id] = session
            self._capacity.set()

    # -- background tasks ----------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "Unexpected error in Scrappey session task %(name)s",
                {"name": task.get_name()},
                exc_info=task.exception(),
                extra=self._extra,
            )


async def _bounded(coros: list[Coroutine[Any, Any, Any]], timeout: float) -> None:
    """Run *coros* concurrently; cancel what is still running after *timeout*."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
