"""Per-target-domain concurrency and delay for requests routed through Scrappey.

A downloader middleware that answers in ``process_request`` runs before
Scrapy's downloader slots, so without this a routed crawl would ignore
``CONCURRENT_REQUESTS_PER_DOMAIN``, ``DOWNLOAD_DELAY`` and ``DOWNLOAD_SLOTS``
(the bug scrapy-flaresolverr users hit). This gate applies the same numbers,
keyed by the downloader's own slot keys (see ``Downloader.get_slot_key``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .sessions import SpiderClosing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .config import ThrottleConfig


_PRUNE_AT = 1000  # gates kept before idle ones are swept


@dataclass(eq=False)
class _Gate:
    concurrency: int
    delay: float
    jitter: float
    active: int = 0
    next_start: float = float("-inf")
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    timer: asyncio.TimerHandle | None = None


class TargetThrottle:
    """Gates keyed by download slot, created on demand and dropped when idle."""

    def __init__(self, config: ThrottleConfig) -> None:
        self._config = config
        self._gates: dict[str, _Gate] = {}
        self._closing = False

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        gate = self._gate(key)
        await self._acquire(gate)
        try:
            yield
        finally:
            gate.active -= 1
            self._pump(gate)
            self._drop_if_idle(key, gate)

    def _drop_if_idle(self, key: str, gate: _Gate) -> None:
        # Keep a gate whose delay has not run out: the next request of a
        # sequential crawl (pagination) must still wait for it.
        idle = not gate.active and not gate.waiters and gate.timer is None
        if idle and gate.next_start <= time.monotonic():
            self._gates.pop(key, None)
        if len(self._gates) > _PRUNE_AT:
            self._prune()

    def _prune(self) -> None:
        now = time.monotonic()
        for key, gate in list(self._gates.items()):
            if (
                not gate.active
                and not gate.waiters
                and gate.timer is None
                and gate.next_start <= now
            ):
                del self._gates[key]

    def abort(self) -> None:
        """Release everybody waiting: the spider is closing."""
        self._closing = True
        for gate in self._gates.values():
            while gate.waiters:
                waiter = gate.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(SpiderClosing("the spider is closing"))

    def _gate(self, key: str) -> _Gate:
        gate = self._gates.get(key)
        if gate is None:
            conf = self._config.slot(key)
            gate = self._gates[key] = _Gate(
                concurrency=conf.concurrency, delay=conf.delay, jitter=conf.jitter
            )
        return gate

    async def _acquire(self, gate: _Gate) -> None:
        if self._closing:
            raise SpiderClosing("the spider is closing")
        if not gate.waiters and self._can_start(gate):
            self._start(gate)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.waiters.append(waiter)
        self._pump(gate)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                gate.active -= 1  # started just as we were cancelled
                self._pump(gate)
            elif waiter in gate.waiters:
                gate.waiters.remove(waiter)
            raise

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

    def _pump(self, gate: _Gate) -> None:
        while gate.waiters and gate.active < gate.concurrency:
            if gate.waiters[0].done():
                gate.waiters.popleft()
                continue
            wait = self._wait_time(gate)
            if wait > 0:
                if gate.timer is None:
                    gate.timer = asyncio.get_running_loop().call_later(
                        wait, self._on_timer, gate
                    )
                return
            self._start(gate)
            gate.waiters.popleft().set_result(None)
            if gate.delay:
                return  # one start per delay period, like Scrapy's slots

    def _on_timer(self, gate: _Gate) -> None:
        gate.timer = None
        self._pump(gate)
