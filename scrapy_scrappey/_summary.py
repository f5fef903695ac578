"""The INFO lines a crawl logs about Scrappey when the spider opens and closes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._redact import key_hint
from ._speed import capacity

if TYPE_CHECKING:
    from .config import Config

_START = (
    "Scrappey: routing %(what)s requests through %(url)s with the key %(key)r, "
    "session scope %(scope)r, %(capacity)s"
)

_SUMMARY = (
    "Scrappey: %(requests)d API request(s); sessions created %(created)d, destroyed "
    "%(destroyed)d, replaced %(recreated)d, retired %(retired)d, leaked %(leaked)d; "
    "inits ok %(init_ok)d, failed %(init_failed)d; checks failed %(check_failed)d"
)
_BANS = "; bans %(bans)s"  # only in crawls that met some
_COST = (
    "; cost %(cost)g (wasted %(wasted)g), balance %(balance_start)s → %(balance_end)s"
)
# Only in crawls that found some; never mixed into this crawl's own counts.
_ORPHANS = (
    "; sessions of earlier crawls: found %(orphans)d, destroyed %(orphans_destroyed)d"
)


def start_line(config: Config) -> tuple[str, dict[str, Any]]:
    """The line logged when the spider opens (the key shown as a hint only)."""
    return _START, {
        "what": "all" if config.transparent else "opted-in",
        "url": config.api_url,
        "key": key_hint(config.api_key),
        "scope": config.session_scope,
        "capacity": capacity(config),
    }


def summary(stats: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The summary's %-style message and its arguments, from the crawl's stats."""
    retired = sum(
        v for k, v in stats.items() if k.startswith("scrappey/sessions/retired/")
    )
    bans = ", ".join(
        f"{key.removeprefix('scrappey/bans/')} {count}"
        for key, count in sorted(stats.items())
        if key.startswith("scrappey/bans/")
    )
    orphans = stats.get("scrappey/sessions/orphans_found", 0)
    message = _SUMMARY + (_BANS if bans else "") + _COST + (_ORPHANS if orphans else "")
    return message, {
        "requests": stats.get("scrappey/requests", 0),
        "created": stats.get("scrappey/sessions/created", 0),
        "destroyed": stats.get("scrappey/sessions/destroyed", 0),
        "recreated": stats.get("scrappey/sessions/recreated", 0),
        "retired": retired,
        "leaked": stats.get("scrappey/sessions/leaked", 0),
        "init_ok": stats.get("scrappey/sessions/init/ok", 0),
        "init_failed": stats.get("scrappey/sessions/init/failed", 0),
        "check_failed": stats.get("scrappey/sessions/check_failed", 0),
        "bans": bans,
        "cost": stats.get("scrappey/cost/total", 0),
        "wasted": stats.get("scrappey/cost/wasted", 0),
        "balance_start": _number(stats.get("scrappey/balance/start")),
        "balance_end": _number(stats.get("scrappey/balance/end")),
        "orphans": orphans,
        "orphans_destroyed": stats.get("scrappey/sessions/orphans_destroyed", 0),
    }


def _number(value: float | None) -> str:
    """A balance as the summary shows it: ``?`` when the endpoint did not answer."""
    return "?" if value is None else f"{value:g}"
