"""The local server's HTTP layer: JSON errors everywhere, read timeouts, no echoes.

Left alone, aiohttp answers some problems itself, in plain text: an unknown
path or method, an oversized body, and a malformed request line or header,
whose text (``?key=…`` included) it sends back to the client and logs with a
traceback. Here every such answer is the error envelope the API uses
(``{"data": "error", "error": …}``), and a malformed request is described
without any of the bytes the client sent.

A request must also arrive in time: its headers within ``read_timeout``
seconds of the connection opening or of the previous reply (else the
connection is closed, as is an idle kept-alive one), its body within
``read_timeout`` of the headers (else HTTP 408). Time spent serving a command
does not count.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import TYPE_CHECKING

from aiohttp import web

from scrapy_scrappey._redact import redact_url
from scrapy_scrappey.local.protocol import ApiError, error_envelope, server_bug
from scrapy_scrappey.local.validation import invalid_body

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler
    from aiohttp.web_request import BaseRequest

logger = logging.getLogger(__name__)

# Where aiohttp's parser messages start quoting the raw request bytes (both
# of its parsers quote them, as bytes or as str).
_ECHO_MARKERS = ("bytearray(", "b'", 'b"', "'", '"')
# aiohttp's default for draining an unread body before closing.
_LINGERING_TIME = 10.0
# Request body codings understood, as zlib window bits (gzip framing, zlib).
_ZLIB_WBITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}


def json_error(status: int, error: ApiError) -> web.Response:
    """The error envelope with an HTTP *status*; *error* must hold no secrets."""
    return web.json_response(error_envelope(error, 0), status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render aiohttp's HTTP errors (404, 405, 408, 413, …) and bugs as envelopes."""
    try:
        return await handler(request)
    except ConnectionError:
        raise  # the client is gone: nothing to answer, nothing wrong here
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_error(exc.status, ApiError(None, _http_error(request, exc)))
    except Exception:
        logger.exception("Internal error in the local Scrappey server")
        response = json_error(500, server_bug())
    if response.status in (408, 413):
        # The rest of the body is still on its way; the connection is unusable.
        response.force_close()
    return response


async def read_body(request: web.Request, timeout: float, limit: int) -> bytes:
    """The request body, undone from its ``Content-Encoding``.

    An :class:`ApiError` says why it cannot be used. Raises
    ``HTTPRequestTimeout`` when the body does not arrive within *timeout*
    seconds and ``HTTPRequestEntityTooLarge`` past *limit* bytes, decoded or
    not.
    """
    try:
        raw = await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the request body did not arrive within {timeout:g} s"
        ) from None
    except web.RequestPayloadError as exc:  # e.g. broken chunked framing
        raise invalid_body(f"cannot be read ({_root_cause(exc)})") from exc
    # Decoded here, not by aiohttp: its parser fails on some bodies before any
    # route is known, and then only a bare 400 could be answered.
    header = request.headers.get("Content-Encoding", "")
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    for coding in reversed(codings):  # the last one applied is undone first
        if coding != "identity":
            raw = _inflate(raw, coding, limit)
    return raw


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    wbits = _ZLIB_WBITS.get(coding)
    if wbits is None:
        raise invalid_body(
            f"Content-Encoding {coding!r:.40} is not supported "
            "(gzip, deflate or identity)"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise invalid_body(
            f"cannot be decoded as Content-Encoding {coding!r} ({exc})"
        ) from exc
    if len(out) > limit:
        raise web.HTTPRequestEntityTooLarge(limit, len(out))
    if not inflater.eof or inflater.unused_data:
        raise invalid_body(
            f"cannot be decoded as Content-Encoding {coding!r} "
            "(the compressed data is incomplete or followed by other bytes)"
        )
    return out


async def listen(
    runner: web.AppRunner, host: str, port: int, read_timeout: float
) -> asyncio.Server:
    """Serve *runner*'s application on *host*:*port* with this module's rules."""
    manager = runner.server
    if manager is None:
        raise RuntimeError("listen() needs a runner after setup()")
    loop = asyncio.get_running_loop()

    def connection() -> _Connection:
        # aiohttp's keep-alive timer also runs while a request's headers are
        # incomplete, which makes it the header read timeout.
        # access_log=None turns access lines off, as in aiohttp's own runners;
        # its annotation does not admit None. The rest of a refused body is
        # drained for no longer than a client may take to send one.
        return _Connection(
            manager,
            loop=loop,
            access_log=None,  # type: ignore[arg-type]
            keepalive_timeout=read_timeout,
            lingering_time=min(read_timeout, _LINGERING_TIME),
            auto_decompress=False,
        )

    return await loop.create_server(connection, host, port)


class _Connection(web.RequestHandler):
    """aiohttp's connection handler, answering its own errors as envelopes."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            raise exc  # the client left; aiohttp drops the connection quietly
        if request.writer.output_size > 0:
            # Same rule as aiohttp's: a reply has started, no second one.
            raise ConnectionError("a response was sent already")
        if status >= 500:
            logger.error("Internal error in the local Scrappey server", exc_info=exc)
            error = server_bug()
        else:
            text = _describe_parse_error(message or str(exc))
            logger.info(
                "Rejected a malformed request from %s: %s", request.remote, text
            )
            error = ApiError(None, f"Bad HTTP request: {text}")
        response = json_error(status, error)
        response.force_close()
        return response


def _http_error(request: web.Request, exc: web.HTTPException) -> str:
    where = f"{request.method} {redact_url(request.path):.200}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{exc.reason}: {where} (allowed: {allowed})"
    # aiohttp's default text repeats the status ("404: Not Found").
    detail = exc.text or ""
    if not detail or detail.startswith(f"{exc.status}:"):
        return f"{exc.reason}: {where}"
    return f"{exc.reason}: {where}: {detail}"


def _describe_parse_error(message: str) -> str:
    """A parser message up to where it starts quoting the request."""
    parts: list[str] = []
    for line in message.splitlines():
        cuts = [line.find(marker) for marker in _ECHO_MARKERS if marker in line]
        parts.append(line[: min(cuts)] if cuts else line)
        if cuts:
            break
    text = " ".join(part.strip() for part in parts if part.strip())
    return redact_url(text.rstrip(": "))[:200] or "unparsable request"


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}" if str(exc).strip() else type(exc).__name__
