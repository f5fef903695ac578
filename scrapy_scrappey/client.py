"""The plugin's own asynchronous client for the Scrappey API.

Control-plane calls (``sessions.*``) and page fetches both go through it. It is
a plain aiohttp client rather than ``engine.download_async`` because sessions
must still be destroyed inside ``spider_closed``, where the engine can no
longer download.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from ._redact import redact_text
from .codes import ERROR_CODES, SESSION_GONE_MARKERS, ErrorKind, find_code
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAuthError,
    ScrappeyConfigError,
    ScrappeyTransportError,
)

logger = logging.getLogger(__name__)

_RETRYABLE_HTTP = frozenset(
    {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
)


@dataclass(frozen=True)
class ApiReply:
    """One answer of the API: its HTTP status, parsed JSON object and raw bytes."""

    status: int
    data: dict[str, Any]
    body: bytes

    def error(self) -> ScrappeyAPIError | None:
        """The error this reply reports, if any."""
        message = _error_of(self.data)
        if message is None:
            return None
        code = _code_of(self.data, message)
        return ScrappeyAPIError(message, code=code, kind=classify(code, message))

    def raise_for_error(self) -> None:
        """Raise :class:`ScrappeyAPIError` if the reply reports an error."""
        error = self.error()
        if error is not None:
            raise error


class ScrappeyClient:
    """POSTs commands to ``api_url?key=…``; the key never leaves this object."""

    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url
        self._key = api_key
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily so that it binds to the running loop (the reactor's).
        if self._session is None or self._session.closed:
            # No limit: CONCURRENT_REQUESTS and SCRAPPEY_API_CONCURRENCY bound the calls.
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=json.dumps
            )
        return self._session

    async def call(self, payload: dict[str, Any], *, timeout: float) -> ApiReply:
        """Send one command. Transport problems raise :class:`ScrappeyTransportError`."""
        try:
            body = json.dumps(payload, separators=(",", ":")).encode()
        except (TypeError, ValueError) as ex:
            raise ScrappeyConfigError(
                f"The {payload.get('cmd')!r} command holds a value that is not JSON ({ex}); "
                f"check the 'scrappey' meta key and SCRAPPEY_DEFAULT_PARAMS."
            ) from None
        try:
            async with self._client().post(
                self.api_url,
                params={"key": self._key},
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            # Not chained: aiohttp's timeout errors quote the URL, key included.
            raise ScrappeyTransportError(
                f"The Scrappey API did not answer {payload.get('cmd')!r} within {timeout:g} s"
            ) from None
        except aiohttp.ClientError as ex:
            # aiohttp messages may quote the URL, and with it the key.
            raise ScrappeyTransportError(
                f"Could not reach the Scrappey API: {redact_text(str(ex), self._key)}"
            ) from None
        return parse_reply(status, raw)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_reply(status: int, raw: bytes) -> ApiReply:
    """Classify one HTTP answer of the API (shared by the crawl and the CLI).

    Raises :class:`ScrappeyAuthError` for 401, :class:`ScrappeyTransportError`
    for garbage or retryable statuses, :class:`ScrappeyAPIError` for a 4xx
    that is not a command's reply; the caller checks the reply's own error.
    """
    if status == 401:
        raise ScrappeyAuthError("The Scrappey API rejected the API key (HTTP 401)")
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        what = (
            "a truncated or invalid JSON" if raw[:1] in (b"{", b"[") else "a non-JSON"
        )
        if status < 400 or status in _RETRYABLE_HTTP or status >= 500:
            raise ScrappeyTransportError(
                f"The Scrappey API answered HTTP {status} with {what} body"
            )
        raise ScrappeyAPIError(
            f"HTTP {status} with {what} body", code=None, kind=ErrorKind.CONFIG
        )
    if status in _RETRYABLE_HTTP or status >= 500:
        raise ScrappeyTransportError(f"The Scrappey API answered HTTP {status}")
    if status >= 400 and _error_of(data) is None:
        # A 4xx is never a page, whatever its JSON looks like (402, 404…).
        detail = data.get("message") or data.get("detail") or json.dumps(data)[:200]
        raise ScrappeyAPIError(
            f"HTTP {status}: {detail}", code=None, kind=ErrorKind.CONFIG
        )
    return ApiReply(status, data, raw)


def _error_of(data: dict[str, Any]) -> str | None:
    """The error message of a reply, or ``None`` for a success.

    ``data == "success"`` wins: a documented success shape also carries an
    ``error`` key. Without ``data``, the presence of ``error`` decides.
    """
    flag = data.get("data")
    if flag == "success":
        return None
    error = data.get("error")
    if flag != "error" and error in (None, ""):
        return None
    if isinstance(error, dict):
        error = error.get("message") or error.get("code") or json.dumps(error)
    return str(error) if error not in (None, "") else "Unknown error"


def _code_of(data: dict[str, Any], message: str) -> str | None:
    for candidate in (data.get("code"), data.get("error")):
        if isinstance(candidate, dict):
            candidate = candidate.get("code")
        if isinstance(candidate, str) and (code := find_code(candidate)):
            return code
    return find_code(message)


def classify(code: str | None, message: str) -> ErrorKind:
    """What to do about an error: see :class:`~scrapy_scrappey.codes.ErrorKind`."""
    if code in ERROR_CODES:
        return ERROR_CODES[code].kind
    lowered = message.lower()
    if any(marker in lowered for marker in SESSION_GONE_MARKERS):
        return ErrorKind.SESSION
    return ErrorKind.TRANSIENT
