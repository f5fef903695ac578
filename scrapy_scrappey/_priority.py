"""The start-up warnings for a set-up that silently breaks part of a crawl.

A request the middleware answers never reaches the ``process_request`` of the
downloader middlewares after it, so a priority below theirs silently breaks
them: the crawl still "works". Named session pools without the plugin's
``RequestFingerprinter`` work too, but the same URL in two pools is fetched
once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.cookies import CookiesMiddleware
from scrapy.downloadermiddlewares.defaultheaders import DefaultHeadersMiddleware
from scrapy.downloadermiddlewares.httpauth import HttpAuthMiddleware
from scrapy.downloadermiddlewares.httpcache import HttpCacheMiddleware
from scrapy.downloadermiddlewares.offsite import OffsiteMiddleware
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.downloadermiddlewares.stats import DownloaderStats
from scrapy.downloadermiddlewares.useragent import UserAgentMiddleware

from ._downloader import downloader_middlewares
from .fingerprint import RequestFingerprinter
from .pool_config import ATTRIBUTE, SETTING, pool_label

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from .config import Config

logger = logging.getLogger(__name__)

#: The built-ins whose ``process_request`` matters to a Scrappey request, and
#: what is lost without it. The others (compression, proxy, timeout) set
#: nothing the plugin forwards.
_BROKEN: tuple[tuple[type, str], ...] = (
    (HttpCacheMiddleware, "the HTTP cache stores pages but never serves them"),
    (
        DownloaderStats,
        "downloader/request_count and the other request stats are missing",
    ),
    (CookiesMiddleware, "Scrapy's cookies are not forwarded"),
    (UserAgentMiddleware, "USER_AGENT is not forwarded"),
    (DefaultHeadersMiddleware, "DEFAULT_REQUEST_HEADERS are not forwarded"),
    (HttpAuthMiddleware, "http_user/http_pass credentials are not sent"),
    (RobotsTxtMiddleware, "robots.txt is not obeyed"),
    (OffsiteMiddleware, "requests outside allowed_domains are not filtered"),
)


def skipped_builtins(middlewares: tuple[Any, ...], own: object) -> list[str]:
    """``"HttpCacheMiddleware (the HTTP cache …)"`` for each enabled built-in after *own*.

    *middlewares* is the downloader's list of enabled middlewares, in
    ``process_request`` order; built-ins a setting disabled are not in it.
    """
    if own not in middlewares:
        return []
    after = middlewares[middlewares.index(own) + 1 :]
    return [
        f"{cls.__name__} ({consequence})"
        for cls, consequence in _BROKEN
        if any(isinstance(mw, cls) for mw in after)
    ]


def warn_if_misplaced(crawler: Crawler, own: object, extra: dict[str, Any]) -> None:
    """Warn once, at start-up, when *own* runs before built-ins it needs."""
    skipped = skipped_builtins(downloader_middlewares(crawler), own)
    if skipped:
        logger.warning(
            "ScrappeyMiddleware runs before these downloader middlewares in "
            "DOWNLOADER_MIDDLEWARES, so their process_request never sees the "
            "requests it sends: %(skipped)s. Give it a priority above theirs "
            "(950, as the Addon does, is above every built-in).",
            {"skipped": "; ".join(skipped)},
            extra=extra,
        )


def warn_if_pools_share_fingerprints(
    crawler: Crawler, config: Config, extra: dict[str, Any]
) -> None:
    """Warn once, at start-up, when named pools are listed but the crawl's
    fingerprinter does not tell their requests apart."""
    named = config.session_pools.named(domains=config.session_scope == "domain")
    fingerprinter = crawler.request_fingerprinter
    if not named or isinstance(fingerprinter, RequestFingerprinter):
        return
    spider = extra.get("spider")
    where = (
        f"The {ATTRIBUTE} spider attribute"
        if getattr(spider, ATTRIBUTE, None) is not None
        else SETTING
    )
    logger.warning(
        "%(where)s lists the named session pools %(pools)s, but "
        "REQUEST_FINGERPRINTER_CLASS is %(cls)s: the same URL in two pools is "
        "one request for the dupefilter (and one HTTP-cache entry): set "
        'REQUEST_FINGERPRINTER_CLASS = "scrapy_scrappey.RequestFingerprinter" '
        "(the Addon does), or a subclass of it.",
        {
            "where": where,
            "pools": ", ".join(repr(pool_label(p)) for p in named),
            "cls": f"{type(fingerprinter).__module__}.{type(fingerprinter).__qualname__}",
        },
        extra=extra,
    )
