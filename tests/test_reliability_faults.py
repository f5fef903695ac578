"""Faults mid-crawl and at close, proved on the local server's own counters.

Complements tests/test_crawl_errors.py and tests/test_crawl_sessions.py
(transient faults, expire_after_requests, CODE-0029 on creates, every create
failing, wrong key are covered there).
"""

from __future__ import annotations

import logging
from asyncio import sleep
from collections import Counter

from scrapy import Request
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for
from tests.reliability_support import ledger_ids


def _no_duplicates(items):  # type: ignore[no-untyped-def]
    counts = Counter(i["request_url"] for i in items)
    return [url for url, n in counts.items() if n > 1]


@deferred_f_from_coro_f
async def test_sessions_expiring_server_side_while_the_spider_pauses(
    tmp_path, make_local_server, target_site
):
    """Server idle TTL 0.5 s; the plugin's own idle TTL is far longer, so the
    first request after each pause meets a session the server already reaped."""
    server = await make_local_server(session_ttl=0.5)

    class Pausing(PagesSpider):
        async def start(self):  # type: ignore[no-untyped-def]
            for batch in range(3):
                if batch:
                    await sleep(1.2)
                for i in range(4):
                    yield Request(
                        target_site.url(f"/page/{batch}-{i}"),
                        callback=self.parse,
                        errback=self.errback,
                        dont_filter=True,
                    )

    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=2,
        SCRAPPEY_SESSION_IDLE_TTL=600,
        RETRY_TIMES=5,
    )
    result = await crawl(Pausing, settings, urls=[])
    stats = server.stats()
    expected = {target_site.url(f"/page/{b}-{i}") for b in range(3) for i in range(4)}
    assert {i["request_url"] for i in result.items} == expected
    assert len(result.items) == 12
    assert not result.spider.errors
    assert stats["sessions"]["expired"] >= 2
    assert result.stats["scrappey/sessions/recreated"] >= 2
    assert stats["sessions"]["open"] == 0
    created = stats["sessions"]["created"]
    assert created == stats["sessions"]["destroyed"] + stats["sessions"]["expired"]
    assert created >= 4  # the dead ones were replaced


@deferred_f_from_coro_f
async def test_expiry_after_n_requests_with_a_concurrent_pool(
    tmp_path, make_local_server, target_site
):
    faults = Faults(expire_after_requests=4)
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(40)]
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=3,
        SCRAPPEY_SESSION_CONCURRENCY=2,
        RETRY_TIMES=10,
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert sorted(i["request_url"] for i in result.items) == sorted(urls)
    assert not _no_duplicates(result.items)
    assert stats["sessions"]["expired"] >= 8
    assert stats["sessions"]["open"] == 0
    assert (
        stats["sessions"]["created"]
        == stats["sessions"]["destroyed"] + stats["sessions"]["expired"]
    )


@deferred_f_from_coro_f
async def test_mixed_faults_and_timeouts_every_page_once(
    tmp_path, make_local_server, target_site
):
    faults = Faults(
        error_rate=0.10,
        http_502_rate=0.05,
        truncated_rate=0.03,
        slow_rate=0.05,
        slow_seconds=3,
        seed=11,
    )
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(80)]
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=4,
        DOWNLOAD_TIMEOUT=1,
        RETRY_TIMES=20,
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert sorted(i["request_url"] for i in result.items) == sorted(urls)
    assert not _no_duplicates(result.items)
    assert not result.spider.errors
    injected = stats["faults"]
    for kind in ("errors", "http_502", "truncated", "slow"):
        assert injected[kind], kind
    # Server-side accounting: every request.get the server saw either became
    # the one item of its page or was retried.
    assert stats["requests"]["by_command"]["request.get"] == 80 + result.stats.get(
        "retry/count", 0
    )
    assert stats["sessions"]["open"] == 0
    assert stats["sessions"]["created"] == stats["sessions"]["destroyed"]


@deferred_f_from_coro_f
async def test_a_failing_destroy_at_close_is_retried_within_the_close_timeout(
    tmp_path,
    make_local_server,
    target_site,
):
    """CODE-0031 ("please try again") on the first destroy must not leak it."""
    server = await make_local_server(faults=Faults(fail_destroys=2))
    urls = [target_site.url(f"/page/{i}") for i in range(6)]
    settings = settings_for(
        server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=2, SCRAPPEY_CLOSE_TIMEOUT=5
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 6
    assert stats["faults"]["destroy_failures"] == 2
    assert result.stats["scrappey/sessions/destroy_failed"] == 2
    assert stats["sessions"]["open"] == 0
    assert result.stats.get("scrappey/sessions/leaked", 0) == 0
    assert ledger_ids(tmp_path / "ledger") == set()


@deferred_f_from_coro_f
async def test_destroy_always_failing_at_close_is_bounded_logged_and_counted(
    tmp_path,
    caplog,
    make_local_server,
    target_site,
):
    server = await make_local_server(faults=Faults(fail_destroys=10_000))
    urls = [target_site.url(f"/page/{i}") for i in range(4)]
    settings = settings_for(
        server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=2, SCRAPPEY_CLOSE_TIMEOUT=2
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 4
    assert result.stats["scrappey/sessions/leaked"] == 2
    assert result.stats["scrappey/sessions/destroy_failed"] >= 2
    # Bounded: no tight loop against the API while closing.
    assert stats["requests"]["by_command"]["sessions.destroy"] < 30
    assert stats["sessions"]["open"] == 2
    assert ledger_ids(tmp_path / "ledger") == set(stats["open_sessions"])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("Could not destroy 2 Scrappey session" in m for m in errors)


@deferred_f_from_coro_f
async def test_destroy_hanging_at_close_is_cut_at_the_close_timeout(
    tmp_path, caplog, make_local_server, target_site, api_calls
):
    faults = Faults(latency={"sessions.destroy": 30})
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(4)]
    settings = settings_for(
        server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=2, SCRAPPEY_CLOSE_TIMEOUT=2
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 4
    assert result.stats["scrappey/sessions/leaked"] == 2
    assert stats["requests"]["by_command"]["sessions.destroy"] == 2
    # The crawl ended without waiting for them: both are still open server-side.
    assert api_calls.count("cancelled", "sessions.destroy") == 2
    assert len(stats["open_sessions"]) == 2
    assert ledger_ids(tmp_path / "ledger") == set(stats["open_sessions"])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("SCRAPPEY_CLOSE_TIMEOUT" in m for m in errors)
