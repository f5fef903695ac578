import json

from scrapy import FormRequest, Request
from scrapy.http import JsonRequest
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import LocalScrappey
from tests.crawl import PagesSpider, crawl, settings_for
from tests.site import TargetSite


@deferred_f_from_coro_f
async def test_spider_scope_session_created_first_used_everywhere_destroyed_at_close(
    tmp_path,
):
    async with LocalScrappey() as server, TargetSite() as site:
        urls = [site.url(f"/page/{i}") for i in range(5)]
        result = await crawl(PagesSpider, settings_for(server, tmp_path), urls=urls)
        stats = server.stats()
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    session_ids = {i["session"] for i in result.items}
    assert len(session_ids) == 1
    (session_id,) = session_ids
    assert session_id.startswith("scrapy-scrappey-")
    commands = stats["commands"]
    assert commands[0]["cmd"] == "sessions.create"
    assert commands[-1]["cmd"] == "sessions.destroy"
    gets = [c for c in commands if c["cmd"] == "request.get"]
    assert len(gets) == 5
    assert all(c["session"] == session_id for c in gets)
    assert stats["sessions"]["created"] == 1
    assert stats["sessions"]["destroyed"] == 1
    assert stats["sessions"]["open"] == 0
    assert result.stats["scrappey/sessions/created"] == 1
    assert result.stats["scrappey/sessions/destroyed"] == 1
    assert result.stats.get("scrappey/sessions/leaked", 0) == 0
    assert result.stats["scrappey/requests"] == 5
    assert result.stats["scrappey/responses/status/200"] == 5
    assert all(
        "scrappey" in i["flags"] and i["cls"] == "ScrappeyHtmlResponse"
        for i in result.items
    )
    assert sorted(site.hits) == sorted(f"/page/{i}" for i in range(5))


@deferred_f_from_coro_f
async def test_session_keeps_login_cookie_server_side(tmp_path):
    """Scrapy's own cookie jar is off: only the remote session can remember the login."""
    async with LocalScrappey() as server, TargetSite() as site:

        class LoginSpider(PagesSpider):
            async def start(self):
                yield FormRequest(
                    site.url("/login"),
                    formdata={"user": "ann"},
                    callback=self.logged_in,
                )

            def logged_in(self, response):
                yield Request(site.url("/members"), callback=self.parse)

        result = await crawl(
            LoginSpider, settings_for(server, tmp_path, COOKIES_ENABLED=False), urls=[]
        )
    assert len(result.items) == 1
    assert result.items[0]["url"] == site.url("/members")
    assert "ann" in result.items[0]["text"]


@deferred_f_from_coro_f
async def test_redirect_final_url_and_non_2xx_status(tmp_path):
    async with LocalScrappey() as server, TargetSite() as site:
        urls = [site.url("/redirect"), site.url("/status/404"), site.url("/data.json")]
        result = await crawl(PagesSpider, settings_for(server, tmp_path), urls=urls)
    by_request = {i["request_url"]: i for i in result.items}
    assert by_request[site.url("/redirect")]["url"] == site.url("/page/redirected")
    assert by_request[site.url("/data.json")]["cls"] == "ScrappeyJsonResponse"
    # HttpErrorMiddleware dropped the 404 like any other non-2xx response
    assert site.url("/status/404") not in by_request
    (error,) = result.spider.errors
    assert isinstance(error, HttpError)
    assert error.response.status == 404
    assert result.stats["scrappey/responses/status/404"] == 1


@deferred_f_from_coro_f
async def test_post_body_headers_and_scrapy_cookies_reach_the_target(tmp_path):
    async with LocalScrappey() as server, TargetSite() as site:

        class EchoSpider(PagesSpider):
            async def start(self):
                yield JsonRequest(
                    site.url("/echo"),
                    data={"q": 1},
                    headers={"X-Token": "t1"},
                    cookies={"pref": "dark"},
                    callback=self.parse_echo,
                )

            def parse_echo(self, response):
                yield json.loads(response.json()["body"]) | {"echo": response.json()}

        result = await crawl(EchoSpider, settings_for(server, tmp_path), urls=[])
    (item,) = result.items
    assert item["q"] == 1
    echo = item["echo"]
    assert echo["method"] == "POST"
    assert echo["headers"]["X-Token"] == "t1"
    assert echo["cookies"] == {"pref": "dark"}
    # Scrapy's default User-Agent is not forwarded to the remote browser
    assert "Scrapy" not in echo["headers"].get("User-Agent", "")
