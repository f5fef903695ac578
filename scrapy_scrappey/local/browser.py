"""The browser engine: pages fetched by a real Chromium through Playwright.

Invariants of the shared state (all touched from the event loop only):

* ``_browser`` is the connected browser or ``None``; it is (re)launched under
  ``_launching`` on first use, so a killed browser is replaced by the next
  request that needs one.
* ``_slots`` maps each session that has fetched something to its one
  ``BrowserContext`` (cookies, local storage) and its idle pages. Every
  context in ``_slots`` belongs to the current ``_browser``: when the browser
  disconnects, all slots are dropped at once, their sessions join ``_lost``
  (never given a fresh context) and are reported to ``on_lost`` (the
  registry then forgets them: "session not found").
* A request holds one page for its whole duration; pages go back to the
  slot's idle list afterwards (at most ``_IDLE_PAGES``), closed pages never.
* A request without a session runs in a throw-away context closed after it.

The Playwright async API keeps the server's event loop free: no call here
blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from scrapy_scrappey.local import browser_page
from scrapy_scrappey.local.browser_video import VideoStore, recording
from scrapy_scrappey.local.engine import FetchResult, SessionLost, TargetError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from playwright._impl._api_structures import SetCookieParam
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Page,
        Playwright,
        ViewportSize,
    )

    from scrapy_scrappey.local.browser_page import Navigation
    from scrapy_scrappey.local.engine import FetchSpec
    from scrapy_scrappey.local.sessions import LocalSession

logger = logging.getLogger(__name__)

#: Chromium flags measured to work on a headless Debian machine as root.
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-blink-features=AutomationControlled",
)
VIEWPORT: ViewportSize = {"width": 1920, "height": 1080}
_IDLE_PAGES = 2
_DISCONNECT_GRACE = 0.2
# Page work at once: fresh renderers fight for the CPU beyond a few.
_CONCURRENT_PAGES = 8
# Headers the context already sets, or that must not be forced on a browser.
_BROWSER_MANAGED = frozenset({"user-agent", "cookie"})


@dataclass(eq=False)
class _Slot:
    context: BrowserContext
    idle: list[Page] = field(default_factory=list)


class BrowserEngine:
    """Fetch targets in Chromium, one browser context per session."""

    name = "browser"

    def __init__(
        self,
        executable: str,
        *,
        on_lost: Callable[[LocalSession], Awaitable[None]] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.executable = executable
        #: Chromium switches beyond :data:`LAUNCH_ARGS` (host resolver rules).
        self.extra_args = extra_args
        #: Called for every session whose context died with the browser.
        self.on_lost = on_lost
        #: How many times Chromium was launched (1 + relaunches after a crash).
        self.launches = 0
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._launching = asyncio.Lock()
        self._pages = asyncio.Semaphore(_CONCURRENT_PAGES)
        self._slots: dict[LocalSession, _Slot] = {}
        # Pages left with a request's extra headers (cleared by the next one).
        self._headed: weakref.WeakSet[Page] = weakref.WeakSet()
        self._lost_tasks: set[asyncio.Task[None]] = set()
        # Sessions whose context died: never given a fresh one.
        self._lost: weakref.WeakSet[LocalSession] = weakref.WeakSet()
        #: Recorded ``video: true`` requests, and where the server serves them.
        self.videos = VideoStore()
        self.video_url = ""

    @property
    def version(self) -> str | None:
        """The running browser's version, ``None`` when none runs."""
        return self._browser.version if self._browser else None

    def describe(self) -> dict[str, Any]:
        """The engine part of ``/__local__/stats``."""
        return {
            "name": self.name,
            "executable": self.executable,
            "version": self.version,
            "launches": self.launches,
            "contexts": len(self._slots),
            # Every context the browser holds: sessions' plus throw-away ones.
            "browser_contexts": len(self._browser.contexts) if self._browser else 0,
        }

    async def start(self) -> None:
        """Launch Chromium now (raises what a launch raises)."""
        await self._ensure_browser()

    async def fetch(self, spec: FetchSpec, session: LocalSession | None) -> FetchResult:
        """Load *spec* in a page of *session*'s context (or a throw-away one)."""
        deadline = time.monotonic() + spec.timeout
        try:
            async with self._context(session, spec.user_agent) as context:
                cookies = _cookie_params(spec)
                if cookies:  # an empty call still costs a driver round trip
                    await context.add_cookies(cookies)
                if spec.browser.plain_request:
                    return await self._plain(context, spec)
                async with self._pages, self._page(session, context) as page:
                    return await self._render(page, spec, deadline)
        except PlaywrightError as exc:
            if session is not None and await self._is_lost(session, exc):
                raise SessionLost(f"the browser of session {session.id} died") from exc
            raise TargetError(_first_line(exc)) from exc

    async def release(self, session: LocalSession) -> None:
        """Close the session's context (its cookies and storage go with it)."""
        slot = self._slots.pop(session, None)
        if slot is not None:
            with contextlib.suppress(PlaywrightError):
                await slot.context.close()

    async def close(self) -> None:
        """Close every context, the browser and the Playwright driver."""
        for session in list(self._slots):
            await self.release(session)
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(PlaywrightError):
                await browser.close()
        if self._playwright is not None:
            await self._playwright.stop()
            self._playwright = None

    async def _is_lost(self, session: LocalSession, exc: PlaywrightError) -> bool:
        """Whether *exc* means that *session*'s context died with the browser."""
        if "has been closed" in str(exc) and self._connected():
            # A call on a dead browser can fail before the disconnect is seen.
            await asyncio.sleep(_DISCONNECT_GRACE)
        return session in self._lost or not self._connected()

    def _connected(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def _ensure_browser(self) -> Browser:
        async with self._launching:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._playwright is None:
                self._playwright = await async_playwright().start()
            browser = await self._playwright.chromium.launch(
                executable_path=self.executable,
                args=[*LAUNCH_ARGS, *self.extra_args],
                headless=True,
            )
            browser.on("disconnected", self._on_disconnected)
            self._browser = browser
            self.launches += 1
            logger.info(
                "Chromium %s launched (%s, launch #%d)",
                browser.version,
                self.executable,
                self.launches,
            )
            return browser

    def _on_disconnected(self, browser: Browser) -> None:
        if browser is not self._browser:
            return  # closed on purpose, or an old one
        self._browser = None
        lost, self._slots = list(self._slots), {}
        self._lost.update(lost)
        logger.warning(
            "Chromium disconnected; %d session(s) lost, relaunching on next use",
            len(lost),
        )
        if self.on_lost is not None:
            for session in lost:
                task = asyncio.ensure_future(self.on_lost(session))
                self._lost_tasks.add(task)
                task.add_done_callback(self._lost_tasks.discard)

    @contextlib.asynccontextmanager
    async def _context(
        self, session: LocalSession | None, user_agent: str
    ) -> AsyncIterator[BrowserContext]:
        if session is not None and session in self._lost:
            raise SessionLost(f"the browser of session {session.id} died")
        if session is not None and session in self._slots:
            yield self._slots[session].context
            return
        browser = await self._ensure_browser()
        context = await browser.new_context(
            # Never Playwright's default, which says "HeadlessChrome".
            user_agent=session.user_agent if session else user_agent,
            viewport=VIEWPORT,
            ignore_https_errors=True,
        )
        if session is not None and session in self._slots:
            # A concurrent first request of the session made one meanwhile.
            await context.close()
            yield self._slots[session].context
            return
        if session is None:
            try:
                yield context
            finally:
                with contextlib.suppress(PlaywrightError):
                    await context.close()
            return
        self._slots[session] = _Slot(context)
        yield context

    @contextlib.asynccontextmanager
    async def _page(
        self, session: LocalSession | None, context: BrowserContext
    ) -> AsyncIterator[Page]:
        slot = self._slots.get(session) if session is not None else None
        page = slot.idle.pop() if slot and slot.idle else await context.new_page()
        try:
            yield page
        finally:
            keep = slot is not None and len(slot.idle) < _IDLE_PAGES
            if keep and not page.is_closed() and slot is not None:
                slot.idle.append(page)
            else:
                with contextlib.suppress(PlaywrightError):
                    await page.close()

    async def _render(
        self, page: Page, spec: FetchSpec, deadline: float
    ) -> FetchResult:
        # Each browser call costs a round trip: only what differs is set.
        size = spec.browser.screenshot_size
        viewport: ViewportSize = (
            {"width": size[0], "height": size[1]} if size else VIEWPORT
        )
        if page.viewport_size != viewport:
            await page.set_viewport_size(viewport)
        headers = _extra_headers(spec)
        if headers or page in self._headed:
            await page.set_extra_http_headers(headers)
            if headers:
                self._headed.add(page)
            else:
                self._headed.discard(page)
        video = recording(page) if spec.browser.video else contextlib.nullcontext()
        async with video as frames:
            with browser_page.watching(page) as nav:
                html, extras = await self._load(page, spec, deadline, nav)
        if frames is not None:
            extras["videoUrl"] = self.video_url + self.videos.add(frames)
        return await browser_page.page_result(page, spec, html, nav, extras)

    async def _load(
        self, page: Page, spec: FetchSpec, deadline: float, nav: Navigation
    ) -> tuple[str, dict[str, Any]]:
        """Navigate, act, extract: the rendered HTML and the extra fields."""
        routed = spec.method != "GET" or spec.body is not None
        if routed:
            await browser_page.route_first_navigation(page, spec)
        try:
            html = await browser_page.navigate(page, spec.url, deadline, nav)
            returns: list[Any] = []
            actions = spec.browser.actions
            await browser_page.run_actions(page, actions, deadline, nav, returns)
            html, extras = await browser_page.extract(page, spec, html)
        finally:
            # A reused page must not keep this request's routes.
            if routed and not page.is_closed():
                await page.unroute_all()
        if actions:
            extras["javascriptReturn"] = returns
        return html, extras

    async def _plain(self, context: BrowserContext, spec: FetchSpec) -> FetchResult:
        response = await context.request.fetch(
            spec.url,
            method=spec.method,
            headers=_extra_headers(spec),
            data=spec.body,
            timeout=spec.timeout * 1000,
            fail_on_status_code=False,
        )
        try:
            headers = [(h["name"], h["value"]) for h in response.headers_array]
            body = await response.body()
        finally:
            # Else the body stays in the browser's memory as long as the session.
            await response.dispose()
        return FetchResult(
            status=response.status,
            url=response.url,
            headers=headers,
            body=body,
            redirects=[response.url],
            cookies=browser_page.cookie_dicts(await context.cookies(response.url)),
            user_agent=spec.user_agent,
            engine="request",
        )


def _extra_headers(spec: FetchSpec) -> dict[str, str]:
    return {k: v for k, v in spec.headers if k.lower() not in _BROWSER_MANAGED}


def _cookie_params(spec: FetchSpec) -> list[SetCookieParam]:
    """The ``cookies`` header and ``cookiejar`` entries, as context cookies."""
    params: list[SetCookieParam] = []
    for name, value in spec.headers:
        if name.lower() == "cookie":
            cookie: SimpleCookie = SimpleCookie()
            with contextlib.suppress(CookieError):
                cookie.load(value)
            params += [
                {"name": m.key, "value": m.value, "url": spec.url}
                for m in cookie.values()
            ]
    for item in spec.cookiejar:
        if item.domain:
            params.append(
                {
                    "name": item.name,
                    "value": item.value,
                    "domain": item.domain,
                    "path": item.path or "/",
                }
            )
        else:
            params.append({"name": item.name, "value": item.value, "url": spec.url})
    return params


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
