"""The control-plane calls for sessions: ``sessions.create`` and ``sessions.destroy``.

The ledger is kept in step with the API: an id is recorded before its create
is sent and forgotten only once the API confirmed the destroy, or said the
session does not exist, or the create never reached the API; so is the shared
ledger in Redis (``shared_ledger.py``) when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from typing import TYPE_CHECKING, Any, Protocol

from ._pool_stats import PoolStats
from .codes import ErrorKind
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAPIUnreachable,
    ScrappeyError,
    ScrappeyTransportError,
)
from .redis_link import new_worker_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from scrapy.statscollectors import StatsCollector

    from .client import ApiReply, ScrappeyClient
    from .config import Config
    from .shared_ledger import SharedLedger

logger = logging.getLogger(__name__)

SESSION_ID_PREFIX = "scrapy-scrappey-"
#: Destroy failures retried as is ("pending" and the like may succeed next time).
#: A destroy answered with a proxy or browser error may not have happened.
_WORTH_RETRYING = (ErrorKind.TRANSIENT, ErrorKind.SESSION_BOUND, ErrorKind.BAD_REPLY)


class Ledger(Protocol):
    """What is needed of :class:`~scrapy_scrappey.ledger.SessionLedger`."""

    def record(self, session_id: str) -> None: ...
    def forget(self, session_id: str) -> None: ...


class SessionAPI:
    """Creates and destroys remote sessions, at most ``api_concurrency`` at a time."""

    def __init__(
        self,
        config: Config,
        client: ScrappeyClient,
        stats: StatsCollector,
        *,
        ledger: Ledger | None,
        extra: dict[str, Any],
        worker_id: str | None = None,
        shared: SharedLedger | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._stats = stats
        self._pool_stats = PoolStats(
            stats, per_pool=config.session_pools.stats_per_pool
        )
        self._ledger = ledger
        self._shared = shared
        self._worker_id = worker_id or new_worker_id()
        self._extra = extra
        self._slots = asyncio.Semaphore(config.api_concurrency)
        # Creates sent but not seen through (their caller was cancelled), and
        # ids whose create failed in transit: either may exist remotely.
        self._unsettled: dict[asyncio.Future[ApiReply], str] = {}
        self._uncertain: set[str] = set()

    @property
    def reached(self) -> bool:
        """Whether the API has answered once in this crawl."""
        return self._client.reached

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number *attempt* (1-based), with jitter."""
        base = self._config.create_backoff * 2.0 ** (attempt - 1)
        return min(self._config.create_backoff_max, base) * random.uniform(0.5, 1.0)

    async def create(
        self, params: Mapping[str, Any] | None = None, *, pool: str | None = None
    ) -> str:
        """One ``sessions.create`` for *pool* with *params* (default:
        ``SCRAPPEY_SESSION_PARAMS``); the id of the new session, or a ScrappeyError."""
        # Named after its worker, so that `sessions list` shows who owns it.
        session_id = f"{SESSION_ID_PREFIX}{self._worker_id}-{secrets.token_hex(8)}"
        if params is None:
            params = self._config.session_params or {}
        payload = {
            **params,
            "cmd": "sessions.create",
            "session": session_id,
        }
        async with self._slots:
            self._record(session_id)  # before the API can have it
            await self._record_shared(session_id)
            call = asyncio.ensure_future(self._call(payload))
            self._unsettled[call] = session_id
            # Once sent, the API may create the session whether or not we wait
            # for the answer; if we are cancelled, settle() finishes the job.
            await asyncio.wait({call})
        del self._unsettled[call]
        return self._created(session_id, call, pool)

    def _created(
        self, session_id: str, call: asyncio.Future[ApiReply], pool: str | None = None
    ) -> str:
        try:
            reply = call.result()
            reply.raise_for_error()
        except ScrappeyAPIUnreachable:
            self._forget(session_id)  # never sent: nothing can exist
            raise
        except ScrappeyTransportError:
            self._uncertain.add(session_id)  # it may exist: settle() destroys it
            raise
        except ScrappeyAPIError as ex:
            if ex.kind is ErrorKind.BAD_REPLY:
                # Neither a success nor a refusal ("pending"…): the API may
                # have made it, so it is destroyed like a create lost in transit.
                self._uncertain.add(session_id)
            else:
                self._forget(session_id)
            raise
        except ScrappeyError:
            self._forget(session_id)
            raise
        real_id = reply.data.get("session")
        if isinstance(real_id, str) and real_id and real_id != session_id:
            self._record(real_id)  # the API chose its own id
            self._forget(session_id)
            session_id = real_id
        self._pool_stats.inc("scrappey/sessions/created", pool)
        return session_id

    async def destroy(
        self, session_id: str, *, pool: str | None = None, orphan: bool = False
    ) -> bool:
        """Destroy one session (of *pool*), retrying transient failures; True once it is gone.

        An *orphan* (left by an earlier crawl) is not counted in
        ``scrappey/sessions/destroyed``, which is this crawl's sessions.
        """
        for attempt in range(self._config.create_attempts):
            if attempt:
                await asyncio.sleep(self.backoff(attempt))
            outcome = await self._destroy_once(session_id, pool, orphan=orphan)
            if outcome is not None:
                return outcome
        return False

    async def destroy_many(
        self, session_ids: list[str], *, orphans: bool = False
    ) -> list[str]:
        """Destroy sessions concurrently; the ids that are gone."""
        results = await asyncio.gather(
            *(self.destroy(sid, orphan=orphans) for sid in session_ids)
        )
        return [sid for sid, ok in zip(session_ids, results, strict=True) if ok]

    async def destroy_uncertain(self) -> None:
        """Destroy the sessions whose create failed in transit (they may exist)."""
        ids, self._uncertain = sorted(self._uncertain), set()
        gone: set[str] = set()
        try:
            gone.update(await self.destroy_many(ids))
        finally:
            # Also when cancelled (a close): what is not confirmed gone stays
            # uncertain, so settle() tries again and close counts it if leaked.
            self._uncertain.update(i for i in ids if i not in gone)

    async def settle(self) -> None:
        """Finish abandoned creates and destroy whatever may exist because of them."""
        if self._unsettled:
            await asyncio.wait(set(self._unsettled))
        for call, session_id in list(self._unsettled.items()):
            del self._unsettled[call]
            # A refusal created nothing; a transport error adds the id itself.
            with contextlib.suppress(ScrappeyError):
                self._uncertain.add(self._created(session_id, call))
        await self.destroy_uncertain()

    def unsettled_ids(self) -> list[str]:
        """Ids that may still exist remotely outside the manager's bookkeeping."""
        return sorted({*self._unsettled.values(), *self._uncertain})

    async def _destroy_once(
        self, session_id: str, pool: str | None, *, orphan: bool
    ) -> bool | None:
        """True: gone; False: failed for good; None: failed, worth retrying."""
        try:
            async with self._slots:
                reply = await self._call(
                    {"cmd": "sessions.destroy", "session": session_id}
                )
            reply.raise_for_error()
        except ScrappeyAPIError as ex:
            if ex.kind is not ErrorKind.SESSION:
                self._destroy_failed(session_id, ex)
                return None if ex.kind in _WORTH_RETRYING else False
            # "Session not found": expired or never created; gone either way.
            self._stats.inc_value("scrappey/sessions/already_gone")
            self._forget(session_id)
            return True
        except ScrappeyAPIUnreachable as ex:
            if not self.reached:
                # A wrong SCRAPPEY_API_URL, which the creates report once:
                # the session stays in the ledger, unannounced.
                return False
            self._destroy_failed(session_id, ex)
            return None
        except ScrappeyTransportError as ex:
            self._destroy_failed(session_id, ex)
            return None
        except ScrappeyError as ex:
            self._destroy_failed(session_id, ex)
            return False
        if not orphan:
            self._pool_stats.inc("scrappey/sessions/destroyed", pool)
        logger.debug(
            "Destroyed Scrappey session %(session)s",
            {"session": session_id},
            extra=self._extra,
        )
        self._forget(session_id)
        return True

    async def _call(self, payload: dict[str, Any]) -> ApiReply:
        return await self._client.call(payload, timeout=self._config.control_timeout)

    def _destroy_failed(self, session_id: str, error: Exception) -> None:
        self._stats.inc_value("scrappey/sessions/destroy_failed")
        logger.warning(
            "Could not destroy Scrappey session %(session)s: %(error)s",
            {"session": session_id, "error": error},
            extra=self._extra,
        )

    def _record(self, session_id: str) -> None:
        if self._ledger is not None:
            self._ledger.record(session_id)
        if self._shared is not None:
            self._shared.hold(session_id)

    async def _record_shared(self, session_id: str) -> None:
        if self._shared is None:
            return
        try:
            await self._shared.flush()
        except BaseException:
            self._forget(session_id)  # cancelled: no create was sent
            raise

    def _forget(self, session_id: str) -> None:
        if self._shared is not None:
            self._shared.forget(session_id)
        if self._ledger is None:
            return
        try:
            self._ledger.forget(session_id)
        except OSError as ex:
            # The session is gone; a stale ledger line only costs the next
            # run a "not found" destroy. Never let it break the bookkeeping.
            logger.warning(
                "Could not update the Scrappey session ledger: %(error)s",
                {"error": ex},
                extra=self._extra,
            )
