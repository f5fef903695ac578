"""What crawls cost, against the local server's own account of what it charged."""

from __future__ import annotations

import logging
from typing import Any

from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest
from scrapy.http import JsonRequest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.budget import BudgetExhausted
from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for

CHEAP = {"scrappey": {"requestType": "request"}}
EXHAUSTED = "scrappey_budget_exhausted"


def _pages(site: Any, count: int, meta: dict[str, Any] | None = None) -> list[Any]:
    return [(site.url(f"/page/{i}"), dict(meta or {})) for i in range(count)]


def _charged(server: Any) -> dict[str, Any]:
    charged: dict[str, Any] = server.stats()["charged"]
    return charged


def _summary(caplog: Any) -> str:
    (line,) = [m for m in caplog.messages if "API request(s)" in m]
    return line


@deferred_f_from_coro_f
async def test_the_plugin_total_equals_the_server_total_with_failures_and_bans(
    tmp_path, make_local_server, target_site, caplog
):
    server = await make_local_server(
        faults=Faults(error_rate=0.1, seed=3, ban_after_requests=8)
    )
    # Half the pages ask for the cheap engine; the local engines answer
    # "request" for both, and both sides price the solution.type they answer.
    urls = [
        (url, CHEAP if i % 2 else {})
        for i, (url, _) in enumerate(_pages(target_site, 30))
    ]
    settings = settings_for(
        server, tmp_path, RETRY_TIMES=6, SCRAPPEY_SESSION_POOL_SIZE=2
    )
    with caplog.at_level(logging.INFO, logger="scrapy_scrappey"):
        result = await crawl(PagesSpider, settings, urls=urls)
    stats, charged = result.stats, _charged(server)
    assert len(result.items) == 30
    assert server.stats()["faults"]["errors"] >= 3  # 10 % of the calls failed
    assert stats["scrappey/sessions/retired/banned"] >= 1
    assert stats["scrappey/cost/total"] == charged["total"] > 30 * 0.2
    assert stats["scrappey/cost/by_type/request"] == charged["by_type"]["request"]
    # The block pages were charged, rejected and retried: wasted.
    banned = server.stats()["bans"]["block_pages"]
    assert stats["scrappey/cost/wasted"] == round(banned * 0.2, 6) > 0
    assert stats["scrappey/balance/start"] == 1000.0
    assert stats["scrappey/balance/end"] == server.balance == 1000.0 - charged["total"]
    assert _summary(caplog).endswith(
        f"; cost {charged['total']:g} (wasted {banned * 0.2:g}), "
        f"balance 1000 → {server.balance:g}"
    )


@deferred_f_from_coro_f
async def test_max_cost_is_never_exceeded_at_high_concurrency(
    tmp_path, make_local_server, make_target_site, api_calls, caplog
):
    server = await make_local_server()
    site = await make_target_site(delay=0.05)
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_MAX_COST=5,
        CONCURRENT_REQUESTS=32,
        CONCURRENT_REQUESTS_PER_DOMAIN=32,
        SCRAPPEY_SESSION_POOL_SIZE=4,
        SCRAPPEY_SESSION_CONCURRENCY=8,
    )
    with caplog.at_level(logging.INFO, logger="scrapy_scrappey"):
        result = await crawl(PagesSpider, settings, urls=_pages(site, 60, CHEAP))
    stats, charged = result.stats, _charged(server)
    assert api_calls.max_in_flight("request.get") > 8  # calls overlapped
    assert charged["total"] == stats["scrappey/cost/total"] == 5.0
    assert len(result.items) == charged["calls"] == 25
    assert stats["finish_reason"] == EXHAUSTED
    assert server.stats()["sessions"]["open"] == 0
    # Nothing else was sent: every other request was dropped with the error.
    assert server.stats()["requests"]["by_command"]["request.get"] == 25
    assert stats["scrappey/requests"] == 25  # refused calls were never sent
    errors = result.spider.errors
    dropped = stats["scrappey/budget/refused"] + stats.get(
        f"scrappey/dropped/{EXHAUSTED}", 0
    )
    assert 0 < len(errors) == dropped <= 60 - 25
    assert all(isinstance(e, IgnoreRequest) for e in errors)
    assert isinstance(errors[0], BudgetExhausted)
    assert any(
        "Closing the spider (scrappey_budget_exhausted): SCRAPPEY_MAX_COST 5 reached"
        in m
        and "spent 5" in m
        for m in caplog.messages
    )


@deferred_f_from_coro_f
async def test_max_requests_caps_paid_calls_without_sessions(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server()
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_MAX_REQUESTS=7,
        SCRAPPEY_SESSION_SCOPE="none",
        CONCURRENT_REQUESTS=32,
    )
    result = await crawl(PagesSpider, settings, urls=_pages(target_site, 20))
    assert len(result.items) == 7
    assert server.stats()["requests"]["by_command"]["request.get"] == 7
    assert result.stats["finish_reason"] == EXHAUSTED
    assert result.stats["scrappey/cost/total"] == _charged(server)["total"] == 1.4


@deferred_f_from_coro_f
async def test_an_account_out_of_credit_closes_the_crawl(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(balance=1.0)
    settings = settings_for(server, tmp_path, CONCURRENT_REQUESTS=1)
    result = await crawl(PagesSpider, settings, urls=_pages(target_site, 10))
    assert len(result.items) == 5  # 5 x 0.2, then "Insufficient balance"
    assert result.stats["finish_reason"] == EXHAUSTED
    assert result.stats["scrappey/cost/total"] == _charged(server)["total"] == 1.0
    assert result.stats["scrappey/balance/end"] == server.balance == 0.0
    (error, *_) = result.spider.errors
    assert isinstance(error, BudgetExhausted)
    assert "out of credit (Scrappey API error: Insufficient balance: 0 left" in str(
        error
    )
    assert str(error).endswith("; refused by the API")
    assert error.sent
    # Every call the API received counts, the refused one included.
    by_command = server.stats()["requests"]["by_command"]
    assert result.stats["scrappey/requests"] == by_command["request.get"]
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_min_balance_above_the_balance_closes_before_any_paid_call(
    tmp_path, make_local_server, target_site, caplog
):
    server = await make_local_server(balance=3)
    settings = settings_for(server, tmp_path, SCRAPPEY_MIN_BALANCE=10)
    result = await crawl(PagesSpider, settings, urls=_pages(target_site, 5))
    assert result.items == []
    assert result.stats["finish_reason"] == "scrappey_low_balance"
    assert result.stats["scrappey/balance/start"] == 3.0
    commands = server.stats()["requests"]["by_command"]
    assert commands == {}  # not even a sessions.create
    assert any(
        "the Scrappey balance is 3, below SCRAPPEY_MIN_BALANCE 10" in m
        for m in caplog.messages
    )


@deferred_f_from_coro_f
async def test_min_balance_below_the_balance_lets_the_crawl_run(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(balance=30)
    settings = settings_for(server, tmp_path, SCRAPPEY_MIN_BALANCE=29.5)
    result = await crawl(PagesSpider, settings, urls=_pages(target_site, 3))
    assert len(result.items) == 3
    assert result.stats["finish_reason"] == "finished"
    assert (result.stats["scrappey/balance/start"], server.balance) == (30.0, 29.4)


@deferred_f_from_coro_f
async def test_sessions_are_priced_by_the_sessions_price(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server()
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_PRICES={"sessions": 0.5},
        SCRAPPEY_SESSION_POOL_SIZE=2,
    )
    result = await crawl(PagesSpider, settings, urls=_pages(target_site, 4))
    sessions = server.stats()["sessions"]
    assert (sessions["created"], sessions["destroyed"]) == (2, 2)
    # The local server does not charge sessions; the plugin prices them.
    assert result.stats["scrappey/cost/by_type/sessions"] == 4 * 0.5
    assert result.stats["scrappey/cost/total"] == _charged(server)["total"] + 2.0


class _RawSpider(PagesSpider):
    def __init__(self, api_url: str, targets: list[str], **kwargs: Any) -> None:
        super().__init__(urls=[], **kwargs)
        self.api_url, self.targets = api_url, targets

    async def start(self):  # type: ignore[no-untyped-def]
        for url in self.targets:
            data = {"cmd": "request.get", "url": url, "requestType": "request"}
            yield JsonRequest(self.api_url, data=data, callback=self.parse_api)

    def parse_api(self, response):  # type: ignore[no-untyped-def]
        yield {"url": response.json()["solution"]["currentUrl"]}


@deferred_f_from_coro_f
async def test_raw_mode_commands_are_costed_and_capped(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server()
    settings = settings_for(server, tmp_path, SCRAPPEY_MAX_COST=0.6)
    targets = [target_site.url(f"/page/{i}") for i in range(5)]
    result = await crawl(_RawSpider, settings, api_url=server.url, targets=targets)
    assert len(result.items) == 3
    assert result.stats["scrappey/cost/total"] == _charged(server)["total"] == 0.6
    assert result.stats["finish_reason"] == EXHAUSTED


@deferred_f_from_coro_f
async def test_a_balance_endpoint_that_fails_is_one_warning(
    tmp_path, scripted_api, target_site, caplog
):
    scripted_api.balance_reply = (200, b"<html>garbage</html>")
    settings = settings_for(scripted_api, tmp_path, SCRAPPEY_MIN_BALANCE=5)
    with caplog.at_level(logging.WARNING, logger="scrapy_scrappey"):
        result = await crawl(PagesSpider, settings, urls=_pages(target_site, 3))
    assert len(result.items) == 3
    assert scripted_api.balance_calls == 2  # start and end
    warnings = [m for m in caplog.messages if "Scrappey balance" in m]
    assert warnings == [
        (
            "Could not read the Scrappey balance (Unreadable Scrappey API reply: the "
            "balance endpoint answered JSON without a number in 'balance'); the crawl "
            "goes on without the scrappey/balance stats, and without the "
            "SCRAPPEY_MIN_BALANCE check"
        )
    ]
    assert result.stats["scrappey/balance/errors"] == 2
    assert "scrappey/balance/start" not in result.stats


@deferred_f_from_coro_f
async def test_a_missing_balance_endpoint_is_one_warning(
    tmp_path, scripted_api, target_site, caplog
):
    settings = settings_for(scripted_api, tmp_path)  # the fake API answers 404
    with caplog.at_level(logging.WARNING, logger="scrapy_scrappey"):
        result = await crawl(PagesSpider, settings, urls=_pages(target_site, 2))
    assert len(result.items) == 2
    warnings = [m for m in caplog.messages if "Scrappey balance" in m]
    assert len(warnings) == 1
    assert "the balance endpoint answered HTTP 404" in warnings[0]
    assert result.stats["finish_reason"] == "finished"


class _RetryInCallbackSpider(PagesSpider):
    """Retries each page once from its callback (``get_retry_request``), and
    builds one follow-up request with a copy of the response's meta."""

    def parse(self, response):  # type: ignore[no-untyped-def]
        if response.meta.get("retry_times", 0) == 0:
            yield get_retry_request(response.request, spider=self, reason="thin")
            return
        if response.url.endswith("/page/0"):
            yield response.follow("/page/x", meta=dict(response.meta))
        yield from super().parse(response)


@deferred_f_from_coro_f
async def test_charged_pages_retried_after_the_plugin_are_wasted(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server()
    # Two pages RetryMiddleware retries twice (503), two a callback retries once.
    urls = [target_site.url("/status/503"), target_site.url("/status/503?b")]
    settings = settings_for(server, tmp_path, RETRY_TIMES=2)
    result = await crawl(PagesSpider, settings, urls=urls)
    assert result.stats["retry/count"] == 4
    assert result.stats["scrappey/cost/total"] == _charged(server)["total"] == 1.2
    assert result.stats["scrappey/cost/wasted"] == 0.8  # the last try was kept
    result = await crawl(_RetryInCallbackSpider, settings, urls=_pages(target_site, 2))
    assert len(result.items) == 3  # two retried pages, and /page/x
    assert result.stats["scrappey/cost/total"] == 1.0
    # The follow-up carried a retried page's meta: it is no retry itself.
    assert result.stats["scrappey/cost/wasted"] == 0.4


@deferred_f_from_coro_f
async def test_error_statuses_the_api_answered_cost_nothing(
    tmp_path, scripted_api, target_site
):
    # 429s and 503s came back: nothing ran, nothing is charged or held as
    # uncertain, so four such answers do not use up a budget of two requests.
    pages = _pages(target_site, 2)
    scripted_api.answer(pages[0][0], 429, {"error": "Too many requests"})
    scripted_api.answer(pages[1][0], 503, b"<html>Service Unavailable</html>")
    settings = settings_for(
        scripted_api, tmp_path, SCRAPPEY_MAX_REQUESTS=2, RETRY_TIMES=1
    )
    result = await crawl(PagesSpider, settings, urls=pages)
    assert result.stats["retry/count"] == 2  # each page tried twice
    assert result.stats["retry/max_reached"] == 2
    assert "scrappey/cost/uncertain" not in result.stats
    assert "scrappey/budget/refused" not in result.stats
    assert result.stats["finish_reason"] == "finished"
