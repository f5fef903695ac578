"""Creating sessions into pools: refill, init, joining and failure.

:class:`PoolFilling` is the half of :class:`~.sessions.SessionManager` that
fills pools: it starts a create for every missing session, runs the session
init (``prepare``) on each new one, joins it to its pool (and to the session
it replaces, for affinity) and turns a pool's failed creates into its error.
The pool state it keeps and the invariants it must hold are at the top of
``_pools.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from . import _affinity
from .exceptions import (
    ScrappeyAPIUnreachable,
    ScrappeyAuthError,
    ScrappeyError,
    SessionsUnavailable,
)

if TYPE_CHECKING:
    from collections import OrderedDict
    from collections.abc import Awaitable, Callable

    from ._cap import SessionCap
    from ._creation import SessionCreator
    from ._pools import Pool, Session
    from ._tasks import TaskGroup
    from .config import Config

__all__ = ["PoolFilling"]

logger = logging.getLogger(__name__)

#: How many past session ids are still known (for copied meta).
_ID_MEMORY = 10_000


class PoolFilling:
    """Mixin of :class:`~.sessions.SessionManager`: creates sessions into pools."""

    _config: Config
    _prepare: Callable[[Session], Awaitable[bool]] | None
    _on_fatal: Callable[[str, str], None]
    _extra: dict[str, Any]
    _tasks: TaskGroup
    _cap: SessionCap
    _creator: SessionCreator
    _known: OrderedDict[str, Session]
    _closing: bool

    if TYPE_CHECKING:

        def retire(self, session: Session, reason: str) -> None: ...

        def _fail_waiters(self, pool: Pool, error: BaseException) -> None: ...

    def _fill(self, pool: Pool) -> None:
        if self._closing:
            return
        for _ in range(pool.missing()):
            pool.creating += 1
            replaces = _affinity.next_orphan(pool)
            self._tasks.spawn(
                self._create(pool, replaces), name=f"scrappey-create-{pool.key}"
            )
        self._strand(pool)

    def _strand(self, pool: Pool) -> None:
        if _affinity.strand(pool):
            # Not at once: _fill may run inside a serve() (rotation, idle expiry).
            asyncio.get_running_loop().call_soon(pool.waiters.serve)

    async def _create(self, pool: Pool, replaces: Session | None) -> None:
        ready = True  # a failed create is not refilled: _creation_failed decides
        try:
            session = await self._creator.create(pool.key, pool.settings.params)
        except ScrappeyAuthError as ex:
            self._creation_failed(pool, ex, "scrappey_bad_api_key")
        except ScrappeyAPIUnreachable as ex:
            self._creation_failed(pool, ex, "scrappey_api_unreachable")
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
            ready = await self._prepared(pool, session)
            if ready:
                self._join(pool, session, replaces)
        finally:
            pool.creating -= 1
            self._cap.notify()
            _affinity.not_replaced(pool, replaces)
        if not ready:
            self._fill(pool)  # now that this create no longer counts
        else:
            self._strand(pool)  # in case it failed, which is not refilled

    def _join(self, pool: Pool, session: Session, replaces: Session | None) -> None:
        pool.sessions.append(session)
        self._known[session.id] = session
        if len(self._known) > _ID_MEMORY:
            self._forget_oldest_retired()
        if replaces is not None:
            _affinity.replaced(pool, replaces, session)
        _affinity.serve(pool, session)

    def _forget_oldest_retired(self) -> None:
        # A live session's id must keep leading to it (affinity, its pool's
        # jar and fingerprint), however long the crawl: only retired ids go.
        for session_id, known in self._known.items():
            if known.retired:
                del self._known[session_id]
                return

    async def _prepared(self, pool: Pool, session: Session) -> bool:
        """Run the init on *session*; False (and the session retired) if it failed."""
        if self._prepare is None:
            return True
        session.preparing = True
        try:
            ok = await self._prepare(session)
        finally:
            session.preparing = False
        if ok:
            pool.bad_inits = 0
            session.last_used = time.monotonic()
            return True
        pool.bad_inits += 1
        self.retire(session, "init")
        limit = self._config.session_max_bad_inits
        if pool.bad_inits >= limit:
            self._on_fatal(
                "scrappey_bad_session_inits",
                f"{pool.bad_inits} session inits in a row failed in pool "
                f"{pool.key!r} (SCRAPPEY_SESSION_MAX_BAD_INITS = {limit})",
            )
        return False

    def _creation_failed(self, pool: Pool, error: ScrappeyError, reason: str) -> None:
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
