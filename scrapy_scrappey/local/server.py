"""The local Scrappey server: :class:`LocalScrappey` (handlers in ``routes.py``).

Routes (all on ``base_url``):

* ``POST /api/v1?key=KEY``: the API commands (see ``commands.py``).
* ``GET /api/v1/balance?key=KEY``: ``{"balance": <number>}``.
* ``GET /``: a live dashboard of sessions, commands, faults and balance.
* ``GET /__local__/stats``, ``POST /__local__/reset``: introspection.
* ``GET`` / ``POST /__local__/faults``: read or replace the injected faults
  (the body is a JSON object of :class:`~scrapy_scrappey.local.faults.Faults`
  fields; absent fields take their defaults).

The dashboard and the ``/__local__`` routes need no key on a loopback bind:
they are for the developer and the test harness. Bound elsewhere, the server
needs ``api_key`` and these routes want it too (``?key=``). Every
error, including an unknown route, a wrong method or an oversized body, is
answered with the JSON error envelope (see ``listener.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from scrapy_scrappey._redact import key_hint
from scrapy_scrappey.local.billing import Billing
from scrapy_scrappey.local.commands import CommandHandler, UnknownSession
from scrapy_scrappey.local.dashboard import check_exposure, dashboard_data
from scrapy_scrappey.local.engine import Engine, HttpEngine, StaticEngine
from scrapy_scrappey.local.engine_choice import ENGINE_MODES, start_browser_engine
from scrapy_scrappey.local.faults import FaultInjector, Faults
from scrapy_scrappey.local.listener import json_errors, listen, read_body
from scrapy_scrappey.local.protocol import API_PATH, BALANCE_PATH
from scrapy_scrappey.local.resolve import chromium_args, parse_resolve
from scrapy_scrappey.local.routes import Routes
from scrapy_scrappey.local.sessions import SessionRegistry
from scrapy_scrappey.local.stats import Stats

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    # typing.Self needs Python 3.11.
    from typing_extensions import Self

    from scrapy_scrappey.local.engine_choice import EngineMode
    from scrapy_scrappey.local.sessions import LocalSession

logger = logging.getLogger(__name__)

#: Where ``video: true`` recordings are served (browser engine).
VIDEO_PATH = "/__local__/videos/"
#: Default session cap with the browser engine: each context costs 17-65 MiB.
BROWSER_MAX_SESSIONS = 20
# Request bodies carry postData; the aiohttp default of 1 MiB is too tight.
_MAX_BODY = 64 * 1024 * 1024


class LocalScrappey(Routes):
    """A Scrappey-compatible API server on this machine, for tests and benchmarks.

    Use it inside a running event loop::

        async with LocalScrappey() as server:
            ...  # point the client at server.url

    Arguments (all keyword-only):

    * ``api_key``: the only key accepted (HTTP 401 otherwise); ``None``
      accepts any key, or none.
    * ``host`` / ``port``: where to listen; port 0 picks a free port.
    * ``session_ttl``: idle seconds before a session expires (default 240);
      ``None`` or 0 disables expiry.
    * ``max_sessions``: cap on open sessions (default 100, 20 with the
      browser engine); one more ``sessions.create`` gets CODE-0029.
    * ``engine``: ``"http"`` (default: aiohttp), ``"browser"`` (Chromium via
      Playwright, one context per session; the start fails if it cannot
      launch) or ``"auto"`` (the browser when it launches, else http); or
      an engine object, shared with other servers and not closed by this one.
    * ``chromium``: the Chromium executable (default: ``$SCRAPPEY_LOCAL_CHROMIUM``,
      else ``chromium`` on ``PATH``).
    * ``unknown_session``: what a ``request.*`` naming a session that is not
      open gets: ``"error"`` (default) an error envelope
      ``"Session not found: <id>"``; ``"create"`` the session is created on
      the spot (the real API's behaviour is undocumented).
    * ``faults``: a :class:`Faults` to inject; also ``server.faults``.
    * ``static_body``: answer every ``request.*`` with this HTML page
      (status 200, ``currentUrl`` = the requested URL) and fetch nothing.
    * ``balance``: starting credits (default 1000).
    * ``prices``: what a successful, verified ``request.*`` costs per
      ``solution.type`` (default ``{"browser": 1, "request": 0.2}``), plus
      its ``additionalCost``; failures cost nothing, and a request the
      balance cannot pay for gets an ``"Insufficient balance"`` error.
      ``stats()["charged"]`` holds the totals.
    * ``read_timeout``: seconds a client has to send a request's headers,
      then its body (default 30); a connection that stalls is closed, a
      stalled body answered with HTTP 408.
    * ``resolve``: ``{host pattern: IP address}``, e.g. ``{"*.test":
      "127.0.0.1"}``: both engines connect to that address for matching hosts
      (keeping the URL's port, Host header and cookies; see ``resolve.py``).

    Session rules in short (details in ``sessions.py``): ids come from the
    client or are uuid4s; re-creating an open id succeeds with the same id;
    idle expiry is checked on every lookup and by a sweep every ``ttl / 4``
    seconds (at most 5), and counted as ``expired`` in :meth:`stats`; a
    session with a request in flight never expires; ``sessions.destroy`` of
    an id that is not open answers ``"Session not found: <id>"``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        session_ttl: float | None = 240.0,
        max_sessions: int | None = None,
        unknown_session: UnknownSession = "error",
        faults: Faults | None = None,
        static_body: str | None = None,
        balance: float = 1000.0,
        prices: Mapping[str, float] | None = None,
        read_timeout: float = 30.0,
        engine: EngineMode | Engine = "http",
        chromium: str | None = None,
        resolve: Mapping[str, str] | None = None,
    ) -> None:
        _check_args(session_ttl, max_sessions, unknown_session, read_timeout)
        self._resolve = parse_resolve(resolve)
        if self._resolve and not isinstance(engine, str):
            raise ValueError(
                "resolve applies to the engines the server creates; pass it to "
                "the engine object (HttpEngine(resolve=...)) instead"
            )
        check_exposure(host, api_key)
        self._engine_mode = _engine_mode(engine, static_body)
        self._owns_engine = isinstance(engine, str)
        self._chromium = chromium
        self._max_sessions = max_sessions
        self._api_key = api_key or None
        self._read_timeout = read_timeout
        self._host = host
        self._requested_port = port
        self._stats = Stats()
        self._injector = FaultInjector(faults or Faults())
        self._engine: Engine = HttpEngine(self._resolve)
        if not isinstance(engine, str):
            self._engine = engine
        elif static_body is not None:
            self._engine = StaticEngine(static_body)
        self._registry = SessionRegistry(
            ttl=session_ttl or None,
            max_sessions=100 if max_sessions is None else max_sessions,
            stats=self._stats,
            closer=self._release,
        )
        self._handler = self._command_handler(unknown_session, Billing(balance, prices))
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._port: int | None = None

    def _command_handler(
        self, unknown_session: UnknownSession, billing: Billing
    ) -> CommandHandler:
        return CommandHandler(
            registry=self._registry,
            engine=self._engine,
            stats=self._stats,
            injector=lambda: self._injector,
            unknown_session=unknown_session,
            billing=billing,
        )

    @property
    def faults(self) -> Faults:
        """The live fault configuration; mutate it, or assign a new one."""
        return self._injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        faults.validate()
        self._injector = FaultInjector(faults)
        logger.info("Faults set: %s", faults)

    @property
    def api_key(self) -> str | None:
        """The accepted key (``None``: any); assign to rotate or revoke it live."""
        return self._api_key

    @api_key.setter
    def api_key(self, key: str | None) -> None:
        self._api_key = key or None
        shown = key_hint(key) if key else "any key accepted"
        logger.info("API key changed (now: %s)", shown)

    @property
    def port(self) -> int:
        """The port actually listened on."""
        if self._port is None:
            raise RuntimeError("LocalScrappey is not running; call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{_url_host(self._host)}:{self.port}"

    @property
    def url(self) -> str:
        """The API URL, ``http://127.0.0.1:PORT/api/v1``."""
        return self.base_url + API_PATH

    @property
    def balance(self) -> float:
        """Credits left."""
        return self._handler.billing.balance

    @property
    def engine(self) -> Engine:
        """The fetch engine in use (settled by :meth:`start`)."""
        return self._engine

    def stats(self) -> dict[str, Any]:
        """What the server has seen; the ``/__local__/stats`` document."""
        sessions = self._registry.sessions()
        doc = self._stats.snapshot([s.id for s in sessions])
        doc.update(dashboard_data(self._engine, sessions, self.balance))
        doc["charged"] = self._handler.billing.snapshot()
        if self._stats.sessions["lost"]:
            # Sessions whose browser died (browser engine only).
            doc["sessions"]["lost"] = self._stats.sessions["lost"]
        return doc

    def reset(self) -> None:
        """Zero the stats counters and totals charged (sessions stay open,
        faults and the balance stay set)."""
        self._stats.reset()
        self._handler.billing.reset()

    def make_app(self) -> web.Application:
        """The aiohttp application, for callers that run it themselves."""
        app = web.Application(
            client_max_size=_MAX_BODY, middlewares=[json_errors, self._guard]
        )
        app.router.add_get("/", self._dashboard)
        app.router.add_get(VIDEO_PATH + "{id}", self._video)
        app.router.add_post(API_PATH, self._api)
        app.router.add_get(BALANCE_PATH, self._balance)
        app.router.add_get("/__local__/stats", self._get_stats)
        app.router.add_post("/__local__/reset", self._reset)
        app.router.add_get("/__local__/faults", self._get_faults)
        app.router.add_post("/__local__/faults", self._set_faults)
        return app

    async def start(self) -> None:
        """Start listening (inside the running event loop)."""
        if self._runner is not None:
            return
        await self._choose_engine()
        runner = web.AppRunner(self.make_app(), shutdown_timeout=2.0)
        await runner.setup()
        try:
            self._listener = await listen(
                runner, self._host, self._requested_port, self._read_timeout
            )
        except BaseException:
            await runner.cleanup()
            if self._owns_engine:
                await self._engine.close()  # a launched Chromium included
            raise
        self._runner = runner
        self._port = int(self._listener.sockets[0].getsockname()[1])
        if hasattr(self._engine, "video_url"):
            self._engine.video_url = self.base_url + VIDEO_PATH
        self._sweeper = asyncio.create_task(self._sweep_forever())
        logger.info(
            "Local Scrappey listening on %s (key: %s)",
            self.url,
            _describe_key(self._api_key),
        )

    async def stop(self) -> None:
        """Stop listening and close every session and HTTP client."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
        await self._registry.close_all()
        if self._owns_engine:
            await self._engine.close()
        logger.info("Local Scrappey stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _choose_engine(self) -> None:
        browser = await start_browser_engine(
            self._engine_mode, self._chromium, self._lose, chromium_args(self._resolve)
        )
        if browser is not None:
            self._engine = browser
        self._handler.use_engine(self._engine)
        if hasattr(self._engine, "on_lost"):
            self._engine.on_lost = self._lose
        if self._max_sessions is None and self._engine.name == "browser":
            self._registry.max_sessions = BROWSER_MAX_SESSIONS

    async def _release(self, session: LocalSession) -> None:
        await self._engine.release(session)

    async def _lose(self, session: LocalSession) -> None:
        await self._registry.expire(session, event="lost")

    async def _read_body(self, request: web.Request) -> bytes:
        return await read_body(request, self._read_timeout, _MAX_BODY)

    async def _sweep_forever(self) -> None:
        ttl = self._registry.ttl
        if ttl is None:
            return
        interval = min(max(ttl / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._registry.sweep()
            except Exception:
                # A dead sweeper would silently stop expiry; keep it alive.
                logger.exception("Session sweep failed")


def _url_host(host: str) -> str:
    # A wildcard bind is reachable through loopback; IPv6 needs brackets.
    if host in ("", "0.0.0.0"):  # noqa: S104 - compared, not bound
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _describe_key(key: str | None) -> str:
    return key_hint(key) if key else "any key accepted"


def _engine_mode(engine: EngineMode | Engine, static_body: str | None) -> EngineMode:
    """What :meth:`LocalScrappey.start` should launch (``http``: nothing)."""
    if not isinstance(engine, str) or static_body is not None:
        return "http"
    if engine not in ENGINE_MODES:
        raise ValueError(
            f"engine must be one of {', '.join(ENGINE_MODES)}, got {engine!r}"
        )
    return engine


def _check_args(
    ttl: float | None, max_sessions: int | None, unknown: str, read_timeout: float
) -> None:
    if not read_timeout > 0:  # NaN included
        raise ValueError(f"read_timeout must be > 0, got {read_timeout!r}")
    if ttl is not None and ttl < 0:
        raise ValueError(f"session_ttl must be >= 0 or None, got {ttl!r}")
    if max_sessions is not None and max_sessions < 0:
        raise ValueError(f"max_sessions must be >= 0, got {max_sessions!r}")
    if unknown not in ("error", "create"):
        raise ValueError(
            f"unknown_session must be 'error' or 'create', got {unknown!r}"
        )
