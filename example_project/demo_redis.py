"""The scale-out demo: ``python3 dev.py demo-redis`` or ``python -m example_project.demo_redis``.

Starts a real ``redis-server`` on 127.0.0.1 (a free port, no persistence),
the shops site (``PAGES`` pages over ``DOMAINS`` domains, shop-N.test, all
served on 127.0.0.1) and a local Scrappey server capped at ``MAX_SESSIONS``
open sessions, seeds ``shops:start_urls``, and runs ``WORKERS`` ``scrapy
crawl shops`` processes sharing the queue, the dupefilter and the account's
session cap (``SCRAPPEY_MAX_SESSIONS``) through Redis (example_project/scale.py).

Prints each worker's pages and sessions, then the server's most sessions open
at once, its ``CODE-0029`` answers and the sessions still open. Exits non-zero
unless every page was crawled exactly once, every worker finished cleanly,
the server never had more than ``MAX_SESSIONS`` open, never answered
``CODE-0029`` and has 0 open at the end. Items and logs go to
``example_project/output/shops/``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time

from .demo import OUTPUT_DIR, verdict
from .scale import ScaleConfig, ScaleResult, ScaleRun

WORKERS = 3
PAGES = 150
#: One session per domain and worker (domain scope): 3 x 4 fits the cap of
#: 12 at once. With more domains than that, a worker holding no session
#: waits until another closes (peers never give up their sessions for it).
DOMAINS = 4
MAX_SESSIONS = 12
#: Seconds the local server takes per page, as a (fast) real API would.
API_LATENCY = 0.1
TIMEOUT = 50.0  # seconds; the crawl takes about ten


def check(result: ScaleResult, config: ScaleConfig) -> list[str]:
    """What is wrong with a run that should have crawled every page once."""
    problems = result.problems()
    crawled = result.crawled()
    missing = config.pages - len(crawled)
    twice = sorted(page for page, n in crawled.items() if n > 1)
    refetched = sorted(page for page, n in result.fetched.items() if n > 1)
    if missing:
        problems.append(f"{missing} page(s) never crawled")
    if twice or refetched:
        problems.append(f"page(s) crawled twice: {(twice or refetched)[:10]}")
    if result.server["max_open"] > config.max_sessions:
        problems.append(
            f"{result.server['max_open']} sessions open at once "
            f"(cap {config.max_sessions})"
        )
    if result.server["over_limit"]:
        problems.append(f"{result.server['over_limit']} CODE-0029 answer(s)")
    return problems


def report(result: ScaleResult) -> None:
    print(f"\n  {'worker':<7} {'pages':>5} {'sessions':>8}  finish")
    for worker in result.workers:
        print(
            f"  {worker.name:<7} {len(worker.pages):>5} {len(worker.sessions):>8}  "
            f"{worker.finish_reason or '-'}"
        )
    sessions = result.server["sessions"]
    print(
        f"\n  {len(result.crawled())} pages crawled by {len(result.workers)} workers "
        f"in {result.elapsed:.1f} s; {result.redis_commands / max(1, len(result.crawled())):.1f} "
        "Redis commands per page."
    )
    print(
        f"  Local Scrappey: {sessions['created']} sessions created, "
        f"{sessions['destroyed']} destroyed, at most {result.server['max_open']} "
        f"open at once, {result.server['over_limit']} CODE-0029, "
        f"{sessions['open']} still open."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m example_project.demo_redis", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--pages", type=int, default=PAGES)
    args = parser.parse_args(argv)
    config = ScaleConfig(
        workers=args.workers,
        pages=args.pages,
        domains=DOMAINS,
        api_latency=API_LATENCY,
        max_sessions=MAX_SESSIONS,
    )
    folder = OUTPUT_DIR / "shops"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.monotonic()
    print("scrapy-scrappey scale-out demo (scrapy-redis)")
    try:
        with ScaleRun(config, folder) as run:
            print(f"  Redis:          {run.redis.url}")
            print(
                f"  shops site:     {run.site.url(0)} ({DOMAINS} domains, {args.pages} pages)"
            )
            print(f"  local Scrappey: {run.server.url} (max {MAX_SESSIONS} sessions)")
            run.seed()
            run.start_workers()
            result = run.finish(TIMEOUT)
    except KeyboardInterrupt:
        print("\nDemo interrupted.", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # no redis-server, or a server did not start
        print(f"\nDemo FAILED: {exc}", file=sys.stderr)
        return 1
    report(result)
    return verdict(check(result, config), started, f" (items and logs in {folder})")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
