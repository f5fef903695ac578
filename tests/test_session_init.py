"""Session init: every new session is made ready before it serves a request.

Real crawls against the local server and the target site, whose ``/members/N``
pages redirect to the login form without the ``auth`` cookie of ``/login``.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import pytest
from scrapy import FormRequest, Request
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import ScrappeyConfigError
from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for
from tests.fake_api import OutcomeSpider, success


def login_step(site, user="alice"):
    return {
        "cmd": "request.post",
        "url": site.url("/login"),
        "postData": f"user={user}",
    }


def init_settings(server, tmp_path, url, **settings):
    """Crawl settings whose one init step fetches *url*."""
    return settings_for(
        server, tmp_path, SCRAPPEY_SESSION_INIT=[{"url": url}], **settings
    )


def commands_by_session(server):
    """The ``request.*`` commands of each session, in order."""
    sessions = defaultdict(list)
    for command in server.stats()["commands"]:
        if command["cmd"].startswith("request."):
            sessions[command["session"]].append((command["cmd"], command["url"]))
    return sessions


def member_pages(site, n=20):
    return [site.url(f"/members/{i}") for i in range(n)]


def assert_only_member_pages(result, user, n=20):
    texts = [i["text"] for i in result.items]
    assert len(texts) == n
    assert all(f"<p id='member'>{user}</p>" in t for t in texts), texts
    assert not any("<form" in t for t in texts)


@deferred_f_from_coro_f
async def test_every_replacement_session_logs_in_before_its_first_page(
    tmp_path, make_local_server, target_site
):
    # Acceptance 1: sessions expire every 3 requests, cookies stay in the browser.
    server = await make_local_server(faults=Faults(expire_after_requests=3))
    settings = settings_for(
        server,
        tmp_path,
        COOKIES_ENABLED=False,
        RETRY_TIMES=5,
        SCRAPPEY_SESSION_INIT=[login_step(target_site)],
    )
    result = await crawl(PagesSpider, settings, urls=member_pages(target_site))
    assert_only_member_pages(result, "alice")
    sessions = commands_by_session(server)
    assert len(sessions) >= 7  # 20 pages, 2 per session after its login
    for commands in sessions.values():
        assert commands[0] == ("request.post", target_site.url("/login"))
        assert all(c[0] == "request.get" for c in commands[1:])
    stats = result.stats
    assert stats["scrappey/sessions/init/ok"] == len(sessions)
    assert stats["scrappey/sessions/init/requests"] == len(sessions)
    assert stats["scrappey/sessions/created"] == server.stats()["sessions"]["created"]
    assert server.stats()["sessions"]["open"] == 0
    # The login never reached the spider, the scheduler or the dupefilter.
    assert stats["scheduler/enqueued"] == 20 + stats["retry/count"]


class FormLoginSpider(PagesSpider):
    """Logs in by reading the form first: the method form of the init."""

    async def scrappey_session_init(self, session_id, pool, download):
        self.inits.append((session_id, pool))
        form = await download(Request(self.login_url))
        field = form.css("input:not([type=hidden])::attr(name)").get()  # from the page
        done = await download(FormRequest(form.url, formdata={field: "bob"}))
        return done.css("#who::text").get() == "bob"


@deferred_f_from_coro_f
async def test_spider_init_method_reads_the_form_on_each_session(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(expire_after_requests=4))
    settings = settings_for(server, tmp_path, COOKIES_ENABLED=False, RETRY_TIMES=5)
    result = await crawl(
        FormLoginSpider,
        settings,
        urls=member_pages(target_site, 6),
        login_url=target_site.url("/login"),
        inits=[],
    )
    assert_only_member_pages(result, "bob", 6)
    sessions = commands_by_session(server)
    assert {sid for sid, _ in result.spider.inits} == set(sessions)
    assert {pool for _, pool in result.spider.inits} == {"spider"}
    for commands in sessions.values():
        assert commands[:2] == [
            ("request.get", target_site.url("/login")),
            ("request.post", target_site.url("/login")),
        ]
    assert result.stats["scrappey/sessions/init/ok"] == len(sessions) >= 2


@deferred_f_from_coro_f
async def test_a_form_request_step_from_the_spider_attribute(
    tmp_path, local_server, target_site
):
    class Spider(PagesSpider):
        scrappey_session_init = [
            FormRequest(target_site.url("/login"), formdata={"user": "carol"})
        ]

    settings = settings_for(
        local_server,
        tmp_path,
        COOKIES_ENABLED=False,
        SCRAPPEY_SESSION_POOL_SIZE=2,
        SCRAPPEY_SESSION_INIT=[login_step(target_site, "overridden")],
    )
    result = await crawl(Spider, settings, urls=member_pages(target_site, 4))
    assert_only_member_pages(result, "carol", 4)
    sessions = commands_by_session(local_server)
    assert len(sessions) == 2  # the eager pool, both inited at spider_opened
    for commands in sessions.values():
        assert commands[0] == ("request.post", target_site.url("/login"))


@deferred_f_from_coro_f
async def test_init_that_always_fails_closes_the_spider_with_bounded_creates(
    tmp_path, caplog, local_server, target_site
):
    # Acceptance 3.
    settings = init_settings(
        local_server,
        tmp_path,
        target_site.url("/status/500"),
        SCRAPPEY_SESSION_POOL_SIZE=2,
    )
    result = await crawl(PagesSpider, settings, urls=member_pages(target_site, 5))
    server = local_server.stats()
    assert result.stats["finish_reason"] == "scrappey_bad_session_inits"
    assert result.items == []
    assert 8 <= server["sessions"]["created"] <= 8 + 2
    assert server["sessions"]["open"] == 0
    assert result.stats["scrappey/sessions/init/failed"] >= 8
    assert result.stats["scrappey/sessions/retired/init"] >= 8
    assert "scrappey/sessions/init/ok" not in result.stats
    hits = set(target_site.hits)
    assert hits == {"/status/500"}  # no crawl request on a session not inited
    assert any(
        "SCRAPPEY_SESSION_MAX_BAD_INITS" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
    )


@deferred_f_from_coro_f
async def test_a_failed_init_is_replaced_and_the_crawl_goes_on(
    tmp_path, local_server, target_site
):
    class FlakyInit(PagesSpider):
        attempts = 0

        async def scrappey_session_init(self, session_id, pool, download):
            FlakyInit.attempts += 1
            if FlakyInit.attempts == 1:
                raise RuntimeError("first login failed")
            return (await download(Request(self.login_url))).status == 200

    settings = settings_for(local_server, tmp_path)
    result = await crawl(
        FlakyInit,
        settings,
        urls=[target_site.url("/page/1")],
        login_url=target_site.url("/login"),
    )
    server = local_server.stats()
    assert [i["status"] for i in result.items] == [200]
    assert result.stats["scrappey/sessions/init/failed"] == 1
    assert result.stats["scrappey/sessions/init/ok"] == 1
    assert result.stats["scrappey/sessions/retired/init"] == 1
    assert server["sessions"]["created"] == server["sessions"]["destroyed"] == 2


@deferred_f_from_coro_f
async def test_init_method_returning_a_non_bool_is_one_clear_log_line(
    tmp_path, caplog, local_server, target_site
):
    class Spider(PagesSpider):
        async def scrappey_session_init(self, session_id, pool, download):
            return "yes"

    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_MAX_BAD_INITS=3)
    result = await crawl(Spider, settings, urls=[target_site.url("/page/1")])
    assert result.stats["finish_reason"] == "scrappey_bad_session_inits"
    named = [
        r
        for r in caplog.records
        if "scrappey_session_init spider method returned 'yes', not True or False"
        in r.getMessage()
    ]
    assert len(named) == 1
    assert local_server.stats()["sessions"]["open"] == 0
    assert not target_site.hits


@deferred_f_from_coro_f
async def test_eager_pools_init_at_open_concurrently_within_api_concurrency(
    tmp_path, api_calls, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(latency={"request.post": 0.1}))

    class Domains(PagesSpider):
        allowed_domains = ["127.0.0.1", "d1.test", "d2.test", "d3.test"]

    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="domain",
        SCRAPPEY_API_CONCURRENCY=2,
        SCRAPPEY_SESSION_INIT=[login_step(target_site)],
    )
    result = await crawl(Domains, settings, urls=[target_site.url("/page/1")])
    assert len(result.items) == 1
    assert api_calls.count("end", "request.post") == 4  # one init per pool
    assert api_calls.max_in_flight("request.post") == 2
    events = api_calls.events
    last_init = max(i for i, e in enumerate(events) if e == ("end", "request.post"))
    assert events.index(("start", "request.get")) > last_init


@deferred_f_from_coro_f
async def test_a_sync_init_method_stops_the_crawl_at_startup(tmp_path, local_server):
    class Spider(PagesSpider):
        def scrappey_session_init(self, session_id, pool, download):
            return True

    crawler = get_crawler(Spider, settings_for(local_server, tmp_path))
    with pytest.raises(
        ScrappeyConfigError, match="scrappey_session_init spider method"
    ):
        await crawler.crawl_async(urls=[])
    assert local_server.stats()["sessions"]["created"] == 0


@deferred_f_from_coro_f
async def test_init_pages_are_read_like_crawl_pages(tmp_path, scripted_api):
    # The same reading of a reply: a currentUrl that is not http(s) is
    # refused and counted for an init page too.
    login, page = "http://127.0.0.1:9/login", "http://127.0.0.1:9/page"
    scripted_api.answer(login, 200, success("file:///etc/passwd"))
    settings = settings_for(
        scripted_api, tmp_path, SCRAPPEY_SESSION_INIT=[{"url": login}]
    )
    result = await crawl(OutcomeSpider, settings, urls=[page])
    assert result.items == [{"url": page, "status": 200}]
    assert result.stats["scrappey/sessions/init/ok"] == 1
    assert result.stats["scrappey/responses/bad_current_url"] == 1


@deferred_f_from_coro_f
async def test_a_pools_own_init_wins_over_the_spider_method_and_can_turn_init_off(
    tmp_path, local_server, target_site
):
    class Mixed(PagesSpider):
        async def scrappey_session_init(self, session_id, pool, download):
            self.inits.append(pool)
            page = await download(
                FormRequest(target_site.url("/login"), formdata={"user": "carol"})
            )
            return page.status == 200

    Mixed.inits = []
    settings = settings_for(
        local_server,
        tmp_path,
        COOKIES_ENABLED=False,
        SCRAPPEY_SESSION_POOLS={
            "bob": {"init": [login_step(target_site, "bob")]},
            "guest": {"init": []},
        },
    )
    urls = [
        (target_site.url("/members/b"), {"scrappey_session": "bob"}),
        (target_site.url("/members/g"), {"scrappey_session": "guest"}),
        target_site.url("/members/s"),
    ]
    result = await crawl(Mixed, settings, urls=urls)
    texts = {i["request_url"].rsplit("/", 1)[1]: i["text"] for i in result.items}
    assert "<p id='member'>bob</p>" in texts["b"]
    assert "<p id='member'>carol</p>" in texts["s"]
    assert "<form" in texts["g"]  # not logged in: sent to the login form
    assert Mixed.inits == ["spider"]  # the method ran for the spider pool only
    assert result.stats["scrappey/sessions/init/ok"] == 2  # spider and bob
    guest = next(
        commands
        for commands in commands_by_session(local_server).values()
        if ("request.get", target_site.url("/members/g")) in commands
    )
    assert guest == [("request.get", target_site.url("/members/g"))]
