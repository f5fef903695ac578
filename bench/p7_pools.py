"""P7: many named pools. 50 pools of 2 sessions, 2,000 requests spread over them.

Every pool is listed in SCRAPPEY_SESSION_POOLS (so created when the spider
opens) with 2 sessions; even pools take 1 request per session at a time, odd
pools 2 (their own ``concurrency``). The spider's ``scrappey_session_pool``
method sends page ``i`` to pool ``p{i % 50}``. LocalScrappey really fetches a
target page that answers after a random delay (1..3 s, seeded: slow enough
that the sessions, not the crawler's CPU, are the bottleneck), and more
requests are in flight than the sessions can take, so requests wait for
leases in every pool. Measured, as in P5: how evenly each pool's two sessions
share its requests, and (from the server) that no session ever ran more
requests at once than its pool's concurrency.
"""

from __future__ import annotations

from collections import defaultdict

from bench.common import Row, crawl, emit, quick_flag, run, servers, settings
from bench.spiders import PoolsSpider, page_number

POOLS, SIZE = 50, 2
DELAY_MIN, DELAY_MAX = 1.0, 3.0


def _concurrency(pool: int) -> int:
    return 1 + pool % 2


def _spread(counts: list[int]) -> float:
    """(max - min) / mean of one pool's per-session counts."""
    return (max(counts) - min(counts)) / (sum(counts) / len(counts))


async def main() -> list[Row]:
    n = 400 if quick_flag() else 2000
    pools = {
        f"p{p}": {"size": SIZE, "concurrency": _concurrency(p)} for p in range(POOLS)
    }
    with servers(static=False, delay_min=DELAY_MIN, delay_max=DELAY_MAX, seed=7) as srv:
        s = settings(
            srv.api,
            SCRAPPEY_SESSION_SCOPE="none",
            SCRAPPEY_SESSION_POOLS=pools,
            CONCURRENT_REQUESTS=400,
            CONCURRENT_REQUESTS_PER_DOMAIN=400,
        )
        srv.reset()
        crawler = await crawl(PoolsSpider, s, base=srv.site, n=n, pools=POOLS)
        stats = srv.stats()
    spider = crawler.spider
    gets = [c for c in stats["commands"] if c["cmd"] == "request.get"]
    # The pool of each session, from the pages it fetched.
    pool_of: dict[str, int] = {}
    for c in gets:
        pool_of[c["session"]] = page_number(c["url"]) % POOLS
    per_pool: dict[int, list[int]] = defaultdict(list)
    for sid, count in stats["requests_per_session"].items():
        per_pool[pool_of[sid]].append(count)
    over = [
        sid
        for sid, most in stats["max_concurrent_by_session"].items()
        if most > _concurrency(pool_of[sid])
    ]
    mixed = len(pool_of) != len(stats["requests_per_session"])
    spreads = [_spread(c) for c in per_pool.values() if len(c) == SIZE]
    full = sum(len(c) == SIZE for c in per_pool.values())
    reached = sum(
        stats["max_concurrent_by_session"][sid] == _concurrency(p)
        for sid, p in pool_of.items()
    )
    rate = spider.count / (spider.t_last - spider.t_start)
    # Every pool gets n / POOLS requests; the pools of concurrency 1 take longest.
    mean = (DELAY_MIN + DELAY_MAX) / 2
    ideal = n / (n / POOLS / SIZE * mean)
    return [
        Row(
            "P7 pools",
            "sessions over their pool's concurrency",
            len(over),
            "",
            0,
            None,
            "== 0",
            not over,
            check=not over and not mixed,
        ),
        Row(
            "P7 pools",
            "sessions that reached their pool's concurrency",
            reached,
            "",
            len(pool_of),
        ),
        Row(
            "P7 pools",
            "sessions created / pools using both sessions",
            f"{stats['sessions']['created']}/{full}",
            "",
            f"{POOLS * SIZE}/{POOLS}",
            check=stats["sessions"]["created"] == POOLS * SIZE,
        ),
        Row(
            "P7 pools",
            "per-pool spread (max-min)/mean, mean of pools",
            round(sum(spreads) / len(spreads), 3) if spreads else 1.0,
            "",
            None,
            None,
            "<= 0.25 (random delays)",
            bool(spreads) and sum(spreads) / len(spreads) <= 0.25,
        ),
        Row(
            "P7 pools",
            "per-pool spread (max-min)/mean, worst pool",
            round(max(spreads), 3) if spreads else 1.0,
        ),
        Row(
            "P7 pools",
            f"throughput, {n} requests",
            round(rate, 1),
            "req/s",
            round(ideal, 1),
            round(rate / ideal, 3),
            ">= 0.8x the slowest pools' bound",
            rate / ideal >= 0.8,
        ),
        Row(
            "P7 pools",
            "pages answered / request.get seen / sessions left open",
            f"{spider.count}/{len(gets)}/{stats['sessions']['open']}",
            "",
            f"{n}/{n}/0",
            check=spider.count == n == len(gets) and stats["sessions"]["open"] == 0,
        ),
    ]


if __name__ == "__main__":
    emit(run(main))
