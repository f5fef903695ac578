"""The local server's prices: ``--prices`` and the Billing rules."""

from __future__ import annotations

import pytest

from scrapy_scrappey.local.__main__ import main
from scrapy_scrappey.local.billing import Billing, parse_prices
from scrapy_scrappey.local.protocol import ApiError


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
