"""P9: the local server's browser engine vs a bare Playwright loop.

Same Chromium, same launch flags, same context options (viewport, user
agent), same 1 KB pages from an in-process site. A bare "page" does what a
Scrappey ``request.get`` must do: ``goto`` until ``load``, read the HTML (the
cheapest way: one ``evaluate``) and the context's cookies. Rows:

* session setup p50: ``sessions.create`` + the first page + ``destroy`` (the
  engine makes the context on the first page) vs a bare ``new_context`` +
  ``new_page`` + one page + ``close``;
* page fetch p50 on a warm session vs a bare page on a warm page;
* pages/s with 4 concurrent sessions vs 4 bare contexts, and the CPU each
  page costs (every process: Python, Playwright drivers, Chromium);
* PSS per open session vs per bare context (8 of each, one page loaded);
* the http engine on the same pages, for scale.

Both sides run in the same process at the same time and are measured
alternately (bare, engine, engine, bare, ...) so that load from other
programs on the machine falls on both alike. The pages/s and CPU ratios are
the medians of the rounds' ratios, the others ratios of p50s. Skipped (one row saying why) when the browser engine cannot
run here.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import psutil
from aiohttp import web

from bench.common import Row, emit, quick_flag
from scrapy_scrappey.local import LocalScrappey
from scrapy_scrappey.local.browser import LAUNCH_ARGS, VIEWPORT
from scrapy_scrappey.local.engine_choice import EngineUnavailable, find_chromium

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from playwright.async_api import Browser, BrowserContext, Page

    Fetch = Callable[[], Awaitable[Any]]

PAGE = "<html><body>" + "<p>benchmark page text</p>" * 40 + "</body></html>"
CONCURRENT = 4
_HTML = "() => document.documentElement.outerHTML"
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)


@dataclass
class _Side:
    """One side of the comparison: how it makes sessions and fetches pages."""

    setup: Fetch
    fetchers: list[Fetch]
    driver: psutil.Process  # its Playwright driver (Chromium runs under it)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.samples[key])


async def _site() -> tuple[web.AppRunner, str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/p/{n}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _elapsed_ms(fn: Fetch) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000


def _cpu_seconds(driver: psutil.Process) -> float:
    """CPU used so far by this process (client, server, Playwright's client)
    and by *driver* with its Chromium."""
    total = 0.0
    for proc in [psutil.Process(), driver, *_children(driver)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue  # a renderer gone meanwhile: its share is lost for both
        total += times.user + times.system
    return total


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


async def _rate(side: _Side, per_loop: int) -> None:
    """Record pages/s and CPU ms per page of *side*'s concurrent fetchers."""

    async def loop(fetch: Fetch) -> None:
        for _ in range(per_loop):
            await fetch()

    cpu0, t0 = _cpu_seconds(side.driver), time.perf_counter()
    await asyncio.gather(*(loop(f) for f in side.fetchers))
    pages = per_loop * len(side.fetchers)
    side.add("rate", pages / (time.perf_counter() - t0))
    side.add("cpu", (_cpu_seconds(side.driver) - cpu0) * 1000 / pages)


async def _compare(bare: _Side, engine: _Side, n: int, rounds: int) -> None:
    """*n* setups and fetches each, then *rounds* rates of *n* pages per loop."""
    # Alternated so that outside load falls on both sides alike.
    for i in range(n):
        for side in (bare, engine) if i % 2 else (engine, bare):
            side.add("setup", await _elapsed_ms(side.setup))
            side.add("fetch", await _elapsed_ms(side.fetchers[0]))
    for i in range(rounds):
        for side in (bare, engine) if i % 2 else (engine, bare):
            await _rate(side, n)


def _bare_fetcher(page: Page, url: str) -> Fetch:
    async def fetch() -> None:
        await page.goto(url, wait_until="load")
        # Not page.content(): it sets up a utility world in every new document,
        # measured at 10-15 ms more Chromium CPU per page here.
        await page.evaluate(_HTML)
        await page.context.cookies(page.url)

    return fetch


async def _bare_context(browser: Browser) -> BrowserContext:
    return await browser.new_context(user_agent=UA, viewport=VIEWPORT)


async def _bare_side(browser: Browser, site: str, driver: psutil.Process) -> _Side:
    async def setup() -> None:
        context = await _bare_context(browser)
        await _bare_fetcher(await context.new_page(), site + "/p/0")()
        await context.close()

    pages = [await (await _bare_context(browser)).new_page() for _ in range(CONCURRENT)]
    fetchers = [_bare_fetcher(p, site + "/p/1") for p in pages]
    for fetch in fetchers:
        await fetch()  # warm, like the engine's sessions
    return _Side(setup, fetchers, driver)


def _api(http: aiohttp.ClientSession, server: LocalScrappey) -> Callable[..., Any]:
    async def call(cmd: str, **fields: Any) -> dict[str, Any]:
        async with http.post(server.url, json={"cmd": cmd, **fields}) as response:
            reply: dict[str, Any] = await response.json()
        assert reply["data"] == "success", reply
        return reply

    return call


async def _engine_side(
    call: Callable[..., Any], site: str, driver: psutil.Process
) -> _Side:
    async def setup() -> None:
        sid = (await call("sessions.create"))["session"]
        await call("request.get", url=site + "/p/0", session=sid)
        await call("sessions.destroy", session=sid)

    def fetcher(sid: str) -> Fetch:
        return lambda: call("request.get", url=site + "/p/1", session=sid)

    sessions = [(await call("sessions.create"))["session"] for _ in range(CONCURRENT)]
    fetchers = [fetcher(sid) for sid in sessions]
    for fetch in fetchers:
        await fetch()  # each session's context exists before the timing
    return _Side(setup, fetchers, driver)


async def _pss_per_session(driver: psutil.Process, open_one: Fetch) -> float:
    """MiB of Chromium PSS each extra open session costs (8, one page each)."""
    before = _chromium_pss(driver)
    for _ in range(8):
        await open_one()
    return (_chromium_pss(driver) - before) / 8


def _chromium_pss(driver: psutil.Process) -> float:
    return sum(_pss(p) for p in _children(driver)) / 2**20


def _pss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().pss) if "chrom" in proc.name() else 0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def _new_driver(before: set[int]) -> psutil.Process:
    """The Playwright driver started since *before* (this process's children)."""
    new = [p for p in psutil.Process().children() if p.pid not in before]
    assert len(new) == 1, f"expected one new Playwright driver, got {new}"
    return new[0]


def _child_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children()}


def _rows(bare: _Side, engine: _Side) -> list[Row]:
    def versus(key: str, metric: str, unit: str, target: str = "") -> Row:
        value, base = engine.median(key), bare.median(key)
        ratios = [
            e / b for e, b in zip(engine.samples[key], bare.samples[key], strict=True)
        ]
        # Per-round ratios (same moment, same load) when there are rounds.
        ratio = statistics.median(ratios) if key in ("rate", "cpu") else value / base
        # Targets: setup at most 1.2x the bare loop, throughput at least 0.8x.
        ok = {"setup": ratio <= 1.2, "rate": ratio >= 0.8}.get(key)
        row = Row("p9", metric, round(value, 1), unit, round(base, 1), round(ratio, 2))
        row.target, row.ok = target, ok if target else None
        return row

    return [
        versus("setup", "session setup + first page p50", "ms", "<= 1.2x bare"),
        versus("fetch", "page fetch p50 (warm session)", "ms"),
        versus("rate", f"pages/s, {CONCURRENT} sessions", "pages/s", ">= 0.8x bare"),
        versus("cpu", f"CPU per page, {CONCURRENT} sessions (all processes)", "ms"),
        versus("pss", "Chromium PSS per open session", "MiB"),
    ]


async def _http_rate(site: str, n: int) -> float:
    """Pages/s of the http engine, same pages, same concurrency."""
    async with LocalScrappey() as server, aiohttp.ClientSession() as http:
        call = _api(http, server)
        side = await _engine_side(call, site, psutil.Process())
        await _rate(side, n * 10)
        return side.median("rate")


async def _browser_rows(site: str, n: int, rounds: int) -> list[Row]:
    from playwright.async_api import async_playwright

    before = _child_pids()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=find_chromium(), args=list(LAUNCH_ARGS), headless=True
        )
        bare = await _bare_side(browser, site, _new_driver(before))
        before = _child_pids()
        async with (
            LocalScrappey(engine="browser", max_sessions=50) as server,
            aiohttp.ClientSession() as http,
        ):
            call = _api(http, server)
            engine = await _engine_side(call, site, _new_driver(before))
            await _compare(bare, engine, n, rounds)

            async def session_page() -> None:
                sid = (await call("sessions.create"))["session"]
                await call("request.get", url=site + "/p/2", session=sid)

            engine.add("pss", await _pss_per_session(engine.driver, session_page))

        async def context_page() -> None:
            page = await (await _bare_context(browser)).new_page()
            await _bare_fetcher(page, site + "/p/2")()

        bare.add("pss", await _pss_per_session(bare.driver, context_page))
        await browser.close()
    return _rows(bare, engine)


async def main() -> list[Row]:
    n, rounds = (8, 3) if quick_flag() else (30, 6)
    try:
        find_chromium()
    except EngineUnavailable as exc:
        return [Row("p9", "skipped", str(exc))]
    runner, site = await _site()
    try:
        rows = await _browser_rows(site, n, rounds)
        http = await _http_rate(site, n)
    finally:
        await runner.cleanup()
    unit = "pages/s"
    return [
        *rows,
        Row("p9", f"http engine pages/s, {CONCURRENT} sessions", round(http, 1), unit),
    ]


if __name__ == "__main__":
    emit(asyncio.run(main()))
