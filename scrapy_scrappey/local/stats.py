"""Counters the local server keeps about what it was asked to do.

Tests read them (``server.stats()`` or ``GET /__local__/stats``) to prove
client behaviour: that every command named its session, that a session was
created before it was used, how many requests ran at once on one session,
how many sessions were ever open at once (``max_open``), how many
``sessions.create`` got CODE-0029 (``over_limit``, injected ones included),
and when each session was created and closed (``session_events``).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

#: How many commands the ``commands`` log keeps (oldest dropped first).
COMMAND_LOG_SIZE = 10_000
#: How many characters of a command's ``url``, ``session`` and ``cookies``
#: the log keeps: a full log of multi-megabyte URLs would hold gigabytes.
LOGGED_CHARS = 512

_FAULT_COUNTERS = (
    "errors",
    "http_502",
    "truncated",
    "slow",
    "create_failures",
    "destroy_failures",
)


class Stats:
    """Mutable counters; :meth:`snapshot` renders the documented JSON shape."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter and clear the command log."""
        self.sessions: Counter[str] = Counter()
        self.max_open = 0
        self.over_limit = 0
        self.session_events: deque[dict[str, Any]] = deque(maxlen=COMMAND_LOG_SIZE)
        self.by_command: Counter[str] = Counter()
        self.total = 0
        self.per_session: Counter[str] = Counter()
        self.max_concurrent: dict[str, int] = {}
        self.faults: Counter[str] = Counter(dict.fromkeys(_FAULT_COUNTERS, 0))
        self.errors_by_session: dict[str, list[int]] = {}
        self.block_pages: Counter[str] = Counter()
        self.banned_sessions: dict[str, str] = {}
        self.commands: deque[dict[str, Any]] = deque(maxlen=COMMAND_LOG_SIZE)

    def command(
        self,
        cmd: str,
        session: str | None,
        url: str | None,
        cookies: str | None = None,
    ) -> dict[str, Any]:
        """Record one received command (invalid ones under ``"invalid"``);
        *cookies* is its ``cookies`` string, the cookies sent by the client.

        Returns its log entry, which gets an ``outcome`` once answered.
        """
        self.total += 1
        self.by_command[cmd] += 1
        entry = {
            "cmd": cmd,
            "session": clip(session),
            "url": clip(url),
            "cookies": clip(cookies),
            "t": time.time(),
        }
        self.commands.append(entry)
        return entry

    def session_event(self, event: str, session: str, open_now: int) -> None:
        """Record *session* ``created``, ``destroyed``, ``expired`` or ``lost``,
        leaving *open_now* sessions open."""
        self.sessions[event] += 1
        self.max_open = max(self.max_open, open_now)
        self.session_events.append(
            {"event": event, "session": clip(session), "t": time.time()}
        )

    def fault(self, name: str) -> None:
        """Count one injected fault (a key of the ``faults`` object)."""
        self.faults[name] += 1

    def session_error(self, session: str) -> None:
        """Record an injected error answered to a ``request.*`` on *session*.

        Kept as the ordinals of the failed requests among the session's
        ``request.*`` commands (1 = its first), so that tests can tell whether
        a session was used again after failing.
        """
        ordinal = self.per_session[session]
        self.errors_by_session.setdefault(session, []).append(ordinal)

    def ban(self, session: str, vendor: str) -> None:
        """Record a *vendor* block page served to a banned *session*."""
        self.block_pages[vendor] += 1
        self.banned_sessions[session] = vendor

    def request_started(self, session: str, concurrent: int) -> None:
        """Count a ``request.*`` on *session*, now running *concurrent* at once."""
        self.per_session[session] += 1
        if concurrent > self.max_concurrent.get(session, 0):
            self.max_concurrent[session] = concurrent

    def snapshot(self, open_sessions: list[str]) -> dict[str, Any]:
        """The ``/__local__/stats`` document."""
        return {
            "sessions": {
                "created": self.sessions["created"],
                "destroyed": self.sessions["destroyed"],
                "expired": self.sessions["expired"],
                "open": len(open_sessions),
            },
            "open_sessions": open_sessions,
            "max_open": self.max_open,
            "over_limit": self.over_limit,
            "session_events": list(self.session_events),
            "requests": {"total": self.total, "by_command": dict(self.by_command)},
            "requests_per_session": dict(self.per_session),
            "max_concurrent_per_session": max(self.max_concurrent.values(), default=0),
            "max_concurrent_by_session": dict(self.max_concurrent),
            "faults": dict(self.faults),
            "errors_by_session": {
                sid: list(ordinals) for sid, ordinals in self.errors_by_session.items()
            },
            "bans": {
                "block_pages": sum(self.block_pages.values()),
                "by_vendor": dict(self.block_pages),
                "sessions": dict(self.banned_sessions),
            },
            "commands": list(self.commands),
        }


def clip(text: str | None, limit: int = LOGGED_CHARS) -> str | None:
    """*text* cut to *limit* characters, marked with ``…`` when it was longer."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
