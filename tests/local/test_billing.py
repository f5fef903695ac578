"""The local server's prices: ``--prices`` and the Billing rules."""

from __future__ import annotations

import aiohttp
import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.__main__ import main
from scrapy_scrappey.local.billing import Billing, parse_prices
from scrapy_scrappey.local.protocol import ApiError

from ._support import Api


def test_parse_prices() -> None:
    assert parse_prices("") == {}
    assert parse_prices("browser=1, request=0.25,") == {"browser": 1.0, "request": 0.25}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prices", "browser"], "--prices wants TYPE=PRICE,…, got 'browser'"),
        (["--prices", "=1"], "--prices wants TYPE=PRICE,…, got '=1'"),
        (["--prices", "request=-1"], "the price of 'request' must be 0 or more"),
        (["--prices", "request=cheap"], "the price of 'request' must be a number"),
        (["--balance", "x"], "--balance: invalid float value"),
    ],
)
def test_bad_prices_exit_with_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_billing_charges_type_price_plus_extra_and_skips_unverified() -> None:
    billing = Billing(10, {"browser": 2})
    billing.charge({"verified": True, "type": "browser", "additionalCost": 0.3})
    billing.charge({"verified": True, "type": "request"})
    billing.charge({"verified": False, "type": "browser"})
    assert billing.snapshot() == {
        "total": 2.5,
        "by_type": {"browser": 2.3, "request": 0.2},
        "calls": 2,
        "balance": 7.5,
    }
    billing.reset()
    assert billing.snapshot()["total"] == 0
    assert billing.balance == 7.5  # a reset keeps the balance


def test_billing_refuses_what_the_balance_cannot_pay() -> None:
    billing = Billing(1.5)
    billing.check("browser")
    billing.charge({"type": "browser"})
    with pytest.raises(ApiError, match=r"Insufficient balance: 0\.5 left, a 'browser'"):
        billing.check("browser")
    billing.check("request")  # 0.2 still fits


@deferred_f_from_coro_f
async def test_browser_engine_charges_request_type_calls_as_requests(
    started, make_local_server, browser_engine, browser_site
):
    server = await make_local_server(
        engine=browser_engine, balance=0.6, faults=Faults(ban_after_requests=1)
    )
    api = Api(await started(aiohttp.ClientSession()), server, None)
    page = {"url": browser_site.url("/js/1"), "requestType": "request"}
    # 0.6 cannot pay for a browser call, but pays for three request-type ones,
    # the block page of the banned session's second call included.
    session = await api.create()
    replies = [
        await api.cmd("request.get", **page),
        await api.cmd("request.get", session=session, **page),
        await api.cmd("request.get", session=session, **page),
    ]
    assert [r["data"] for r in replies] == ["success"] * 3
    assert [r["solution"]["type"] for r in replies] == ["request"] * 3
    assert replies[2]["solution"]["statusCode"] == 403  # a vendor's block page
    assert server.stats()["charged"]["by_type"] == {"request": 0.6}
    refused = await api.cmd("request.get", url=page["url"])
    assert refused["data"] == "error"
    assert "Insufficient balance: 0 left, a 'browser' request costs 1" in str(
        refused["error"]
    )
