"""The command handlers behind ``POST /api/v1``.

One :class:`CommandHandler` turns a raw request body into a :class:`Reply`:
it validates, records the command in the stats, applies session rules and
injected faults, and renders the envelope. Every failure a client can cause
becomes an error envelope (HTTP 200), never an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from scrapy_scrappey.codes import SESSION_LIMIT_CODE
from scrapy_scrappey.local.antibot_pages import blocked_result
from scrapy_scrappey.local.engine import SessionLost, TargetError
from scrapy_scrappey.local.faults import BAD_GATEWAY_HTML, FaultPlan, truncate_json
from scrapy_scrappey.local.protocol import (
    ALL_COMMANDS,
    REQUEST_ERROR_CODE,
    ApiError,
    error_envelope,
    server_bug,
    session_not_found,
    success_envelope,
)
from scrapy_scrappey.local.sessions import user_agent_for
from scrapy_scrappey.local.stats import clip
from scrapy_scrappey.local.translate import build_solution, build_spec
from scrapy_scrappey.local.validation import (
    MAX_SESSION_ID,
    check_browser,
    command_name,
    header_string,
    optional_session,
    parse_body,
    request_params,
    required_session,
)

if TYPE_CHECKING:
    from scrapy_scrappey.local.billing import Billing
    from scrapy_scrappey.local.engine import Engine
    from scrapy_scrappey.local.faults import FaultInjector
    from scrapy_scrappey.local.sessions import LocalSession, SessionRegistry
    from scrapy_scrappey.local.stats import Stats
    from scrapy_scrappey.local.validation import RequestParams

logger = logging.getLogger(__name__)

UnknownSession = Literal["error", "create"]
_Handler = Callable[[str, dict[str, Any], float], Awaitable["Reply"]]


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: a JSON *payload*, or raw *text* for malformed replies."""

    payload: dict[str, Any] | None = None
    text: str | None = None
    status: int = 200
    content_type: str = "application/json"


class CommandHandler:
    """Serves API commands against a session registry and a fetch engine."""

    def __init__(
        self,
        *,
        registry: SessionRegistry,
        engine: Engine,
        stats: Stats,
        injector: Callable[[], FaultInjector],
        unknown_session: UnknownSession,
        billing: Billing,
    ) -> None:
        self._registry = registry
        self._engine = engine
        self._stats = stats
        self._injector = injector
        self._unknown_session = unknown_session
        #: The balance, and what each successful ``request.*`` costs.
        self.billing = billing
        self._handlers: dict[str, _Handler] = {
            "sessions.create": self._create,
            "sessions.destroy": self._destroy,
            "sessions.list": self._list,
            "sessions.active": self._active,
        }

    def refuse(self, error: ApiError, started: float | None = None) -> Reply:
        """Answer a body that cannot be used at all (counted as ``invalid``)."""
        self._stats.command("invalid", None, None)
        logger.info("Answering with an error: %s", error.text)
        return _error(error, time.monotonic() if started is None else started, {})

    async def handle(self, raw: bytes) -> Reply:
        """Answer one ``POST /api/v1`` body."""
        started = time.monotonic()
        try:
            body = parse_body(raw)
        except ApiError as error:
            return self.refuse(error, started)
        entry = self._receive(body)
        reply = await self._answer(body, started)
        entry["outcome"] = _outcome(reply)
        return reply

    def use_engine(self, engine: Engine) -> None:
        """Serve later requests with *engine* (chosen once the server starts)."""
        self._engine = engine

    async def _answer(self, body: dict[str, Any], started: float) -> Reply:
        try:
            cmd = command_name(body)  # CODE-0004 unless a supported command
            handler = self._handlers.get(cmd, self._request)
            return await handler(cmd, body, started)
        except ApiError as error:
            logger.info("Answering with an error: %s", error.text)
            if (
                error.code == SESSION_LIMIT_CODE
                and body.get("cmd") == "sessions.create"
            ):
                self._stats.over_limit += 1
            return _error(error, started, body)
        except Exception:
            logger.exception("Internal error in the local Scrappey server")
            return _error(server_bug(), started, body)

    def _receive(self, body: dict[str, Any]) -> dict[str, Any]:
        """Count and log a command, valid or not, before anything can fail."""
        cmd, session, url = body.get("cmd"), body.get("session"), body.get("url")
        known = cmd if isinstance(cmd, str) and cmd in ALL_COMMANDS else "invalid"
        session = session if isinstance(session, str) else None
        url = url if isinstance(url, str) else None
        cookies = body.get("cookies")
        cookies = cookies if isinstance(cookies, str) else None
        entry = self._stats.command(known, session, url, cookies)
        # An invalid cmd can be anything the client sent: show a short repr.
        shown = known if known != "invalid" else f"invalid cmd {cmd!r:.60}"
        if url is None:
            logger.info("%s session=%s", shown, clip(session))
        else:
            logger.info("%s session=%s url=%s", shown, clip(session), clip(url))
        return entry

    async def _delay(self, cmd: str) -> None:
        seconds = self._injector().latency(cmd)
        if seconds:
            await asyncio.sleep(seconds)

    async def _create(self, cmd: str, body: dict[str, Any], started: float) -> Reply:
        check_browser(body)
        header_string(body, "userAgent")  # sent with every request of the session
        session_id = optional_session(body)
        await self._delay(cmd)
        if self._injector().take_create_failure():
            self._stats.fault("create_failures")
            raise ApiError(SESSION_LIMIT_CODE)
        params = {k: v for k, v in body.items() if k != "cmd"}
        session = await self._registry.create(session_id, params)
        return Reply(
            {
                "data": "success",
                "session": session.id,
                "fingerprint": session.fingerprint(),
                "context": {},
                "solution": {},
                "timeElapsed": _elapsed(started),
            }
        )

    async def _destroy(self, cmd: str, body: dict[str, Any], started: float) -> Reply:
        session_id = required_session(body, cmd)
        await self._delay(cmd)
        if self._injector().take_destroy_failure():
            self._stats.fault("destroy_failures")
            raise ApiError(REQUEST_ERROR_CODE, "injected fault")
        if not await self._registry.destroy(session_id):
            raise session_not_found(session_id)
        return Reply({"data": "success", "timeElapsed": _elapsed(started)})

    async def _list(self, cmd: str, body: dict[str, Any], started: float) -> Reply:
        await self._delay(cmd)
        await self._registry.sweep()
        sessions = [
            {"session": s.id, "lastAccessed": int(s.last_accessed * 1000)}
            for s in self._registry.sessions()
        ]
        return Reply(
            {
                "data": "success",
                "sessions": sessions,
                "open": len(sessions),
                "limit": self._registry.max_sessions,
                "timeElapsed": _elapsed(started),
            }
        )

    async def _active(self, cmd: str, body: dict[str, Any], started: float) -> Reply:
        session_id = required_session(body, cmd)
        await self._delay(cmd)
        active = await self._registry.get(session_id) is not None
        return Reply(
            {"data": "success", "active": active, "timeElapsed": _elapsed(started)}
        )

    async def _request(self, cmd: str, body: dict[str, Any], started: float) -> Reply:
        params = request_params(cmd, body)
        session = await self._resolve(params.session)
        plan = self._injector().plan_request(cmd)
        if session is None:
            return await self._serve(params, body, None, plan, started)
        self._stats.request_started(session.id, self._registry.begin_request(session))
        session.last_url = params.url
        ban = self._injector().ban_vendor(session.id, session.requests)
        if ban is not None:
            plan = dataclasses.replace(plan, ban=ban)
        limit = self._injector().faults.expire_after_requests
        if limit is not None and session.requests >= limit:
            # Removed now so that later commands already miss it; its client
            # stays usable until this request is done.
            await self._registry.expire(session)
        try:
            return await self._serve(params, body, session, plan, started)
        finally:
            if params.close_after_use:
                await self._registry.destroy(session.id, only=session)
            await self._registry.end_request(session)

    async def _resolve(self, session_id: str | None) -> LocalSession | None:
        if session_id is None:
            return None
        session = await self._registry.get(session_id)
        if session is not None:
            return session
        if self._unknown_session == "create":
            return await self._registry.create(session_id, {})
        raise session_not_found(session_id)

    async def _serve(
        self,
        params: RequestParams,
        body: dict[str, Any],
        session: LocalSession | None,
        plan: FaultPlan,
        started: float,
    ) -> Reply:
        if plan.slow:
            # Counted when injected: the client may give up before it ends.
            self._stats.fault("slow")
        if plan.delay:
            await asyncio.sleep(plan.delay)
        if plan.kind == "error":
            self._stats.fault("errors")
            if session is not None:
                self._stats.session_error(session.id)
            raise ApiError(plan.code, "injected fault")
        if plan.kind == "http_502":
            self._stats.fault("http_502")
            return Reply(text=BAD_GATEWAY_HTML, status=502, content_type="text/html")
        if plan.ban is not None and session is not None:
            self._stats.ban(session.id, plan.ban)
        payload = await self._fetch(params, body, session, plan.ban, started)
        if plan.kind == "truncated":
            self._stats.fault("truncated")
            return Reply(text=truncate_json(payload))
        return Reply(payload)

    async def _fetch(
        self,
        params: RequestParams,
        body: dict[str, Any],
        session: LocalSession | None,
        ban: str | None,
        started: float,
    ) -> dict[str, Any]:
        agent = session.user_agent if session else user_agent_for(body)
        spec = build_spec(params, agent)
        # What the reply's solution.type will say, and so what it costs: a
        # browser engine serves requestType "request" with its HTTP client.
        kind = "request" if spec.browser.plain_request else self._engine.name
        self.billing.check(kind)
        try:
            if ban is not None:
                # The anti-bot edge answers; the target never sees the request.
                result = blocked_result(ban, spec, kind)
            else:
                result = await self._engine.fetch(spec, session)
        except SessionLost as exc:
            assert session is not None
            await self._registry.expire(session, event="lost")
            raise session_not_found(session.id) from exc
        except TargetError as exc:
            raise ApiError(REQUEST_ERROR_CODE, str(exc)) from exc
        solution = build_solution(result, params)
        cost = self.billing.charge(solution)
        if session is not None:
            session.charged += cost
        return success_envelope(solution, _elapsed(started), params.session)


def _elapsed(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _outcome(reply: Reply) -> str:
    if reply.payload is None:
        return f"HTTP {reply.status} (raw reply)"
    if reply.payload.get("data") == "success":
        return "success"
    return str(reply.payload.get("error", "error"))[:200]


def _error(error: ApiError, started: float, body: dict[str, Any]) -> Reply:
    session = body.get("session")
    # A session id too long to be valid is not sent back.
    usable = isinstance(session, str) and 0 < len(session) <= MAX_SESSION_ID
    named = session if usable else None
    return Reply(error_envelope(error, _elapsed(started), named))
