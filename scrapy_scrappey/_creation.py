"""Creating one session: room under the cap, retries with backoff, error triage."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ._pools import Session
from .codes import ErrorKind
from .exceptions import ScrappeyAPIError, ScrappeyTransportError, SessionsUnavailable

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from ._cap import SessionCap
    from ._tasks import TaskGroup
    from .config import Config
    from .session_api import SessionAPI

logger = logging.getLogger(__name__)


class SessionCreator:
    """Creates sessions within ``SCRAPPEY_SESSION_CREATE_ATTEMPTS``."""

    def __init__(
        self,
        config: Config,
        api: SessionAPI,
        cap: SessionCap,
        stats: StatsCollector,
        tasks: TaskGroup,
        *,
        extra: dict[str, Any],
    ) -> None:
        self._config = config
        self._api = api
        self._cap = cap
        self._stats = stats
        self._tasks = tasks
        self._extra = extra

    async def create(self, pool_key: str) -> Session:
        """A new session for *pool_key*, counted by the cap.

        Raises :class:`SessionsUnavailable` once every attempt failed or the
        API refused the session parameters, and lets ``ScrappeyAuthError`` out.
        """
        attempts = self._config.create_attempts
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._api.backoff(attempt))
            try:
                async with self._cap.room():
                    return self._created(await self._api.create(), pool_key)
            except (ScrappeyTransportError, ScrappeyAPIError) as ex:
                last = ex
                self._failed(ex)
                logger.warning(
                    "sessions.create failed for pool %(pool)r (attempt %(n)d of %(of)d): %(error)s",
                    {"pool": pool_key, "n": attempt + 1, "of": attempts, "error": ex},
                    extra=self._extra,
                )
        raise SessionsUnavailable(
            f"{attempts} sessions.create attempt(s) failed "
            f"(SCRAPPEY_SESSION_CREATE_ATTEMPTS); last error: {last}"
        )

    def _created(self, session_id: str, pool_key: str) -> Session:
        session = Session(session_id, pool_key, last_used=time.monotonic())
        self._cap.add(session)
        logger.debug(
            "Created Scrappey session %(session)s for pool %(pool)r",
            {"session": session_id, "pool": pool_key},
            extra=self._extra,
        )
        return session

    def _failed(self, error: ScrappeyTransportError | ScrappeyAPIError) -> None:
        self._stats.inc_value("scrappey/sessions/create_failed")
        if isinstance(error, ScrappeyTransportError) or (
            error.kind is ErrorKind.BAD_REPLY
        ):
            # It may have been created before the connection broke, or the
            # API's answer was neither yes nor no.
            self._tasks.spawn(self._api.destroy_uncertain(), name="scrappey-destroy")
            return
        if error.kind is ErrorKind.CONFIG:
            raise SessionsUnavailable(
                f"sessions.create was refused ({error}); check SCRAPPEY_SESSION_PARAMS"
            ) from error
        if error.kind is ErrorKind.SESSION_LIMIT:
            self._stats.inc_value("scrappey/sessions/over_limit")
            self._cap.evict()
