"""Scrapy's download slots, applied to requests routed through Scrappey.

A downloader middleware that answers in ``process_request`` runs before
Scrapy's downloader slots, so without this a routed crawl would ignore
``CONCURRENT_REQUESTS_PER_DOMAIN``, ``DOWNLOAD_DELAY`` and ``DOWNLOAD_SLOTS``
(the bug scrapy-flaresolverr users hit). This gate holds routed requests to
the downloader's own :class:`~scrapy.core.downloader.Slot` for the page's slot
key: Scrapy builds it from those settings (and the spider's
``download_delay``, the jitter, AutoThrottle's start delay), and the gate
reads its ``concurrency`` and ``delay`` at every start, so AutoThrottle's
changes apply at once. :meth:`TargetThrottle.downloaded` then tells
``response_downloaded`` listeners (AutoThrottle) about each answer, as the
downloader does after a download.

Callers take a start only when the request is ready to go, its session
leased (the middleware's ``_send``, the session init's ``_fetch``): the start
stamps the slot's delay, so a start held while waiting for something else
would let the requests behind it out in a burst, and would keep the slot's
room from requests that could go.

Invariants of a gate: ``active`` counts the starts granted and not yet ended
(a start granted to a waiter that left is given back through its queue) and
never exceeds the slot's concurrency; a start happens only once the slot's
(jittered) delay has passed since ``Slot.lastseen`` and stamps it, so the
pacing outlives the gate and is shared with the slot's direct requests; every
request in a gate is in ``Slot.active``, so Scrapy's slot garbage collector
keeps the slot (and AutoThrottle's delay) as for a direct crawl; waiters start
in arrival order, and a waiting request is never timed out, only failed by
:meth:`TargetThrottle.abort`; a gate is forgotten as soon as it has no start,
waiter or timer left.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scrapy import signals, version_info

from ._waiters import WaiterQueue
from .exceptions import ScrappeyConfigError, SpiderClosing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from scrapy import Request
    from scrapy.core.downloader import Slot
    from scrapy.crawler import Crawler
    from scrapy.http import Response

# The clock Scrapy stamps Slot.lastseen with: time.time() up to 2.15.
_clock = time.monotonic if version_info >= (2, 16) else time.time


@dataclass(eq=False)
class _Gate:
    """The routed requests of one download slot."""

    key: str
    slot: Slot
    active: int = 0
    waiters: WaiterQueue[_Gate] = field(init=False)
    timer: asyncio.TimerHandle | None = None

    def idle(self) -> bool:
        return not self.active and not self.waiters.waiting() and self.timer is None


class TargetThrottle:
    """Gates keyed by download slot, created on demand and dropped when idle."""

    def __init__(self, crawler: Crawler) -> None:
        self._crawler = crawler
        self._gates: dict[str, _Gate] = {}
        self._closing = False

    @asynccontextmanager
    async def slot(self, request: Request, target: Request) -> AsyncIterator[None]:
        """Wait (in order, without a bound) for a start on the slot of *target*,
        the page *request* fetches; records the slot key in *request*'s meta."""
        key, slot = self._scrapy_slot(request, target)
        request.meta["download_slot"] = key
        gate = self._gate(key, slot)
        slot.active.add(request)
        try:
            await self._acquire(gate)
            try:
                yield
            finally:
                self._end(gate)
        finally:
            slot.active.discard(request)
            self._forget_if_idle(gate)

    def downloaded(self, request: Request, response: Response) -> None:
        """Send ``response_downloaded`` for an answer of the API, as Scrapy's
        downloader does for a download (its ``download_latency`` meta key set)."""
        self._crawler.signals.send_catch_log(
            signal=signals.response_downloaded,
            response=response,
            request=request,
            spider=self._crawler.spider,
        )

    def abort(self) -> None:
        """Release everybody waiting: the spider is closing."""
        self._closing = True
        for gate in self._gates.values():
            gate.waiters.fail_all(SpiderClosing())

    def _scrapy_slot(self, request: Request, target: Request) -> tuple[str, Slot]:
        meta_slot = request.meta.get("download_slot", "")
        if not isinstance(meta_slot, str):
            raise ScrappeyConfigError(
                f"The 'download_slot' meta key of {request} must be a string, "
                f"got {meta_slot!r}."
            )
        engine = self._crawler.engine
        assert engine is not None  # requests only flow while the engine runs
        # Private API (Scrapy 2.14 to 2.19): the one place that builds a slot
        # from the settings, as a direct request to the page would get it.
        get_slot = getattr(engine.downloader, "_get_slot", None)
        if get_slot is None:
            raise RuntimeError(
                "scrapy-scrappey needs Downloader._get_slot(), which this Scrapy "
                "version lacks; please report it."
            )
        key, slot = get_slot(target)
        return key, slot

    def _gate(self, key: str, slot: Slot) -> _Gate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(key, slot)
            gate.waiters = WaiterQueue(lambda: self._take(gate), self._end)
        gate.slot = slot  # in case Scrapy replaced a slot that went idle
        return gate

    def _forget_if_idle(self, gate: _Gate) -> None:
        if gate.idle() and self._gates.get(gate.key) is gate:
            del self._gates[gate.key]

    async def _acquire(self, gate: _Gate) -> None:
        if self._closing:
            raise SpiderClosing
        if gate.waiters.waiting() or self._take(gate) is None:
            await gate.waiters.wait()

    def _end(self, gate: _Gate) -> None:
        gate.active -= 1
        gate.waiters.serve()

    def _wait_time(self, gate: _Gate) -> float:
        # Drawn anew at each check, as Scrapy's downloader does.
        return gate.slot.lastseen + gate.slot.download_delay() - _clock()

    def _start(self, gate: _Gate) -> None:
        gate.active += 1
        gate.slot.lastseen = _clock()

    def _take(self, gate: _Gate) -> _Gate | None:
        """A start for the next waiter, or None (with a timer if only the delay is due)."""
        if gate.active >= gate.slot.concurrency:
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
        self._forget_if_idle(gate)  # its waiters may all have left
