"""ScrappeyMiddleware: send a crawl's requests through the Scrappey API."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals, version_info
from scrapy.exceptions import CloseSpider, IgnoreRequest

from ._lifecycle import CrawlLifecycle, spider_of
from ._outcomes import ReplyOutcomes, record_session
from ._pool_stats import PoolStats
from ._priority import warn_if_misplaced, warn_if_pools_share_fingerprints
from ._redact import redact_url
from ._speed import SlowLeaseHint
from ._summary import start_line, summary
from ._tasks import TaskGroup
from .balance import BalanceWatch
from .budget import Budget, BudgetExhausted, CostedClient
from .codes import ErrorKind
from .config import Config, require_asyncio
from .cookiejars import PoolCookieJars
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAPIUnreachable,
    ScrappeyAuthError,
    ScrappeyError,
    ScrappeyTransportError,
    SessionsUnavailable,
    SessionWaitTimeout,
    SpiderClosing,
)
from .item_metadata import record_charge
from .ledger import SessionLedger
from .orphans import sweep_at_start
from .payload import build_payload
from .redis_link import RedisLink, RedisUnreachable
from .responses import BAD_CURRENT_URL_FLAG, from_api_response
from .routing import Route, Router, allowed_domains
from .session_check import CheckFailure, SessionChecks
from .session_init import SessionInit
from .sessions import Session, SessionManager
from .shared_budget import SharedBudget
from .throttle import TargetThrottle

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    # typing.Self requires Python 3.11
    from typing_extensions import Self

    from .client import ApiReply
    from .cost import Charge

logger = logging.getLogger(__name__)

# Scrapy >= 2.18 honours CloseSpider raised by a spider_opened handler; older
# versions only log it, so the close is started from engine_started instead.
_CLOSE_FROM_OPEN = version_info >= (2, 18)


class ScrappeyMiddleware(ReplyOutcomes, CrawlLifecycle):
    """Downloader middleware that routes requests through Scrappey.

    Enable it with ``DOWNLOADER_MIDDLEWARES = {"scrapy_scrappey.ScrappeyMiddleware": 950}``
    and ``SCRAPPEY_API_KEY``; see the README for every setting and meta key.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        spider = spider_of(crawler)
        self.config = Config.from_settings(crawler.settings).for_spider(spider)
        require_asyncio()
        self._budget = Budget(self.config.cost, crawler.stats, self._on_fatal)
        self._client = CostedClient(
            self.config.api_url, self.config.api_key, self._budget
        )
        self._checks = SessionChecks(
            crawler, self.config, spider, on_fatal=self._on_fatal
        )
        self._throttle = TargetThrottle(crawler)
        init = SessionInit(
            self.config,
            self._client,
            self._checks,
            crawler.stats,
            spider,
            page=self._page,
            throttle=self._throttle,
        )
        self._ledger = SessionLedger.for_config(self.config)
        url = self.config.redis_url
        self._redis = (
            RedisLink(url, self.config.api_key, heartbeat=self.config.redis_heartbeat)
            if url
            else None
        )
        self._sessions = SessionManager(
            self.config,
            self._client,
            crawler.stats,
            ledger=self._ledger,
            on_fatal=self._on_fatal,
            prepare=init if init.enabled else None,
            extra={"spider": spider},
            shared=self._redis,
        )
        self._slow_lease = SlowLeaseHint(self.config, extra={"spider": spider})
        self._pool_stats = PoolStats(
            crawler.stats, per_pool=self.config.session_pools.stats_per_pool
        )
        self._router = Router(
            self.config,
            allowed_domains=allowed_domains(spider),
            pool_of=self._sessions.pool_of,
            choose_pool=getattr(spider, "scrappey_session_pool", None),
        )
        self._jars = PoolCookieJars(crawler, self._router)
        self._fatal: str | None = None
        self._opened = False
        self._closing = False
        self._warned: set[str] = set()
        self._inflight: set[asyncio.Future[tuple[ApiReply, Charge]]] = set()
        self._tasks = TaskGroup(extra={"spider": spider})
        self._balance = BalanceWatch(
            self._client,
            self.config.cost,
            crawler.stats,
            timeout=self.config.control_timeout,
            extra={"spider": spider},
            on_low=self._on_fatal,
            spawn=self._tasks.spawn,
        )
        self._client.shared = SharedBudget.for_crawl(
            self._budget,
            self._redis,
            crawler.stats,
            self._tasks,
            name=getattr(spider, "name", None) or "spider",
            extra={"spider": spider},
        )
        self._watcher: asyncio.Future[None] | None = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.engine_started, signal=signals.engine_started)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # -- signals -------------------------------------------------------------

    async def spider_opened(self, spider: Spider) -> None:
        message, args = start_line(self.config)
        logger.info(message, args, extra={"spider": spider})
        warn_if_misplaced(self.crawler, self, extra={"spider": spider})
        warn_if_pools_share_fingerprints(self.crawler, self.config, {"spider": spider})
        self._watcher = self._tasks.spawn(
            self._watch_closing(), name="scrappey-watch-closing"
        )
        # With the HTTP cache on, a fully cached re-run must cost nothing:
        # pools are then created by the first request the cache misses.
        pools = [] if self.config.http_cache else self._router.initial_pools()
        try:
            await self._open_redis(spider)
            await self._balance.opened()
            if self._ledger is not None:
                await sweep_at_start(
                    self._ledger, self._sessions.destroy_ids, self.crawler.stats, spider
                )
            await self._sessions.start(pools)
        except ScrappeyError:
            if self._fatal is None:
                raise
            if _CLOSE_FROM_OPEN:
                raise CloseSpider(self._fatal) from None
        finally:
            self._opened = True

    async def _open_redis(self, spider: Spider) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.open(self.config.max_sessions, extra={"spider": spider})
            if self._client.shared is not None:
                await self._client.shared.open()
        except RedisUnreachable as ex:
            self._on_fatal("scrappey_redis_unreachable", str(ex))
            raise

    async def engine_started(self) -> None:
        if self._fatal is not None:  # the start failed on an older Scrapy
            self._close_spider(self._fatal)

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        self._on_closing()
        if self._watcher is not None:
            self._watcher.cancel()
        await self._sessions.close()
        if self._client.shared is not None:
            await self._client.shared.close()
        if self._redis is not None:
            await self._redis.close()
        if self._ledger is not None:
            self._ledger.close()
        await self._balance.end()
        await self._client.close()
        message, args = summary(self.crawler.stats.get_stats())
        logger.info(message, args, extra={"spider": spider})

    # -- requests ------------------------------------------------------------

    def session_pool(self, session_id: str) -> str | None:
        """The pool key of a session this crawl created (``None``: not one of them).

        Asked by :class:`~scrapy_scrappey.RequestFingerprinter`.
        """
        return self._sessions.pool_of(session_id)

    async def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Response:
        if "cached" in response.flags and "scrappey_session" not in request.meta:
            # HttpCacheMiddleware (900) answered before us: no session was
            # used, and a copy of this meta (the affinity one-liner) must
            # not fail with a KeyError.
            request.meta["scrappey_session"] = None
        return response

    async def process_request(
        self, request: Request, spider: Spider | None = None
    ) -> Request | Response | None:
        if (
            request.meta.get("scrappey") is not False
            and self._router.is_raw(request)
            and redact_url(request.url) != request.url
        ):
            # The key in a raw request's URL is never used (the client adds
            # SCRAPPEY_API_KEY), but Scrapy would log that URL ("Crawled (200)
            # <POST …?key=…>") and hand it to errbacks: send a redacted copy.
            self._warn_once(
                "raw-key",
                "A raw Scrappey request URL carries the API key; the middleware adds "
                "the key itself: set SCRAPPEY_API_KEY and drop it from the URL.",
            )
            return request.replace(url=redact_url(request.url), dont_filter=True)
        route = self._router.route(request)
        if route is None:
            return None
        if self._fatal is not None:
            self._inc(f"scrappey/dropped/{self._fatal}")
            raise IgnoreRequest(
                f"Scrappey is unusable in this crawl ({self._fatal}); not sending {request}"
            )
        self._jars.assign(request, route.pool)
        self._budget.resent(request)
        try:
            return await self._send(request, route)
        except ScrappeyAuthError as ex:
            self._on_fatal("scrappey_bad_api_key", str(ex))
            raise IgnoreRequest(f"{ex}; {request} dropped") from None
        except (SpiderClosing, SessionsUnavailable) as ex:
            raise IgnoreRequest(f"{request} not sent through Scrappey: {ex}") from None
        except SessionWaitTimeout as ex:
            return self._retry(request, "scrappey/session_wait_timeout", ex)
        except ScrappeyTransportError as ex:
            self._inc("scrappey/errors/transport")
            if isinstance(ex, ScrappeyAPIUnreachable) and not self._client.reached:
                # A wrong SCRAPPEY_API_URL: one error, not one per request.
                self._on_fatal("scrappey_api_unreachable", str(ex))
                raise IgnoreRequest(f"{ex}; {request} dropped") from None
            raise  # an OSError: RetryMiddleware retries it

    async def _send(self, request: Request, route: Route) -> Request | Response:
        if route.raw:
            self._inc("scrappey/raw/requests")
        response: Response | None = None
        failure: CheckFailure | None = None
        # The session first, the target's gate last: a gate's start stamps the
        # slot's delay, so it is taken just before the call, and a request
        # waiting for its pool's session holds no room on the target (another
        # pool's requests to that site go on). The price: a leased session
        # idles while its request waits for the target's delay or room.
        session = await self._lease(request, route)
        try:
            async with self._throttle.slot(request, route.slot_request(request)):
                reply, charge = await self._call(
                    self._payload(request, route, session), request, session
                )
                error = reply.error() if route.raw else reply.page_error()
                if error is not None:
                    self._inc(f"scrappey/errors/{error.code or error.kind.value}")
                    if session is not None:
                        # Before the release hands the session to the next waiter.
                        self._session_error(session, error)
                elif not route.raw:
                    response = self._page(request, reply)
                    self._throttle.downloaded(request, response)
                    failure = self._health(response, request, session)
        finally:
            if session is not None:
                self._sessions.release(session)
        record_charge(request.meta, charge, route.pool)
        if route.raw:
            return self._raw_reply(request, route, session, reply, error)
        if error is not None or failure is not None:
            self._budget.waste(charge)  # a charged reply rejected or retried: wasted
        else:
            self._budget.paid_page(request, charge)
        if error is not None:
            return self._on_api_error(request, error)
        if failure is not None:
            return self._retry(request, failure.retry_reason, failure.error(request))
        assert response is not None  # no error, no failure: a page
        record_session(request, route, session)
        self._inc(f"scrappey/responses/status/{response.status}")
        return response

    async def _lease(self, request: Request, route: Route) -> Session | None:
        if route.pool is None:
            return None
        session = await self._slow_lease.timed(
            route.pool, self._sessions.lease(route.pool, route.session)
        )
        moved = session.id not in (route.session, request.meta.get("scrappey_session"))
        if route.session is not None and moved:
            # Its session was retired: the chain goes on on the replacement,
            # and so do the request's retries (not counted again).
            self._inc("scrappey/sessions/affinity_lost")
            request.meta["scrappey_session"] = session.id
        return session

    def _page(self, request: Request, reply: ApiReply) -> Response:
        response = from_api_response(reply.data, request=request)
        if BAD_CURRENT_URL_FLAG in response.flags:
            self._inc("scrappey/responses/bad_current_url")
            self._warn_once(
                "bad-current-url",
                "The Scrappey API answered a currentUrl that is not an absolute "
                "http(s) URL; such responses keep the request's URL "
                "(scrappey/responses/bad_current_url counts them)",
            )
        return response

    def _health(
        self, response: Response, request: Request, session: Session | None
    ) -> CheckFailure | None:
        """Run the session checks (only the ban detectors without a session);
        a session that fails them is retired (lease held)."""
        failure = self._checks.failure(
            response,
            request,
            session=session is not None,
            pool=session.pool if session is not None else None,
        )
        if failure is not None and session is not None:
            self._sessions.retire(session, failure.retire_reason)
        return failure

    def _session_error(self, session: Session, error: ScrappeyAPIError) -> None:
        # Called inside the lease: a session retired here is never handed to
        # the next waiter.
        if error.kind is ErrorKind.SESSION:
            self._sessions.report_dead(session, str(error))
        elif error.kind is ErrorKind.SESSION_BOUND:
            self._sessions.report_error(session)

    def _payload(
        self, request: Request, route: Route, session: Session | None
    ) -> dict[str, Any]:
        payload = (
            dict(route.params) if route.raw else build_payload(request, route.params)
        )
        if session is not None:
            payload["session"] = session.id
        return payload

    async def _call(
        self, payload: dict[str, Any], request: Request, session: Session | None
    ) -> tuple[ApiReply, Charge]:
        timeout = self.config.timeout_for(request)
        call = asyncio.ensure_future(self._client.costed_call(payload, timeout=timeout))
        self._inflight.add(call)
        call.add_done_callback(self._inflight.discard)
        pool = session.pool if session is not None else None
        self._pool_stats.inc("scrappey/requests", pool)
        started = time.monotonic()
        try:
            answer = await call
        except BudgetExhausted as ex:
            if not ex.sent:
                self._pool_stats.inc("scrappey/requests", pool, -1)
            raise
        except asyncio.CancelledError:
            if self._closing:
                raise SpiderClosing from None
            raise
        request.meta["download_latency"] = time.monotonic() - started
        return answer
