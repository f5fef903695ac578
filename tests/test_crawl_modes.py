"""Raw mode, transparent/opt-in, the add-on, HTTP cache and target politeness."""

import json
import logging
import time

from scrapy import Request, version_info
from scrapy.http import JsonRequest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from tests.crawl import KEY, NO_JITTER, PagesSpider, crawl, settings_for


class RawSpider(PagesSpider):
    """Written like a project that already calls the Scrappey API by hand."""

    def __init__(self, api_url, targets, **kwargs):
        super().__init__(urls=[], **kwargs)
        self.api_url = api_url
        self.targets = targets

    async def start(self):
        for url in self.targets:
            yield JsonRequest(
                self.api_url,
                data={"cmd": "request.get", "url": url},
                callback=self.parse_api,
                dont_filter=True,
            )

    def parse_api(self, response):
        data = response.json()
        yield {
            "url": data["solution"]["currentUrl"],
            "session": data.get("session"),
            "response_url": response.url,
            "flags": response.flags,
        }


@deferred_f_from_coro_f
async def test_raw_mode_gets_session_and_key_added(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(api_key=KEY)
    targets = [target_site.url(f"/page/{i}") for i in range(3)]
    result = await crawl(
        RawSpider,
        settings_for(server, tmp_path),
        api_url=server.url,
        targets=targets,
    )
    stats = server.stats()
    assert sorted(i["url"] for i in result.items) == sorted(targets)
    gets = [c for c in stats["commands"] if c["cmd"] == "request.get"]
    session_ids = {c["session"] for c in gets}
    assert len(session_ids) == 1
    assert None not in session_ids
    assert all(i["response_url"] == server.url for i in result.items)
    assert all("scrappey_raw" in i["flags"] for i in result.items)
    assert result.stats["scrappey/raw/requests"] == 3
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_raw_mode_keeps_a_session_the_spider_chose(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(unknown_session="create")

    class OwnSession(RawSpider):
        async def start(self):
            data = {
                "cmd": "request.get",
                "url": self.targets[0],
                "session": "my-own",
            }
            yield JsonRequest(self.api_url, data=data, callback=self.parse_api)

    result = await crawl(
        OwnSession,
        settings_for(server, tmp_path, SCRAPPEY_SESSION_SCOPE="none"),
        api_url=server.url,
        targets=[target_site.url("/page/1")],
    )
    stats = server.stats()
    assert result.items[0]["session"] == "my-own"
    assert [c["session"] for c in stats["commands"] if c["cmd"] == "request.get"] == [
        "my-own"
    ]


@deferred_f_from_coro_f
async def test_opt_in_mode_routes_only_marked_requests(
    tmp_path, local_server, target_site
):
    urls = [
        (target_site.url("/page/1"), {"scrappey": True}),
        (target_site.url("/page/2"), {"scrappey": {"requestType": "request"}}),
        target_site.url("/page/3"),
    ]
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_TRANSPARENT=False,
        SCRAPPEY_DEFAULT_PARAMS={"requestType": "browser", "retries": 1},
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = local_server.stats()
    routed = {c["url"] for c in stats["commands"] if c["cmd"] == "request.get"}
    assert routed == {target_site.url("/page/1"), target_site.url("/page/2")}
    assert len(result.items) == 3
    direct = next(i for i in result.items if i["url"].endswith("/3"))
    assert "scrappey" not in direct["flags"]


@deferred_f_from_coro_f
async def test_addon_enables_the_middleware(tmp_path, local_server, target_site):
    settings = settings_for(local_server, tmp_path, ADDONS={"scrapy_scrappey.Addon": 0})
    del settings["DOWNLOADER_MIDDLEWARES"]
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    stats = local_server.stats()
    assert result.items[0]["cls"] == "ScrappeyHtmlResponse"
    assert stats["sessions"]["created"] == 1
    assert stats["sessions"]["open"] == 0
    mws = result.crawler.settings.getdict("DOWNLOADER_MIDDLEWARES")
    assert any("ScrappeyMiddleware" in str(k) and v == 950 for k, v in mws.items())


@deferred_f_from_coro_f
async def test_http_cache_second_run_makes_no_api_calls(
    tmp_path, local_server, target_site
):
    urls = [target_site.url(f"/page/{i}") for i in range(3)] + [
        target_site.url("/data.json")
    ]
    settings = settings_for(
        local_server,
        tmp_path,
        HTTPCACHE_ENABLED=True,
        HTTPCACHE_DIR=str(tmp_path / "cache"),
    )
    first = await crawl(PagesSpider, settings, urls=urls)
    calls_after_first = local_server.stats()["requests"]["total"]
    second = await crawl(PagesSpider, settings, urls=urls)
    calls_after_second = local_server.stats()["requests"]["total"]
    assert calls_after_first == 4 + 2  # the pages, one sessions.create and destroy
    assert calls_after_second == calls_after_first
    assert sorted(i["url"] for i in second.items) == sorted(
        i["url"] for i in first.items
    )
    assert second.stats["httpcache/hit"] == 4
    by_url = {i["url"]: i for i in second.items}
    # Scrapy >= 2.19 caches the response class itself; older ones re-derive it
    expected = "ScrappeyJsonResponse" if version_info >= (2, 19) else "JsonResponse"
    assert by_url[target_site.url("/data.json")]["cls"] == expected


@deferred_f_from_coro_f
async def test_per_domain_concurrency_and_delay_are_honoured(
    tmp_path, local_server, make_target_site
):
    site = await make_target_site(delay=0.1)
    urls = [site.url(f"/page/{i}") for i in range(6)]
    settings = settings_for(
        local_server,
        tmp_path,
        CONCURRENT_REQUESTS_PER_DOMAIN=1,
        SCRAPPEY_SESSION_POOL_SIZE=4,
        SCRAPPEY_SESSION_CONCURRENCY=4,
    )
    await crawl(PagesSpider, settings, urls=urls)
    assert site.max_active == 1
    settings.update(
        CONCURRENT_REQUESTS_PER_DOMAIN=8,
        DOWNLOAD_DELAY=0.2,
        **NO_JITTER,
    )
    site.max_active = 0
    started = time.monotonic()
    await crawl(PagesSpider, settings, urls=urls)
    elapsed = time.monotonic() - started
    assert (
        site.max_active == 1
    )  # a delay means one request at a time, like Scrapy's slots
    assert elapsed >= 5 * 0.2


@deferred_f_from_coro_f
async def test_pools_are_created_concurrently(
    tmp_path, make_local_server, target_site, api_calls
):
    faults = Faults(latency={"sessions.create": 0.4})
    server = await make_local_server(faults=faults)

    class Many(PagesSpider):
        allowed_domains = [f"d{i}.test" for i in range(8)] + ["127.0.0.1"]

    settings = settings_for(server, tmp_path, SCRAPPEY_SESSION_SCOPE="domain")
    result = await crawl(Many, settings, urls=[target_site.url("/page/1")])
    assert len(result.items) == 1
    assert result.stats["scrappey/sessions/created"] == 9
    # All nine were asked for before the first one was answered.
    assert api_calls.max_in_flight("sessions.create") == 9


@deferred_f_from_coro_f
async def test_key_never_logged_even_at_debug(
    tmp_path, caplog, make_local_server, target_site
):
    caplog.set_level(logging.DEBUG)
    faults = Faults(error_rate=0.3, http_502_rate=0.2, seed=1)
    server = await make_local_server(faults=faults)
    result = await crawl(
        PagesSpider,
        settings_for(server, tmp_path, LOG_LEVEL="DEBUG", RETRY_TIMES=10),
        urls=[target_site.url(f"/page/{i}") for i in range(8)],
    )
    assert len(result.items) == 8
    text = "\n".join(
        [*caplog.text.splitlines(), json.dumps(result.items), str(result.stats)]
    )
    assert KEY not in text
    assert KEY[4:] not in text
    assert KEY[:4] in caplog.text  # the start-up line shows which key is in use


@deferred_f_from_coro_f
async def test_unroutable_schemes_pass_through(tmp_path, local_server):

    class Data(PagesSpider):
        async def start(self):
            yield Request("data:text/html,<p>hi</p>", callback=self.parse)

    result = await crawl(Data, settings_for(local_server, tmp_path), urls=[])
    stats = local_server.stats()
    assert result.items[0]["text"] == "<p>hi</p>"
    assert stats["requests"]["by_command"].get("request.get", 0) == 0
