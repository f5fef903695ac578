"""Creating one session: room under the cap, retries with backoff, error triage."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ._pools import Session
from .codes import ErrorKind
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAPIUnreachable,
    ScrappeyTransportError,
    SessionsUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from scrapy.statscollectors import StatsCollector

    from ._cap import SessionCap
    from ._tasks import TaskGroup
    from .config import Config
    from .session_api import SessionAPI

logger = logging.getLogger(__name__)

#: Attempts for a create that cannot reach an API that never answered in this
#: crawl (refused, DNS failure, HTTP 404): most likely a wrong SCRAPPEY_API_URL,
#: which waiting does not fix, so the crawl stops after one retry (a blip
#: passes within its backoff). Once the API answered, an outage gets the
#: full SCRAPPEY_SESSION_CREATE_ATTEMPTS.
UNREACHED_ATTEMPTS = 2


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

    async def create(self, pool_key: str, params: Mapping[str, Any]) -> Session:
        """A new session for *pool_key*, created with *params*, counted by the cap.

        Raises :class:`SessionsUnavailable` once every attempt failed, the
        account's session limit (CODE-0029) did not free up within
        ``SCRAPPEY_SESSION_OVER_LIMIT_WAIT`` or the API refused the session
        parameters, and lets ``ScrappeyAuthError`` out, and
        ``ScrappeyAPIUnreachable`` when the API never answered (see
        ``UNREACHED_ATTEMPTS``). CODE-0029 replies are waited out, not
        counted as attempts: the API closes idle sessions.
        """
        failures = 0
        wait = _OverLimitWait(self._config.session_over_limit_wait)
        while True:
            try:
                async with self._cap.room(pool_key):
                    session_id = await self._api.create(params, pool=pool_key)
                    return self._created(session_id, pool_key)
            except (ScrappeyTransportError, ScrappeyAPIError) as ex:
                self._failed(ex, first_over_limit=not wait.started)
                if wait.covers(ex):
                    delay = self._over_limit_delay(wait, pool_key, ex)
                else:
                    failures += 1
                    delay = self._retry_delay(pool_key, failures, ex)
            await asyncio.sleep(delay)

    def _retry_delay(self, pool_key: str, failures: int, error: Exception) -> float:
        """Seconds until the next attempt; raise once the attempts are used up."""
        attempts = self._config.create_attempts
        if isinstance(error, ScrappeyAPIUnreachable) and not self._api.reached:
            # See UNREACHED_ATTEMPTS. The error names the URL and the setting:
            # it is the one message the user needs, so retries stay quiet.
            if failures >= min(UNREACHED_ATTEMPTS, attempts):
                raise error
        else:
            self._log_failure(pool_key, failures, error)
            if failures >= attempts:
                raise SessionsUnavailable(
                    f"{attempts} sessions.create attempt(s) failed "
                    f"(SCRAPPEY_SESSION_CREATE_ATTEMPTS); last error: {error}"
                ) from None
        return self._api.backoff(failures)

    def _over_limit_delay(
        self, wait: _OverLimitWait, pool_key: str, error: Exception
    ) -> float:
        """Seconds until the next try at the session limit; raise once the wait is over."""
        if wait.tries == 1:
            logger.warning(
                "sessions.create for pool %(pool)r: the account has too many sessions "
                "open (%(error)s); retrying for up to %(wait)gs "
                "(SCRAPPEY_SESSION_OVER_LIMIT_WAIT) while the API closes idle ones",
                {"pool": pool_key, "error": error, "wait": wait.limit},
                extra=self._extra,
            )
        left = wait.left()
        if left <= 0:
            raise SessionsUnavailable(
                f"the account's session limit did not free up within {wait.limit:g}s "
                f"(SCRAPPEY_SESSION_OVER_LIMIT_WAIT); last error: {error}"
            )
        return min(left, self._api.backoff(wait.tries))

    def _log_failure(self, pool_key: str, attempt: int, error: Exception) -> None:
        logger.warning(
            "sessions.create failed for pool %(pool)r (attempt %(n)d of %(of)d): %(error)s",
            {
                "pool": pool_key,
                "n": attempt,
                "of": self._config.create_attempts,
                "error": error,
            },
            extra=self._extra,
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

    def _failed(
        self,
        error: ScrappeyTransportError | ScrappeyAPIError,
        *,
        first_over_limit: bool,
    ) -> None:
        self._stats.inc_value("scrappey/sessions/create_failed")
        if isinstance(error, ScrappeyAPIUnreachable):
            return  # never sent: nothing to destroy
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
            if first_over_limit:
                # Once per create: evicting at every retry of a long wait
                # would empty the crawl's own pools.
                self._cap.evict()


class _OverLimitWait:
    """The CODE-0029 wait of one create: it starts at the first such reply."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.tries = 0
        self._since: float | None = None

    @property
    def started(self) -> bool:
        return self._since is not None

    def covers(self, error: Exception) -> bool:
        """Whether *error* is waited out (and count it) rather than an attempt."""
        if (
            not isinstance(error, ScrappeyAPIError)
            or error.kind is not ErrorKind.SESSION_LIMIT
            or not self.limit
        ):
            return False
        if self._since is None:
            self._since = time.monotonic()
        self.tries += 1
        return True

    def left(self) -> float:
        assert self._since is not None
        return self._since + self.limit - time.monotonic()
