"""Session checks: is this page what a healthy session returns?

:class:`SessionChecks` runs, on every page fetched on a session, first the
ban detectors (``SCRAPPEY_BAN_DETECTORS``: is it an anti-bot vendor's block
page?), then the ban statuses (``SCRAPPEY_SESSION_BAN_STATUSES``), the
spider's ``scrappey_session_check(response, request)`` method and the checker
class of ``SCRAPPEY_SESSION_CHECKER``; on a page fetched without a session,
only the ban detectors. A page fails when a detector names a vendor, a status
is a ban status, a check returns False, or a detector or check returns
something else than it should or raises; a ``CloseSpider`` a check raises
closes the spider with its reason. The caller retires the session.

State: ``_failures`` counts failed checks in a row across the crawl (reset by
any page that passes); reaching ``SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES``
closes the spider, so that a broken check cannot burn the account.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import CloseSpider
from scrapy.utils.misc import build_from_crawler, load_object

from ._pool_stats import PoolStats
from .bans import BuiltinDetector, Detector, Page
from .exceptions import ScrappeyConfigError, SessionCheckFailed

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from .config import Config

logger = logging.getLogger(__name__)

_Check = tuple[str, "Callable[[Response, Request], object]"]


@dataclass(frozen=True)
class CheckFailure:
    """Why a page failed the session check: a ban by *vendor*, or a failed check."""

    vendor: str | None = None

    @property
    def retire_reason(self) -> str:
        """The session's ``scrappey/sessions/retired/<reason>``."""
        return "banned" if self.vendor else "check"

    @property
    def retry_reason(self) -> str:
        """The request's retry reason."""
        if self.vendor:
            return f"scrappey/banned/{self.vendor}"
        return "scrappey/session_check_failed"

    def error(self, request: Request) -> SessionCheckFailed:
        """What the request fails with once its retries ran out."""
        if self.vendor:
            return SessionCheckFailed(
                f"{request}: every try got {self.vendor}'s block page; dropped"
            )
        return SessionCheckFailed(
            f"{request}: the session check rejected the page on every session "
            f"it was tried on; dropped"
        )


class SessionChecks:
    """The session checks of one crawl, and their circuit breaker."""

    def __init__(
        self,
        crawler: Crawler,
        config: Config,
        spider: Spider | None,
        *,
        on_fatal: Callable[[str, str], None],
    ) -> None:
        self._stats = crawler.stats
        self._pool_stats = PoolStats(
            crawler.stats, per_pool=config.session_pools.stats_per_pool
        )
        self._bans = config.session_ban_statuses
        self._detectors = config.ban_detectors
        self._limit = config.max_consecutive_check_failures
        self._on_fatal = on_fatal
        self._extra = {"spider": spider}
        self._checks: list[_Check] = []
        method = getattr(spider, "scrappey_session_check", None)
        if callable(method):
            self._checks.append(("scrappey_session_check (spider method)", method))
        if config.session_checker is not None:
            path = config.session_checker
            checker = _build_checker(path, crawler)
            self._checks.append((f"{path!s} (SCRAPPEY_SESSION_CHECKER)", checker.check))
        self._failures = 0
        self._reported: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether any check is configured."""
        return bool(self._detectors or self._bans or self._checks)

    def passes(
        self, response: Response, request: Request, *, pool: str | None = None
    ) -> bool:
        """Whether *response*, fetched on a session (of *pool*), shows a healthy session."""
        return self.failure(response, request, pool=pool) is None

    def failure(
        self,
        response: Response,
        request: Request,
        *,
        session: bool = True,
        pool: str | None = None,
    ) -> CheckFailure | None:
        """Why *response* shows an unhealthy session, or None when it passes.

        Without a *session*, only the ban detectors run. Counts
        ``scrappey/sessions/check_failed`` (also for *pool*) and
        ``scrappey/bans/<vendor>``.
        """
        vendor = self._ban(response)
        if vendor is None and (not session or self._verdict(response, request)):
            self._failures = 0
            return None
        if vendor:
            self._stats.inc_value(f"scrappey/bans/{vendor}")
        self._fail(pool)
        return CheckFailure(vendor or None)

    def _fail(self, pool: str | None) -> None:
        self._pool_stats.inc("scrappey/sessions/check_failed", pool)
        self._failures += 1
        if self._failures == self._limit:
            self._on_fatal(
                "scrappey_session_checks_failing",
                f"{self._failures} session checks in a row failed "
                f"(SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES); is the check broken?",
            )

    def _ban(self, response: Response) -> str | None:
        """The vendor whose block page *response* is; "" for a broken detector."""
        page: Page | None = None  # read only if a built-in detector runs
        for name, detector in self._detectors:
            if isinstance(detector, BuiltinDetector):
                page = page or Page(response)
                vendor = detector.on_page(page)
            else:
                vendor = self._user_detector(name, detector, response)
            if vendor is not None:
                logger.debug(
                    "Ban detected (%(vendor)s) on %(url)s",
                    {"vendor": vendor, "url": response.url},
                    extra=self._extra,
                )
                return vendor
        return None

    def _user_detector(
        self, name: str, detector: Detector, response: Response
    ) -> str | None:
        try:
            vendor = detector(response)
        except Exception:  # noqa: BLE001 - a user's detector must not break the crawl
            self._error(f"{name} (ban detector)", "raised an exception", exc_info=True)
            return ""
        if vendor is None or (isinstance(vendor, str) and vendor):
            return vendor
        self._error(
            f"{name} (ban detector)",
            f"returned {vendor!r:.60}, not a vendor name or None",
        )
        return ""

    def _verdict(self, response: Response, request: Request) -> bool:
        if response.status in self._bans:
            logger.debug(
                "Ban status %(status)d from %(url)s",
                {"status": response.status, "url": response.url},
                extra=self._extra,
            )
            return False
        for name, check in self._checks:
            try:
                result = check(response, request)
            except CloseSpider as ex:
                self._on_fatal(ex.reason, f"{name} raised CloseSpider")
                return False
            except Exception:  # noqa: BLE001 - a user's check must not break the crawl
                self._error(name, "raised an exception", exc_info=True)
                return False
            if not isinstance(result, bool):
                self._error(name, f"returned {result!r:.60}, not True or False")
                return False
            if not result:
                return False
        return True

    def _error(self, name: str, what: str, *, exc_info: bool = False) -> None:
        self._stats.inc_value("scrappey/sessions/check_error")
        if name in self._reported:
            return  # counted in scrappey/sessions/check_error
        self._reported.add(name)
        logger.error(
            "The session check %(name)s %(what)s; the page counts as a failed check "
            "(logged once, scrappey/sessions/check_error counts them)",
            {"name": name, "what": what},
            exc_info=exc_info,
            extra=self._extra,
        )


def _build_checker(path: str | type, crawler: Crawler) -> Any:
    try:
        cls = load_object(path)
    except (ImportError, NameError, ValueError, AttributeError) as ex:
        raise ScrappeyConfigError(
            f"SCRAPPEY_SESSION_CHECKER {path!r} could not be imported: {ex}"
        ) from ex
    if not isinstance(cls, type) or not callable(getattr(cls, "check", None)):
        raise ScrappeyConfigError(
            f"SCRAPPEY_SESSION_CHECKER {path!r} must name a class with a "
            f"check(response, request) method, got {cls!r:.60}."
        )
    return build_from_crawler(cls, crawler)
