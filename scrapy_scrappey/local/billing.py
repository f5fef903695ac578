"""What the local server charges, as the real API documents it.

A successful ``request.*`` reply costs the price of its ``solution.type``
(default: browser 1, request 0.2) plus its ``solution.additionalCost``;
failed and unverified replies, and ``sessions.*`` commands, cost nothing. A
``request.*`` the balance cannot pay for gets an error envelope (the real
API's out-of-credit reply is undocumented: the text says what happened).

Amounts are kept in integer micro-units so that totals are exact and can be
compared with a client's own account.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from scrapy_scrappey.cost import (
    DEFAULT_PRICES,
    extra_micros,
    from_micros,
    to_micros,
)
from scrapy_scrappey.local.protocol import ApiError

if TYPE_CHECKING:
    from collections.abc import Mapping


class Billing:
    """The balance, the prices and the totals charged (for ``/__local__/stats``)."""

    def __init__(self, balance: float, prices: Mapping[str, float] | None = None):
        self.prices = check_prices({**DEFAULT_PRICES, **(prices or {})})
        self._balance = to_micros(balance)
        self.reset()

    @property
    def balance(self) -> float:
        """Credits left."""
        return from_micros(self._balance)

    def reset(self) -> None:
        """Zero the totals charged (the balance stays)."""
        self._charged: Counter[str] = Counter()
        self._calls = 0

    def check(self, kind: str) -> None:
        """Refuse a ``request.*`` of *kind* that the balance cannot pay for."""
        price = to_micros(self.prices.get(kind, 0.0))
        if self._balance < price or self._balance <= 0:
            raise ApiError(
                None,
                f"Insufficient balance: {self.balance:g} left, a {kind!r} request "
                f"costs {from_micros(price):g}; top up the account",
            )

    def charge(self, solution: dict[str, Any]) -> float:
        """Take the cost of a successful, verified reply's *solution*; return it."""
        if solution.get("verified") is False:
            return 0.0
        kind = str(solution.get("type"))
        # The plugin's own rule for additionalCost (cost.py), so both agree.
        cost = to_micros(self.prices.get(kind, 0.0)) + extra_micros(solution)
        self._balance -= cost
        self._charged[kind] += cost
        self._calls += 1
        return from_micros(cost)

    def snapshot(self) -> dict[str, Any]:
        """The ``charged`` part of the stats document."""
        return {
            "total": from_micros(sum(self._charged.values())),
            "by_type": {kind: from_micros(c) for kind, c in self._charged.items()},
            "calls": self._calls,
            "balance": self.balance,
        }


def check_prices(prices: Mapping[str, float]) -> dict[str, float]:
    """*prices* as floats; ``ValueError`` naming a negative or non-numeric one."""
    checked = {}
    for kind, price in prices.items():
        try:
            value = float(price)
        except (TypeError, ValueError):
            raise ValueError(
                f"the price of {kind!r} must be a number, got {price!r}"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"the price of {kind!r} must be 0 or more, got {price!r}")
        checked[kind] = value
    return checked


def parse_prices(text: str) -> dict[str, float]:
    """``"browser=1,request=0.2"`` → ``{"browser": 1.0, "request": 0.2}``."""
    prices: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, price = item.partition("=")
        if not sep or not kind.strip():
            raise ValueError(f"--prices wants TYPE=PRICE,…, got {item!r}")
        prices[kind.strip()] = price.strip()
    return check_prices(prices)
