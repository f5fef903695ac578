"""The account's balance at the start and the end of a crawl.

Read with ``GET <api_url>/balance`` through the plugin's own client. A
failure of that endpoint (it is not part of the official SDKs) never stops a
crawl: it is warned about once and the ``scrappey/balance/*`` stats are left
out (not at all when the API never answered a command: a wrong
``SCRAPPEY_API_URL`` gets its one error from the commands). With ``SCRAPPEY_MIN_BALANCE`` set the start balance is awaited before
any paid call; if the endpoint fails then, the crawl goes on (warned about):
a monitoring endpoint that is down must not stop every crawl, and the hard
budget (``SCRAPPEY_MAX_COST``) still bounds what it spends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from .exceptions import ScrappeyError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from scrapy.statscollectors import StatsCollector

    from .client import ScrappeyClient
    from .cost import CostConfig

logger = logging.getLogger(__name__)

#: The reason a crawl closes with when the balance is below SCRAPPEY_MIN_BALANCE.
LOW_BALANCE = "scrappey_low_balance"


class _Spawn(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, Any], *, name: str) -> Any: ...


class BalanceWatch:
    """Reads the balance into ``scrappey/balance/start`` and ``/end``."""

    def __init__(
        self,
        client: ScrappeyClient,
        config: CostConfig,
        stats: StatsCollector,
        *,
        timeout: float,
        extra: dict[str, Any],
        on_low: Callable[[str, str], None],
        spawn: _Spawn,
    ) -> None:
        self._client = client
        self._config = config
        self._stats = stats
        self._timeout = timeout
        self._extra = extra
        self._on_low = on_low
        self._spawn = spawn
        self._warned = False
        #: A failure while the API had not answered yet, warned about once it has.
        self._deferred: ScrappeyError | None = None

    @property
    def blocking(self) -> bool:
        """Whether the crawl must wait for the start balance (SCRAPPEY_MIN_BALANCE)."""
        return self._config.min_balance > 0

    async def opened(self) -> None:
        """At spider open: read the start balance in the background, or, with
        ``SCRAPPEY_MIN_BALANCE``, await it and close the crawl (*on_low*, then
        :class:`ScrappeyError`) when it is too low."""
        if not self.blocking:
            self._spawn(self.start(), name="scrappey-balance-start")
            return
        low = await self.start()
        if low is not None:
            self._on_low(LOW_BALANCE, low)
            raise ScrappeyError(low)

    async def start(self) -> str | None:
        """Record the start balance; the message to close the crawl with when
        it is below ``SCRAPPEY_MIN_BALANCE``, else ``None``."""
        balance = await self._read("start")
        if balance is None or balance >= self._config.min_balance:
            return None
        return (
            f"the Scrappey balance is {balance:g}, below SCRAPPEY_MIN_BALANCE "
            f"{self._config.min_balance:g}; no paid call was made"
        )

    async def end(self) -> None:
        """Record the end balance; warn about a start that failed, if not yet."""
        await self._read("end")
        if self._deferred is not None and self._client.reached:
            self._warn(self._deferred, "start")

    async def _read(self, when: str) -> float | None:
        try:
            balance = await self._client.balance(timeout=self._timeout)
        except ScrappeyError as ex:  # transport errors included
            self._stats.inc_value("scrappey/balance/errors")
            if self._client.reached or self.blocking:
                self._warn(ex, when)
            else:
                # Maybe a wrong SCRAPPEY_API_URL, which the first command
                # reports in one error of its own: wait to see if the API answers.
                self._deferred = ex
            return None
        self._stats.set_value(f"scrappey/balance/{when}", balance)
        return balance

    def _warn(self, error: ScrappeyError, when: str) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "Could not read the Scrappey balance (%(error)s); the crawl "
            "goes on without the scrappey/balance stats%(min)s",
            {
                "error": error,
                "min": ", and without the SCRAPPEY_MIN_BALANCE check"
                if self.blocking and when == "start"
                else "",
            },
            extra=self._extra,
        )
