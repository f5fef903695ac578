"""A standalone crawl through ScrappeyMiddleware, for process-level tests.

Run as ``python tests/reliability_spider.py --api-url URL --ledger-dir DIR
--key KEY --out summary.json [--count N ...]``. It uses ``CrawlerProcess``,
so Scrapy installs its own SIGINT handlers (one: graceful close, two: forced
stop). Pages are ``http://127.0.0.1:9/page/<i>``: the server is meant to run
with ``--static-body`` and fetch nothing.

At the end (also after one SIGINT) it writes a JSON summary to ``--out``:
callback counts per page, failures, the crawl stats and, with
``--rss-after N``, the process RSS after N responses and at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import CrawlerProcess


class ReliabilitySpider(Spider):
    name = "reliability"

    def __init__(self, count: int = 10, rss_after: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = int(count)
        self.rss_after = int(rss_after)
        self.seen: Counter[int] = Counter()
        self.failures: list[str] = []
        self.responses = 0
        self.rss_warm: int | None = None

    async def start(self):  # type: ignore[no-untyped-def]
        for i in range(self.count):
            yield Request(
                f"http://127.0.0.1:9/page/{i}",
                cb_kwargs={"n": i},
                callback=self.parse,
                errback=self.errback,
                dont_filter=True,
            )

    def parse(self, response, n):  # type: ignore[no-untyped-def]
        self.seen[n] += 1
        self.responses += 1
        if self.rss_after and self.responses == self.rss_after:
            self.rss_warm = _rss()
        yield {"n": n}

    def errback(self, failure):  # type: ignore[no-untyped-def]
        self.failures.append(f"{failure.request.url}: {failure.value!r}")


def _rss() -> int:
    import gc

    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--ledger-dir", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--retry-times", type=int, default=3)
    parser.add_argument("--download-timeout", type=float, default=30)
    parser.add_argument("--close-timeout", type=float, default=30)
    parser.add_argument("--rss-after", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    settings = {
        "DOWNLOADER_MIDDLEWARES": {"scrapy_scrappey.ScrappeyMiddleware": 950},
        "SCRAPPEY_API_KEY": args.key,
        "SCRAPPEY_API_URL": args.api_url,
        "SCRAPPEY_LEDGER_DIR": args.ledger_dir,
        "SCRAPPEY_SESSION_POOL_SIZE": args.pool,
        "SCRAPPEY_SESSION_CREATE_BACKOFF": 0.05,
        "SCRAPPEY_CLOSE_TIMEOUT": args.close_timeout,
        "CONCURRENT_REQUESTS": args.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
        "RETRY_TIMES": args.retry_times,
        "DOWNLOAD_TIMEOUT": args.download_timeout,
        "TELNETCONSOLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "LOG_LEVEL": args.log_level,
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    }
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(ReliabilitySpider)
    summary: dict[str, Any] = {}

    def closed(spider: ReliabilitySpider, reason: str) -> None:
        summary.update(
            reason=reason,
            responses=spider.responses,
            unique=len(spider.seen),
            duplicates=sum(c - 1 for c in spider.seen.values() if c > 1),
            failures=spider.failures,
            rss_warm=spider.rss_warm,
            rss_end=_rss() if spider.rss_after else None,
        )

    crawler.signals.connect(closed, signal=signals.spider_closed)
    process.crawl(crawler, count=args.count, rss_after=args.rss_after)
    process.start()
    # After spider_closed handlers ran (sessions destroyed): the final stats.
    summary["stats"] = {
        k: v if isinstance(v, (int, float, str)) else str(v)
        for k, v in crawler.stats.get_stats().items()
    }
    Path(args.out).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
