"""One Scrapy cookie jar per named session pool.

Scrapy's ``CookiesMiddleware`` (700) keeps one jar per ``cookiejar`` meta key
(absent: the default jar), adds its cookies to the request before our
middleware (950) sees it, and stores the Set-Cookie of the response in the
same jar. A request routed to a named pool whose meta names no jar gets the
pool's own key, :class:`PoolJar`, so that cookies collected on one named
pool's pages are only ever sent on that pool's sessions. Scope pools
(``"spider"``, ``"domain:…"``) keep the default jar, shared with direct
requests as in plain Scrapy; cookie domains keep domain pools apart.

The key is set when the request is scheduled, so that its first pass through
``CookiesMiddleware`` already uses the pool's jar (and the cookies set on the
request itself go into that jar, not into the default one). A request that
reaches the middleware with another key (downloaded without being scheduled,
or moved to another pool by a downloader middleware) gets the right key there,
and ``CookiesMiddleware.process_request`` runs again to replace the Cookie
header the wrong jar added.

Invariant: only :class:`PoolJar` values are ever changed or removed; any
other ``cookiejar`` value (``None`` included) is the user's choice and wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.downloadermiddlewares.cookies import CookiesMiddleware

from ._downloader import find_middleware
from .exceptions import ScrappeyError
from .routing import is_named_pool

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from .routing import Router


@dataclass(frozen=True)
class PoolJar:
    """The ``cookiejar`` meta key of a named pool's own jar (equal to no
    key of another type, so no user key can name it)."""

    pool: str


class PoolCookieJars:
    """Keeps each named pool's requests on that pool's Scrapy cookie jar."""

    def __init__(self, crawler: Crawler, router: Router) -> None:
        self._crawler = crawler
        self._router = router
        self._enabled = crawler.settings.getbool("COOKIES_ENABLED")
        self._cookies: CookiesMiddleware | None = None
        if self._enabled:
            crawler.signals.connect(self._scheduled, signal=signals.request_scheduled)

    def assign(self, request: Request, pool: str | None) -> None:
        """Put *request*, routed to *pool*, on that pool's jar.

        When it was on another jar, its Cookie header is rebuilt from the
        right one by ``CookiesMiddleware`` itself.
        """
        if self._enabled and _set_key(request, pool):
            middleware = self._cookie_middleware()
            if middleware is not None:
                middleware.process_request(request)

    def _scheduled(self, request: Request) -> None:
        if "cookiejar" not in request.meta and not self._router.may_name_pool(request):
            return  # a scope pool's request: the default jar, as it is
        try:
            route = self._router.route(request)
        except ScrappeyError:
            return  # the middleware fails the request with this error
        if route is not None:
            _set_key(request, route.pool)

    def _cookie_middleware(self) -> CookiesMiddleware | None:
        # Looked up on first use: the downloader's middlewares are built
        # after ours. A replacement that is no CookiesMiddleware subclass
        # only gets the meta key.
        if self._cookies is None:
            self._cookies = find_middleware(self._crawler, CookiesMiddleware)
        return self._cookies


def _set_key(request: Request, pool: str | None) -> bool:
    """Give *request* the jar key of *pool*; whether the key changed."""
    meta = request.meta
    current = meta.get("cookiejar")
    if "cookiejar" in meta and not isinstance(current, PoolJar):
        return False
    wanted = PoolJar(pool) if pool is not None and is_named_pool(pool) else None
    if current == wanted:
        return False
    if wanted is None:
        del meta["cookiejar"]
    else:
        meta["cookiejar"] = wanted
    return True
