"""P5: lease fairness. Pool of 4 sessions, concurrency 1, random target latency.

LocalScrappey really fetches (HTTP engine) a target page that answers after a
random delay (uniform 50..150 ms, seeded). 16 requests are in flight at
once, so requests wait for leases all the time.
"""

from __future__ import annotations

from bench.common import Row, crawl, emit, quick_flag, run, servers, settings
from bench.spiders import CountSpider

POOL = 4
DELAY_MIN, DELAY_MAX = 0.05, 0.15


async def main() -> list[Row]:
    quick = quick_flag()
    n = 80 if quick else 400
    rows: list[Row] = []
    with servers(static=False, delay_min=DELAY_MIN, delay_max=DELAY_MAX, seed=7) as srv:
        s = settings(
            srv.api,
            SCRAPPEY_SESSION_SCOPE="spider",
            SCRAPPEY_SESSION_POOL_SIZE=POOL,
            SCRAPPEY_SESSION_CONCURRENCY=1,
            CONCURRENT_REQUESTS=16,
            CONCURRENT_REQUESTS_PER_DOMAIN=16,
        )
        srv.reset()
        crawler = await crawl(CountSpider, s, base=srv.site, n=n)
        stats = srv.stats()
    spider = crawler.spider
    # Throughput over the request phase (first lease to last answer).
    gets = [c for c in stats["commands"] if c["cmd"] == "request.get"]
    span = spider.t_last - spider.t_start
    pps = spider.count / span
    ideal = POOL / ((DELAY_MIN + DELAY_MAX) / 2)
    ratio = pps / ideal
    max_conc = stats["max_concurrent_per_session"]
    per = stats["requests_per_session"]
    counts = sorted(per.values())
    rows.append(
        Row(
            "P5 fairness",
            "max concurrent requests per session",
            max_conc,
            "",
            1,
            None,
            "== 1",
            max_conc == 1,
            check=max_conc == 1,
        )
    )
    rows.append(
        Row("P5 fairness", "sessions used", len(per), "", POOL, check=len(per) == POOL)
    )
    rows.append(
        Row(
            "P5 fairness",
            "requests per session",
            "/".join(map(str, counts)),
            "",
            f"{n // POOL} each",
        )
    )
    spread = (counts[-1] - counts[0]) / (n / POOL) if counts else 1.0
    rows.append(
        Row(
            "P5 fairness",
            "per-session spread (max-min)/mean",
            round(spread, 3),
            "",
            None,
            None,
            "<= 0.25 (random delays)",
            spread <= 0.25,
        )
    )
    rows.append(
        Row(
            "P5 fairness",
            f"throughput, {n} requests",
            round(pps, 2),
            "req/s",
            round(ideal, 1),
            round(ratio, 3),
            ">= 0.9x 4/mean latency",
            ratio >= 0.9,
        )
    )
    ok = spider.count == n and len(gets) == n
    rows.append(
        Row(
            "P5 fairness",
            "pages answered / request.get seen",
            f"{spider.count}/{len(gets)}",
            "",
            f"{n}/{n}",
            check=ok,
        )
    )
    return rows


if __name__ == "__main__":
    emit(run(main))
