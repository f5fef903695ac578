"""Per-target-domain concurrency and delay for requests routed through Scrappey.

A downloader middleware that answers in ``process_request`` runs before
Scrapy's downloader slots, so without this a routed crawl would ignore
``CONCURRENT_REQUESTS_PER_DOMAIN``, ``DOWNLOAD_DELAY`` and ``DOWNLOAD_SLOTS``
(the bug scrapy-flaresolverr users hit). This gate applies the same numbers,
keyed like Scrapy's slots (hostname, or the ``download_slot`` meta key).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .sessions import SpiderClosing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from scrapy.settings import BaseSettings


_PRUNE_AT = 1000  # gates kept before idle ones are swept


def _jitter(settings: BaseSettings) -> float:
    # As Scrapy's downloader does: DOWNLOAD_DELAY_JITTER (2.19+), unless the
    # older RANDOMIZE_DOWNLOAD_DELAY switch was set at a higher priority.
    jitter_priority = settings.getpriority("DOWNLOAD_DELAY_JITTER") or 0
    if jitter_priority and jitter_priority >= (
        settings.getpriority("RANDOMIZE_DOWNLOAD_DELAY") or 0
    ):
        return settings.getfloat("DOWNLOAD_DELAY_JITTER")
    return 0.5 if settings.getbool("RANDOMIZE_DOWNLOAD_DELAY", True) else 0.0


def _slot_jitter(conf: dict[str, Any], default: float) -> float:
    if "jitter" in conf:
        return float(conf["jitter"])
    if "randomize_delay" in conf:  # the DOWNLOAD_SLOTS key before Scrapy 2.19
        return 0.5 if conf["randomize_delay"] else 0.0
    return default


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

    def __init__(self, settings: BaseSettings, spider: Any = None) -> None:
        self._concurrency = settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN")
        self._delay = float(
            getattr(spider, "download_delay", settings.getfloat("DOWNLOAD_DELAY"))
        )
        self._jitter = _jitter(settings)
        self._per_slot: dict[str, dict[str, Any]] = settings.getdict("DOWNLOAD_SLOTS")
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
            conf = self._per_slot.get(key, {})
            gate = self._gates[key] = _Gate(
                concurrency=max(1, int(conf.get("concurrency", self._concurrency))),
                delay=float(conf.get("delay", self._delay)),
                jitter=_slot_jitter(conf, self._jitter),
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
