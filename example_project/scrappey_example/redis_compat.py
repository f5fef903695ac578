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
requests in this worker, in order, and puts them in Redis once it answers.
None is dropped, not even by a command Redis ran but whose reply was lost
when it went away (the dupefilter and the queue change in one script; a pop
leaves a receipt).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from scrapy import Request, signals
from scrapy.core.engine import ExecutionEngine
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.misc import load_object
from scrapy_redis import scheduler
from scrapy_redis.queue import PriorityQueue
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


# KEYS: dupefilter set, queue. ARGV: fingerprint ("" = unfiltered), request,
# score. The filter and the queue change together or not at all, so a reply
# lost to an outage never leaves a fingerprint without its request.
_ENQUEUE_LUA = """
if ARGV[1] ~= '' and redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""
# KEYS: queue, this worker's receipt. Pops the first request and keeps it in
# the receipt, so a pop whose reply was lost can be recovered.
_POP_LUA = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0)
if #first == 0 then return false end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, 0)
redis.call('SET', KEYS[2], first[1], 'EX', 86400)
return first[1]
"""


class Scheduler(scheduler.Scheduler):  # type: ignore[misc]
    """scrapy-redis's scheduler (its priority queue), which outlives a Redis outage.

    Invariants: ``_held`` holds, in arrival order, the requests accepted while
    Redis was down; they go to Redis before any newer request and leave
    ``_held`` only once Redis has them (or its dupefilter refused them).
    Enqueueing (filter and queue) and popping are each one script, and a pop
    also writes this worker's receipt: after a pop that failed, the receipt
    tells whether Redis ran it (then the request is taken from the receipt),
    so a lost reply loses no request.
    """

    def open(self, spider: Any) -> None:
        queue_cls = load_object(self.queue_cls)
        if not issubclass(queue_cls, PriorityQueue):
            raise TypeError(
                f"{type(self).__qualname__} needs SCHEDULER_QUEUE_CLASS "
                f"scrapy_redis.queue.PriorityQueue, got {self.queue_cls!r}"
            )
        super().open(spider)
        self._held: deque[Request] = deque()
        self._down_since: float | None = None
        self._enqueue_script = self.server.register_script(_ENQUEUE_LUA)
        self._pop_script = self.server.register_script(_POP_LUA)
        self._receipt = f"{self.queue.key}:receipt:{uuid.uuid4().hex}"
        self._last_popped: bytes | None = None
        self._pop_failed = False

    def enqueue_request(self, request: Request) -> bool:
        if self._put_back():
            try:
                return self._enqueue(request)
            except REDIS_DOWN as exc:
                self._outage(exc)
        self._held.append(request)
        if self.stats:
            self.stats.inc_value("scheduler/redis/held")
        return True

    def next_request(self) -> Request | None:
        if not self._put_back():
            return None
        try:
            popped = self._recovered() if self._pop_failed else None
            if popped is None:
                self._pop_failed = True  # until its reply arrives
                popped = self._pop_script(keys=[self.queue.key, self._receipt])
                self._pop_failed = False
        except REDIS_DOWN as exc:
            self._outage(exc)
            return None
        if not popped:
            return None
        self._last_popped = popped
        if self.stats:
            self.stats.inc_value("scheduler/dequeued/redis")
        request: Request = self.queue._decode_request(popped)
        return request

    def has_pending_requests(self) -> bool:
        if self._held or self._pop_failed:
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
        with contextlib.suppress(*REDIS_DOWN):
            self.server.delete(self._receipt)  # else it expires in a day
        super().close(reason)

    def _enqueue(self, request: Request) -> bool:
        """Queue *request* in Redis (``False``: a duplicate); raises :data:`REDIS_DOWN`."""
        fingerprint = (
            "" if request.dont_filter else self.df.request_fingerprint(request)
        )
        member = self.queue._encode_request(request)
        keys = [self.df.key, self.queue.key]
        if not self._enqueue_script(
            keys=keys, args=[fingerprint, member, -request.priority]
        ):
            self.df.log(request, self.spider)
            return False
        if self.stats:
            self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def _recovered(self) -> bytes | None:
        """The request of a pop whose reply was lost, if Redis ran it."""
        receipt: bytes | None = self.server.get(self._receipt)
        self._pop_failed = False
        if receipt is None or receipt == self._last_popped:
            return None
        logger.warning(
            "Recovered a request popped from Redis when it went away",
            extra={"spider": self.spider},
        )
        return receipt

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
