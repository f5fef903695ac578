"""Units of the pricing rule, the cost settings and the budget's bookings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scrapy.settings import Settings
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey.budget import EXHAUSTED, Budget, BudgetExhausted
from scrapy_scrappey.client import parse_balance, parse_reply
from scrapy_scrappey.cost import (
    DEFAULT_PRICES,
    Charge,
    CostConfig,
    charge_of,
    out_of_credit,
    sent_kind,
)
from scrapy_scrappey.exceptions import (
    ScrappeyAPIError,
    ScrappeyAuthError,
    ScrappeyConfigError,
)
from tests.crawl import PagesSpider, crawl, settings_for

FIXTURES = Path(__file__).parent / "fixtures" / "scrappey"
PRICES = CostConfig(prices={"browser": 1.0, "request": 0.2, "sessions": 0.5})
BROWSER = {"cmd": "request.get", "url": "https://e.com/"}
CHEAP = {**BROWSER, "requestType": "request"}


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _charge(body: bytes | dict[str, Any], payload: dict[str, Any]) -> tuple[str, float]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    charge = charge_of(parse_reply(200, raw), payload, PRICES)
    return charge.kind, charge.amount


# Every reply fixture, as a browser and as a request-type call: the success
# shapes are charged at the price of what was sent (none names its type).
@pytest.mark.parametrize(
    ("name", "browser", "cheap"),
    [
        ("response_success_mock_go_tests.json", 1.0, 0.2),  # no verified: charged
        ("response_success_mock_official_tests.json", 1.0, 0.2),
        ("response_success_readme_js.json", 1.0, 0.2),  # "error" beside success
        ("response_success_readme_python.json", 1.0, 0.2),
        ("inferred/error_response_body.json", 0.0, 0.0),  # failed: free
    ],
)
def test_charge_of_each_reply_fixture(name, browser, cheap):
    assert _charge(_fixture(name), BROWSER) == ("browser", browser)
    assert _charge(_fixture(name), CHEAP) == ("request", cheap)


@pytest.mark.parametrize(
    ("name", "cmd", "cost"),
    [
        ("inferred/sessions_create_response.json", "sessions.create", 0.5),
        ("inferred/sessions_destroy_response.json", "sessions.destroy", 0.5),
        ("inferred/sessions_list_response.json", "sessions.list", 0.0),
        ("inferred/sessions_active_response.json", "sessions.active", 0.0),
    ],
)
def test_session_commands_cost_the_sessions_price(name, cmd, cost):
    assert _charge(_fixture(name), {"cmd": cmd})[1] == cost
    failed = {"data": "error", "error": "CODE-0031 Request error"}
    assert _charge(failed, {"cmd": cmd})[1] == 0.0


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*_request*.json")))
def test_sent_kind_of_each_command_fixture(path):
    payload = json.loads(path.read_text())
    expected = {
        "request.get": "browser",
        "request.post": "browser",
        "sessions.create": "sessions",
        "sessions.destroy": "sessions",
        "sessions.list": "",
    }[payload["cmd"]]
    assert sent_kind(payload) == expected
    assert sent_kind({**payload, "requestType": "request"}) == (
        "request" if expected == "browser" else expected
    )


def test_solution_type_wins_over_the_type_sent_and_extras_are_added():
    official = json.loads(_fixture("response_success_mock_official_tests.json"))
    official["solution"].update(type="request", additionalCost=0.35)
    assert _charge(official, BROWSER) == ("request", 0.55)
    official["solution"].update(type="browser", additionalCost=0.1)
    assert _charge(official, CHEAP) == ("browser", 1.1)


@pytest.mark.parametrize("extra", [-1, "0.5", True, None, float("nan"), [1]])
def test_an_unusable_additional_cost_adds_nothing(extra):
    official = json.loads(_fixture("response_success_mock_official_tests.json"))
    official["solution"].update(type="browser", additionalCost=extra)
    assert _charge(official, CHEAP) == ("browser", 1.0)


@pytest.mark.parametrize("kind", ["premium", None, 3])
def test_an_unknown_solution_type_falls_back_to_the_type_sent(kind):
    official = json.loads(_fixture("response_success_mock_official_tests.json"))
    official["solution"]["type"] = kind
    assert _charge(official, CHEAP) == ("request", 0.2)


def test_an_unverified_success_is_free():
    official = json.loads(_fixture("response_success_mock_official_tests.json"))
    official["solution"]["verified"] = False
    assert _charge(official, BROWSER) == ("browser", 0.0)


def test_the_balance_fixture_and_bad_balance_answers():
    assert parse_balance(200, _fixture("inferred/balance_response.json")) == 1234.5
    with pytest.raises(ScrappeyAuthError):
        parse_balance(401, _fixture("error_http401_mock_go_tests.json"))
    for status, body in [
        (404, b'{"detail": "Not Found"}'),
        (200, b"<html>"),
        (200, b'{"balance": "12"}'),
        (200, b'{"balance": true}'),
        (200, b'{"balance": NaN}'),
        (200, b"[1]"),
    ]:
        with pytest.raises(ScrappeyAPIError, match="the balance endpoint answered"):
            parse_balance(status, body)


def test_out_of_credit_texts():
    assert out_of_credit("Insufficient balance: 0.1 left")
    assert out_of_credit("HTTP 402: you are Out of credits")
    assert not out_of_credit("HTTP 402: Payment Required")
    assert not out_of_credit("CODE-0031 Request error, please try again")


# -- settings -------------------------------------------------------------------


def test_defaults_and_partial_prices():
    assert CostConfig.from_settings(Settings()) == CostConfig()
    assert CostConfig().prices == DEFAULT_PRICES
    config = CostConfig.from_settings(
        Settings(
            {
                "SCRAPPEY_PRICES": '{"browser": 1.2}',
                "SCRAPPEY_MAX_COST": "5",
                "SCRAPPEY_MAX_REQUESTS": 10,
                "SCRAPPEY_MIN_BALANCE": 2.5,
                "SCRAPPEY_ITEM_FIELD": " scrappey ",
            }
        )
    )
    assert config == CostConfig(
        prices={"browser": 1.2, "request": 0.2, "sessions": 0.0},
        max_cost=5.0,
        max_requests=10,
        min_balance=2.5,
        item_field="scrappey",
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"SCRAPPEY_PRICES": {"browser": -1}}, "SCRAPPEY_PRICES['browser']"),
        ({"SCRAPPEY_PRICES": {"request": "cheap"}}, "SCRAPPEY_PRICES['request']"),
        ({"SCRAPPEY_PRICES": {"captcha": 2}}, "SCRAPPEY_PRICES has unknown key"),
        ({"SCRAPPEY_PRICES": [1, 2]}, "SCRAPPEY_PRICES must be a dict"),
        ({"SCRAPPEY_MAX_COST": -5}, "SCRAPPEY_MAX_COST"),
        ({"SCRAPPEY_MAX_COST": "lots"}, "SCRAPPEY_MAX_COST"),
        ({"SCRAPPEY_MAX_REQUESTS": -1}, "SCRAPPEY_MAX_REQUESTS"),
        ({"SCRAPPEY_MAX_REQUESTS": 2.5}, "SCRAPPEY_MAX_REQUESTS"),
        ({"SCRAPPEY_MIN_BALANCE": float("inf")}, "SCRAPPEY_MIN_BALANCE"),
        ({"SCRAPPEY_ITEM_FIELD": 5}, "SCRAPPEY_ITEM_FIELD"),
    ],
)
def test_bad_cost_settings_name_the_setting(settings, named):
    with pytest.raises(ScrappeyConfigError) as info:
        CostConfig.from_settings(Settings(settings))
    assert named in str(info.value)


# -- the budget's bookings ----------------------------------------------------------


class _Closer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, reason: str, message: str) -> None:
        self.calls.append((reason, message))


def _budget(**config: Any) -> tuple[Budget, MemoryStatsCollector, _Closer]:
    stats = MemoryStatsCollector(get_crawler())
    closer = _Closer()
    return (
        Budget(CostConfig(prices=PRICES.prices, **config), stats, closer),
        stats,
        closer,
    )


def _settle_success(budget: Budget, payload: dict[str, Any], **solution: Any) -> None:
    booking = budget.reserve(payload)
    reply = parse_reply(
        200, json.dumps({"data": "success", "solution": solution}).encode()
    )
    budget.settle(booking, charge_of(reply, payload, budget.config))


def test_bookings_in_flight_count_and_the_close_waits_for_them():
    budget, stats, closer = _budget(max_cost=1.0)
    held = [budget.reserve(CHEAP) for _ in range(5)]  # 5 x 0.2 in flight
    with pytest.raises(BudgetExhausted, match="SCRAPPEY_MAX_COST 1 reached"):
        budget.reserve(CHEAP)
    budget.settle(held.pop(), None)  # a failure frees its booking…
    with pytest.raises(BudgetExhausted):  # …but the budget is exhausted
        budget.reserve(CHEAP)
    # Free commands, and destroys whatever their price, still go out.
    free = [budget.reserve({"cmd": c}) for c in ("sessions.list", "sessions.destroy")]
    budget.lost(held.pop())  # no reply: booked as uncertain
    for booking in [*held, *free]:
        assert closer.calls == []  # not closed while a booking is open
        budget.settle(booking, Charge(booking.kind, booking.worst))
    assert closer.calls == [
        (
            EXHAUSTED,
            (
                "SCRAPPEY_MAX_COST 1 reached (the next call may cost 0.2); "
                "spent 1.1 (uncertain 0.2)"
            ),
        )
    ]
    assert stats.get_value("scrappey/budget/refused") == 2
    assert stats.get_value("scrappey/cost/uncertain") == 0.2
    assert stats.get_value("scrappey/cost/by_type/sessions") == 0.5


def test_the_cap_holds_exactly_and_sums_are_exact():
    budget, stats, _ = _budget(max_cost=5.0)
    for _ in range(25):
        _settle_success(budget, CHEAP, type="request")
    with pytest.raises(BudgetExhausted, match="SCRAPPEY_MAX_COST 5 reached"):
        budget.reserve(CHEAP)
    assert stats.get_value("scrappey/cost/total") == 5.0
    assert stats.get_value("scrappey/cost/by_type/request") == 5.0


def test_a_seen_additional_cost_is_booked_for_later_calls():
    budget, _stats, _ = _budget(max_cost=10.0)
    _settle_success(budget, CHEAP, type="request", additionalCost=0.3)
    assert budget.reserve(CHEAP).worst == 500_000  # 0.2 + the 0.3 seen
    assert budget.reserve({"cmd": "sessions.create"}).worst == 800_000
    # A larger extra, on a call booked with the first one, raises the booking
    # to the largest extra seen (not by its surplus over that booking).
    _settle_success(budget, CHEAP, type="request", additionalCost=0.4)
    _settle_success(budget, CHEAP, type="request", additionalCost=0.1)
    assert budget.reserve(CHEAP).worst == 600_000


def test_a_browser_call_is_booked_at_the_dearer_engine_price():
    # solution.type is what is charged: a browser call answered by the
    # request engine costs the request price, the dearer one here.
    prices = {"browser": 0.5, "request": 0.8, "sessions": 0.0}
    budget = Budget(
        CostConfig(prices=prices), MemoryStatsCollector(get_crawler()), _Closer()
    )
    assert budget.reserve(BROWSER).worst == 800_000
    assert budget.reserve(CHEAP).worst == 800_000
    assert _budget()[0].reserve(BROWSER).worst == 1_000_000  # the defaults: browser


def test_a_request_call_answered_as_a_browser_one_is_booked_so_later():
    budget, stats, _ = _budget(max_cost=10.0)
    _settle_success(budget, CHEAP, type="browser")  # undocumented, but possible
    assert stats.get_value("scrappey/cost/by_type/browser") == 1.0
    assert budget.reserve(CHEAP).worst == 1_000_000  # 0.2 + the 0.8 surplus
    assert budget.reserve(BROWSER).worst == 1_800_000


def test_max_requests_counts_charged_and_pending_page_calls_only():
    budget, _stats, _ = _budget(max_requests=2)
    _settle_success(budget, BROWSER, type="browser")
    failed = budget.reserve(BROWSER)
    budget.settle(failed, None)  # not charged: does not count
    budget.reserve(CHEAP)
    budget.reserve({"cmd": "sessions.create"})  # not a page call
    with pytest.raises(BudgetExhausted, match="SCRAPPEY_MAX_REQUESTS 2 reached"):
        budget.reserve(BROWSER)


def test_waste_counts_only_charged_replies():
    budget, stats, _ = _budget()
    payload = dict(BROWSER)
    reply = parse_reply(200, b'{"data": "success", "solution": {"type": "browser"}}')
    budget.waste(charge_of(reply, payload, budget.config))
    free = parse_reply(200, b'{"data": "error", "error": "CODE-0031"}')
    budget.waste(charge_of(free, payload, budget.config))
    assert stats.get_value("scrappey/cost/wasted") == 1.0


def test_a_refused_session_create_closes_at_once():
    budget, _stats, closer = _budget(max_cost=0.6)
    budget.reserve(CHEAP)  # in flight
    with pytest.raises(BudgetExhausted):
        budget.reserve({"cmd": "sessions.create"})  # 0.5 does not fit
    assert [reason for reason, _ in closer.calls] == [EXHAUSTED]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"SCRAPPEY_PRICES": {"captcha": 2}}, "SCRAPPEY_PRICES has unknown key"),
        ({"SCRAPPEY_PRICES": {"browser": "1,2"}}, "SCRAPPEY_PRICES['browser']"),
        ({"SCRAPPEY_MAX_COST": -5}, "SCRAPPEY_MAX_COST"),
    ],
)
@deferred_f_from_coro_f
async def test_a_crawl_with_bad_cost_settings_stops_before_any_call(
    tmp_path, local_server, target_site, settings, named
):
    settings = settings_for(local_server, tmp_path, **settings)
    with pytest.raises(ScrappeyConfigError) as info:
        await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert named in str(info.value)
    assert local_server.stats()["requests"]["by_command"] == {}
