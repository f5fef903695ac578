"""P9: the local server's browser engine vs a bare Playwright loop.

Same Chromium, same 1 KB pages from an in-process site, one run side by
side:

* session setup: ``sessions.create`` plus the session's first page (the
  engine makes the context then) vs a bare ``new_context`` + ``new_page`` +
  ``goto``;
* page fetch p50 on a warm session vs a bare ``goto`` + ``content`` on a warm
  page;
* pages/s with 4 concurrent sessions vs 4 bare contexts;
* PSS per open session (Chromium processes, 8 sessions with one page each);
* the http engine on the same pages, for scale.

Skipped (one row saying why) when the browser engine cannot run here.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import psutil
from aiohttp import web

from bench.common import Row, emit, quick_flag
from scrapy_scrappey.local import LocalScrappey
from scrapy_scrappey.local.engine_choice import EngineUnavailable, find_chromium

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PAGE = "<html><body>" + "<p>benchmark page text</p>" * 40 + "</body></html>"
CONCURRENT = 4


async def _site() -> tuple[web.AppRunner, str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/p/{n}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _timed(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    """Median milliseconds of *n* sequential calls."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def _rate(fetchers: list[Callable[[], Awaitable[Any]]], total: int) -> float:
    """Pages per second, *total* pages spread over concurrent *fetchers*."""
    per = total // len(fetchers)

    async def loop(fetch: Callable[[], Awaitable[Any]]) -> None:
        for _ in range(per):
            await fetch()

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(f) for f in fetchers))
    return per * len(fetchers) / (time.perf_counter() - t0)


async def _bare(site: str, n: int) -> dict[str, float]:
    from playwright.async_api import async_playwright

    from scrapy_scrappey.local.browser import LAUNCH_ARGS

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=find_chromium(), args=list(LAUNCH_ARGS), headless=True
        )

        async def setup() -> None:
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(site + "/p/0", wait_until="load")
            await context.close()

        contexts = [await browser.new_context() for _ in range(CONCURRENT)]
        pages = [await c.new_page() for c in contexts]

        def fetcher(page: Any) -> Callable[[], Awaitable[Any]]:
            async def fetch() -> None:
                await page.goto(site + "/p/1", wait_until="load")
                await page.content()

            return fetch

        result = {
            "setup": await _timed(setup, n),
            "fetch": await _timed(fetcher(pages[0]), n),
            "rate": await _rate([fetcher(p) for p in pages], n * CONCURRENT),
        }
        await browser.close()
    return result


async def _engine(server: LocalScrappey, site: str, n: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:

        async def call(body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(server.url, json=body) as response:
                reply: dict[str, Any] = await response.json()
            assert reply["data"] == "success", reply
            return reply

        async def setup() -> None:
            sid = (await call({"cmd": "sessions.create"}))["session"]
            await call({"cmd": "request.get", "url": site + "/p/0", "session": sid})
            await call({"cmd": "sessions.destroy", "session": sid})

        sessions = [
            (await call({"cmd": "sessions.create"}))["session"]
            for _ in range(CONCURRENT)
        ]

        def fetcher(sid: str) -> Callable[[], Awaitable[Any]]:
            return lambda: call(
                {"cmd": "request.get", "url": site + "/p/1", "session": sid}
            )

        await fetcher(sessions[0])()  # its context exists before the timing
        return {
            "setup": await _timed(setup, n),
            "fetch": await _timed(fetcher(sessions[0]), n),
            "rate": await _rate([fetcher(s) for s in sessions], n * CONCURRENT),
            "pss": await _pss_per_session(call, site),
        }


async def _pss_per_session(call: Callable[..., Awaitable[Any]], site: str) -> float:
    """MiB of Chromium PSS each extra open session costs (8 sessions, 1 page each)."""
    before = _chromium_pss()
    for _ in range(8):
        sid = (await call({"cmd": "sessions.create"}))["session"]
        await call({"cmd": "request.get", "url": site + "/p/2", "session": sid})
    return (_chromium_pss() - before) / 8


def _chromium_pss() -> float:
    procs = psutil.Process().children(recursive=True)
    return sum(_pss(p) for p in procs) / 2**20


def _pss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().pss) if "chrom" in proc.name() else 0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def _rows(bare: dict[str, float], engine: dict[str, float], http: float) -> list[Row]:
    def versus(key: str, metric: str, unit: str, target: str = "") -> Row:
        value, base = engine[key], bare[key]
        # Targets: setup at most 1.2x the bare loop, throughput at least 0.8x.
        ok = {"setup": value <= 1.2 * base, "rate": value >= 0.8 * base}.get(key)
        ratio = round(value / base, 2) if base else 0.0
        row = Row("p9", metric, round(value, 1), unit, round(base, 1), ratio, target)
        row.ok = ok if target else None
        return row

    return [
        versus("setup", "session setup + first page p50", "ms", "<= 1.2x bare"),
        versus("fetch", "page fetch p50 (warm session)", "ms"),
        versus("rate", f"pages/s, {CONCURRENT} sessions", "pages/s", ">= 0.8x bare"),
        Row("p9", "Chromium PSS per open session", round(engine["pss"], 1), "MiB"),
        Row(
            "p9",
            f"http engine pages/s, {CONCURRENT} sessions",
            round(http, 1),
            "pages/s",
        ),
    ]


async def _http_rate(site: str, n: int) -> float:
    """Pages/s of the http engine, same pages, same concurrency."""
    async with LocalScrappey() as server, aiohttp.ClientSession() as http:

        async def call(body: dict[str, Any]) -> None:
            async with http.post(server.url, json=body) as response:
                await response.read()

        sessions = [f"http-{i}" for i in range(CONCURRENT)]
        for sid in sessions:
            await call({"cmd": "sessions.create", "session": sid})

        def fetcher(sid: str) -> Callable[[], Awaitable[Any]]:
            return lambda: call(
                {"cmd": "request.get", "url": site + "/p/1", "session": sid}
            )

        return await _rate([fetcher(s) for s in sessions], n * CONCURRENT * 10)


async def main() -> list[Row]:
    n = 10 if quick_flag() else 50
    try:
        find_chromium()
    except EngineUnavailable as exc:
        return [Row("p9", "skipped", str(exc))]
    runner, site = await _site()
    try:
        bare = await _bare(site, n)
        async with LocalScrappey(engine="browser", max_sessions=50) as server:
            engine = await _engine(server, site, n)
        http = await _http_rate(site, n)
    finally:
        await runner.cleanup()
    return _rows(bare, engine, http)


if __name__ == "__main__":
    emit(asyncio.run(main()))
