"""Regression tests for defects found in review: caps, dead-session hand-off,
key in exception chains, 4xx replies, cached charsets, sequential delays."""

import asyncio
import time
import traceback

import pytest
from aiohttp import web
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import (
    ScrappeyAPIError,
    ScrappeyConfigError,
    ScrappeyTransportError,
)
from scrapy_scrappey.client import ScrappeyClient, parse_reply
from scrapy_scrappey.codes import ErrorKind
from scrapy_scrappey.local import Faults
from scrapy_scrappey.responses import from_api_response
from tests.crawl import PagesSpider, crawl, settings_for

SECRET = "SECRETKEY-0a1b2c3d4e5f"


@pytest.mark.parametrize(("pools", "cap", "pool_size"), [(4, 2, 1), (1, 1, 3)])
@deferred_f_from_coro_f
async def test_session_cap_is_never_exceeded_and_never_deadlocks(
    tmp_path,
    pools,
    cap,
    pool_size,
    make_local_server,
    target_site,
):
    # The server refuses anything over the cap, so over_limit counts overshoots.
    server = await make_local_server(max_sessions=cap)

    class Capped(PagesSpider):
        allowed_domains = [f"d{i}.test" for i in range(pools - 1)] + ["127.0.0.1"]

    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="domain",
        SCRAPPEY_MAX_SESSIONS=cap,
        SCRAPPEY_SESSION_POOL_SIZE=pool_size,
    )
    result = await asyncio.wait_for(
        crawl(Capped, settings, urls=[target_site.url(f"/page/{i}") for i in range(4)]),
        timeout=30,
    )
    stats = server.stats()
    assert len(result.items) == 4
    assert result.stats.get("scrappey/sessions/over_limit", 0) == 0
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_dead_session_is_not_handed_to_the_next_waiter(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(expire_after_requests=1))
    urls = [target_site.url(f"/page/{i}") for i in range(8)]
    settings = settings_for(server, tmp_path, RETRY_TIMES=10, CONCURRENT_REQUESTS=8)
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 8
    gets = stats["requests"]["by_command"]["request.get"]
    failed = gets - 8
    # each expired session costs at most the one call that discovered it
    assert failed <= stats["sessions"]["expired"]
    assert result.stats["retry/count"] == failed
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_timeout_error_chain_does_not_carry_the_key():
    async def slow(request):
        await asyncio.sleep(2)
        return web.json_response({"data": "success"})

    app = web.Application()
    app.router.add_post("/api/v1", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    client = ScrappeyClient(f"http://127.0.0.1:{port}/api/v1", SECRET)
    try:
        with pytest.raises(ScrappeyTransportError) as info:
            await client.call({"cmd": "request.get", "url": "http://x"}, timeout=0.2)
        text = "".join(traceback.format_exception(info.value))
        assert SECRET not in text
        assert SECRET[4:] not in text
        with pytest.raises(ScrappeyConfigError, match="not JSON"):
            await client.call(
                {"cmd": "request.get", "url": "http://x", "bad": {1, 2}}, timeout=1
            )
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (402, b'{"message": "Insufficient balance"}'),
        (404, b'{"detail": "Not Found"}'),
        (403, b"{}"),
    ],
)
def test_4xx_json_without_error_is_an_error_not_a_page(status, body):
    with pytest.raises(ScrappeyAPIError) as info:
        parse_reply(status, body)
    assert info.value.kind is ErrorKind.CONFIG
    assert str(status) in str(info.value)


def test_text_body_declares_utf8_so_cache_replays_decode_right():
    data = {
        "data": "success",
        "solution": {
            "statusCode": 200,
            "response": "<p>日本語</p>",
            "responseHeaders": {"content-type": "text/html; charset=Shift_JIS"},
        },
    }
    response = from_api_response(data, request=Request("https://e.com"))
    assert response.headers["Content-Type"] == b"text/html; charset=utf-8"
    replay = HtmlResponse(
        url=response.url, headers=response.headers, body=response.body
    )
    assert "日本語" in replay.text


@deferred_f_from_coro_f
async def test_download_delay_applies_to_sequential_requests(
    tmp_path, local_server, target_site
):

    class Chain(PagesSpider):
        async def start(self):
            yield Request(target_site.url("/page/0"), callback=self.next_page)

        def next_page(self, response):
            n = int(response.url.rsplit("/", 1)[1])
            yield from self.parse(response)
            if n < 3:
                yield Request(
                    target_site.url(f"/page/{n + 1}"), callback=self.next_page
                )

    settings = settings_for(
        local_server, tmp_path, DOWNLOAD_DELAY=0.4, DOWNLOAD_DELAY_JITTER=0
    )
    started = time.monotonic()
    result = await crawl(Chain, settings, urls=[])
    elapsed = time.monotonic() - started
    assert len(result.items) == 4
    assert elapsed >= 3 * 0.4


@deferred_f_from_coro_f
async def test_dont_retry_is_honoured_for_session_wait_timeouts(
    tmp_path, make_local_server, target_site
):
    faults = Faults(latency={"request.get": 1.0})
    server = await make_local_server(faults=faults)
    urls = [(target_site.url(f"/page/{i}"), {"dont_retry": True}) for i in range(3)]
    settings = settings_for(server, tmp_path, SCRAPPEY_SESSION_WAIT_TIMEOUT=0.3)
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len(result.items) == 1
    assert result.stats.get("retry/count", 0) == 0
    assert len(result.spider.errors) == 2


def test_session_params_must_be_json():
    from scrapy.settings import Settings

    from scrapy_scrappey import Config

    with pytest.raises(
        ScrappeyConfigError, match="SCRAPPEY_SESSION_PARAMS must hold JSON"
    ):
        Config.from_settings(
            Settings({"SCRAPPEY_API_KEY": "k", "SCRAPPEY_SESSION_PARAMS": {"x": {1}}})
        )


# -- second review ------------------------------------------------------------


@deferred_f_from_coro_f
async def test_a_busy_pool_cannot_starve_another_under_the_cap(
    tmp_path, make_local_server, target_site
):
    faults = Faults(latency={"request.get": 0.1})
    server = await make_local_server(max_sessions=1, faults=faults)
    # the default pool stays busy for ~3 s, longer than the wait bound
    urls = [target_site.url(f"/page/{i}") for i in range(30)]
    b_urls = [
        target_site.url(f"/page/b{i}", host="localhost") for i in range(2)
    ]  # own slot
    urls += [(url, {"scrappey_session": "b"}) for url in b_urls]
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_MAX_SESSIONS=1,
        RETRY_TIMES=0,
        CONCURRENT_REQUESTS=32,
        SCRAPPEY_SESSION_WAIT_TIMEOUT=2,
    )
    result = await asyncio.wait_for(crawl(PagesSpider, settings, urls=urls), timeout=30)
    stats = server.stats()
    assert len(result.items) == 32
    assert result.spider.errors == []
    assert result.stats.get("scrappey/sessions/over_limit", 0) == 0
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_a_ledger_write_failure_after_a_destroy_frees_the_cap_slot(local_server):
    from scrapy.statscollectors import MemoryStatsCollector
    from scrapy.utils.test import get_crawler

    from scrapy_scrappey import Config
    from scrapy_scrappey.sessions import SessionManager

    class FlakyLedger:
        failures = 1

        def record(self, session_id):
            pass

        def forget(self, session_id):
            if self.failures:
                self.failures -= 1
                raise OSError("disk full")

    config = Config(
        api_key="k", api_url=local_server.url, max_sessions=1, session_wait_timeout=3
    )
    client = ScrappeyClient(local_server.url, "k")
    stats = MemoryStatsCollector(get_crawler())
    manager = SessionManager(
        config, client, stats, ledger=FlakyLedger(), on_fatal=lambda *a: None
    )
    try:
        first = await manager.lease("name:a")
        manager.release(first)
        second = await asyncio.wait_for(
            manager.lease("name:b"), timeout=5
        )  # evicts "a"
        manager.release(second)
        third = await asyncio.wait_for(manager.lease("name:c"), timeout=5)
        manager.release(third)
    finally:
        await manager.close()
        await client.close()
    assert local_server.stats()["sessions"]["open"] == 0
    assert stats.get_value("scrappey/sessions/leaked") is None


def test_text_without_content_type_declares_utf8():
    data = {
        "data": "success",
        "solution": {"statusCode": 200, "response": "<html><p>café</p></html>"},
    }
    response = from_api_response(data, request=Request("https://e.com/"))
    assert response.headers["Content-Type"] == b"text/html; charset=utf-8"
    data["solution"]["responseHeaders"] = {"content-type": "text/html"}
    response = from_api_response(data, request=Request("https://e.com/"))
    assert response.headers["Content-Type"] == b"text/html; charset=utf-8"
    replay = HtmlResponse(
        url=response.url, headers=response.headers, body=response.body
    )
    assert "café" in replay.text


def test_a_stale_session_id_in_meta_uses_the_scope_pool_not_a_new_named_pool():
    from scrapy_scrappey import Config
    from scrapy_scrappey.routing import Router

    router = Router(Config(api_key="k"), allowed_domains=[], pool_of={}.get)
    meta = {"scrappey_session": "scrapy-scrappey-0123456789abcdef"}
    assert router.route(Request("https://e.com", meta=meta)).pool == "spider"


def test_download_slots_randomize_delay_key():
    from scrapy.settings import Settings

    from scrapy_scrappey.throttle import TargetThrottle

    throttle = TargetThrottle(
        Settings(
            {"DOWNLOAD_SLOTS": {"a": {"randomize_delay": False}, "b": {"jitter": 0.1}}}
        )
    )
    assert throttle._gate("a").jitter == 0.0
    assert throttle._gate("b").jitter == 0.1
    assert throttle._gate("c").jitter == 0.5
