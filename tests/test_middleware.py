"""ScrappeyMiddleware built on its own, in Scrapy's unit-test style.

``build_from_crawler`` makes the middleware from a ``get_crawler`` crawler;
the tests call ``process_request`` and the signal handlers directly and
check what comes back, the stats and the log. The API is the local server.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from unittest import mock

import pytest
from scrapy import Request, Spider, signals
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import HtmlResponse, JsonRequest
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler

from scrapy_scrappey import (
    ScrappeyAPIError,
    ScrappeyConfigError,
    ScrappeyMiddleware,
    ScrappeyTransportError,
    SessionCheckFailed,
)
from scrapy_scrappey.local import Faults
from scrapy_scrappey.responses import ScrappeyMixin
from tests.crawl import KEY, NO_JITTER, PagesSpider, crawl, settings_for

LOGGER = "scrapy_scrappey.middleware"
TRANSIENT = "CODE-0001"  # "Server is overloaded": retried


class _Spider(Spider):
    name = "unit"


def build(settings):
    """The middleware of a crawler whose spider exists but has not been opened."""
    crawler = get_crawler(_Spider, settings)
    crawler.spider = crawler._create_spider()
    # As Crawler.crawl does: the middleware keys target slots by the engine's
    # downloader (Downloader.get_slot_key).
    crawler.engine = crawler._create_engine()
    return build_from_crawler(ScrappeyMiddleware, crawler)


async def opened(server, tmp_path, **settings):
    """A middleware after spider_opened, pointed at *server*."""
    mw = build(settings_for(server, tmp_path, **settings))
    await mw.spider_opened(mw.crawler.spider)
    return mw


async def close(mw):
    await mw.spider_closed(mw.crawler.spider, "finished")
    mw.crawler.engine.downloader.close()  # stops its slot garbage collector


def stat(mw, key):
    return mw.crawler.stats.get_value(key)


def request_commands(server):
    return [c for c in server.stats()["commands"] if c["cmd"].startswith("request.")]


def test_disabled_plugin_is_not_configured():
    crawler = get_crawler(
        PagesSpider, {"SCRAPPEY_ENABLED": False, "SCRAPPEY_API_KEY": KEY}
    )
    with pytest.raises(NotConfigured, match="SCRAPPEY_ENABLED"):
        ScrappeyMiddleware.from_crawler(crawler)


def test_missing_key_stops_at_startup_naming_the_setting(monkeypatch):
    monkeypatch.delenv("SCRAPPEY_API_KEY", raising=False)
    # Not NotConfigured: a crawl meant to use Scrappey must not run without it.
    crawler = get_crawler(
        PagesSpider,
        {"DOWNLOADER_MIDDLEWARES": {"scrapy_scrappey.ScrappeyMiddleware": 950}},
    )
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_API_KEY"):
        ScrappeyMiddleware.from_crawler(crawler)


@deferred_f_from_coro_f
async def test_meta_scrappey_false_is_downloaded_directly(
    tmp_path, local_server, target_site
):
    mw = await opened(local_server, tmp_path)
    try:
        request = Request(target_site.url("/page/1"), meta={"scrappey": False})
        assert await mw.process_request(request) is None
    finally:
        await close(mw)
    assert stat(mw, "scrappey/requests") is None
    assert request_commands(local_server) == []
    assert target_site.hits == []


@deferred_f_from_coro_f
async def test_request_through_the_local_server_is_a_scrappey_response(
    tmp_path, local_server, target_site
):
    mw = await opened(local_server, tmp_path)
    try:
        request = Request(target_site.url("/page/7"))
        response = await mw.process_request(request)
    finally:
        await close(mw)
    assert isinstance(response, ScrappeyMixin)
    assert response.flags == ["scrappey"]
    assert response.status == 200
    assert response.css("#n::text").get() == "7"
    assert response.request is request
    assert request.meta["scrappey_session"].startswith("scrapy-scrappey-")
    assert stat(mw, "scrappey/requests") == 1
    assert stat(mw, "scrappey/responses/status/200") == 1
    assert target_site.hits == ["/page/7"]
    (command,) = request_commands(local_server)
    assert command["session"] == request.meta["scrappey_session"]


@deferred_f_from_coro_f
async def test_api_error_is_counted_and_retried_with_its_code_as_reason(
    tmp_path, make_local_server, target_site
):
    faults = Faults(error_rate=1.0, error_codes=(TRANSIENT,))
    server = await make_local_server(faults=faults)
    mw = await opened(server, tmp_path, RETRY_TIMES=1)
    try:
        request = Request(target_site.url("/page/1"))
        retry = await mw.process_request(request)
        with pytest.raises(ScrappeyAPIError) as info:
            await mw.process_request(retry)
    finally:
        await close(mw)
    assert isinstance(retry, Request)
    assert retry.url == request.url
    assert retry.meta["retry_times"] == 1
    assert retry.dont_filter
    assert info.value.code == TRANSIENT  # the retry budget ran out
    assert stat(mw, f"scrappey/errors/{TRANSIENT}") == 2
    assert stat(mw, f"retry/reason_count/scrappey/{TRANSIENT}") == 1
    assert stat(mw, "retry/count") == 1
    assert stat(mw, "retry/max_reached") == 1
    assert stat(mw, "scrappey/requests") == 2


@deferred_f_from_coro_f
async def test_dont_retry_raises_the_api_error_at_once(
    tmp_path, make_local_server, target_site
):
    faults = Faults(error_rate=1.0, error_codes=(TRANSIENT,))
    server = await make_local_server(faults=faults)
    mw = await opened(server, tmp_path, RETRY_TIMES=5)
    try:
        request = Request(target_site.url("/page/1"), meta={"dont_retry": True})
        with pytest.raises(ScrappeyAPIError) as info:
            await mw.process_request(request)
    finally:
        await close(mw)
    assert info.value.code == TRANSIENT
    assert stat(mw, f"scrappey/errors/{TRANSIENT}") == 1
    assert stat(mw, "retry/count") is None
    assert len(request_commands(server)) == 1


@deferred_f_from_coro_f
async def test_rejected_key_closes_the_spider_and_sends_nothing_more(
    tmp_path, make_local_server, target_site, caplog, api_calls
):
    server = await make_local_server(api_key="the-right-key")
    mw = await opened(server, tmp_path, SCRAPPEY_SESSION_SCOPE="none")
    # An engine with an open spider, to see the close asked of it.
    downloader = mw.crawler.engine.downloader
    mw.crawler.engine = mock.Mock(
        spec=["spider", "close_spider_async", "downloader"], downloader=downloader
    )
    mw.crawler.engine.close_spider_async = mock.AsyncMock()
    try:
        for n in range(3):
            with pytest.raises(IgnoreRequest):
                await mw.process_request(Request(target_site.url(f"/page/{n}")))
    finally:
        await close(mw)
    mw.crawler.engine.close_spider_async.assert_called_once_with(
        reason="scrappey_bad_api_key"
    )
    # The first request found the key rejected; the other two were not sent.
    assert api_calls.count("start", "request.get") == 1
    assert stat(mw, "scrappey/requests") == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "scrappey_bad_api_key" in errors[0].getMessage()
    assert KEY not in caplog.text
    assert target_site.hits == []


@deferred_f_from_coro_f
async def test_unreachable_api_is_a_counted_oserror_for_retrymiddleware(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server()
    mw = await opened(server, tmp_path, SCRAPPEY_SESSION_SCOPE="none")
    try:
        await mw.process_request(Request(target_site.url("/page/1")))
        await server.stop()  # an outage, after the API answered
        with pytest.raises(ScrappeyTransportError) as info:
            await mw.process_request(Request(target_site.url("/page/2")))
    finally:
        await close(mw)
    assert isinstance(info.value, OSError)
    assert KEY not in str(info.value)
    assert stat(mw, "scrappey/errors/transport") == 1
    assert stat(mw, "scrappey/requests") == 2


@deferred_f_from_coro_f
async def test_an_api_never_reached_closes_the_spider_instead(tmp_path, caplog):
    nothing_there = SimpleNamespace(url="http://127.0.0.1:9/api/v1")
    mw = await opened(nothing_there, tmp_path, SCRAPPEY_SESSION_SCOPE="none")
    try:
        with pytest.raises(IgnoreRequest, match="check SCRAPPEY_API_URL"):
            await mw.process_request(Request("http://127.0.0.1:9/page"))
    finally:
        await close(mw)
    assert stat(mw, "scrappey/errors/transport") == 1
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "(scrappey_api_unreachable)" in error.getMessage()
    assert KEY not in caplog.text


@deferred_f_from_coro_f
async def test_raw_request_with_the_key_in_its_url_is_redacted_and_warned_once(
    tmp_path, local_server, caplog
):
    mw = await opened(local_server, tmp_path)
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="scrapy_scrappey"):
            replaced = [
                await mw.process_request(
                    Request(f"{local_server.url}?key={KEY}", method="POST", body=b"{}")
                )
                for _ in range(3)
            ]
    finally:
        await close(mw)
    for request in replaced:
        assert isinstance(request, Request)
        assert KEY not in request.url
        assert KEY[4:] not in request.url
        assert request.url.startswith(local_server.url)
        assert request.dont_filter
    warnings = [r for r in caplog.records if r.name.startswith("scrapy_scrappey")]
    assert len(warnings) == 1
    assert "carries the API key" in warnings[0].getMessage()
    assert KEY not in caplog.text
    assert request_commands(local_server) == []  # nothing was sent yet


@deferred_f_from_coro_f
async def test_spider_opened_creates_the_spider_session_and_closed_destroys_it(
    tmp_path, local_server, caplog
):
    mw = build(settings_for(local_server, tmp_path))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await mw.spider_opened(mw.crawler.spider)
        after_open = local_server.stats()["sessions"]
        await mw.spider_closed(mw.crawler.spider, "finished")
    after_close = local_server.stats()["sessions"]
    assert (after_open["created"], after_open["open"]) == (1, 1)
    assert (after_close["destroyed"], after_close["open"]) == (1, 0)
    assert stat(mw, "scrappey/sessions/created") == 1
    assert stat(mw, "scrappey/sessions/destroyed") == 1
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages[0].startswith("Scrappey: routing all requests through")
    assert f"with the key {KEY[:4] + '…'!r}" in messages[0]
    assert messages[-1].startswith("Scrappey: 0 API request(s); sessions created 1")
    assert KEY not in caplog.text


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


@deferred_f_from_coro_f
async def test_a_ban_status_retires_the_session_and_retries_on_a_new_one(
    tmp_path, local_server, target_site
):
    mw = await opened(
        local_server, tmp_path, RETRY_TIMES=1, SCRAPPEY_SESSION_BAN_STATUSES=[403]
    )
    try:
        request = Request(target_site.url("/status/403"))
        retry = await mw.process_request(request)
        assert isinstance(retry, Request)
        assert retry.meta["retry_times"] == 1
        with pytest.raises(SessionCheckFailed, match="session check rejected"):
            await mw.process_request(retry)
        page = await mw.process_request(Request(target_site.url("/page/1")))
    finally:
        await close(mw)
    assert page.status == 200
    assert stat(mw, "scrappey/sessions/check_failed") == 2
    assert stat(mw, "scrappey/sessions/retired/check") == 2
    assert stat(mw, "retry/reason_count/scrappey/session_check_failed") == 1
    assert "scrappey/responses/status/403" not in mw.crawler.stats.get_stats()
    sessions = [c["session"] for c in request_commands(local_server)]
    assert len(set(sessions)) == 3  # each try on a fresh session
    assert local_server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_answers_are_announced_as_downloads_of_the_target_slot(
    tmp_path, local_server, target_site
):
    mw = await opened(local_server, tmp_path)
    announced = []
    mw.crawler.signals.connect(
        lambda response, request, spider: announced.append(request),
        signal=signals.response_downloaded,
        weak=False,
    )
    page = Request(target_site.url("/page/1", host="localhost"))
    command = {"cmd": "request.get", "url": target_site.url("/page/2")}
    raw = JsonRequest(local_server.url, data=command)
    failing = Request("http://127.0.0.1:9/page", meta={"dont_retry": True})
    try:
        for request in (page, raw):
            response = await mw.process_request(request)
            assert response.meta["download_latency"] > 0
        with pytest.raises(ScrappeyAPIError):
            await mw.process_request(failing)  # no page, so nothing downloaded
    finally:
        await close(mw)
    assert announced == [page, raw]
    # Scrapy's keys for the page fetched (raw: the URL inside the command).
    assert page.meta["download_slot"] == "localhost"
    assert raw.meta["download_slot"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("meta", "culprit"),
    [
        ({"download_timeout": "soon"}, "'download_timeout' meta key"),
        ({"download_timeout": -1}, "'download_timeout' meta key"),
        ({"download_slot": ["a"]}, "'download_slot' meta key"),
    ],
)
@deferred_f_from_coro_f
async def test_bad_meta_is_a_config_error_naming_the_key(
    tmp_path, local_server, target_site, meta, culprit
):
    mw = await opened(local_server, tmp_path)
    try:
        request = Request(target_site.url("/page/1"), meta=meta)
        with pytest.raises(ScrappeyConfigError, match=culprit):
            await mw.process_request(request)
    finally:
        await close(mw)
    assert target_site.hits == []  # nothing sent with a value it cannot use


@deferred_f_from_coro_f
async def test_a_session_wait_timeout_is_retried_with_its_reason(
    tmp_path, make_local_server, target_site
):
    faults = Faults(latency={"request.get": 1.0})
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(3)]
    settings = settings_for(
        server, tmp_path, SCRAPPEY_SESSION_WAIT_TIMEOUT=0.3, RETRY_TIMES=30
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    # The waits that ran out were retried, until each got its turn.
    assert len(result.items) == 3
    assert result.stats["retry/reason_count/scrappey/session_wait_timeout"] >= 2
    assert result.spider.errors == []


@pytest.mark.parametrize(
    ("pools", "culprit"),
    [
        (["alice"], r"SCRAPPEY_SESSION_POOLS must be a dict"),
        (
            {"alice": {"colour": "red"}},
            r"\['alice'\]\['colour'\] is not a pool setting",
        ),
        ({"bob": {"size": -1}}, r"\['bob'\]\['size'\] must be at least 1"),
    ],
)
def test_bad_session_pools_stop_the_middleware_at_startup(pools, culprit):
    settings = {"SCRAPPEY_API_KEY": KEY, "SCRAPPEY_SESSION_POOLS": pools}
    with pytest.raises(ScrappeyConfigError, match=culprit):
        build(settings)


@deferred_f_from_coro_f
async def test_listed_named_pools_are_not_created_at_open_with_the_http_cache(
    tmp_path, local_server
):
    mw = await opened(
        local_server,
        tmp_path,
        HTTPCACHE_ENABLED=True,
        SCRAPPEY_SESSION_POOLS={"alice": {"size": 2}},
    )
    try:
        assert local_server.stats()["sessions"]["created"] == 0
    finally:
        await close(mw)
    mw = await opened(local_server, tmp_path, SCRAPPEY_SESSION_POOLS={"alice": {}})
    try:
        assert local_server.stats()["sessions"]["created"] == 2  # spider + alice
    finally:
        await close(mw)


def only_session(mw):
    [pool] = mw._sessions._pools.values()
    [session] = pool.sessions
    return session


@deferred_f_from_coro_f
async def test_a_request_refused_at_the_target_slot_gives_its_session_back(
    tmp_path, local_server, target_site
):
    # One session and a bounded wait: a lease kept by the failed request
    # would time the next one out.
    mw = await opened(local_server, tmp_path, SCRAPPEY_SESSION_WAIT_TIMEOUT=1)
    try:
        bad = Request(target_site.url("/page/1"), meta={"download_slot": ["a"]})
        with pytest.raises(ScrappeyConfigError, match="'download_slot' meta key"):
            await mw.process_request(bad)
        assert only_session(mw).in_flight == 0
        page = await mw.process_request(Request(target_site.url("/page/2")))
    finally:
        await close(mw)
    assert page.status == 200
    assert target_site.hits == ["/page/2"]


@deferred_f_from_coro_f
async def test_a_request_waiting_for_the_delay_with_its_session_releases_it_at_close(
    tmp_path, local_server, target_site
):
    mw = await opened(local_server, tmp_path, DOWNLOAD_DELAY=60, **NO_JITTER)
    try:
        first = await mw.process_request(Request(target_site.url("/page/1")))
        session = only_session(mw)
        second = asyncio.ensure_future(
            mw.process_request(Request(target_site.url("/page/2")))
        )
        for _ in range(500):  # until it is leased, then waits for the delay
            if session.in_flight:
                break
            await asyncio.sleep(0.01)
        assert session.in_flight == 1
        assert target_site.hits == ["/page/1"]
    finally:
        await close(mw)
    assert first.status == 200
    with pytest.raises(IgnoreRequest, match="spider is closing"):
        await second
    assert session.in_flight == 0
    assert len(request_commands(local_server)) == 1


@deferred_f_from_coro_f
async def test_a_page_from_the_http_cache_records_that_no_session_was_used():
    mw = build({"SCRAPPEY_API_KEY": KEY})
    url = "https://shop.test/page"
    try:
        answered = {}
        for name, flags, meta in [
            ("cached", ["cached"], {}),
            ("cached-named", ["cached"], {"scrappey_session": "account-1"}),
            ("downloaded", [], {}),  # a direct download: the meta is left alone
        ]:
            request = Request(url, meta=meta)
            response = HtmlResponse(url, body=b"<p>", flags=flags, request=request)
            assert await mw.process_response(request, response) is response
            answered[name] = dict(response.meta)
    finally:
        mw.crawler.engine.downloader.close()
    assert answered["cached"]["scrappey_session"] is None  # the one-liner's key
    assert answered["cached-named"]["scrappey_session"] == "account-1"
    assert "scrappey_session" not in answered["downloaded"]
