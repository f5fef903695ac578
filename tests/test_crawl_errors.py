"""Errors: bad key, transient faults, configuration errors, validation."""

import logging

import pytest
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import ScrappeyAPIError, ScrappeyConfigError
from scrapy_scrappey._creation import UNREACHED_ATTEMPTS
from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for


@deferred_f_from_coro_f
async def test_wrong_key_closes_quickly_with_named_reason(
    tmp_path, caplog, make_local_server, target_site
):
    server = await make_local_server(api_key="the-right-key")
    urls = [target_site.url(f"/page/{i}") for i in range(20)]
    result = await crawl(PagesSpider, settings_for(server, tmp_path), urls=urls)
    stats = server.stats()
    assert result.stats["finish_reason"] == "scrappey_bad_api_key"
    assert stats["requests"]["total"] < 10
    assert result.items == []
    assert not target_site.hits  # nothing was ever fetched directly
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and "401" in r.getMessage()
    ]
    assert len(errors) == 1


@deferred_f_from_coro_f
async def test_wrong_key_on_a_request_closes_the_spider(
    tmp_path, local_server, target_site
):
    """A key revoked mid-crawl: sessions.create worked, request.* gets 401."""
    urls = [target_site.url(f"/page/{i}") for i in range(10)]
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_SESSION_SCOPE="none", CONCURRENT_REQUESTS=1
    )
    local_server.api_key = "rotated"  # a key revoked after the crawl started
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = local_server.stats()
    assert result.stats["finish_reason"] == "scrappey_bad_api_key"
    assert stats["requests"]["total"] < 10
    assert all(isinstance(e, IgnoreRequest) for e in result.spider.errors)


@deferred_f_from_coro_f
async def test_transient_faults_are_retried_until_every_page_arrives(
    tmp_path, make_local_server, target_site
):
    faults = Faults(error_rate=0.15, http_502_rate=0.1, truncated_rate=0.1, seed=7)
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(30)]
    result = await crawl(
        PagesSpider, settings_for(server, tmp_path, RETRY_TIMES=15), urls=urls
    )
    stats = server.stats()
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    assert len(result.items) == 30  # no page processed twice
    injected = stats["faults"]
    assert injected["errors"]
    assert injected["http_502"]
    assert injected["truncated"]
    assert result.stats["retry/count"] == sum(
        injected[k] for k in ("errors", "http_502", "truncated")
    )
    assert (
        result.stats["scrappey/errors/transport"]
        == injected["http_502"] + injected["truncated"]
    )
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_slow_api_times_out_and_is_retried(
    tmp_path, make_local_server, target_site
):
    faults = Faults(slow_rate=0.5, slow_seconds=3, seed=3)
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(6)]
    settings = settings_for(
        server,
        tmp_path,
        DOWNLOAD_TIMEOUT=1,
        RETRY_TIMES=10,
        SCRAPPEY_SESSION_POOL_SIZE=3,
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 6
    assert result.stats["scrappey/errors/transport"] >= 1
    assert stats["sessions"]["open"] == 0


@pytest.mark.parametrize("code", ["CODE-0015", "CODE-0004", "CODE-0030", "CODE-0036"])
@deferred_f_from_coro_f
async def test_config_error_codes_fail_the_request_without_retry(
    tmp_path, code, make_local_server, target_site
):
    faults = Faults(error_rate=1.0, error_codes=(code,))
    server = await make_local_server(faults=faults)
    result = await crawl(
        PagesSpider, settings_for(server, tmp_path), urls=[target_site.url("/page/1")]
    )
    (error,) = result.spider.errors
    assert isinstance(error, ScrappeyAPIError)
    assert error.code == code
    assert code in str(error)
    assert result.stats.get("retry/count", 0) == 0
    assert result.stats[f"scrappey/errors/{code}"] == 1


@deferred_f_from_coro_f
async def test_every_create_failing_closes_with_named_reason_after_bounded_budget(
    tmp_path,
    make_local_server,
    target_site,
):
    server = await make_local_server(faults=Faults(fail_creates=1000))
    # No CODE-0029 wait: each refusal is then an attempt.
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_CREATE_ATTEMPTS=4,
        SCRAPPEY_SESSION_OVER_LIMIT_WAIT=0,
    )
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    stats = server.stats()
    assert result.stats["finish_reason"] == "scrappey_sessions_unavailable"
    assert stats["requests"]["by_command"]["sessions.create"] == 4
    assert not target_site.hits


@deferred_f_from_coro_f
async def test_missing_key_fails_the_crawl_without_fetching(tmp_path, target_site):
    crawler = get_crawler(
        PagesSpider,
        {"DOWNLOADER_MIDDLEWARES": {"scrapy_scrappey.ScrappeyMiddleware": 950}},
    )
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_API_KEY"):
        await crawler.crawl_async(urls=[target_site.url("/page/1")])
    assert not target_site.hits


@deferred_f_from_coro_f
async def test_invalid_setting_fails_the_crawl(tmp_path, local_server):
    crawler = get_crawler(
        PagesSpider, settings_for(local_server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=0)
    )
    with pytest.raises(
        ScrappeyConfigError, match="SCRAPPEY_SESSION_POOL_SIZE must be at least 1"
    ):
        await crawler.crawl_async(urls=[])


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"scrappey": "yes"}, "'scrappey' meta key"),
        ({"scrappey": {"url": "x"}}, "sets 'url'"),
        ({"scrappey_session": 5}, "'scrappey_session' meta key"),
    ],
)
@deferred_f_from_coro_f
async def test_invalid_meta_fails_that_request_naming_the_key(
    tmp_path, meta, message, local_server, target_site
):
    urls = [(target_site.url("/page/1"), meta), target_site.url("/page/2")]
    result = await crawl(PagesSpider, settings_for(local_server, tmp_path), urls=urls)
    assert [i["url"] for i in result.items] == [target_site.url("/page/2")]
    (error,) = result.spider.errors
    assert isinstance(error, ScrappeyConfigError)
    assert message in str(error)


@pytest.mark.parametrize("wrong", ["port", "path", "root"])
@deferred_f_from_coro_f
async def test_a_wrong_api_url_ends_at_once_with_one_error_naming_the_setting(
    tmp_path, caplog, wrong, free_port, local_server, target_site
):
    """A port typo or a URL without /api/v1: nothing to destroy, no ledger left."""
    url, reason = {
        "port": (f"http://127.0.0.1:{free_port}/api/v1", "Connection refused"),
        "path": (
            local_server.url.removesuffix("/v1"),
            "HTTP 404 (Not Found: POST /api)",
        ),
        # The local server's dashboard lives at GET /.
        "root": (
            local_server.url.removesuffix("/api/v1"),
            "HTTP 405 (Method Not Allowed",
        ),
    }[wrong]
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_API_URL=url,
        SCRAPPEY_SESSION_POOL_SIZE=3,
        SCRAPPEY_LEDGER_DIR=str(tmp_path),
    )
    urls = [target_site.url(f"/page/{i}") for i in range(10)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert result.stats["finish_reason"] == "scrappey_api_unreachable"
    (problem,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = problem.getMessage()
    assert f"cannot reach the Scrappey API at {url}: {reason}" in message
    assert message.endswith("; check SCRAPPEY_API_URL")
    # Each of the 3 creates was tried twice; none was recorded or destroyed.
    assert result.stats["scrappey/sessions/create_failed"] == 3 * UNREACHED_ATTEMPTS
    assert "scrappey/sessions/destroy_failed" not in result.stats
    assert "scrappey/sessions/leaked" not in result.stats
    # Not even an empty folder for the mistyped URL (cleanup would list it).
    assert list(tmp_path.rglob("*")) == []
    assert local_server.stats()["requests"]["total"] == 0
    assert result.items == []
    assert not target_site.hits


@deferred_f_from_coro_f
async def test_a_wrong_api_url_without_sessions_ends_with_one_error_too(
    tmp_path, caplog, free_port, local_server, target_site
):
    url = f"http://127.0.0.1:{free_port}/api/v1"
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_API_URL=url, SCRAPPEY_SESSION_SCOPE="none"
    )
    urls = [target_site.url(f"/page/{i}") for i in range(10)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert result.stats["finish_reason"] == "scrappey_api_unreachable"
    (problem,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problem.getMessage().endswith(
        f"cannot reach the Scrappey API at {url}: Connection refused; "
        "check SCRAPPEY_API_URL"
    )
    # Not one "Gave up retrying" per request: none is retried.
    assert "retry/count" not in result.stats
    assert result.spider.errors
    assert all(isinstance(e, IgnoreRequest) for e in result.spider.errors)
    assert not target_site.hits
