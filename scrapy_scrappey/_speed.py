"""Telling the user what the session settings mean for speed.

A pool serves at most its sessions times their concurrency at once; the
others wait for a lease, which looks like a slow crawl with nothing to say
why. The start-up line states the capacity, and the first long wait says
which settings raise it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._pools import Session
    from .config import Config

logger = logging.getLogger(__name__)

#: Seconds a request may wait for a session before the hint is logged.
SLOW_LEASE_WAIT = 5.0


def capacity(config: Config) -> str:
    """The start-up line's pool capacity: its size times the per-session concurrency."""
    return (
        f"{config.pool_size} session(s) per pool \u00d7 "
        f"{config.session_concurrency} request(s) each"
    )


class SlowLeaseHint:
    """Logs, once per crawl, that requests wait long for a session."""

    def __init__(self, config: Config, extra: dict[str, Any]) -> None:
        self._config = config
        self._extra = extra
        self._said = False

    async def timed(self, pool: str, lease: Awaitable[Session]) -> Session:
        """Await *lease* (of a session of *pool*); hint if it took long."""
        start = time.monotonic()
        session = await lease
        waited = time.monotonic() - start
        if waited > SLOW_LEASE_WAIT and not self._said:
            self._said = True
            logger.info(
                "A request waited %(waited).1fs for a free Scrappey session of pool "
                "%(pool)r (%(capacity)s): raise SCRAPPEY_SESSION_POOL_SIZE (and "
                "SCRAPPEY_SESSION_CONCURRENCY, if the site allows parallel "
                "requests in one browser) to send more requests at once",
                {"waited": waited, "pool": pool, "capacity": capacity(self._config)},
                extra=self._extra,
            )
        return session
