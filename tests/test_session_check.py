"""Session checks: a session that returns a bad page is retired, the page retried.

Real crawls against the local server and the target site; ``ban_after=N``
makes the site deny a browser (one per Scrappey session: the site tells them
apart by a cookie kept in the remote browser) after N pages.
"""

from __future__ import annotations

import logging

import pytest
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import ScrappeyConfigError, SessionCheckFailed
from tests.crawl import PagesSpider, crawl, settings_for
from tests.test_session_init import init_settings

PAGES = 20


def pages(site, n=PAGES):
    return [site.url(f"/page/{i}") for i in range(n)]


class DeniedCheckSpider(PagesSpider):
    def scrappey_session_check(self, response, request):
        return "Access denied" not in response.text


class AlwaysFails(PagesSpider):
    def scrappey_session_check(self, response, request):
        return False


class BanChecker:
    """A SCRAPPEY_SESSION_CHECKER: built with from_crawler, told by its setting."""

    def __init__(self, marker):
        self.marker = marker

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler.settings["DENIED_MARKER"])

    def check(self, response, request):
        return self.marker not in response.text


def assert_every_page_is_real(result, site, n=PAGES):
    got = sorted((i["request_url"], i["text"]) for i in result.items)
    assert [url for url, _ in got] == sorted(pages(site, n))
    for url, text in got:
        assert f"<p id='n'>{url.rsplit('/', 1)[1]}</p>" in text


def destroyed_before_the_last_page(server):
    """The sessions destroyed before the crawl's last request.* command."""
    commands = server.stats()["commands"]
    last = max(i for i, c in enumerate(commands) if c["cmd"].startswith("request."))
    return {c["session"] for c in commands[:last] if c["cmd"] == "sessions.destroy"}


@pytest.mark.parametrize(
    ("spider", "ban_status", "settings"),
    [
        (PagesSpider, 403, {"SCRAPPEY_SESSION_BAN_STATUSES": [403, 429]}),
        (DeniedCheckSpider, 200, {}),
        (
            PagesSpider,
            200,
            {
                "SCRAPPEY_SESSION_CHECKER": "tests.test_session_check.BanChecker",
                "DENIED_MARKER": "Access denied",
            },
        ),
    ],
    ids=["ban-status", "spider-check", "checker-class"],
)
@deferred_f_from_coro_f
async def test_banned_sessions_are_retired_and_every_page_arrives(
    tmp_path, make_local_server, make_target_site, spider, ban_status, settings
):
    # Acceptance 2: ban after 5 pages per session.
    server = await make_local_server()
    site = await make_target_site(ban_after=5, ban_status=ban_status)
    result = await crawl(
        spider,
        settings_for(server, tmp_path, COOKIES_ENABLED=False, **settings),
        urls=pages(site),
    )
    assert_every_page_is_real(result, site)
    stats, served = result.stats, server.stats()
    banned = len(site.banned)
    assert banned == 3  # pages 6, 11 and 16 were denied, then retried
    assert stats["scrappey/sessions/check_failed"] == banned
    assert stats["scrappey/sessions/retired/check"] == banned
    assert stats["retry/reason_count/scrappey/session_check_failed"] == banned
    assert stats["scrappey/sessions/created"] == served["sessions"]["created"]
    gets = served["requests"]["by_command"]["request.get"]
    assert stats["scrappey/requests"] == gets == PAGES + banned
    assert served["sessions"]["created"] == banned + 1
    assert served["sessions"]["destroyed"] == banned + 1
    assert served["sessions"]["open"] == 0
    used = list(served["requests_per_session"])
    assert set(used[:banned]) <= destroyed_before_the_last_page(server)
    assert "scrappey/sessions/check_error" not in stats


@deferred_f_from_coro_f
async def test_a_page_that_always_fails_goes_to_the_errback_never_the_callback(
    tmp_path, caplog, local_server, target_site
):
    class Spider(PagesSpider):
        def scrappey_session_check(self, response, request):
            return "/page/bad" not in response.url

    urls = [target_site.url("/page/bad"), *pages(target_site, 3)]
    settings = settings_for(local_server, tmp_path, RETRY_TIMES=2)
    with caplog.at_level(logging.INFO, logger="scrapy_scrappey.middleware"):
        result = await crawl(Spider, settings, urls=urls)
    assert sorted(i["request_url"] for i in result.items) == pages(target_site, 3)
    (error,) = result.spider.errors
    assert isinstance(error, SessionCheckFailed)
    assert result.stats["scrappey/sessions/check_failed"] == 3  # 1 + 2 retries
    assert result.stats["scrappey/sessions/retired/check"] == 3
    assert local_server.stats()["sessions"]["open"] == 0
    (line,) = [
        r.getMessage() for r in caplog.records if "API request(s)" in r.getMessage()
    ]
    assert "sessions created 4, destroyed 4, replaced 0, retired 3, leaked 0" in line
    # 6 pages at 0.2, the 3 rejected ones wasted.
    assert (
        "inits ok 0, failed 0; checks failed 3; cost 1.2 (wasted 0.6), balance 1000"
        in line
    )
    assert line.endswith(" → 998.8")


@deferred_f_from_coro_f
async def test_a_check_that_always_fails_trips_the_circuit_breaker(
    tmp_path, local_server, target_site
):
    # Acceptance 4.
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES=5
    )
    result = await crawl(AlwaysFails, settings, urls=pages(target_site))
    served = local_server.stats()
    assert result.stats["finish_reason"] == "scrappey_session_checks_failing"
    assert result.items == []
    assert result.stats["scrappey/sessions/check_failed"] == 5
    assert served["sessions"]["created"] <= 5 + 1
    assert served["sessions"]["open"] == 0
    # Pages never reach the spider: requests end rejected by the check or
    # dropped by the close the breaker started.
    assert result.spider.errors
    for error in result.spider.errors:
        assert isinstance(error, SessionCheckFailed) or (
            isinstance(error, IgnoreRequest) and "the spider is closing" in str(error)
        ), repr(error)


@deferred_f_from_coro_f
async def test_close_spider_from_a_check_closes_with_its_reason(
    tmp_path, local_server, target_site
):
    class Spider(PagesSpider):
        def scrappey_session_check(self, response, request):
            raise CloseSpider("site_changed_its_layout")

    result = await crawl(
        Spider, settings_for(local_server, tmp_path), urls=pages(target_site, 5)
    )
    assert result.stats["finish_reason"] == "site_changed_its_layout"
    assert result.items == []
    assert local_server.stats()["sessions"]["open"] == 0


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda self, response, request: "yes", "returned 'yes', not True or False"),
        (lambda self, response, request: 1 / 0, "raised an exception"),
    ],
    ids=["non-bool", "raises"],
)
@deferred_f_from_coro_f
async def test_a_broken_check_is_one_clear_log_line_and_closes_the_crawl(
    tmp_path, caplog, local_server, target_site, check, message
):
    # Acceptance 6 (a check returning a non-bool): nothing hangs, 0 open.
    spider = type("Spider", (PagesSpider,), {"scrappey_session_check": check})
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES=4
    )
    result = await crawl(spider, settings, urls=pages(target_site, 10))
    assert result.stats["finish_reason"] == "scrappey_session_checks_failing"
    assert result.stats["scrappey/sessions/check_error"] == 4
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and "(spider method)" in r.getMessage()
    ]
    assert len(lines) == 1
    assert message in lines[0]
    assert local_server.stats()["sessions"]["open"] == 0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.no_such_module.Checker", "could not be imported"),
        ("tests.test_session_check.PAGES", "must name a class"),
    ],
)
@deferred_f_from_coro_f
async def test_a_bad_checker_setting_stops_the_crawl_at_startup(
    tmp_path, local_server, target_site, path, message
):
    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_CHECKER=path)
    crawler = get_crawler(PagesSpider, settings)
    with pytest.raises(
        ScrappeyConfigError, match=f"SCRAPPEY_SESSION_CHECKER.*{message}"
    ):
        await crawler.crawl_async(urls=pages(target_site, 2))
    assert local_server.stats()["sessions"]["created"] == 0
    assert not target_site.hits


@deferred_f_from_coro_f
async def test_init_pages_go_through_the_check(tmp_path, local_server, target_site):
    class Spider(PagesSpider):
        def scrappey_session_check(self, response, request):
            return "/login" not in response.url

    settings = init_settings(
        local_server,
        tmp_path,
        target_site.url("/login"),
        SCRAPPEY_SESSION_MAX_BAD_INITS=2,
    )
    result = await crawl(Spider, settings, urls=pages(target_site, 2))
    assert result.stats["finish_reason"] == "scrappey_bad_session_inits"
    assert result.stats["scrappey/sessions/check_failed"] == 2
    assert target_site.hits == ["/login", "/login"]
    assert local_server.stats()["sessions"]["open"] == 0
