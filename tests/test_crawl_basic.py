import json

from scrapy import FormRequest, Request
from scrapy.http import JsonRequest
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.defer import deferred_f_from_coro_f

from tests.crawl import PagesSpider, crawl, settings_for


@deferred_f_from_coro_f
async def test_spider_scope_session_created_first_used_everywhere_destroyed_at_close(
    tmp_path,
    local_server,
    target_site,
):
    urls = [target_site.url(f"/page/{i}") for i in range(5)]
    result = await crawl(PagesSpider, settings_for(local_server, tmp_path), urls=urls)
    stats = local_server.stats()
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
    assert sorted(target_site.hits) == sorted(f"/page/{i}" for i in range(5))


@deferred_f_from_coro_f
async def test_session_keeps_login_cookie_server_side(
    tmp_path, local_server, target_site
):
    """Scrapy's own cookie jar is off: only the remote session can remember the login."""

    class LoginSpider(PagesSpider):
        async def start(self):
            yield FormRequest(
                target_site.url("/login"),
                formdata={"user": "ann"},
                callback=self.logged_in,
            )

        def logged_in(self, response):
            yield Request(target_site.url("/members"), callback=self.parse)

    result = await crawl(
        LoginSpider,
        settings_for(local_server, tmp_path, COOKIES_ENABLED=False),
        urls=[],
    )
    assert len(result.items) == 1
    assert result.items[0]["url"] == target_site.url("/members")
    assert "ann" in result.items[0]["text"]


@deferred_f_from_coro_f
async def test_redirect_final_url_and_non_2xx_status(
    tmp_path, local_server, target_site
):
    urls = [
        target_site.url("/redirect"),
        target_site.url("/status/404"),
        target_site.url("/data.json"),
    ]
    result = await crawl(PagesSpider, settings_for(local_server, tmp_path), urls=urls)
    by_request = {i["request_url"]: i for i in result.items}
    assert by_request[target_site.url("/redirect")]["url"] == target_site.url(
        "/page/redirected"
    )
    assert by_request[target_site.url("/data.json")]["cls"] == "ScrappeyJsonResponse"
    # HttpErrorMiddleware dropped the 404 like any other non-2xx response
    assert target_site.url("/status/404") not in by_request
    (error,) = result.spider.errors
    assert isinstance(error, HttpError)
    assert error.response.status == 404
    assert result.stats["scrappey/responses/status/404"] == 1


@deferred_f_from_coro_f
async def test_post_body_headers_and_scrapy_cookies_reach_the_target(
    tmp_path, local_server, target_site
):

    class EchoSpider(PagesSpider):
        async def start(self):
            yield JsonRequest(
                target_site.url("/echo"),
                data={"q": 1},
                headers={"X-Token": "t1"},
                cookies={"pref": "dark"},
                callback=self.parse_echo,
            )

        def parse_echo(self, response):
            yield json.loads(response.json()["body"]) | {"echo": response.json()}

    result = await crawl(EchoSpider, settings_for(local_server, tmp_path), urls=[])
    (item,) = result.items
    assert item["q"] == 1
    echo = item["echo"]
    assert echo["method"] == "POST"
    assert echo["headers"]["X-Token"] == "t1"
    assert echo["cookies"] == {"pref": "dark"}
    # Scrapy's default User-Agent is not forwarded to the remote browser
    assert "Scrapy" not in echo["headers"].get("User-Agent", "")
