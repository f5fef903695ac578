"""Background tasks owned by one component: named, tracked, cancelled at close.

Invariants: a task is in its group from :meth:`TaskGroup.spawn` until it is
done, so :meth:`TaskGroup.close` reaches every task still running; a task that
ends with an unexpected exception is logged once, when it ends, with the
group's ``extra`` (the spider), and never raises into the loop's handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine

logger = logging.getLogger(__name__)

#: Seconds :meth:`TaskGroup.close` waits before cancelling a task again.
RECANCEL = 0.5


class TaskGroup:
    """Fire-and-forget tasks whose failures are logged, not lost."""

    def __init__(self, *, extra: dict[str, Any] | None = None) -> None:
        self._extra = extra or {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run *coro* in the background as a task named *name*."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def cancel(self, prefix: str = "") -> None:
        """Cancel the running tasks whose name starts with *prefix*."""
        for task in list(self._tasks):
            if task.get_name().startswith(prefix):
                task.cancel()

    async def close(self) -> None:
        """Cancel every task still running and wait until they have ended.

        A cancellation can get lost (``asyncio.wait_for`` before Python 3.12,
        which redis-py uses, returns the result of an inner call that had just
        finished): a task still running :data:`RECANCEL` seconds later is
        cancelled again, so that a loop cannot hold the close for ever.
        """
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "Unexpected error in Scrappey background task %(name)s",
                {"name": task.get_name()},
                exc_info=task.exception(),
                extra=self._extra,
            )
