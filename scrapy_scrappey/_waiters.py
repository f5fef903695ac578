"""A first-come, first-served queue of tasks waiting for their turn.

One primitive for "wait your turn for a session" (sessions) and "wait your
turn for a target slot" (throttle). The owner says what there is to hand out
with ``take``; the queue hands it to the oldest waiter still waiting.

Invariants:

* Whatever ``take()`` returned goes to exactly one place: to the waiter it was
  granted to (as the result of :meth:`WaiterQueue.wait`), or back to the owner
  through ``give_back`` when that waiter was cancelled or timed out in the very
  loop iteration it was granted. Nothing is granted twice, nothing is lost.
* Waiters that are done (cancelled, timed out, failed) are skipped, never
  granted; a waiter that gives up is removed from its queue at once (one
  moved by :meth:`WaiterQueue.hand_over` is skipped once it reaches the head
  of the queue it was moved to).
* :meth:`WaiterQueue.hand_over` moves waiters and grants nothing (the owner
  serves the other queue next): a moved waiter keeps its place relative to
  the others moved with it, behind those already waiting in the other queue.
  Both queues must give back to the same owner.
* :meth:`WaiterQueue.fail_all` fails every waiter still waiting and empties
  the queue. Refusing new waiters once closing is the owner's job: it checks
  its own flag before calling :meth:`WaiterQueue.wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


class WaiterQueue(Generic[T]):
    """Waiters in arrival order, served with what ``take()`` hands out.

    ``take()`` returns the next thing to grant, already counted as in use by
    its owner, or ``None`` when there is nothing for now; it must not settle
    waiters itself. ``give_back(value)`` undoes one ``take()`` whose waiter
    left before it could use the value.
    """

    def __init__(
        self, take: Callable[[], T | None], give_back: Callable[[T], None]
    ) -> None:
        self._take = take
        self._give_back = give_back
        self._queue: deque[asyncio.Future[T]] = deque()

    def waiting(self) -> bool:
        """Whether somebody is still waiting."""
        while self._queue and self._queue[0].done():
            self._queue.popleft()
        return bool(self._queue)

    def serve(self) -> None:
        """Grant to the oldest waiters for as long as ``take()`` has something."""
        while self.waiting():
            value = self._take()
            if value is None:
                return
            self._queue.popleft().set_result(value)

    async def wait(self, timeout: float | None = None) -> T:
        """Wait for a grant; :class:`TimeoutError` after *timeout* s (``None``: no bound)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        try:
            self.serve()
            if not future.done():
                done, _ = await asyncio.wait({future}, timeout=timeout)
                if not done:
                    raise TimeoutError
        except BaseException:
            self._abandon(future)
            raise
        return future.result()

    def fail_all(self, error: BaseException) -> None:
        """Fail everybody still waiting with *error*."""
        while self._queue:
            future = self._queue.popleft()
            if not future.done():
                future.set_exception(error)

    def hand_over(self, other: WaiterQueue[T]) -> None:
        """Move everybody still waiting here to the back of *other*, in order."""
        while self._queue:
            future = self._queue.popleft()
            if not future.done():
                other._queue.append(future)

    def _abandon(self, future: asyncio.Future[T]) -> None:
        if future.done() and not future.cancelled() and future.exception() is None:
            self._give_back(future.result())  # granted just as its waiter left
            return
        future.cancel()
        with contextlib.suppress(ValueError):  # already skipped
            self._queue.remove(future)
