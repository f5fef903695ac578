"""Session stats, also per pool with ``SCRAPPEY_STATS_PER_POOL``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .pool_config import pool_label

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector


class PoolStats:
    """Increments a ``scrappey/…`` stat and, per pool, its ``scrappey/pools/<pool>/…`` twin."""

    def __init__(self, stats: StatsCollector, *, per_pool: bool) -> None:
        self._stats = stats
        self._per_pool = per_pool

    def inc(self, key: str, pool: str | None, count: int = 1) -> None:
        """Add *count* to *key* (``scrappey/sessions/created``, ``scrappey/requests``…).

        With per-pool stats and a *pool* (a session manager key), also to
        ``scrappey/pools/<pool>/created`` (``…/requests``…).
        """
        self._stats.inc_value(key, count)
        if self._per_pool and pool is not None:
            name = key.removeprefix("scrappey/").removeprefix("sessions/")
            self._stats.inc_value(f"scrappey/pools/{pool_label(pool)}/{name}", count)
