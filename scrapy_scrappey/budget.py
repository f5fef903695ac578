"""The crawl's account of what it spent, and its hard budget.

Every command goes through :class:`CostedClient`: before it is sent,
:meth:`Budget.reserve` books its worst case (the dearest price its reply's
``solution.type`` can have, :meth:`~.cost.CostConfig.worst_price`, plus the
largest surplus over that price seen so far); when the reply comes
the booking is settled at the reply's real charge (:func:`~.cost.charge_of`),
and when none comes (timeout, cut reply, cancel) the worst case stays booked
as *uncertain*: the API may have charged it.

Invariants (amounts in micro-units; everything runs on the event loop's
thread with no ``await`` between a check and its update):

* ``charged + uncertain + reserved <= max_cost`` when ``SCRAPPEY_MAX_COST``
  is set: :meth:`Budget.reserve` refuses a call that would break it. Only a
  reply dearer than its booking (an ``additionalCost`` above any seen before,
  or a ``requestType: "request"`` call answered as a browser one, which the
  API does not document) can push the total past the cap, and then every
  later call is refused; its surplus is booked on every later call.
* ``paid + pending <= max_requests`` when ``SCRAPPEY_MAX_REQUESTS`` is set;
  ``paid`` counts charged or uncertain ``request.*`` calls, ``pending`` the
  ``request.*`` bookings still open.
* ``reserved`` is the sum of the open bookings' worst cases and ``pending``
  their number of ``request.*`` ones; each booking is closed exactly once.
* ``wasted <= charged``: only a charged reply's cost can be wasted.
* Once a call is refused (or the API says the account is out of credit) the
  budget is *exhausted*: every later priced call is refused at once, and the
  crawl is closed when the last open booking is settled, so that no call
  already paid for is cancelled. ``sessions.destroy`` is never refused: a
  session must be freed whatever the budget (its price, 0 by default, is
  still counted). A refused ``sessions.create`` (priced sessions) closes the
  crawl at once: its pool could not go on anyway.

With ``SCRAPPEY_REDIS_URL`` and a cap, the caps are every worker's together:
a booking is also claimed in Redis before its call is sent, and undone by
:meth:`Budget.refuse` when it does not fit (``shared_budget.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest

from .client import ApiReply, ScrappeyClient
from .cost import (
    Charge,
    CostConfig,
    charge_of,
    from_micros,
    out_of_credit,
    sent_kind,
    to_micros,
)
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAuthError,
    ScrappeyConfigError,
    ScrappeyError,
    ScrappeyTransportError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request
    from scrapy.statscollectors import StatsCollector

    from .shared_budget import SharedBudget

logger = logging.getLogger(__name__)

#: The reason a crawl closes with when its budget (or the account) runs out.
EXHAUSTED = "scrappey_budget_exhausted"
#: Request meta: ``[url, retry_times, micros]`` of the charged page it got.
_PAID = "_scrappey_paid_page"


class BudgetExhausted(ScrappeyError, IgnoreRequest):
    """The budget (or the account's credit) cannot pay for one more call.

    An :class:`~scrapy.exceptions.IgnoreRequest`: the request is dropped
    and its errback gets this error; ``sent`` tells whether its call reached
    the API (which then refused it for want of credit).
    """

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class Booking:
    """One call's reservation: its kind and worst case in micro-units."""

    kind: str
    worst: int

    @property
    def paid_request(self) -> bool:
        return self.kind in ("browser", "request")


class Budget:
    """Books, settles and counts the cost of the crawl's calls (see the module doc)."""

    def __init__(
        self,
        config: CostConfig,
        stats: StatsCollector,
        on_exhausted: Callable[[str, str], None],
    ) -> None:
        self.config = config
        self._stats = stats
        self._on_exhausted = on_exhausted
        self._cap = to_micros(config.max_cost)
        self.charged = self.uncertain = self.reserved = self.wasted = 0
        self.paid = self.pending = 0
        self._max_extra = 0  # the largest surplus over worst_price seen, micro-units
        self._by_type: dict[str, int] = {}
        self._open = 0  # bookings not settled yet, of any kind
        self._exhausted: str | None = None  # why, once exhausted
        self._closing = False
        #: Called whenever a booking is closed (the shared budget's write).
        self.on_change: Callable[[], None] | None = None

    def reserve(self, payload: dict[str, Any]) -> Booking:
        """Book *payload*'s worst case, or raise :class:`BudgetExhausted`."""
        kind = sent_kind(payload)
        worst = self.config.worst_price(kind)
        booking = Booking(kind, worst + (self._max_extra if worst else 0))
        why = (
            None if payload.get("cmd") == "sessions.destroy" else self._refusal(booking)
        )
        if why is not None:
            raise self._refuse(kind, why)
        self.reserved += booking.worst
        self.pending += booking.paid_request
        self._open += 1
        return booking

    def refuse(self, booking: Booking, why: str) -> BudgetExhausted:
        """Undo *booking* (its call was not sent) and refuse it as :meth:`reserve`
        refuses: the shared budget (``shared_budget.py``) had no room for it."""
        self.settle(booking, None)
        return self._refuse(booking.kind, why)

    @property
    def commitment(self) -> tuple[int, int]:
        """``(charged + uncertain + reserved, paid + pending)``: what the caps count."""
        return self.charged + self.uncertain + self.reserved, self.paid + self.pending

    @property
    def reason(self) -> str | None:
        """Why the budget is exhausted (``None``: it is not)."""
        return self._exhausted

    def _refuse(self, kind: str, why: str) -> BudgetExhausted:
        self._stats.inc_value("scrappey/budget/refused")
        error = self.exhausted(why)
        if kind == "sessions":
            # Its pool would close the crawl at once as "sessions
            # unavailable": close it now, and for the real reason.
            self._close_when_settled(now=True)
        return error

    def settle(self, booking: Booking, charge: Charge | None) -> None:
        """Close *booking*: *charge* is what the reply cost (``None``: nothing)."""
        if charge is not None and charge.micros:
            self.charged += charge.micros
            self.paid += booking.paid_request
            surplus = charge.micros - self.config.worst_price(booking.kind)
            self._max_extra = max(self._max_extra, surplus)
            self._add("scrappey/cost/total", self.charged)
            by_type = self._by_type.get(charge.kind, 0) + charge.micros
            self._by_type[charge.kind] = by_type
            self._add(f"scrappey/cost/by_type/{charge.kind}", by_type)
        self._close(booking)

    def lost(self, booking: Booking) -> None:
        """Close *booking* of a call that got no reply: it may have been charged."""
        self.uncertain += booking.worst
        self.paid += booking.paid_request
        self._add("scrappey/cost/uncertain", self.uncertain)
        self._close(booking)

    def waste(self, charge: Charge) -> None:
        """A charged reply was rejected (session check) or retried."""
        if charge.micros:
            self.wasted += charge.micros
            self._add("scrappey/cost/wasted", self.wasted)

    def paid_page(self, request: Request, charge: Charge) -> None:
        """*request* got a charged page: wasted if the request is retried."""
        if charge.micros:
            tries = request.meta.get("retry_times", 0)
            request.meta[_PAID] = [request.url, tries, charge.micros]

    def resent(self, request: Request) -> None:
        """*request* is about to be sent: if it is a retry of a request that
        got a charged page (``RetryMiddleware``, or ``get_retry_request`` in a
        callback), that page was paid for in vain."""
        paid = request.meta.pop(_PAID, None)
        # The URL and try count tell a retry from a request a callback built
        # with a copy of a response's meta.
        if (
            isinstance(paid, list)
            and len(paid) == 3
            and paid[0] == request.url
            and request.meta.get("retry_times", 0) > paid[1]
        ):
            self.waste(Charge("", paid[2]))

    def exhausted(self, why: str, *, sent: bool = False) -> BudgetExhausted:
        """The error for a refused call (*sent*: refused by the API itself);
        the budget is exhausted from now on."""
        if self._exhausted is None:
            self._exhausted = why
            self._close_when_settled()
        outcome = "refused by the API" if sent else "request not sent"
        return BudgetExhausted(f"{self._exhausted}; {outcome}", sent=sent)

    def _close_when_settled(self, *, now: bool = False) -> None:
        if self._exhausted is None or (self._open and not now) or self._closing:
            return
        self._closing = True
        self._on_exhausted(
            EXHAUSTED,
            f"{self._exhausted}; spent {from_micros(self.charged):g}"
            f" (uncertain {from_micros(self.uncertain):g})",
        )

    def _refusal(self, booking: Booking) -> str | None:
        if self._exhausted is not None and booking.worst:
            return self._exhausted
        if self._cap:
            total = self.charged + self.uncertain + self.reserved + booking.worst
            if total > self._cap:
                return (
                    f"SCRAPPEY_MAX_COST {self.config.max_cost:g} reached (the next "
                    f"call may cost {from_micros(booking.worst):g})"
                )
        limit = self.config.max_requests
        if limit and booking.paid_request and self.paid + self.pending >= limit:
            return f"SCRAPPEY_MAX_REQUESTS {limit} reached"
        return None

    def _close(self, booking: Booking) -> None:
        self.reserved -= booking.worst
        self.pending -= booking.paid_request
        self._open -= 1
        if self.on_change is not None:
            self.on_change()
        self._close_when_settled()

    def _add(self, key: str, micros: int) -> None:
        # Set from the exact micro-unit count, never summed as floats.
        self._stats.set_value(key, from_micros(micros))


class CostedClient(ScrappeyClient):
    """The API client with every call booked and settled in a :class:`Budget`."""

    def __init__(self, api_url: str, api_key: str, budget: Budget) -> None:
        super().__init__(api_url, api_key)
        self.budget = budget
        #: The budget shared with other workers through Redis, when there is one.
        self.shared: SharedBudget | None = None

    async def call(self, payload: dict[str, Any], *, timeout: float) -> ApiReply:
        return (await self.costed_call(payload, timeout=timeout))[0]

    async def costed_call(
        self, payload: dict[str, Any], *, timeout: float
    ) -> tuple[ApiReply, Charge]:
        """:meth:`call`, and what the reply cost."""
        booking = self.budget.reserve(payload)
        if self.shared is not None:
            # Reserve before send, account-wide (shared_budget.py).
            await self.shared.claim(booking, payload)
        try:
            reply = await super().call(payload, timeout=timeout)
        except (ScrappeyAPIError, ScrappeyAuthError, ScrappeyConfigError) as ex:
            # An HTTP 4xx, or a command never sent: nothing was charged.
            self.budget.settle(booking, None)
            self._check_credit(ex)
            raise
        except ScrappeyTransportError as ex:
            # Only a call that may have run without its answer reaching us
            # (a timeout, a cut reply) stays booked as possibly charged.
            if ex.may_be_charged:
                self.budget.lost(booking)
            else:
                self.budget.settle(booking, None)
            raise
        except BaseException:
            self.budget.lost(booking)
            raise
        charge = charge_of(reply, payload, self.budget.config)
        self.budget.settle(booking, charge)
        self._check_credit(reply.error())
        return reply, charge

    def _check_credit(self, error: BaseException | None) -> None:
        if error is not None and out_of_credit(str(error)):
            raise self.budget.exhausted(
                f"the Scrappey account is out of credit ({error})", sent=True
            ) from None
