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

from .pool_config import pool_label

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._pools import Session
    from .config import Config

logger = logging.getLogger(__name__)

#: Seconds a request may wait for a session before the hint is logged.
SLOW_LEASE_WAIT = 5.0


def capacity(config: Config, pool: str = "spider") -> str:
    """Pool *pool*'s capacity (a manager key; by default the settings every
    scope pool gets): its size times the per-session concurrency."""
    own = config.pool_settings(pool)
    return f"{own.size} session(s) per pool \u00d7 {own.concurrency} request(s) each"


def _advice(pool: str) -> str:
    if pool.startswith("name:"):
        # A named pool's size is its own: the global setting does not reach it.
        name = pool.removeprefix("name:")
        return (
            f"give it a 'size' (and 'concurrency') in SCRAPPEY_SESSION_POOLS[{name!r}]"
        )
    return (
        "raise SCRAPPEY_SESSION_POOL_SIZE (and SCRAPPEY_SESSION_CONCURRENCY, if "
        "the site allows parallel requests in one browser)"
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
                "%(pool)r (%(capacity)s): %(advice)s to send more requests at once",
                {
                    "waited": waited,
                    "pool": pool_label(pool),
                    "capacity": capacity(self._config, pool),
                    "advice": _advice(pool),
                },
                extra=self._extra,
            )
        return session
