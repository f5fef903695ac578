"""Sessions and the pools they are leased from (state only; see sessions.py).

Invariants of the lease bookkeeping (kept by :class:`~.sessions.SessionManager`):

* Who may hold a lease: one request at a time per lease, from ``lease()`` to its
  ``release()`` (the middleware's ``_send``); ``in_flight`` counts the leases
  held and never exceeds the pool's ``concurrency`` (``SCRAPPEY_SESSION_POOLS``,
  else ``SCRAPPEY_SESSION_CONCURRENCY``).
* Only a session in its pool's ``sessions`` that is not ``retired`` is leased.
  Waiters are served in arrival order: a lease for any session takes a free
  one directly only when nobody of its pool is waiting in ``waiters``.
* Affinity (a lease for one session id, see ``_affinity.py``): such leases
  always queue, in arrival order, in ``wanted[session]``, keyed by a session
  without a ``successor``. A session that frees up goes to its own ``wanted``
  waiters first, then to ``waiters``, so a session with waiters for it is
  never free. A ``wanted`` queue found empty when its session is served is
  dropped.
* ``successor`` is the session created to replace a retired one: a retired
  session that was in ``sessions`` is an orphan, in ``orphans`` until a
  create takes it (one create per orphan, oldest first), so there are never
  more orphans than sessions missing from the pool. The create that joins the
  pool becomes its successor and takes over its ``wanted`` queue; a create
  that fails puts the orphan back at the front. Leases for an orphan whose
  replacement is not under way once the pool is filled (a full pool, a failed
  create, closing) go to the pool's next free session: its ``wanted`` waiters
  are handed over to ``waiters``. A session retired before it joined (a
  failed init) has no successor: nobody has its id.
* A retired session gets no new lease; it leaves ``sessions`` and is destroyed
  as soon as its last lease ends (at once when it is idle or ``dead``). A dead
  session is reported before its lease is released, so it is never handed to
  the next waiter.
* A session under init (``preparing``) holds no lease and is not in its pool's
  ``sessions``, so no request can see it; it counts against the cap from its
  create (it is in the cap's open set) and is never evicted. It joins
  ``sessions`` only once its init succeeded; a failed init retires and
  destroys it at once and adds one to ``bad_inits`` (reset by a success).
* ``errors`` counts the session-bound API errors (``ErrorKind.SESSION_BOUND``)
  of the session's requests; once it reaches its pool's ``max_errors``
  the session is retired (reason "errors") before that lease is released, so
  the next waiter never gets it. It only grows: a session that failed that
  often keeps its proxy and browser, whatever succeeded in between.
* ``creating`` counts this pool's create tasks still running (init included); ``_fill`` starts
  ``size - live() - creating`` more. ``error`` is set only when the last create
  failed with nothing live or creating, and cleared by the next success.
* A waiter ends with a session, or with ``SessionWaitTimeout`` (only when
  ``SCRAPPEY_SESSION_WAIT_TIMEOUT`` is set), ``error``, or ``SpiderClosing``.
  Without a bound it waits for as long as the spider is open.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._waiters import WaiterQueue
    from .exceptions import ScrappeyError
    from .pool_config import PoolSettings


@dataclass(eq=False)
class Session:
    """One remote session and its lease bookkeeping."""

    id: str
    pool: str
    last_used: float
    leases: int = 0
    in_flight: int = 0
    #: Session-bound API errors so far (see SCRAPPEY_SESSION_MAX_ERRORS).
    errors: int = 0
    #: No new leases; destroyed as soon as nothing uses it.
    retired: bool = False
    dead: bool = False
    #: Its init is running: not in its pool yet, never evicted.
    preparing: bool = False
    #: The session that replaced it once retired (affinity follows it).
    successor: Session | None = None


@dataclass(eq=False)
class Pool:
    """The sessions one pool key (spider, domain or name) leases from."""

    key: str
    size: int
    #: Its own settings (``SCRAPPEY_SESSION_POOLS`` over the global ones).
    settings: PoolSettings
    sessions: list[Session] = field(default_factory=list)
    creating: int = 0
    error: ScrappeyError | None = None
    #: Failed inits in a row (SCRAPPEY_SESSION_MAX_BAD_INITS).
    bad_inits: int = 0
    waiters: WaiterQueue[Session] = field(init=False)
    #: Retired sessions whose replacement is not under way, oldest first.
    orphans: deque[Session] = field(default_factory=deque)
    #: Waiters for one session (affinity), keyed by the session they get.
    wanted: dict[Session, WaiterQueue[Session]] = field(default_factory=dict)

    def live(self) -> int:
        """Sessions that can still take leases, busy or not."""
        return sum(not s.retired for s in self.sessions)

    def missing(self) -> int:
        """Sessions to create for the pool to be full."""
        return max(0, self.size - self.live() - self.creating)
