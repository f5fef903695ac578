"""The crawl lifecycle half of ScrappeyMiddleware, kept apart so the hooks stay short.

Owns the fatal error, the spider's close and the noticing of an engine that
started closing. Invariants: ``_fatal`` is set once (the first reason wins)
and the spider is closed at most once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler

    from ._tasks import TaskGroup
    from .client import ApiReply
    from .cost import Charge
    from .sessions import SessionManager
    from .throttle import TargetThrottle

# The middleware's logger: moving code must not rename what users configure.
logger = logging.getLogger(__name__)

_CLOSE_POLL = 0.1  # seconds between checks for an engine that started closing


class CrawlLifecycle:
    """Mixin of :class:`~scrapy_scrappey.ScrappeyMiddleware`: fatal errors and closing.

    The spider is closed at most once and ``_fatal`` is set once.
    """

    crawler: Crawler
    _fatal: str | None
    _opened: bool
    _closing: bool
    _warned: set[str]
    _inflight: set[asyncio.Future[tuple[ApiReply, Charge]]]
    _sessions: SessionManager
    _throttle: TargetThrottle
    _tasks: TaskGroup

    def _on_fatal(self, reason: str, message: str) -> None:
        if self._fatal is not None:
            return
        self._fatal = reason
        logger.error(
            "Closing the spider (%(reason)s): %(message)s",
            {"reason": reason, "message": message},
            extra={"spider": spider_of(self.crawler)},
        )
        self._sessions.abort_waiters()
        if self._opened:
            self._close_spider(reason)

    def _close_spider(self, reason: str) -> None:
        engine = self.crawler.engine
        if not self._closing and not _engine_closing(self.crawler) and engine.spider:
            self._tasks.spawn(
                engine.close_spider_async(reason=reason), name="scrappey-close-spider"
            )

    async def _watch_closing(self) -> None:
        # spider_closed only fires once every in-flight request has finished,
        # so requests parked waiting for a session would hold the close up
        # (scrapy-zyte-api #328). Watch the engine instead.
        while not self._closing:
            await asyncio.sleep(_CLOSE_POLL)
            if _engine_closing(self.crawler):
                self._on_closing()

    def _on_closing(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._sessions.abort_waiters()
        self._throttle.abort()
        for call in list(self._inflight):
            call.cancel()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, extra={"spider": spider_of(self.crawler)})

    def _inc(self, key: str, count: int = 1) -> None:
        self.crawler.stats.inc_value(key, count)


def spider_of(crawler: Crawler) -> Spider | None:
    try:
        return crawler.spider
    except (AttributeError, RuntimeError):  # not created yet (unit tests)
        return None


def _engine_closing(crawler: Crawler) -> bool:
    # Private engine state: the only sign of a close that has begun but not
    # yet sent spider_closed. Guarded so that a Scrapy refactor degrades to
    # "notice the close at spider_closed" rather than an error.
    engine = getattr(crawler, "engine", None)
    slot = getattr(engine, "_slot", None)
    return slot is not None and getattr(slot, "closing", None) is not None
