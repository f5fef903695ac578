"""Per-target-domain concurrency and delay for requests routed through Scrappey.

A downloader middleware that answers in ``process_request`` runs before
Scrapy's downloader slots, so without this a routed crawl would ignore
``CONCURRENT_REQUESTS_PER_DOMAIN``, ``DOWNLOAD_DELAY`` and ``DOWNLOAD_SLOTS``
(the bug scrapy-flaresolverr users hit). This gate applies the same numbers,
keyed by the downloader's own slot keys (see ``Downloader.get_slot_key``).

Invariants of a gate: ``active`` counts the starts granted and not yet ended
(a start granted to a waiter that left is given back through its queue) and
never exceeds the slot's concurrency; two starts are at least one (jittered)
delay apart (``next_start``); waiters start in arrival order, and a waiting
request is never timed out, only failed by :meth:`TargetThrottle.abort`; a gate
is forgotten only when idle, i.e. when it has no start, waiter, timer or
pending delay left.
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._waiters import WaiterQueue
from .exceptions import SpiderClosing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .config import ThrottleConfig


_PRUNE_AT = 1000  # gates kept before idle ones are swept


@dataclass(eq=False)
class _Gate:
    """One download slot. ``active`` counts the starts granted and not yet ended."""

    concurrency: int
    delay: float
    jitter: float
    active: int = 0
    next_start: float = float("-inf")
    waiters: WaiterQueue[_Gate] = field(init=False)
    timer: asyncio.TimerHandle | None = None

    def idle(self) -> bool:
        # A gate whose delay has not run out is kept: the next request of a
        # sequential crawl (pagination) must still wait for it.
        return (
            not self.active
            and not self.waiters.waiting()
            and self.timer is None
            and self.next_start <= time.monotonic()
        )


class TargetThrottle:
    """Gates keyed by download slot, created on demand and dropped when idle."""

    def __init__(self, config: ThrottleConfig) -> None:
        self._config = config
        self._gates: dict[str, _Gate] = {}
        self._closing = False

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Wait (in order, without a bound) for a start on the *key* slot."""
        gate = self._gate(key)
        await self._acquire(gate)
        try:
            yield
        finally:
            self._end(gate)
            if gate.idle():
                self._gates.pop(key, None)
            if len(self._gates) > _PRUNE_AT:
                self._prune()

    def _prune(self) -> None:
        for key, gate in list(self._gates.items()):
            if gate.idle():
                del self._gates[key]

    def abort(self) -> None:
        """Release everybody waiting: the spider is closing."""
        self._closing = True
        for gate in self._gates.values():
            gate.waiters.fail_all(SpiderClosing())

    def _gate(self, key: str) -> _Gate:
        gate = self._gates.get(key)
        if gate is None:
            conf = self._config.slot(key)
            gate = self._gates[key] = _Gate(
                concurrency=conf.concurrency, delay=conf.delay, jitter=conf.jitter
            )
            gate.waiters = WaiterQueue(lambda: self._take(gate), self._end)
        return gate

    async def _acquire(self, gate: _Gate) -> None:
        if self._closing:
            raise SpiderClosing
        if not gate.waiters.waiting() and self._can_start(gate):
            self._start(gate)
            return
        await gate.waiters.wait()

    def _end(self, gate: _Gate) -> None:
        gate.active -= 1
        gate.waiters.serve()

    def _can_start(self, gate: _Gate) -> bool:
        return gate.active < gate.concurrency and self._wait_time(gate) <= 0

    def _wait_time(self, gate: _Gate) -> float:
        return gate.next_start - time.monotonic()

    def _next_delay(self, gate: _Gate) -> float:
        if not gate.delay:
            return 0.0
        return (
            gate.delay * random.uniform(1 - gate.jitter, 1 + gate.jitter)
            if gate.jitter
            else gate.delay
        )

    def _start(self, gate: _Gate) -> None:
        gate.active += 1
        gate.next_start = time.monotonic() + self._next_delay(gate)

    def _take(self, gate: _Gate) -> _Gate | None:
        """A start for the next waiter, or None (with a timer if only the delay is due)."""
        if gate.active >= gate.concurrency:
            return None
        wait = self._wait_time(gate)
        if wait > 0:
            if gate.timer is None:
                gate.timer = asyncio.get_running_loop().call_later(
                    wait, self._on_timer, gate
                )
            return None
        self._start(gate)
        return gate

    def _on_timer(self, gate: _Gate) -> None:
        gate.timer = None
        gate.waiters.serve()
