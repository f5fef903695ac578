"""Session affinity: leases for one session, and the session that replaced it.

A request naming a session id this crawl created is served by that session,
waiting for it in arrival order like any lease. A retired session (dead, a
failed check, too many errors, rotation, idle expiry, eviction) is followed to
its ``successor``, the session created to replace it, once that one has
joined its pool (after its init). When no replacement is under way for it
(its pool is full, or its create failed), the lease goes to the pool's next
free session instead. The state and its invariants are in ``_pools.py``; the
:class:`~.sessions.SessionManager` calls these helpers at each transition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._pools import Pool, Session
    from ._waiters import WaiterQueue


def latest(session: Session) -> Session:
    """*session*, or the session that replaced it, or that one's successor…"""
    while session.successor is not None:
        session = session.successor
    return session


def note_retired(pool: Pool, session: Session) -> None:
    """*session* is being retired: an orphan if it had joined *pool*."""
    if session in pool.sessions:
        pool.orphans.append(session)


def next_orphan(pool: Pool) -> Session | None:
    """The orphan a new create of *pool* will replace, if any."""
    return pool.orphans.popleft() if pool.orphans else None


def replaced(pool: Pool, orphan: Session, session: Session) -> None:
    """*session* joined *pool* in place of *orphan*: it takes over its waiters."""
    orphan.successor = session
    queue = pool.wanted.pop(orphan, None)
    if queue is not None:
        pool.wanted[session] = queue


def not_replaced(pool: Pool, orphan: Session | None) -> None:
    """A create for *orphan* ended: if it did not replace it, the next one will."""
    if orphan is not None and orphan.successor is None:
        pool.orphans.appendleft(orphan)


def strand(pool: Pool) -> bool:
    """Hand the waiters of orphans with no replacement under way to the pool's queue.

    Call it after filling the pool; when it moved some (``True``), the caller
    serves ``pool.waiters``.
    """
    moved = False
    for orphan in pool.orphans:
        queue = pool.wanted.pop(orphan, None)
        if queue is not None:
            moved = moved or queue.waiting()
            queue.hand_over(pool.waiters)
    return moved


def queue_for(
    pool: Pool, start: Session, make: Callable[[], WaiterQueue[Session]]
) -> WaiterQueue[Session] | None:
    """Where a lease for *start* waits; ``None``: for any session of *pool*.

    Call it after filling the pool, so that an orphan's replacement is under
    way whenever the pool has room for it.
    """
    session = latest(start)
    if session in pool.orphans:
        return None
    queue = pool.wanted.get(session)
    if queue is None:
        queue = pool.wanted[session] = make()
    return queue


def serve(pool: Pool, session: Session) -> None:
    """Serve the waiters for *session* first, then the other waiters of *pool*."""
    queue = pool.wanted.get(session)
    if queue is not None:
        queue.serve()
        if not queue.waiting() and pool.wanted.get(session) is queue:
            del pool.wanted[session]  # recreated by the next lease for it
    pool.waiters.serve()


def waited_for(pool: Pool, session: Session) -> bool:
    """Whether requests of *pool* wait for *session*, or for any session."""
    queue = pool.wanted.get(session)
    return pool.waiters.waiting() or (queue is not None and queue.waiting())


def queues(pool: Pool) -> list[WaiterQueue[Session]]:
    """Every queue of *pool*: its own, then the per-session ones."""
    return [pool.waiters, *pool.wanted.values()]
