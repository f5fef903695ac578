"""P6: the plugin vs the hand-written deferToThread(requests.post) middleware.

1. Throughput on P1's static workload.
2. Head-of-line effect: 12 API requests with 2 s API latency in flight, then
   one direct request (meta ``scrappey: False``) to a local page; its latency
   is compared with the same direct request on an idle crawler.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from scrapy import Request, Spider

from bench.common import Row, crawl, emit, quick_flag, run, servers, settings
from bench.spiders import CountSpider

API_LATENCY = 2.0
SLOW_REQUESTS = 12


def _settings(srv, kind: str, **extra: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    if kind == "plugin":
        return settings(srv.api, SCRAPPEY_SESSION_SCOPE="none", **extra)
    s = settings(None, **extra)
    s.update(
        DOWNLOADER_MIDDLEWARES={"bench.naive.NaiveScrappeyMiddleware": 950},
        SCRAPPEY_API_URL=srv.api,
        SCRAPPEY_API_KEY="bench-key",
    )
    return s


class HeadOfLineSpider(Spider):
    name = "bench_hol"

    def __init__(self, site: str, slow: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site, self.slow = site, slow
        self.direct_latency: float | None = None
        self.slow_done = 0

    async def start(self):  # type: ignore[no-untyped-def]
        for i in range(self.slow):
            yield Request(
                f"http://api-bound.bench.test/page/{i}",
                callback=self.slow_cb,
                dont_filter=True,
            )
        if self.slow:
            await asyncio.sleep(0.5)  # the API calls are in flight now
        yield Request(
            f"{self.site}/direct",
            meta={"scrappey": False, "t0": time.perf_counter()},
            callback=self.direct_cb,
            dont_filter=True,
        )

    def slow_cb(self, response):  # type: ignore[no-untyped-def]
        self.slow_done += 1

    def direct_cb(self, response):  # type: ignore[no-untyped-def]
        self.direct_latency = time.perf_counter() - response.meta["t0"]


async def main() -> list[Row]:
    quick = quick_flag()
    n = 300 if quick else 2000
    rows: list[Row] = []
    with servers(static=True) as srv:
        res = {}
        order = ("plugin", "naive") if quick else ("plugin", "naive", "plugin", "naive")
        for kind in order:
            await crawl(
                CountSpider, _settings(srv, kind), base=srv.site, n=100
            )  # warm-up
            crawler = await crawl(CountSpider, _settings(srv, kind), base=srv.site, n=n)
            sp = crawler.spider
            pps = sp.count / sp.elapsed
            res[kind] = max(res.get(kind, 0.0), pps)
            if sp.count != n:
                rows.append(
                    Row(
                        "P6 vs naive",
                        f"{kind}: pages answered",
                        sp.count,
                        "",
                        n,
                        check=False,
                    )
                )
        rows.append(
            Row(
                "P6 vs naive",
                f"plugin pages/s vs deferToThread(requests.post), {n} pages",
                round(res["plugin"]),
                "p/s",
                round(res["naive"]),
                round(res["plugin"] / res["naive"], 2),
                "> 1x",
                res["plugin"] > res["naive"],
            )
        )
        for kind in ("plugin", "naive"):
            idle = await crawl(
                HeadOfLineSpider, _settings(srv, kind), site=srv.site, slow=0
            )
            srv.set_faults(latency={"request.get": API_LATENCY})
            busy = await crawl(
                HeadOfLineSpider,
                _settings(srv, kind),
                site=srv.site,
                slow=SLOW_REQUESTS,
            )
            srv.set_faults()
            a, b = idle.spider.direct_latency, busy.spider.direct_latency
            good = (
                a is not None
                and b is not None
                and busy.spider.slow_done == SLOW_REQUESTS
            )
            rows.append(
                Row(
                    "P6 vs naive",
                    f"{kind}: direct request latency while {SLOW_REQUESTS} API calls take {API_LATENCY:g}s",
                    round(b * 1000, 1) if b is not None else "none",
                    "ms",
                    round(a * 1000, 1) if a is not None else "none",
                    round(b / a, 1) if good else None,
                    "unaffected (< 100 ms)",
                    b is not None and b < 0.1,
                    check=good,
                )
            )
    return rows


if __name__ == "__main__":
    emit(run(main))
