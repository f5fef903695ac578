"""The server-side session registry.

Session rules (all set on :class:`~scrapy_scrappey.local.server.LocalScrappey`):

* **Ids** come from the client (``sessions.create`` with ``session``) or are
  generated (uuid4). Creating an id that is already open is an idempotent
  success.
* **Idle expiry**: a session not used for ``ttl`` seconds (default 240, as
  CODE-0029's documented text says) is removed and counted as *expired*.
  Checked lazily whenever a command looks the session up, and by a periodic
  sweep. A session with a request in flight is never idle. ``None`` disables
  expiry.
* **Cap**: at most ``max_sessions`` open sessions (default 100); creating one
  more is answered with CODE-0029.

A removed session's resources (its HTTP client and cookie jar) are released
only once its in-flight requests have finished, so a destroy racing a request
does not break that request.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapy_scrappey.codes import SESSION_LIMIT_CODE
from scrapy_scrappey.local.protocol import ApiError
from scrapy_scrappey.local.stats import clip

if TYPE_CHECKING:
    from scrapy_scrappey.local.stats import Stats

logger = logging.getLogger(__name__)

_USER_AGENTS: dict[str, str] = {
    "chrome": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    ),
    "firefox": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 "
        "Firefox/133.0"
    ),
    "safari": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Safari/605.1.15"
    ),
}
DEFAULT_USER_AGENT = _USER_AGENTS["chrome"]


@dataclass(eq=False)
class LocalSession:
    """One open session: its creation parameters and usage counters."""

    id: str
    params: dict[str, Any]
    user_agent: str
    created_at: float = field(default_factory=time.time)
    last_accessed: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    requests: int = 0
    inflight: int = 0
    closed: bool = False
    #: The URL of its latest ``request.*`` and the credits its requests cost.
    last_url: str | None = None
    charged: float = 0.0

    def touch(self) -> None:
        """Mark the session as used now."""
        self.last_accessed = time.time()
        self.last_used = time.monotonic()

    def fingerprint(self) -> dict[str, Any]:
        """The ``fingerprint`` object of the ``sessions.create`` reply."""
        locales = self.params.get("locales")
        return {
            "userAgent": self.user_agent,
            "browser": _browser_name(self.params),
            "locales": locales if isinstance(locales, list) else ["en-US"],
            "screen": {"width": 1920, "height": 1080},
        }


Closer = Callable[[LocalSession], Awaitable[None]]


class SessionRegistry:
    """Open sessions by id, with expiry, a cap and the session counters."""

    def __init__(
        self, *, ttl: float | None, max_sessions: int, stats: Stats, closer: Closer
    ) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._stats = stats
        self._closer = closer
        self._open: dict[str, LocalSession] = {}

    async def create(
        self, session_id: str | None, params: dict[str, Any]
    ) -> LocalSession:
        """Open a session (or return the open one with that id); CODE-0029 at the cap."""
        if session_id is not None and (existing := await self.get(session_id)):
            return existing
        await self.sweep()
        # sweep() may have yielded to a concurrent create of the same id.
        if session_id is not None and (existing := self._open.get(session_id)):
            return existing
        if len(self._open) >= self.max_sessions:
            raise ApiError(SESSION_LIMIT_CODE)
        session = LocalSession(
            id=session_id or str(uuid.uuid4()),
            params=params,
            user_agent=user_agent_for(params),
        )
        self._open[session.id] = session
        self._note(session, "created")
        return session

    async def get(self, session_id: str) -> LocalSession | None:
        """The open session with that id, expiring it first if it has gone idle."""
        session = self._open.get(session_id)
        if session is not None and self._is_idle(session):
            await self.expire(session)
            return None
        return session

    async def destroy(self, session_id: str, only: LocalSession | None = None) -> bool:
        """Close a session on request; ``False`` when it is not open.

        With *only*, close it only if that very session still holds the id
        (not a new one created under the same id meanwhile).
        """
        session = await self.get(session_id)
        if session is None or (only is not None and session is not only):
            return False
        await self._retire(session, "destroyed")
        return True

    async def expire(self, session: LocalSession, event: str = "expired") -> None:
        """Remove *session* and count it as *event* (``lost``: its browser died)."""
        if self._open.get(session.id) is session:
            await self._retire(session, event)

    async def sweep(self) -> int:
        """Expire every idle session; return how many."""
        idle = [s for s in self._open.values() if self._is_idle(s)]
        for session in idle:
            await self.expire(session)
        return len(idle)

    def begin_request(self, session: LocalSession) -> int:
        """Note a request starting on *session*; return how many now run on it."""
        session.touch()
        session.requests += 1
        session.inflight += 1
        return session.inflight

    async def end_request(self, session: LocalSession) -> None:
        """Note a request ending; release a retired session's resources when idle."""
        session.inflight -= 1
        session.touch()
        if session.closed and session.inflight == 0:
            await self._closer(session)

    def sessions(self) -> list[LocalSession]:
        """The open sessions, oldest first."""
        return list(self._open.values())

    async def close_all(self) -> None:
        """Release every session, in flight or not (server shutdown)."""
        sessions, self._open = list(self._open.values()), {}
        for session in sessions:
            session.closed = True
            await self._closer(session)

    async def _retire(self, session: LocalSession, event: str) -> None:
        del self._open[session.id]
        self._note(session, event)
        session.closed = True
        if session.inflight == 0:
            await self._closer(session)

    def _note(self, session: LocalSession, event: str) -> None:
        logger.info("Session %s %s", clip(session.id), event)
        self._stats.session_event(event, session.id, len(self._open))

    def _is_idle(self, session: LocalSession) -> bool:
        if self.ttl is None or session.inflight:
            return False
        return time.monotonic() - session.last_used > self.ttl


def user_agent_for(params: dict[str, Any]) -> str:
    """The user agent a session (or a one-off request) presents."""
    agent = params.get("userAgent")
    if isinstance(agent, str) and agent:
        return agent
    return _USER_AGENTS.get(_browser_name(params), DEFAULT_USER_AGENT)


def _browser_name(params: dict[str, Any]) -> str:
    specs = params.get("browser")
    first = specs[0] if isinstance(specs, list) and specs else specs
    name = first.get("name") if isinstance(first, dict) else first
    return name if isinstance(name, str) and name in _USER_AGENTS else "chrome"
