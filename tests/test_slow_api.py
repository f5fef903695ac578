"""A healthy but slow API must not drop requests (issue #16, item 1).

Pool of 1 session, one request per session at a time (the defaults), 16
requests in flight: most of them wait for the busy session much longer than
DOWNLOAD_TIMEOUT. Waiting for one's turn is not a failed download: nothing is
retried, nothing is lost, and the API call's own timeout only counts the call.
"""

from __future__ import annotations

import time

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from tests.crawl import MIDDLEWARES, PagesSpider, crawl, settings_for


class StampMiddleware:
    """Records when a request entered the downloader, before the plugin."""

    def process_request(self, request, spider=None):
        request.meta.setdefault("entered_downloader", time.monotonic())


class TimedSpider(PagesSpider):
    def parse(self, response):
        waited = time.monotonic() - response.meta["entered_downloader"]
        for item in super().parse(response):
            yield {**item, "in_downloader": waited}


async def _slow_crawl(
    tmp_path, make_local_server, site, *, pages, latency, download_timeout
):
    faults = Faults(latency={"request.get": latency})
    server = await make_local_server(faults=faults)
    urls = [site.url(f"/page/{i}") for i in range(pages)]
    settings = settings_for(
        server,
        tmp_path,
        DOWNLOADER_MIDDLEWARES={
            **MIDDLEWARES,
            f"{__name__}.StampMiddleware": 940,
        },
        CONCURRENT_REQUESTS=16,
        DOWNLOAD_TIMEOUT=download_timeout,
        RETRY_TIMES=2,  # Scrapy's default
    )
    result = await crawl(TimedSpider, settings, urls=urls)
    server_stats = server.stats()
    return urls, result, server_stats


async def _assert_nothing_lost(tmp_path, servers, *, pages, latency, download_timeout):
    urls, result, server_stats = await _slow_crawl(
        tmp_path,
        *servers,
        pages=pages,
        latency=latency,
        download_timeout=download_timeout,
    )
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    assert result.spider.errors == []
    assert "retry/max_reached" not in result.stats
    assert "retry/count" not in result.stats
    assert server_stats["requests"]["by_command"]["request.get"] == pages
    # Some requests waited in the plugin far longer than DOWNLOAD_TIMEOUT and
    # still got their page: the timeout counts the API call only.
    assert max(i["in_downloader"] for i in result.items) > 2 * download_timeout
    assert server_stats["sessions"]["created"] == 1
    assert server_stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_slow_api_loses_no_request_scaled(
    tmp_path, make_local_server, target_site
):
    servers = (make_local_server, target_site)
    await _assert_nothing_lost(
        tmp_path, servers, pages=30, latency=0.3, download_timeout=1
    )


@deferred_f_from_coro_f
async def test_slow_api_loses_no_request_at_the_issue_numbers(
    tmp_path, make_local_server, target_site
):
    servers = (make_local_server, target_site)
    await _assert_nothing_lost(
        tmp_path, servers, pages=30, latency=1.5, download_timeout=5
    )
