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
    from .pool_config import PoolSettings

logger = logging.getLogger(__name__)

#: Seconds a request may wait for a session before the hint is logged.
SLOW_LEASE_WAIT = 5.0


def capacity(config: Config, pool: str | None = None) -> str:
    """Pool *pool*'s capacity (a manager key): its size times the per-session
    concurrency. Without *pool*, for the start-up line: that of the scope's
    pools, then of each pool ``SCRAPPEY_SESSION_POOLS`` configures."""
    if pool is not None:
        return _capacity(config.pool_settings(pool))
    scope = config.session_scope
    text = _capacity(config.pool_settings("spider" if scope == "spider" else "domain:"))
    own = [
        (label, config.pool_settings(config.session_pools.manager_key(label, scope)))
        for label in config.session_pools.pools
    ]
    if own:
        text += "; " + ", ".join(
            f"pool {label!r} {s.size} \u00d7 {s.concurrency}" for label, s in own
        )
    return text


def _capacity(settings: PoolSettings) -> str:
    return (
        f"{settings.size} session(s) per pool \u00d7 "
        f"{settings.concurrency} request(s) each"
    )


def _advice(config: Config, pool: str) -> str:
    label = pool_label(pool)
    if pool.startswith("name:") or config.session_pools.own(pool) is not None:
        # A pool's own entry wins (a named pool's size is always its own).
        return (
            f"give it a 'size' (and 'concurrency') in SCRAPPEY_SESSION_POOLS[{label!r}]"
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
                    "advice": _advice(self._config, pool),
                },
                extra=self._extra,
            )
        return session
