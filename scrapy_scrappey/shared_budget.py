"""``SCRAPPEY_MAX_COST`` / ``SCRAPPEY_MAX_REQUESTS`` shared by every worker through Redis.

With ``SCRAPPEY_REDIS_URL`` and a cap, the caps apply to the sum over every
worker (crawl process) running the same spider with the same API key. The
local :class:`~.budget.Budget` stays this worker's exact account; Redis holds
each worker's *commitment*: micro-units charged + uncertain + reserved, and
``request.*`` calls paid + pending, as absolute values.

Data model (``budget:<spider name>`` under :meth:`.RedisLink.key`, so in the
account's hash slot):

* ``…:budget:<name>`` — a hash: worker id → ``"<seq> <micros> <requests>"``;
  ``!exhausted`` → why the budget ran out (set by the first refusal, kept);
  ``!wait`` → the Redis-clock time (ms) before which claims wait (see below);
  ``!at`` → the last write's time; ``!ended`` → the last member left.
* ``…:budget-members:<name>`` — a sorted set: the live workers (worker id →
  the time their membership expires; each write moves it on by
  :attr:`.RedisLink.slot_ttl`, so three missed heartbeats).

Both keys expire a day after the last write (a forgotten crawl's).

Invariants (everything below runs on the event loop's thread):

* Reserve before send: a priced call is sent only once Redis accepted this
  worker's commitment *including* its booking, in one Lua script that checks
  the others' total plus it against the caps. A refusal undoes the local
  booking and raises the :class:`~.budget.BudgetExhausted` a local refusal
  raises; ``sessions.destroy`` is never refused (its price is written later).
* What Redis holds for this worker is never below what it has claimed and not
  yet settled: claims and writes hold ``_lock``, read the commitment just
  before sending it (minus the bookings still waiting for their own claim,
  ``_waiting``), and carry a sequence number Redis checks, so a late command
  (timed out here, run there) cannot overwrite a newer value. Settles lower
  the value in the background (one pending write for many, ``_write_due``);
  the heartbeat rewrites it every ``SCRAPPEY_REDIS_HEARTBEAT``.
* Every worker's commitment counts, dead ones too: a dead worker may have
  been charged for what it had reserved. Membership only decides whether a
  crawl is running: a worker that joins when no member is alive starts the
  budget afresh (atomically, so workers starting together share one budget,
  and yesterday's spent budget does not stop today's crawl) if the last
  member left by closing (``!ended``) or nobody wrote for four slot TTLs:
  members cut off (expired) keep their commitments and ``!exhausted``. (A
  joiner cannot tell an empty, restarted Redis from a first start: README.)
* State lost (Redis restarted empty, or reset by a joiner that saw no live
  member): the first write of a worker that finds its own entry missing sets
  ``!wait`` one slot TTL ahead; claims wait until then, long enough for every
  live worker's heartbeat to write its commitment back. Only a worker dead
  at that moment is forgotten.
* Redis failing: claims wait with back-off (never a priced call without a
  successful claim); settles are kept locally and written by the heartbeat.
* Once any worker is refused, ``!exhausted`` is set: every later claim is
  refused, and each worker's heartbeat exhausts its own budget, so that all
  close with ``scrappey_budget_exhausted`` once their open calls settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._budget_lua import BUDGET_LUA
from .cost import from_micros, to_micros
from .exceptions import SpiderClosing
from .redis_link import COMMAND_TIMEOUT, RedisUnreachable, command, shown_url

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from ._tasks import TaskGroup
    from .budget import Booking, Budget
    from .redis_link import RedisLink

logger = logging.getLogger(__name__)

#: Seconds between two claims while the budget's state is being rebuilt.
WAIT_POLL = 0.25
#: The longest wait between two tries while Redis fails.
_BACKOFF_MAX = 5.0


@dataclass(frozen=True)
class _Reply:
    code: int
    micros: int  # the other workers' commitment
    requests: int
    exhausted: str


class SharedBudget:
    """This worker's share of a budget every worker of the spider draws from."""

    def __init__(
        self,
        budget: Budget,
        link: RedisLink,
        stats: StatsCollector,
        tasks: TaskGroup,
        *,
        name: str,
        extra: dict[str, Any],
    ) -> None:
        self._budget = budget
        self._link = link
        self._stats = stats
        self._tasks = tasks
        self._name = name
        self._extra = extra
        self._keys = [link.key(f"budget:{name}"), link.key(f"budget-members:{name}")]
        self._lock = asyncio.Lock()
        self._seq = 0
        self._waiting = (0, 0)  # bookings reserved here, their claim not done
        self._write_due = False
        self._failures = 0
        self._waited = False
        self._closing = False
        self._beat: asyncio.Task[None] | None = None
        self._script: Any = None
        budget.on_change = self._changed

    @classmethod
    def for_crawl(
        cls,
        budget: Budget,
        link: RedisLink | None,
        stats: StatsCollector,
        tasks: TaskGroup,
        *,
        name: str,
        extra: dict[str, Any],
    ) -> SharedBudget | None:
        """The shared budget, or ``None`` without Redis or without a cap."""
        config = budget.config
        if link is None or not (config.max_cost or config.max_requests):
            return None
        return cls(budget, link, stats, tasks, name=name, extra=extra)

    async def open(self) -> None:
        """Join the spider's budget (afresh when no worker is alive) and start
        the heartbeat; :class:`.RedisUnreachable` when Redis fails."""
        self._script = self._link.client.register_script(BUDGET_LUA)
        try:
            reply = await self._run("join")
        except OSError as ex:
            raise RedisUnreachable(
                f"SCRAPPEY_REDIS_URL {shown_url(self._link.url)}: could not join "
                f"the shared budget: {ex}"
            ) from None
        self._seen(reply)
        config = self._budget.config
        logger.info(
            "Scrappey: the budget (SCRAPPEY_MAX_COST %(cost)s, SCRAPPEY_MAX_REQUESTS "
            "%(requests)s) is shared by the workers of spider %(name)r through Redis; "
            "the others have committed %(spent)g",
            {
                "cost": f"{config.max_cost:g}" if config.max_cost else "unset",
                "requests": config.max_requests or "unset",
                "name": self._name,
                "spent": from_micros(reply.micros),
            },
            extra=self._extra,
        )
        self._beat = self._tasks.spawn(self._heartbeat(), name="scrappey-budget-beat")
        if self._budget.reason is not None:  # joined a crawl whose budget is spent
            raise self._budget.exhausted(self._budget.reason)

    async def claim(self, booking: Booking, payload: dict[str, Any]) -> None:
        """Claim *booking* (already reserved locally) in Redis, waiting while
        Redis fails; raise :class:`~.budget.BudgetExhausted` when it is refused."""
        if payload.get("cmd") == "sessions.destroy" or not (
            booking.worst or booking.paid_request
        ):
            return  # never refused, or free: written with the next write
        if self._script is None or self._closing:  # the crawl is closing
            self._budget.settle(booking, None)
            raise SpiderClosing
        self._add_waiting(booking, 1)
        try:
            why = await self._claim(booking)
        except BaseException:
            self._add_waiting(booking, -1)
            self._budget.settle(booking, None)  # cancelled: never sent
            raise
        self._add_waiting(booking, -1)
        if why is not None:
            raise self._budget.refuse(booking, why)

    async def close(self) -> None:
        """Write the final commitment and leave the live members (one try)."""
        self._closing = True
        if self._beat is not None:
            self._beat.cancel()  # its flag ends it too: a send ends in its timeout
            await asyncio.wait({self._beat}, timeout=2 * COMMAND_TIMEOUT)
        if self._script is None:
            return
        with contextlib.suppress(OSError):
            async with self._lock:
                self._seen(await self._run("leave"))

    async def _claim(self, booking: Booking) -> str | None:
        while True:
            if self._closing:
                raise SpiderClosing
            async with self._lock:
                reply = await self._try("claim", booking)
            if reply is not None and reply.code == 1:
                self._seen(reply)
                return None
            if reply is not None and reply.code == -1:
                return reply.exhausted
            if reply is not None and reply.code == -2:
                self._note_wait()
                self._changed()  # write this worker's entry back
            await asyncio.sleep(self._delay(WAIT_POLL))

    def _commitment(self) -> tuple[int, int]:
        """What Redis must hold for this worker: the claimed part of the budget."""
        micros, requests = self._budget.commitment
        return micros - self._waiting[0], requests - self._waiting[1]

    def _add_waiting(self, booking: Booking, sign: int) -> None:
        micros, requests = self._waiting
        self._waiting = (
            micros + sign * booking.worst,
            requests + sign * booking.paid_request,
        )

    def _changed(self) -> None:
        """A booking was closed: write the lower commitment (one write for many)."""
        if not (self._write_due or self._closing or self._script is None):
            self._write_due = True
            self._tasks.spawn(self._write(), name="scrappey-budget-write")

    async def _write(self) -> None:
        async with self._lock:
            self._write_due = False
            if self._closing:
                return  # close() writes last
            reply = await self._try("write")
        if reply is not None:
            self._seen(reply)

    async def _heartbeat(self) -> None:
        # Stops by its flag too: its cancel may be lost in a Redis command.
        while not self._closing:
            await asyncio.sleep(self._delay(self._link.heartbeat))
            await self._write()

    def _delay(self, normal: float) -> float:
        if not self._failures:
            return normal
        # Never longer than a heartbeat: once Redis is back, every live worker
        # must write its commitment within the !wait window (3 heartbeats).
        backoff = WAIT_POLL * 2.0**self._failures
        return min(backoff, _BACKOFF_MAX, self._link.heartbeat)

    async def _try(self, mode: str, booking: Booking | None = None) -> _Reply | None:
        """:meth:`_run`, ``None`` when Redis failed (logged once per outage)."""
        try:
            reply = await self._run(mode, booking)
        except OSError as ex:
            if not self._failures:
                logger.warning(
                    "Redis (SCRAPPEY_REDIS_URL) failed: %(error)s; retrying with "
                    "back-off. Priced calls wait for Redis to claim their budget.",
                    {"error": ex},
                    extra=self._extra,
                )
            self._failures += 1
            return None
        if self._failures:
            self._failures = 0
            logger.warning("Redis is back: sharing the budget again", extra=self._extra)
        return reply

    async def _run(self, mode: str, booking: Booking | None = None) -> _Reply:
        """Run the script (a claim: of this worker's commitment plus *booking*);
        redis-py's errors become ``ConnectionError``."""
        micros, requests = self._commitment()
        if booking is not None:
            micros += booking.worst
            requests += booking.paid_request
        self._seq += 1
        raw = await command(
            self._script(
                keys=self._keys,
                args=[
                    self._link.worker_id,
                    mode,
                    self._seq,
                    micros,
                    requests,
                    *self._limits(booking),
                ],
            )
        )
        code, others, others_requests, exhausted = raw
        text = exhausted.decode() if isinstance(exhausted, bytes) else str(exhausted)
        return _Reply(int(code), int(others), int(others_requests), text)

    def _limits(self, booking: Booking | None) -> list[Any]:
        """The caps and refusal reasons of a claim (a write: this worker's exhaustion)."""
        ttl_ms = int(self._link.slot_ttl * 1000)
        if booking is None:
            return [0, 0, ttl_ms, self._budget.reason or "", ""]
        config = self._budget.config
        shared = f"by the workers of spider {self._name!r}"
        cost = (
            f"SCRAPPEY_MAX_COST {config.max_cost:g} reached {shared} "
            f"(the next call may cost {from_micros(booking.worst):g})"
        )
        return [
            to_micros(config.max_cost),
            config.max_requests if booking.paid_request else 0,
            ttl_ms,
            cost,
            f"SCRAPPEY_MAX_REQUESTS {config.max_requests} reached {shared}",
        ]

    def _seen(self, reply: _Reply) -> None:
        """Record the account-wide totals; a peer's refusal exhausts this budget."""
        micros, requests = self._commitment()
        self._stats.set_value(
            "scrappey/budget/shared_spent", from_micros(reply.micros + micros)
        )
        self._stats.set_value(
            "scrappey/budget/shared_requests", reply.requests + requests
        )
        if reply.exhausted and self._budget.reason is None:
            self._budget.exhausted(reply.exhausted)

    def _note_wait(self) -> None:
        if not self._waited:
            self._waited = True
            logger.info(
                "Scrappey: the shared budget's state in Redis was lost (restarted?); "
                "priced calls wait one heartbeat TTL for every worker to write "
                "its commitment back",
                extra=self._extra,
            )
