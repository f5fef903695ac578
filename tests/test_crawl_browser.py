"""A crawl through the local server's browser engine: JS pages, a JS challenge."""

from __future__ import annotations

from scrapy.utils.defer import deferred_f_from_coro_f

from tests.browser_site import browser_process
from tests.crawl import PagesSpider, crawl, settings_for


class RenderedSpider(PagesSpider):
    """Yields what the page shows once rendered (``#n``)."""

    def parse(self, response):  # type: ignore[no-untyped-def]
        yield {"url": response.url, "text": response.css("#n::text").get()}


@deferred_f_from_coro_f
async def test_crawl_gets_rendered_pages_and_passes_the_challenge_once(
    tmp_path, make_local_server, browser_engine, browser_site
):
    server = await make_local_server(engine=browser_engine)
    urls = [browser_site.url(f"/js/{i}") for i in range(3)]
    urls += [browser_site.url(f"/challenge/{i}") for i in range(3)]
    settings = settings_for(server, tmp_path, CONCURRENT_REQUESTS=1)
    result = await crawl(RenderedSpider, settings, urls=urls)
    texts = sorted(item["text"] for item in result.items)
    stats = server.stats()
    assert texts == sorted(
        [f"rendered {i}" for i in range(3)] + [f"secret {i}" for i in range(3)]
    )
    assert browser_site.challenges_served == 1
    assert stats["sessions"]["created"] == 1
    assert stats["sessions"]["open"] == 0
    assert result.stats["scrappey/responses/status/200"] == 6


@deferred_f_from_coro_f
async def test_crawl_survives_a_killed_browser(
    tmp_path, make_local_server, browser_engine, browser_site
):
    server = await make_local_server(engine=browser_engine)
    launches = browser_engine.launches
    killed: list[str] = []

    def kill_once(path: str) -> None:
        if path == "/js/3" and not killed:
            killed.append(path)
            browser_process().kill()

    browser_site.on_js = kill_once
    urls = [browser_site.url(f"/js/{i}") for i in range(8)]
    settings = settings_for(server, tmp_path, CONCURRENT_REQUESTS=2)
    result = await crawl(RenderedSpider, settings, urls=urls)
    stats = server.stats()
    assert killed == ["/js/3"]
    assert sorted(item["text"] for item in result.items) == [
        f"rendered {i}" for i in range(8)
    ]
    assert browser_engine.launches == launches + 1
    assert stats["sessions"]["open"] == 0
    assert stats["sessions"]["lost"] == 1
    assert stats["sessions"]["created"] >= 2
