"""Closing while dozens of requests wait for a session on a slow API.

Pool of 1 session, request.get takes 2 s, 40 requests all admitted by the
downloader (CONCURRENT_REQUESTS 40) with a 60 s DOWNLOAD_TIMEOUT: when the
close starts, the waiters and the in-flight call must be released at once
instead of draining one 2 s call at a time (about 80 s).
"""

from __future__ import annotations

from asyncio import sleep

from scrapy import signals
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, settings_for

LATENCY = 2.0


def _slow_settings(server, tmp_path, **extra):  # type: ignore[no-untyped-def]
    return settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=1,
        CONCURRENT_REQUESTS=40,
        CONCURRENT_REQUESTS_PER_DOMAIN=40,
        DOWNLOAD_TIMEOUT=60,
        **extra,
    )


async def _crawl(settings, urls):  # type: ignore[no-untyped-def]
    crawler = get_crawler(PagesSpider, settings)
    items: list[object] = []

    def scraped(item: object) -> None:
        items.append(item)

    crawler.signals.connect(scraped, signal=signals.item_scraped, weak=False)
    await crawler.crawl_async(urls=urls)
    return crawler, items


def _assert_released_at_close(api_calls):  # type: ignore[no-untyped-def]
    # The one call in flight at the close (a pool of 1) was cancelled, not
    # awaited, and none of the waiters sent a request after it: the last
    # thing the crawl did was destroying its session.
    assert api_calls.count("cancelled", "request.get") == 1
    cancelled = api_calls.events.index(("cancelled", "request.get"))
    assert api_calls.events[cancelled + 1 :] == [
        ("start", "sessions.destroy"),
        ("end", "sessions.destroy"),
    ]


@deferred_f_from_coro_f
async def test_itemcount_reached_with_40_waiters_closes_promptly(
    tmp_path, make_local_server, target_site, api_calls
):
    faults = Faults(latency={"request.get": LATENCY})
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(40)]
    settings = _slow_settings(server, tmp_path, CLOSESPIDER_ITEMCOUNT=2)
    crawler, items = await _crawl(settings, urls)
    stats = server.stats()
    assert crawler.stats.get_value("finish_reason") == "closespider_itemcount"
    # Two pages, then the close: not 40 x 2 s, not a 60 s timeout.
    assert 2 <= len(items) < 5
    _assert_released_at_close(api_calls)
    assert stats["requests"]["by_command"]["request.get"] < 5
    assert stats["sessions"]["open"] == 0
    assert stats["sessions"]["created"] == stats["sessions"]["destroyed"] == 1


@deferred_f_from_coro_f
async def test_closespider_timeout_with_40_waiters_closes_promptly(
    tmp_path, make_local_server, target_site, api_calls
):
    faults = Faults(latency={"request.get": LATENCY})
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(40)]
    settings = _slow_settings(server, tmp_path, CLOSESPIDER_TIMEOUT=3)
    crawler, items = await _crawl(settings, urls)
    stats = server.stats()
    assert crawler.stats.get_value("finish_reason") == "closespider_timeout"
    assert 1 <= len(items) <= 2
    _assert_released_at_close(api_calls)
    assert stats["requests"]["by_command"]["request.get"] <= 3
    assert stats["sessions"]["open"] == 0
    assert stats["sessions"]["created"] == stats["sessions"]["destroyed"] == 1


@deferred_f_from_coro_f
async def test_close_while_sessions_are_still_being_created(
    tmp_path, make_local_server, target_site, api_calls
):
    """CLOSESPIDER_TIMEOUT fires while sessions.create is slow: the creations
    are cancelled, and whatever the server did create is destroyed."""
    faults = Faults(latency={"sessions.create": 3})
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(10)]
    settings = {
        **_slow_settings(server, tmp_path, CLOSESPIDER_TIMEOUT=1),
        "SCRAPPEY_SESSION_SCOPE": "domain",
        "SCRAPPEY_SESSION_POOL_SIZE": 3,
    }
    _, items = await _crawl(settings, urls)
    # The server finishes the creates the client gave up on; give it the
    # time to, then nothing may be left open (no late creation).
    await sleep(1)
    stats = server.stats()
    assert not items
    assert api_calls.count("start", "request.get") == 0
    assert stats["sessions"]["open"] == 0, stats["open_sessions"]
