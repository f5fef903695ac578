"""P4: RSS growth of a long plugin crawl, and bytes of plugin state per session."""

from __future__ import annotations

import asyncio
import sys
import time
import tracemalloc

from bench.common import (
    KEY,
    Row,
    StatsStub,
    crawl,
    emit,
    quick_flag,
    rss_mb,
    run,
    servers,
    settings,
)
from bench.spiders import CountSpider
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.config import Config
from scrapy_scrappey.sessions import SessionManager

TARGET_MB = 30.0


async def rss_growth(
    srv, n: int, warmup: int, plugin: bool
) -> tuple[float, float, int, float]:  # type: ignore[no-untyped-def]
    marks: dict[str, float] = {}

    def on_count(count: int) -> None:
        if count == warmup:
            marks["warm"] = rss_mb()

    s = (
        settings(
            srv.api,
            SCRAPPEY_SESSION_SCOPE="spider",
            SCRAPPEY_SESSION_POOL_SIZE=4,
            SCRAPPEY_SESSION_CONCURRENCY=8,
        )
        if plugin
        else settings(None)
    )
    t0 = time.perf_counter()
    crawler = await crawl(CountSpider, s, base=srv.site, n=n, on_count=on_count)
    elapsed = time.perf_counter() - t0
    end = rss_mb()
    return marks.get("warm", float("nan")), end, crawler.spider.count, elapsed


async def per_session_bytes(srv, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    api = srv.api
    config = Config(api_key=KEY, api_url=api, pool_size=1, api_concurrency=64)
    client = ScrappeyClient(api, KEY)
    manager = SessionManager(config, client, StatsStub(), on_fatal=lambda *a: None)
    open_before = srv.stats()["sessions"]["open"]
    await manager.start(["warm"])  # client, connections, imports
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    await manager.start([f"domain:d{i}.bench.test" for i in range(n)])
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    diff = after.compare_to(before, "filename")
    total = sum(d.size_diff for d in diff)
    plugin = sum(
        d.size_diff for d in diff if "scrapy_scrappey" in d.traceback[0].filename
    )
    assert srv.stats()["sessions"]["open"] - open_before == n + 1
    await manager.close()
    await client.close()
    await asyncio.sleep(0)
    return plugin / n, total / n


async def direct_baseline() -> list[Row]:
    """The same crawl without the plugin (own process, so RSS is not shared)."""
    n, warmup = (6000, 2000) if quick_flag() else (40_000, 10_000)
    with servers(static=True) as srv:
        warm, end, count, _ = await rss_growth(srv, n, warmup, plugin=False)
    return [
        Row(
            "P4 memory",
            f"baseline: RSS growth without plugin, {warmup} -> {n} requests",
            round(end - warm, 1),
            "MB",
            None,
            None,
            f"{(end - warm) / (n - warmup) * 1e4:.2f} MB per 10k",
        ),
        Row("P4 memory", "baseline: requests answered", count, "", n, check=count == n),
    ]


async def main() -> list[Row]:
    quick = quick_flag()
    n, warmup = (6000, 2000) if quick else (100_000, 10_000)
    rows: list[Row] = []
    with servers(static=True, max_sessions=5000, session_ttl=None) as srv:
        warm, end, count, elapsed = await rss_growth(srv, n, warmup, plugin=True)
        growth = end - warm
        rows.append(
            Row(
                "P4 memory",
                f"RSS growth, {warmup} -> {n} routed requests",
                round(growth, 1),
                "MB",
                None,
                None,
                f"<= {TARGET_MB:g} MB ({growth / (n - warmup) * 1e4:.2f} MB per 10k)",
                growth <= TARGET_MB,
            )
        )
        rows.append(
            Row(
                "P4 memory",
                "RSS after warm-up / at end",
                f"{warm:.0f} / {end:.0f}",
                "MB",
            )
        )
        rows.append(
            Row("P4 memory", "routed requests answered", count, "", n, check=count == n)
        )
        rows.append(
            Row("P4 memory", "long crawl pages/s", round(count / elapsed), "p/s")
        )
        stats = srv.stats()
        left = stats["sessions"]["open"]
        rows.append(
            Row(
                "P4 memory",
                "sessions left open on server",
                left,
                "",
                0,
                check=left == 0,
            )
        )
        nsess = 500 if quick else 2000
        plugin_b, total_b = await per_session_bytes(srv, nsess)
        rows.append(
            Row(
                "P4 memory",
                f"plugin state per session (tracemalloc, {nsess} pools)",
                round(plugin_b),
                "B",
            )
        )
        rows.append(
            Row(
                "P4 memory",
                "all Python allocations per session (incl. aiohttp/asyncio)",
                round(total_b),
                "B",
            )
        )
    return rows


if __name__ == "__main__":
    emit(run(direct_baseline if "--direct" in sys.argv else main))
