"""Destroying the sessions that dead crawls left in the session ledger.

A crawl does it when it starts, ``python -m scrapy_scrappey sessions cleanup``
on demand. Both collect the orphans by session id, destroy them with their own
API client and forget, in the ledger, exactly those that are gone; the two
entry points differ only in how the destroy step is called, since the command
line blocks on ``requests`` where a crawl awaits aiohttp.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Iterable

    from scrapy import Spider
    from scrapy.statscollectors import StatsCollector

    from .ledger import LedgerEntry, SessionLedger

logger = logging.getLogger(__name__)

_REST = (
    "; the other %(rest)d stay in the ledger for the next crawl or "
    "`python -m scrapy_scrappey sessions cleanup`"
)


@dataclass(frozen=True)
class Sweep:
    """What one cleanup tried to destroy, and what is gone now."""

    #: The session ids sent to the destroy step, orphans first.
    targets: list[str]
    #: Those destroyed, or found already gone; the others stay in the ledger.
    gone: frozenset[str]

    @property
    def failed(self) -> list[str]:
        return [sid for sid in self.targets if sid not in self.gone]


async def destroy_orphans(
    ledger: SessionLedger,
    destroy: Callable[[list[str]], Awaitable[Collection[str]]],
    *,
    also: Iterable[str] = (),
) -> Sweep:
    """Destroy what dead runs recorded in *ledger* (and the ids in *also*).

    *destroy* gets the session ids and returns those that no longer exist.
    Raises :class:`OSError` if the ledger cannot be read.
    """
    targets = _targets(ledger, also)
    gone = await destroy(list(targets)) if targets else ()
    return _forget(ledger, targets, gone)


async def sweep_at_start(
    ledger: SessionLedger,
    destroy: Callable[[list[str]], Awaitable[Collection[str]]],
    stats: StatsCollector,
    spider: Spider | None,
) -> None:
    """A crawl's start: :func:`destroy_orphans`, counted and logged, never fatal."""
    extra = {"spider": spider}
    try:
        sweep = await destroy_orphans(ledger, destroy)
    except OSError as ex:
        # Cleaning up after an earlier crash must not stop this crawl.
        logger.warning(
            "Could not read the Scrappey session ledger: %(error)s",
            {"error": ex},
            extra=extra,
        )
        return
    if not sweep.targets:
        return
    stats.inc_value("scrappey/sessions/orphans_found", len(sweep.targets))
    stats.inc_value("scrappey/sessions/orphans_destroyed", len(sweep.gone))
    logger.warning(
        "Found %(n)d Scrappey session(s) left open by an earlier crawl that did not "
        "shut down cleanly; destroyed %(ok)d" + (_REST if sweep.failed else ""),
        {"n": len(sweep.targets), "ok": len(sweep.gone), "rest": len(sweep.failed)},
        extra=extra,
    )


def destroy_orphans_blocking(
    ledger: SessionLedger,
    destroy: Callable[[list[str]], Collection[str]],
    *,
    also: Iterable[str] = (),
) -> Sweep:
    """:func:`destroy_orphans` with a blocking *destroy* (the command line)."""
    targets = _targets(ledger, also)
    gone = destroy(list(targets)) if targets else ()
    return _forget(ledger, targets, gone)


def _targets(
    ledger: SessionLedger, also: Iterable[str]
) -> dict[str, list[LedgerEntry]]:
    """Session ids to destroy, each with the ledger entries naming it.

    Two dead runs may name the same session (a resumed job): it is destroyed once.
    """
    targets: dict[str, list[LedgerEntry]] = {}
    for entry in ledger.orphans():
        targets.setdefault(entry.session_id, []).append(entry)
    for session_id in also:
        targets.setdefault(session_id, [])
    return targets


def _forget(
    ledger: SessionLedger,
    targets: dict[str, list[LedgerEntry]],
    gone: Collection[str],
) -> Sweep:
    for entry in (
        e for sid, entries in targets.items() if sid in gone for e in entries
    ):
        _forget_one(ledger, entry)
    return Sweep(list(targets), frozenset(gone))


def _forget_one(ledger: SessionLedger, entry: LedgerEntry) -> None:
    try:
        ledger.forget_orphan(entry)
    except OSError as ex:
        # The session is gone: a stale line only costs the next cleanup a
        # "not found", so a write error must not stop this one.
        logger.warning(
            "Could not update the Scrappey session ledger: %(error)s", {"error": ex}
        )
