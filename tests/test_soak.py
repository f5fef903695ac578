"""Soak: 20,000 pages, 50 sessions, 5 % mixed faults, memory and accounting.

Both the local server (``--static-body``: nothing is fetched) and the crawl run
as subprocesses, so the RSS the spider measures is the crawl's alone.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.reliability_support import (
    STATIC_BODY,
    ledger_ids,
    spider_cmd,
    start_spider,
)

PAGES = 20_000
POOL = 50
WARM_UP = 2_000
MB = 1024 * 1024


@pytest.mark.slow
def test_soak_20000_pages_50_sessions_mixed_faults(tmp_path, make_server_process):
    flags = (
        "--static-body",
        STATIC_BODY,
        "--error-rate",
        "0.02",
        "--http-502-rate",
        "0.015",
        "--truncated-rate",
        "0.015",
        "--expire-after-requests",
        "350",
        "--max-sessions",
        "200",
        "--seed",
        "2024",
        # 20,000 pages at 0.2 each: more than the default balance.
        "--balance",
        "1000000",
        "--log-level",
        "WARNING",
    )
    out = tmp_path / "soak.json"
    server = make_server_process(*flags)
    cmd = spider_cmd(
        server.url,
        tmp_path / "ledger",
        out,
        key="SOAKKEY-5e1f0c9a7d",
        count=PAGES,
        pool=POOL,
        concurrency=2 * POOL,
        retry_times=10,
        rss_after=WARM_UP,
        log_level="WARNING",
    )
    started = time.monotonic()
    proc = start_spider(cmd, tmp_path / "soak.log")
    try:
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    stats = server.stats()
    log = (tmp_path / "soak.log").read_text()[-3000:]
    assert code == 0, log
    summary = json.loads(out.read_text())
    crawl = summary["stats"]
    failures = summary["failures"]
    by_command = stats["requests"]["by_command"]
    growth = (summary["rss_end"] - summary["rss_warm"]) / MB
    print(
        f"\nsoak: {elapsed:.1f}s; API requests sent {crawl.get('scrappey/requests')} "
        f"(server saw {by_command.get('request.get')}); responses {summary['responses']} "
        f"({summary['unique']} unique pages); failures {len(failures)}; retries "
        f"{crawl.get('retry/count', 0)}; sessions created {stats['sessions']['created']}, "
        f"destroyed {stats['sessions']['destroyed']}, expired {stats['sessions']['expired']}, "
        f"left open {stats['sessions']['open']}; faults {stats['faults']}; "
        f"RSS warm {summary['rss_warm'] / MB:.1f} MB, end {summary['rss_end'] / MB:.1f} MB "
        f"(+{growth:.1f} MB)"
    )
    # 100 % accounted for: every page reached the callback exactly once or
    # is a counted failure (none expected with 10 retries).
    assert summary["duplicates"] == 0
    assert summary["unique"] + len(failures) == PAGES
    assert failures == []
    assert summary["reason"] == "finished"
    # Server-side: every request.get was either a page or a retried fault.
    assert by_command["request.get"] == PAGES + crawl.get("retry/count", 0)
    assert crawl["scrappey/requests"] == by_command["request.get"]
    faults = stats["faults"]
    for kind in ("errors", "http_502", "truncated"):
        assert faults[kind], kind
    assert stats["sessions"]["expired"] >= 1
    # Nothing left open, nothing left in the ledger.
    assert stats["sessions"]["open"] == 0
    assert (
        stats["sessions"]["created"]
        == stats["sessions"]["destroyed"] + stats["sessions"]["expired"]
    )
    assert ledger_ids(tmp_path / "ledger") == set()
    assert growth < 30
