"""What the API charges: prices, the charge of one reply, the cost settings.

Documented rules (``scrappey-api.md`` §6): a browser request costs 1, a
``requestType: "request"`` one 0.2, plus the reply's
``solution.additionalCost``; "only successful requests take balance … see the
``verified`` field". Whether ``sessions.*`` cost anything is not documented:
``SCRAPPEY_PRICES["sessions"]`` (default 0) prices ``sessions.create`` and
``sessions.destroy``.

Amounts are counted in integer micro-units (:data:`MICRO` per balance unit)
so that sums are exact: a cap of 5 holds exactly 25 calls at 0.2, and the
crawl's total equals the API's to the last digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._settings import read_dict, read_float, read_int
from .exceptions import ScrappeyConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from scrapy.settings import BaseSettings

    # typing.Self requires Python 3.11
    from typing_extensions import Self

    from .client import ApiReply

MICRO = 1_000_000
#: The price of one charged call of each kind (``SCRAPPEY_PRICES``' defaults).
DEFAULT_PRICES: Mapping[str, float] = {"browser": 1.0, "request": 0.2, "sessions": 0.0}
_ENGINES = ("browser", "request")
_PRICED_SESSION_COMMANDS = frozenset({"sessions.create", "sessions.destroy"})
#: Words of an API error that says the account ran out of credit. The real
#: text is undocumented (one third-party client expects HTTP 402, but a bare
#: 402 is not enough to close a crawl: its text must say so).
_OUT_OF_CREDIT = (
    "insufficient balance",
    "not enough balance",
    "out of credit",
    "no balance",
    "balance too low",
)


def to_micros(amount: float) -> int:
    return round(amount * MICRO)


def from_micros(micros: int) -> float:
    return micros / MICRO


@dataclass(frozen=True)
class CostConfig:
    """The cost settings, read by :meth:`from_settings` (one ``Config`` field)."""

    #: ``SCRAPPEY_PRICES``, defaults filled in.
    prices: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    #: ``SCRAPPEY_MAX_COST``: cap on what the crawl may spend; 0 = none.
    max_cost: float = 0.0
    #: ``SCRAPPEY_MAX_REQUESTS``: cap on charged ``request.*`` calls; 0 = none.
    max_requests: int = 0
    #: ``SCRAPPEY_MIN_BALANCE``: a lower balance at start closes the crawl; 0 = off.
    min_balance: float = 0.0
    #: ``SCRAPPEY_ITEM_FIELD``: the item field of ScrappeyItemMetadata; None = off.
    item_field: str | None = None

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Self:
        """Read and check the cost settings; ScrappeyConfigError names a bad one."""
        return cls(
            prices=_prices(read_dict(settings, "SCRAPPEY_PRICES")),
            max_cost=read_float(
                settings, "SCRAPPEY_MAX_COST", 0.0, allow_zero=True, unit=""
            ),
            max_requests=read_int(settings, "SCRAPPEY_MAX_REQUESTS", 0, minimum=0),
            min_balance=read_float(
                settings, "SCRAPPEY_MIN_BALANCE", 0.0, allow_zero=True, unit=""
            ),
            item_field=_item_field(settings.get("SCRAPPEY_ITEM_FIELD")),
        )

    def price(self, kind: str) -> int:
        """Micro-units one charged call of *kind* costs (0 for a free command)."""
        return to_micros(self.prices[kind]) if kind else 0

    def worst_price(self, kind: str) -> int:
        """The most a call sent as *kind* can be charged, ``additionalCost`` aside.

        The reply's ``solution.type`` is what is charged: a browser call (the
        default) may be answered by either engine, so it costs at most the
        dearer price; a ``requestType: "request"`` call is documented as the
        HTTP client's, and costs the request price.
        """
        if kind == "browser":
            return max(self.price("browser"), self.price("request"))
        return self.price(kind)


@dataclass(frozen=True)
class Charge:
    """What one call cost: its *kind* (browser, request, sessions, or ``""`` for
    a free command) and *micros*."""

    kind: str
    micros: int = 0

    @property
    def amount(self) -> float:
        return from_micros(self.micros)


def sent_kind(payload: Mapping[str, Any]) -> str:
    """The price kind of a command before it is sent: ``requestType`` decides."""
    cmd = payload.get("cmd")
    if isinstance(cmd, str) and cmd.startswith("request."):
        return "request" if payload.get("requestType") == "request" else "browser"
    return "sessions" if cmd in _PRICED_SESSION_COMMANDS else ""


def charge_of(
    reply: ApiReply, payload: Mapping[str, Any], config: CostConfig
) -> Charge:
    """What the API charged for *reply* to *payload*.

    A reply is charged when it reports no error and its ``solution.verified``
    is not false; it costs the price of its ``solution.type`` (else of the
    ``requestType`` sent) plus ``solution.additionalCost``.
    """
    kind = sent_kind(payload)
    if not kind or reply.error() is not None:
        return Charge(kind)
    if kind == "sessions":
        return Charge(kind, config.price(kind))
    solution = reply.data.get("solution")
    if not isinstance(solution, dict):
        solution = {}
    if solution.get("verified") is False:
        return Charge(kind)
    if solution.get("type") in _ENGINES:
        kind = solution["type"]
    return Charge(kind, config.price(kind) + extra_micros(solution))


def extra_micros(solution: Mapping[str, Any]) -> int:
    """``additionalCost`` in micro-units; 0 unless a finite, non-negative number."""
    extra = solution.get("additionalCost")
    if isinstance(extra, bool) or not isinstance(extra, (int, float)):
        return 0
    return to_micros(extra) if math.isfinite(extra) and extra > 0 else 0


def out_of_credit(message: str) -> bool:
    """Whether an API error says the account has no credit left."""
    lowered = message.lower()
    return any(marker in lowered for marker in _OUT_OF_CREDIT)


def _prices(given: Mapping[str, Any]) -> dict[str, float]:
    unknown = sorted(set(given) - set(DEFAULT_PRICES))
    if unknown:
        raise ScrappeyConfigError(
            f"SCRAPPEY_PRICES has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the keys are {', '.join(map(repr, DEFAULT_PRICES))}."
        )
    return {
        kind: read_float(
            given,
            kind,
            default,
            allow_zero=True,
            label=f"SCRAPPEY_PRICES[{kind!r}]",
            unit="",
        )
        for kind, default in DEFAULT_PRICES.items()
    }


def _item_field(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise ScrappeyConfigError(
            f"SCRAPPEY_ITEM_FIELD must be a field name (a string), got {value!r}."
        )
    return value.strip()
