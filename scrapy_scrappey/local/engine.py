"""Fetch engines: how the local server turns a ``request.*`` into a page.

:class:`HttpEngine` (the default, ``solution.type == "request"``) really
fetches the target with aiohttp. Each session owns a ``ClientSession`` with
its own cookie jar, so cookies set by one response are sent with the next
request of the same session; a request without a session gets a throw-away
jar. All clients share one connection pool. ``cookiejar`` entries are stored
in the session's jar; the ``cookies`` string is sent with that request only.

:class:`StaticEngine` answers every request with one fixed HTML page and
fetches nothing (benchmarks).

Neither drives a browser: ``browserActions``, screenshots, captcha solving
and the like are accepted and ignored. The browser engine is in
``browser.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookies import Morsel, SimpleCookie
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from yarl import URL

from scrapy_scrappey.local.browser_params import BrowserParams
from scrapy_scrappey.local.resolve import PinnedResolver

if TYPE_CHECKING:
    from aiohttp.abc import AbstractCookieJar

    from scrapy_scrappey.local.resolve import HostRule
    from scrapy_scrappey.local.sessions import LocalSession
    from scrapy_scrappey.local.validation import CookieSpec

logger = logging.getLogger(__name__)

#: Target timeout when the command names none (the maintainer's n8n default).
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class FetchSpec:
    """What to send to the target, already in HTTP terms."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None
    cookiejar: tuple[CookieSpec, ...]
    timeout: float
    user_agent: str
    #: What a browser engine does beyond loading the page (others ignore it).
    browser: BrowserParams = field(default_factory=BrowserParams)


@dataclass(frozen=True)
class FetchResult:
    """What came back from the target (after redirects)."""

    status: int
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    redirects: list[str]
    cookies: list[dict[str, Any]]
    user_agent: str
    engine: str
    #: ``solution`` fields only a browser produces (screenshot, innerText, …).
    extras: dict[str, Any] = field(default_factory=dict)


class TargetError(Exception):
    """The target could not be fetched (connection refused, timeout, …)."""


class SessionLost(TargetError):
    """The session's state died with its browser; it is no longer open."""


class Engine(Protocol):
    """What the command handlers need from a fetch engine."""

    #: The ``solution.type`` of the pages it fetches.
    name: str

    async def fetch(self, spec: FetchSpec, session: LocalSession | None) -> FetchResult:
        """Fetch *spec* within *session* (``None``: a one-off context)."""

    async def release(self, session: LocalSession) -> None:
        """Free what *session* holds; called once it is closed and idle."""

    async def close(self) -> None:
        """Free everything (server shutdown)."""


class HttpEngine:
    """Fetch targets with aiohttp, one cookie jar per session.

    *resolve*: host overrides (see ``resolve.py``) applied to every fetch.
    """

    name = "request"

    def __init__(self, resolve: tuple[HostRule, ...] = ()) -> None:
        self._resolve = resolve
        self._resolver: PinnedResolver | None = None
        self._connector: aiohttp.TCPConnector | None = None
        self._clients: dict[LocalSession, aiohttp.ClientSession] = {}

    async def fetch(self, spec: FetchSpec, session: LocalSession | None) -> FetchResult:
        """Send the request, follow redirects, read the whole body."""
        client = self._client_for(session)
        try:
            _load_cookiejar(client.cookie_jar, spec)
            return await self._send(client, spec)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise TargetError(_describe(exc, spec)) from exc
        finally:
            if session is None:
                await client.close()

    async def release(self, session: LocalSession) -> None:
        """Close the session's client (and forget its cookies)."""
        client = self._clients.pop(session, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        """Close every client and the shared connection pool."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
        if self._connector is not None:
            await self._connector.close()
            self._connector = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    def _client_for(self, session: LocalSession | None) -> aiohttp.ClientSession:
        if session is not None and session in self._clients:
            return self._clients[session]
        if self._connector is None:
            # Created lazily: a connector wants a running event loop.
            self._resolver = PinnedResolver(self._resolve) if self._resolve else None
            self._connector = aiohttp.TCPConnector(limit=0, resolver=self._resolver)
        client = aiohttp.ClientSession(
            connector=self._connector,
            connector_owner=False,
            # Without unsafe=True the jar drops cookies of IP hosts (127.0.0.1).
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )
        if session is not None:
            self._clients[session] = client
        return client

    async def _send(
        self, client: aiohttp.ClientSession, spec: FetchSpec
    ) -> FetchResult:
        async with client.request(
            spec.method,
            spec.url,
            headers=spec.headers,
            data=spec.body,
            timeout=aiohttp.ClientTimeout(total=spec.timeout),
        ) as response:
            body = await response.read()
        final = response.url
        return FetchResult(
            status=response.status,
            url=str(final),
            headers=list(response.headers.items()),
            body=body,
            redirects=[str(r.url) for r in response.history] + [str(final)],
            cookies=_cookies_for(client.cookie_jar, final),
            user_agent=spec.user_agent,
            engine=self.name,
        )


class StaticEngine:
    """Answer every request with the same page; nothing is fetched."""

    name = "request"

    def __init__(self, body: str) -> None:
        self._body = body.encode("utf-8")

    async def fetch(self, spec: FetchSpec, session: LocalSession | None) -> FetchResult:
        """The fixed page, as if *spec.url* had served it."""
        return FetchResult(
            status=200,
            url=spec.url,
            headers=[("Content-Type", "text/html; charset=utf-8")],
            body=self._body,
            redirects=[spec.url],
            cookies=[],
            user_agent=spec.user_agent,
            engine=self.name,
        )

    async def release(self, session: LocalSession) -> None:
        """Nothing to free."""

    async def close(self) -> None:
        """Nothing to free."""


def _load_cookiejar(jar: AbstractCookieJar, spec: FetchSpec) -> None:
    target = URL(spec.url)
    for item in spec.cookiejar:
        cookie: SimpleCookie = SimpleCookie()
        cookie[item.name] = item.value
        morsel = cookie[item.name]
        morsel["path"] = item.path or "/"
        domain = item.domain or target.raw_host or ""
        morsel["domain"] = domain
        # The jar refuses cookies whose domain does not match the response URL.
        jar.update_cookies(cookie, URL.build(scheme="http", host=domain.lstrip(".")))


def _cookies_for(jar: AbstractCookieJar, url: URL) -> list[dict[str, Any]]:
    host = url.raw_host or ""
    return [_cookie_dict(m) for m in jar if _domain_matches(m["domain"], host)]


def _domain_matches(domain: str, host: str) -> bool:
    domain = domain.lstrip(".")
    return host == domain or host.endswith("." + domain)


def _cookie_dict(morsel: Morsel[str]) -> dict[str, Any]:
    return {
        "name": morsel.key,
        "value": morsel.value,
        "domain": morsel["domain"],
        "path": morsel["path"] or "/",
        "expires": _expires(morsel),
        "httpOnly": bool(morsel["httponly"]),
        "secure": bool(morsel["secure"]),
        # Browsers treat a cookie without SameSite as Lax.
        "sameSite": morsel["samesite"] or "Lax",
    }


def _expires(morsel: Morsel[str]) -> float:
    """Epoch seconds, or -1 for a session cookie (the browser convention)."""
    max_age = morsel["max-age"]
    if max_age:
        try:
            return round(time.time() + int(max_age), 3)
        except ValueError:
            return -1
    if morsel["expires"]:
        try:
            return parsedate_to_datetime(morsel["expires"]).timestamp()
        except (TypeError, ValueError):
            return -1
    return -1


def _describe(exc: BaseException, spec: FetchSpec) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"timeout after {spec.timeout * 1000:.0f} ms fetching {spec.url}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
