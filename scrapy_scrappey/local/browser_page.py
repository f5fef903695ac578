"""What the browser engine does with one page: load, act, extract.

A JavaScript challenge ("Just a moment...") often reloads the page *while*
``page.goto`` runs, and ``goto`` still returns the first (503) response. So
the status and headers come from the last main-frame navigation response
seen, and :func:`navigate` only returns once the page has stopped navigating:
no new main-frame navigation during a short quiet window and no challenge
marker left in the DOM (or the deadline passed).

Shared state: ``_watchers`` maps each page ever watched to the
:class:`Navigation` of the request holding it (empty between requests); the
page's two listeners, added once, feed that list and never reference the page,
so a closed page and its entry are collected together.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from playwright.async_api import Error as PlaywrightError

from scrapy_scrappey.local.browser_params import ACTION_TYPES
from scrapy_scrappey.local.engine import FetchResult
from scrapy_scrappey.local.protocol import ApiError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from playwright.async_api import Page, Request, Response, Route

    from scrapy_scrappey.local.engine import FetchSpec

logger = logging.getLogger(__name__)

CSS_NOT_FOUND_CODE = "CODE-0027"
#: How long the page must stay put to count as settled (seconds): long enough
#: for an inline script's immediate reload to show up as a navigation.
QUIET = 0.02
# Titles of interstitial challenge pages that solve themselves given time.
_PROBE = """() => {
  const title = (document.title || "").toLowerCase();
  const challenge = ["just a moment", "checking your browser", "please wait"]
    .some((t) => title.includes(t));
  const html = document.documentElement ? document.documentElement.outerHTML : "";
  return {challenge, html, loaded: document.readyState === "complete"};
}"""


@dataclass
class Navigation:
    """The main-frame navigations of one request, last one last."""

    page: Page
    responses: list[Response] = field(default_factory=list)
    started: int = 0

    def on_request(self, request: Request) -> None:
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.started += 1

    def on_response(self, response: Response) -> None:
        request = response.request
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.responses.append(response)


# Listeners stay on the page: adding or removing one costs a driver message,
# and pages are reused by later requests of the session.
_watchers: weakref.WeakKeyDictionary[Page, list[Navigation]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def watching(page: Page) -> Iterator[Navigation]:
    """Track *page*'s navigations for the duration of one request."""
    navs = _watchers.get(page)
    if navs is None:
        navs = _watchers[page] = []
        _listen(page, navs)
    nav = Navigation(page)
    navs.append(nav)
    try:
        yield nav
    finally:
        navs.remove(nav)


def _listen(page: Page, navs: list[Navigation]) -> None:
    # The listeners hold *navs*, never *page*: the page stays collectable.
    def on_request(request: Request) -> None:
        for nav in navs:
            nav.on_request(request)

    def on_response(response: Response) -> None:
        for nav in navs:
            nav.on_response(response)

    page.on("request", on_request)
    page.on("response", on_response)


async def navigate(page: Page, url: str, deadline: float, nav: Navigation) -> str:
    """Load *url* in *page* and return its settled HTML."""
    await page.goto(url, wait_until="load", timeout=_ms_left(deadline))
    return await settle(page, deadline, nav)


async def settle(page: Page, deadline: float, nav: Navigation) -> str:
    """The page's HTML once it stopped navigating (see the module docstring)."""
    while True:
        seen = nav.started
        await asyncio.sleep(QUIET)
        try:
            state = await page.evaluate(_PROBE)
            if not state["loaded"]:
                # Only then: a load-state wait costs driver messages even when
                # the page has loaded already.
                await page.wait_for_load_state("load", timeout=_ms_left(deadline))
                continue
        except PlaywrightError as exc:
            if not _navigating(exc):
                raise
            continue
        settled = nav.started == seen and not state["challenge"]
        if settled or time.monotonic() >= deadline:
            return str(state["html"])


async def route_first_navigation(page: Page, spec: FetchSpec) -> None:
    """Send the first navigation with *spec*'s method and body (POST, PUT, …)."""
    pending = [True]

    async def handle(route: Route, request: Request) -> None:
        if pending and request.is_navigation_request():
            pending.clear()
            await route.continue_(method=spec.method, post_data=spec.body)
        else:
            await route.continue_()

    await page.route(lambda _url: bool(pending), handle)


async def run_actions(
    page: Page,
    actions: Sequence[dict[str, Any]],
    deadline: float,
    nav: Navigation,
    returns: list[Any],
) -> None:
    """Perform *actions* in order, adding ``execute_js`` results to *returns*."""
    for index, action in enumerate(actions):
        if not isinstance(action, dict) or action.get("type") not in ACTION_TYPES:
            logger.info("Skipping browser action %r: not supported", action)
            continue
        try:
            result = await _act(page, action, deadline, nav)
        except PlaywrightError as exc:
            if action.get("ignoreErrors") is True:
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ApiError(
                "CODE-0031", f"browserActions item {index} ({action['type']}): {first}"
            ) from exc
        if action["type"] == "execute_js":
            returns.append(result)
        elif action["type"] == "if":
            branch = action.get("then" if result else "or")
            if isinstance(branch, list):
                await run_actions(page, branch, deadline, nav, returns)


async def _act(
    page: Page, action: dict[str, Any], deadline: float, nav: Navigation
) -> Any:
    kind = action["type"]
    timeout = min(_ms(action.get("timeout")) or _ms_left(deadline), _ms_left(deadline))
    if kind == "execute_js":
        return await page.evaluate(action["code"])
    if kind == "if":
        return bool(await page.evaluate(action["condition"]))
    if kind.startswith("wait"):
        await _wait(page, action, timeout)
    else:
        await _interact(page, action, timeout, deadline, nav)
    return None


async def _wait(page: Page, action: dict[str, Any], timeout: float) -> None:
    kind = action["type"]
    if kind == "wait":
        await asyncio.sleep(min(float(action.get("wait") or 0), timeout) / 1000)
    elif kind == "wait_for_selector":
        await page.wait_for_selector(action["cssSelector"], timeout=timeout)
    elif kind == "wait_for_function":
        await page.wait_for_function(action["code"], timeout=timeout)
    elif kind == "wait_for_load_state":
        state = action.get("waitForLoadState", "load")
        if state in ("load", "domcontentloaded", "networkidle"):
            await page.wait_for_load_state(state, timeout=timeout)


async def _interact(
    page: Page,
    action: dict[str, Any],
    timeout: float,
    deadline: float,
    nav: Navigation,
) -> None:
    kind, selector = action["type"], str(action.get("cssSelector") or "")
    if kind == "click":
        await page.click(selector, timeout=timeout)
        await settle(page, deadline, nav)  # a click may navigate
    elif kind == "type":
        await page.locator(selector).first.press_sequentially(
            action["text"], timeout=timeout
        )
    elif kind == "hover":
        await page.hover(selector, timeout=timeout)
    elif kind == "scroll":
        await _scroll(page, selector, timeout)
    elif kind == "goto":
        await navigate(page, action["url"], deadline, nav)


async def _scroll(page: Page, selector: str | None, timeout: float) -> None:
    if selector:
        await page.locator(selector).first.scroll_into_view_if_needed(timeout=timeout)
    else:
        await page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")


async def extract(page: Page, spec: FetchSpec, html: str) -> tuple[str, dict[str, Any]]:
    """The ``response`` text and the browser-only ``solution`` fields."""
    extras: dict[str, Any] = {}
    selector, wants_text = spec.browser.css_selector, spec.browser.inner_text
    if selector:
        found = page.locator(selector)
        if not await found.count():
            raise ApiError(CSS_NOT_FOUND_CODE, f"{selector!r:.200}")
        html = "\n".join(await found.evaluate_all("els => els.map(e => e.outerHTML)"))
        if wants_text:
            extras["innerText"] = "\n".join(await found.all_inner_texts())
    elif wants_text:
        extras["innerText"] = await page.evaluate(
            "() => document.body ? document.body.innerText : ''"
        )
    if spec.browser.screenshot:
        image = await page.screenshot(type="png")
        extras["screenshot"] = base64.b64encode(image).decode("ascii")
    return html, extras


async def page_result(
    page: Page,
    spec: FetchSpec,
    html: str,
    nav: Navigation,
    extras: dict[str, Any],
) -> FetchResult:
    """What the page shows now, as the engine's result."""
    last = nav.responses[-1] if nav.responses else None
    # Two independent round trips to the driver: at once.
    raw, cookies = await asyncio.gather(
        last.headers_array() if last else _no_headers(),
        page.context.cookies(page.url),
    )
    headers = [(h["name"], h["value"]) for h in raw]
    # The body is the rendered DOM, so the original framing headers no longer apply.
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    return FetchResult(
        status=last.status if last else 200,
        url=page.url,
        headers=headers,
        body=html.encode("utf-8"),
        redirects=[r.url for r in nav.responses] or [page.url],
        cookies=cookie_dicts(cookies),
        user_agent=spec.user_agent,
        engine="browser",
        extras=extras,
    )


def cookie_dicts(cookies: list[Any]) -> list[dict[str, Any]]:
    """Playwright cookies in the ``solution.cookies`` shape."""
    return [
        {
            "name": c["name"],
            "value": c["value"],
            "domain": c["domain"],
            "path": c["path"],
            "expires": c["expires"],
            "httpOnly": c["httpOnly"],
            "secure": c["secure"],
            "sameSite": c["sameSite"],
        }
        for c in cookies
    ]


async def _no_headers() -> list[Any]:
    return []


def _navigating(exc: PlaywrightError) -> bool:
    # The page navigated away under the call: retried on the new document.
    text = str(exc)
    return "context was destroyed" in text or "Cannot find context" in text


def _ms_left(deadline: float) -> float:
    return max((deadline - time.monotonic()) * 1000, 1.0)


def _ms(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
