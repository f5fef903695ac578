"""P1: throughput of a crawl through the plugin vs the same crawl without it.

The plugin crawl talks to LocalScrappey in static mode (every request.* gets
the same page, nothing fetched); the direct crawl fetches the same page from a
plain aiohttp server. Both servers run in another process. Also: CPU seconds
per request of the crawling process, and a cProfile breakdown of where the
plugin's share goes.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections import defaultdict

from bench.common import Row, cpu_self, crawl, emit, quick_flag, run, servers, settings
from bench.spiders import CountSpider

TARGET = 1.0  # issue #11: routed pages/s stay >= direct


async def _one(srv, n: int, plugin: dict | None) -> dict:  # type: ignore[no-untyped-def]
    s = settings(None) if plugin is None else settings(srv.api, **plugin)
    c0, s0 = cpu_self(), srv.cpu()
    crawler = await crawl(CountSpider, s, base=srv.site, n=n)
    spider = crawler.spider
    return {
        "pps": spider.count / spider.elapsed,
        "count": spider.count,
        "errors": spider.errors,
        "cpu_ms": (cpu_self() - c0) / n * 1000,
        "srv_cpu_ms": (srv.cpu() - s0) / n * 1000,
    }


def _categorise(
    stats: pstats.Stats,
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    groups: dict[str, float] = defaultdict(float)
    plugin_funcs: list[tuple[str, float]] = []
    for (filename, line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        f = filename.replace("\\", "/")
        if "scrapy_scrappey/" in f:
            key = "scrapy_scrappey (plugin code)"
            plugin_funcs.append((f"{f.split('scrapy_scrappey/')[1]}:{line} {func}", tt))
        elif "/json/" in f or "_json" in func:
            key = "json (encode/decode)"
        elif "socket" in func or "select" in func or "epoll" in func:
            key = "socket syscalls"
        elif any(
            p in f
            for p in (
                "/aiohttp/",
                "/yarl/",
                "/multidict/",
                "/aiohappyeyeballs/",
                "/propcache/",
            )
        ):
            key = "aiohttp client (API transport)"
        elif "/scrapy/" in f:
            key = "scrapy"
        elif "/twisted/" in f:
            key = "twisted"
        elif "/asyncio/" in f or "select" in func or "selector" in f:
            key = "asyncio + selector"
        else:
            key = "other (stdlib, C builtins)"
        groups[key] += tt
    plugin_funcs.sort(key=lambda x: -x[1])
    return dict(groups), plugin_funcs


def _top(stats: pstats.Stats, k: int) -> list[tuple[str, float]]:
    items = []
    for (filename, line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(filename.replace("\\", "/").split("/")[-2:])
        items.append((f"{short}:{line} {func}", tt))
    items.sort(key=lambda x: -x[1])
    return items[:k]


async def main() -> list[Row]:
    quick = quick_flag()
    n = 800 if quick else 5000
    reps = 1 if quick else 2
    rows: list[Row] = []
    variants = {
        "direct (no plugin)": None,
        "plugin, scope none": {"SCRAPPEY_SESSION_SCOPE": "none"},
        "plugin, spider pool 4x8": {
            "SCRAPPEY_SESSION_SCOPE": "spider",
            "SCRAPPEY_SESSION_POOL_SIZE": 4,
            "SCRAPPEY_SESSION_CONCURRENCY": 8,
        },
    }
    best: dict[str, dict] = {}
    with servers(static=True) as srv:
        await _one(srv, 200, None)  # warm-up: imports, connections
        await _one(srv, 200, variants["plugin, scope none"])
        for _ in range(reps):
            for name, plugin in variants.items():
                r = await _one(srv, n, plugin)
                if name not in best or r["pps"] > best[name]["pps"]:
                    best[name] = r
        base = best["direct (no plugin)"]
        rows.append(
            Row("P1 overhead", f"direct pages/s ({n} pages)", round(base["pps"]), "p/s")
        )
        for name, r in best.items():
            if r["count"] != n:
                rows.append(
                    Row(
                        "P1 overhead",
                        f"{name}: pages answered",
                        r["count"],
                        "",
                        n,
                        check=False,
                    )
                )
            if name.startswith("plugin"):
                ratio = r["pps"] / base["pps"]
                rows.append(
                    Row(
                        "P1 overhead",
                        f"{name} pages/s",
                        round(r["pps"]),
                        "p/s",
                        round(base["pps"]),
                        round(ratio, 3),
                        f">= {TARGET}x direct",
                        ratio >= TARGET,
                    )
                )
        for name, r in best.items():
            rows.append(
                Row(
                    "P1 overhead",
                    f"crawler CPU/request, {name}",
                    round(r["cpu_ms"], 3),
                    "ms",
                    round(base["cpu_ms"], 3) if name != "direct (no plugin)" else None,
                    round(r["cpu_ms"] / base["cpu_ms"], 2)
                    if name != "direct (no plugin)"
                    else None,
                )
            )
        for name, r in best.items():
            rows.append(
                Row(
                    "P1 overhead",
                    f"server CPU/request, {name}",
                    round(r["srv_cpu_ms"], 3),
                    "ms",
                    round(base["srv_cpu_ms"], 3)
                    if name != "direct (no plugin)"
                    else None,
                    round(r["srv_cpu_ms"] / base["srv_cpu_ms"], 2)
                    if name != "direct (no plugin)"
                    else None,
                )
            )
        plugin_cpu = best["plugin, scope none"]["cpu_ms"] - base["cpu_ms"]
        rows.append(
            Row(
                "P1 overhead",
                "plugin CPU/request (scope none - direct)",
                round(plugin_cpu, 3),
                "ms",
            )
        )

        # cProfile of a plugin crawl: where the crawling process spends its time.
        nprof = 300 if quick else 2000
        prof = cProfile.Profile(time.process_time)  # CPU, not wall time
        prof.enable()
        await _one(srv, nprof, variants["plugin, spider pool 4x8"])
        prof.disable()
    stats = pstats.Stats(prof)
    groups, funcs = _categorise(stats)
    total = sum(groups.values())
    for key, tt in sorted(groups.items(), key=lambda x: -x[1]):
        rows.append(
            Row(
                "P1 profile",
                f"share of crawler CPU: {key}",
                round(tt / total * 100, 1),
                "%",
                None,
                None,
                f"{tt / nprof * 1e6:.0f} us/req (profiled)",
            )
        )
    for name, tt in _top(stats, 8):
        rows.append(
            Row("P1 profile", f"top fn: {name}", round(tt / nprof * 1e6, 1), "us/req")
        )
    for name, tt in funcs[:8]:
        rows.append(
            Row(
                "P1 profile", f"plugin fn: {name}", round(tt / nprof * 1e6, 1), "us/req"
            )
        )
    return rows


if __name__ == "__main__":
    emit(run(main))
