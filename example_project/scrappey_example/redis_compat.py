"""scrapy-redis 0.9.1 on Scrapy 2.19: the fixes workers need (issue #14).

The problems are those of ``shared/reference/scale-out.md``; each fix names
its number there:

1. ``start_requests()`` is dead code on Scrapy 2.19: :class:`DrainingRedisSpider`
   has an ``async start()`` reading the queue's seeds.
2. The seed was fetched twice: seeds are built with ``dont_filter=False``, so a
   link back to the seed meets the shared dupefilter.
3. The worker that closes first flushes the shared queue unless
   ``SCHEDULER_PERSIST=True``: the spiders using this module set it.
4. Idle workers poll Redis only on the engine's 5 s heartbeat:
   ``REDIS_ENGINE_HEARTBEAT`` (seconds) shortens it.
5. ``SCHEDULER_IDLE_BEFORE_CLOSE>0`` blocks the reactor: never used here.
   Workers close by drain grace instead (``REDIS_DRAIN_GRACE`` seconds with no
   work in this worker and none in the shared queue), not by
   ``MAX_IDLE_TIME_BEFORE_CLOSE``, whose clock starts at import.
6. A hard-killed worker loses what it had in flight (the pop is destructive):
   not fixable here; write items as they arrive (``worker_output.ItemLines``).

And :class:`Scheduler` calls ``inc_value`` without the deprecated ``spider=``
and survives a Redis outage: while Redis does not answer, ``next_request``
returns ``None`` instead of crashing the engine, and ``enqueue_request`` keeps
requests in this worker, in order, and puts them in Redis once it answers;
none is dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from scrapy import Request, signals
from scrapy.core.engine import ExecutionEngine
from scrapy.exceptions import DontCloseSpider
from scrapy_redis import scheduler
from scrapy_redis.spiders import RedisSpider
from scrapy_redis.utils import bytes_to_str

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from scrapy.crawler import Crawler
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: Redis did not answer (refused, reset, timed out, still loading its data).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
DRAIN_GRACE = 8.0

#: The settings of a worker using this module (the spider's ``custom_settings``).
REDIS_WORKER_SETTINGS: dict[str, Any] = {
    "SCHEDULER": "scrappey_example.redis_compat.Scheduler",
    "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
    # The first worker to close would flush the shared queue otherwise.
    "SCHEDULER_PERSIST": True,
    "REDIS_ENGINE_HEARTBEAT": 1.0,
    "REDIS_DRAIN_GRACE": 3.0,
    # scrapy-redis calls Redis from the reactor thread with the blocking client:
    # fail fast while Redis is down (Scheduler holds the requests) instead of
    # redis-py's default 10 retries with back-off, seconds of a frozen crawl.
    "REDIS_PARAMS": {
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        "retry": Retry(NoBackoff(), 0),
    },
    # Items as they come, not a feed a kill -9 empties (problem 6).
    "FEEDS": {},
    "ITEM_PIPELINES": {"scrappey_example.worker_output.ItemLines": 100},
    "EXTENSIONS": {"scrappey_example.worker_output.StatsFile": 0},
}


@dataclass
class _Held:
    """A request accepted while Redis was down; *seen*: the dupefilter has it."""

    request: Request
    seen: bool = False


class Scheduler(scheduler.Scheduler):  # type: ignore[misc]
    """scrapy-redis's scheduler, which outlives a Redis outage.

    Invariant: ``_held`` holds, in arrival order, the requests accepted while
    Redis was down; they go to Redis before any newer request, and an entry
    leaves ``_held`` only once Redis has it (or its dupefilter refused it).
    """

    def open(self, spider: Any) -> None:
        self._held: deque[_Held] = deque()
        self._down_since: float | None = None
        super().open(spider)

    def enqueue_request(self, request: Request) -> bool:
        entry = _Held(request)
        if self._put_back():
            try:
                return self._enqueue(entry)
            except REDIS_DOWN as exc:
                self._outage(exc)
        self._held.append(entry)
        if self.stats:
            self.stats.inc_value("scheduler/redis/held")
        return True

    def next_request(self) -> Request | None:
        if not self._put_back():
            return None
        try:
            request: Request | None = self.queue.pop(0)
        except REDIS_DOWN as exc:
            self._outage(exc)
            return None
        if request is not None and self.stats:
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def has_pending_requests(self) -> bool:
        if self._held:
            return True
        try:
            return bool(len(self) > 0)
        except REDIS_DOWN as exc:
            # Unknown while Redis is down: not idle, so the worker waits for it.
            self._outage(exc)
            return True

    def close(self, reason: str) -> None:
        if not self._put_back():
            logger.error(
                "Redis (REDIS_URL) did not answer: %d request(s) could not be "
                "put back in the queue at close",
                len(self._held),
                extra={"spider": self.spider},
            )
        super().close(reason)

    def _enqueue(self, entry: _Held) -> bool:
        """Queue *entry* in Redis (``False``: a duplicate); raises :data:`REDIS_DOWN`."""
        request = entry.request
        if not entry.seen:
            if not request.dont_filter and self.df.request_seen(request):
                self.df.log(request, self.spider)
                return False
            entry.seen = True
        self.queue.push(request)
        if self.stats:
            self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def _put_back(self) -> bool:
        """Move the held requests to Redis, oldest first; whether none is left."""
        while self._held:
            try:
                self._enqueue(self._held[0])
            except REDIS_DOWN as exc:
                self._outage(exc)
                return False
            self._held.popleft()
        if self._down_since is not None:
            logger.warning(
                "Redis (REDIS_URL) answers again after %.1f s; held requests queued",
                time.monotonic() - self._down_since,
                extra={"spider": self.spider},
            )
            self._down_since = None
        return True

    def _outage(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "Redis (REDIS_URL) does not answer (%s): this worker holds its "
                "new requests until it does",
                exc,
                extra={"spider": self.spider},
            )


class DrainingRedisSpider(RedisSpider):  # type: ignore[misc]
    """A ``RedisSpider`` whose workers close once the shared queue is drained.

    Seeds are JSON objects (``{"url": ..., "meta": {...}}``) or plain URLs
    pushed to ``<name>:start_urls``. A worker closes when it has been idle
    (nothing in flight, nothing in the shared queue or the seeds) for
    ``REDIS_DRAIN_GRACE`` seconds (default 8; 3 is enough with
    ``REDIS_ENGINE_HEARTBEAT=1``). Scrapy signals ``spider_idle`` only when
    this worker has nothing in flight and the shared queue looks empty, so
    the last busy worker drains everything; a Redis outage counts as busy.
    """

    drain_grace: float = DRAIN_GRACE
    _last_busy: float = 0.0

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        spider.drain_grace = _seconds(settings, "REDIS_DRAIN_GRACE", DRAIN_GRACE)
        if settings.get("REDIS_ENGINE_HEARTBEAT") not in (None, ""):
            _set_engine_heartbeat(_seconds(settings, "REDIS_ENGINE_HEARTBEAT", 5.0))
        spider._busy()
        crawler.signals.connect(spider._busy, signal=signals.response_received)
        return spider  # type: ignore[no-any-return]

    async def start(self) -> AsyncIterator[Request]:
        """The seeds waiting in Redis (problem 1: ``start_requests`` is not called)."""
        for request in self.next_requests():
            yield request

    def make_request_from_data(self, data: bytes | str) -> Request | None:
        """A filtered ``GET`` for a seed (problem 2), or ``None`` for bad data."""
        text = bytes_to_str(data, self.redis_encoding)
        fields: Any = {"url": text.strip()}
        if text.lstrip().startswith("{"):
            try:
                fields = json.loads(text)
            except ValueError as exc:
                fields = {"error": str(exc)}
        url = fields.get("url") if isinstance(fields, dict) else None
        meta = fields.get("meta", {}) if isinstance(fields, dict) else None
        if not isinstance(url, str) or not url or not isinstance(meta, dict):
            self.logger.error(
                "Ignored a seed in %s: want a URL or a JSON object with a 'url' "
                "string and an optional 'meta' object, got %r",
                self.redis_key,
                text[:200],
            )
            return None
        return Request(url, meta=meta, dont_filter=False)

    def spider_idle(self) -> None:
        """Close only after ``drain_grace`` idle seconds (raises DontCloseSpider before)."""
        try:
            if self.count_size(self.redis_key) > 0:
                self._busy()
                self.schedule_next_requests()
        except REDIS_DOWN:
            self._busy()  # not drained, just unknown: the grace runs from its end
        if time.monotonic() - self._last_busy < self.drain_grace:
            raise DontCloseSpider

    def _busy(self, *args: Any, **kwargs: Any) -> None:
        self._last_busy = time.monotonic()


def _seconds(settings: Any, name: str, default: float) -> float:
    try:
        value = float(settings.get(name, default))
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise ValueError(
            f"{name} must be a number of seconds > 0, got {settings.get(name)!r}"
        )
    return value


def _set_engine_heartbeat(seconds: float) -> None:
    # Problem 4: Scrapy's engine polls the scheduler (so Redis) on a private,
    # hard-coded 5 s heartbeat. Class-wide on purpose: a worker process runs
    # one crawl. Skipped, with a warning, if a Scrapy release renames it.
    if not isinstance(
        getattr(ExecutionEngine, "_SLOT_HEARTBEAT_INTERVAL", None), float
    ):
        logger.warning(
            "REDIS_ENGINE_HEARTBEAT is ignored: this Scrapy has no "
            "ExecutionEngine._SLOT_HEARTBEAT_INTERVAL"
        )
        return
    ExecutionEngine._SLOT_HEARTBEAT_INTERVAL = seconds
