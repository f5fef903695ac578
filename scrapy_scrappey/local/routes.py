"""The HTTP route handlers of :class:`~scrapy_scrappey.local.server.LocalScrappey`.

:class:`Routes` is a mixin: ``LocalScrappey`` inherits it and wires its
handlers into the aiohttp application (see ``server.py`` for the routes).
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from scrapy_scrappey.local.dashboard import DASHBOARD_HTML, needs_key
from scrapy_scrappey.local.faults import Faults
from scrapy_scrappey.local.listener import json_error
from scrapy_scrappey.local.protocol import INVALID_KEY_BODY, ApiError
from scrapy_scrappey.local.validation import parse_body

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from scrapy_scrappey.local.commands import CommandHandler, Reply
    from scrapy_scrappey.local.engine import Engine

logger = logging.getLogger(__name__)


class Routes:
    """The route handlers; the attributes below come from ``LocalScrappey``."""

    _host: str
    _api_key: str | None
    _read_timeout: float
    _engine: Engine
    _handler: CommandHandler
    faults: Faults

    if TYPE_CHECKING:

        def stats(self) -> dict[str, Any]: ...

        def reset(self) -> None: ...

        async def _read_body(self, request: web.Request) -> bytes: ...

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if needs_key(request, self._host) and not self._key_ok(request):
            return web.json_response(INVALID_KEY_BODY, status=401)
        return await handler(request)

    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=DASHBOARD_HTML, content_type="text/html")

    async def _video(self, request: web.Request) -> web.StreamResponse:
        videos = getattr(self._engine, "videos", None)
        if videos is None:
            raise web.HTTPNotFound(text="videos need the browser engine")
        response: web.StreamResponse = await videos.serve(request)
        return response

    def _key_ok(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        given = request.query.get("key", "")
        return hmac.compare_digest(given.encode(), self._api_key.encode())

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if not self._key_ok(request):
            logger.warning("Rejected a command with a wrong or missing API key")
            return web.json_response(INVALID_KEY_BODY, status=401)
        try:
            raw = await self._read_body(request)
        except ApiError as error:
            return _response(self._handler.refuse(error))
        return _response(await self._handler.handle(raw))

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        if not self._key_ok(request):
            return web.json_response(INVALID_KEY_BODY, status=401)
        return web.json_response({"balance": self._handler.billing.balance})

    async def _get_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"reset": True})

    async def _get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults.to_dict())

    async def _set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await self._read_body(request)
            self.faults = Faults.from_dict(parse_body(raw))
        except ApiError as error:
            return json_error(400, error)
        except (ValueError, TypeError) as exc:
            return json_error(400, ApiError(None, str(exc)))
        return web.json_response(self.faults.to_dict())


def _response(reply: Reply) -> web.StreamResponse:
    if reply.payload is not None:
        return web.json_response(reply.payload, status=reply.status)
    return web.Response(
        text=reply.text or "", status=reply.status, content_type=reply.content_type
    )
