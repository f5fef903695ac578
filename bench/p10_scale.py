"""P10: scale-out. 1, 2 and 3 scrapy-redis workers, 0.2 s API latency.

Each run is example_project/scale.py's ScaleRun (the runner of the demo and
the acceptance tests): a real redis-server, the shops site (pages over
``DOMAINS`` domains), the local Scrappey server as a process answering every
``request.get`` after ``LATENCY`` s, and N ``scrapy crawl shops`` processes.
Pages/s is measured over the crawl phase (the server's first to last
``request.get``), so process start-up and the workers' drain grace are left
out. The account cap is large enough for every worker's domain sessions, and
a session takes a worker's ``CONCURRENT`` requests at once: the benchmark
measures the shared queue and state, not cap or session contention (ideal:
``CONCURRENT / LATENCY`` = 20 pages/s per worker).

Reported per run: pages/s, scaling vs 1 worker (target >= 0.9 x workers while
the machine is not CPU-bound), the workers' CPU (their own process time per
page, and as a share of the machine's cores over the run), the host's CPU
load, and Redis commands (round trips) per page: ``total_commands_processed``
over the run / pages, the queue, the dupefilter and the plugin's heartbeats.
Correctness checks: every page crawled exactly once, no session left open.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psutil

from bench.common import Row, emit, quick_flag
from example_project.processes import find_redis_server
from example_project.scale import ScaleConfig, ScaleResult, ScaleRun

LATENCY = 0.2
DOMAINS = 10
CONCURRENT = 4
BENCH = "P10 scale-out"


def _crawl_seconds(result: ScaleResult) -> float:
    times = [c["t"] for c in result.server["commands"] if c["cmd"] == "request.get"]
    # The last page's own latency is part of the crawl.
    return max(times) - min(times) + LATENCY if times else float("nan")


def _run(workers: int, pages: int, folder: Path) -> tuple[ScaleResult, float]:
    config = ScaleConfig(
        workers=workers,
        pages=pages,
        domains=DOMAINS,
        max_sessions=workers * DOMAINS,
        api_latency=LATENCY,
        concurrent_requests=CONCURRENT,
        # Each domain's session takes all of a worker's requests at once, so a
        # worker keeps CONCURRENT pages in flight whatever domains they are on.
        settings={
            "LOG_LEVEL": "WARNING",
            "SCRAPPEY_SESSION_CONCURRENCY": str(CONCURRENT),
        },
    )
    with ScaleRun(config, folder) as run:
        run.seed()
        psutil.cpu_percent()  # starts the host's CPU window
        run.start_workers()
        result = run.finish(timeout=300)
        host = psutil.cpu_percent()
    return result, host


def _rows(
    workers: int, result: ScaleResult, host: float, base: float | None
) -> list[Row]:
    pages = len(result.crawled())
    pps = pages / _crawl_seconds(result)
    cpu = sum(float(w.stats.get("worker/cpu_seconds", 0)) for w in result.workers)
    ok = (
        result.crawled() == result.fetched
        and max(result.fetched.values(), default=0) == 1
        and not result.problems()
    )
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    rows = [
        Row(BENCH, f"{label}: pages/s ({pages} pages)", round(pps, 1), "p/s", check=ok),
        Row(BENCH, f"{label}: worker CPU per page", round(1000 * cpu / pages, 2), "ms"),
        Row(
            BENCH,
            f"{label}: worker CPU share of the machine",
            round(100 * cpu / result.elapsed / (os.cpu_count() or 1), 1),
            "%",
        ),
        Row(BENCH, f"{label}: host CPU load during the run", round(host, 1), "%"),
        Row(
            BENCH,
            f"{label}: Redis commands per page",
            round(result.redis_commands / pages, 1),
            "",
        ),
    ]
    if base:
        ratio = round(pps / base, 2)
        rows.insert(
            1,
            Row(
                BENCH,
                f"{label}: scaling vs 1 worker",
                ratio,
                "x",
                1.0,
                ratio,
                f">= {0.9 * workers:.1f}x (0.9 x workers, not CPU-bound)",
                ratio >= 0.9 * workers,
            ),
        )
    return rows


def main() -> list[Row]:
    if find_redis_server() is None:
        return [Row(BENCH, "skipped", "redis-server is not installed")]
    pages = 150 if quick_flag() else 600
    rows: list[Row] = []
    base = None
    with tempfile.TemporaryDirectory(prefix="bench-p10-") as tmp:
        for workers in (1, 2, 3):
            folder = Path(tmp, f"w{workers}")
            folder.mkdir()
            result, host = _run(workers, pages, folder)
            rows += _rows(workers, result, host, base)
            if base is None:
                base = len(result.crawled()) / _crawl_seconds(result)
    return rows


if __name__ == "__main__":
    emit(main())
