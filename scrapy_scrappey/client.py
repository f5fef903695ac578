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
import math
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from ._redact import api_text, redact_url
from .codes import ERROR_CODES, SESSION_GONE_MARKERS, ErrorKind, find_code
from .exceptions import (
    ScrappeyAPIError,
    ScrappeyAPIUnreachable,
    ScrappeyAuthError,
    ScrappeyConfigError,
    ScrappeyError,
    ScrappeyTransportError,
)
from .responses import page_problem

logger = logging.getLogger(__name__)

_RETRYABLE_HTTP = frozenset(
    {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524}
)
#: Deeper replies are garbage (no documented reply nests beyond 4 levels).
_MAX_DEPTH = 64
#: What a web server answers for a path it does not serve: the URL is wrong.
_NOT_THE_API = frozenset({404, 405})


@dataclass(frozen=True)
class ApiReply:
    """One answer of the API: its HTTP status, parsed JSON object and raw bytes.

    :func:`parse_reply` reads its errors once, with the API key scrubbed
    from what the API wrote.
    """

    status: int
    data: dict[str, Any]
    body: bytes
    #: The error the reply reports (``data: "error"``…), if any.
    reported: ScrappeyAPIError | None = None
    #: Why the reply, although it reports no error, holds no page.
    not_a_page: ScrappeyAPIError | None = None

    def error(self) -> ScrappeyAPIError | None:
        """The error this reply reports, if any."""
        return self.reported

    def page_error(self) -> ScrappeyAPIError | None:
        """For a ``request.*`` reply: its error, or why it is not a page."""
        return self.reported or self.not_a_page

    def raise_for_error(self) -> None:
        """Raise :class:`ScrappeyAPIError` if the reply reports an error."""
        if self.reported is not None:
            raise self.reported


class ScrappeyClient:
    """POSTs commands to ``api_url?key=…``; the key never leaves this object."""

    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url
        self._key = api_key
        self._session: aiohttp.ClientSession | None = None
        #: Whether the API has answered once in this crawl (errors included).
        self.reached = False

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
        status, raw = await self._http(
            "POST", self.api_url, timeout, what=repr(payload.get("cmd")), data=body
        )
        try:
            reply = parse_reply(status, raw, key=self._key)
        except _NotTheAPI as ex:
            raise unreachable(self.api_url, ex.reason, self._key) from None
        except ScrappeyError:
            self.reached = True
            raise
        self.reached = True
        return reply

    async def balance(self, *, timeout: float) -> float:
        """``GET <api_url>/balance``: the account's balance.

        Raises :class:`ScrappeyAuthError` for 401, :class:`ScrappeyTransportError`
        when the endpoint cannot be reached, :class:`ScrappeyAPIError` for any
        answer that is not ``{"balance": <number>}``.
        """
        status, raw = await self._http(
            "GET", self.api_url + "/balance", timeout, what="the balance query"
        )
        return parse_balance(status, raw, key=self._key)

    async def _http(
        self, method: str, url: str, timeout: float, *, what: str, data: bytes = b""
    ) -> tuple[int, bytes]:
        try:
            async with self._client().request(
                method,
                url,
                params={"key": self._key},
                data=data or None,
                headers={"Content-Type": "application/json"} if data else None,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:
                return resp.status, await resp.read()
        except asyncio.TimeoutError:
            # Not chained: aiohttp's timeout errors quote the URL, key included.
            raise ScrappeyTransportError(
                f"The Scrappey API did not answer {what} within {timeout:g} s"
            ) from None
        except aiohttp.ClientConnectorError as ex:
            # Refused, DNS failure: the command was never sent.
            raise unreachable(self.api_url, _connect_reason(ex), self._key) from None
        except aiohttp.ClientError as ex:
            # aiohttp messages may quote the URL, and with it the key.
            raise ScrappeyTransportError(
                f"Could not reach the Scrappey API: {api_text(str(ex), self._key)}"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def unreachable(api_url: str, reason: str, key: str = "") -> ScrappeyAPIUnreachable:
    """The one error for an API URL that leads nowhere (*reason*: why)."""
    return ScrappeyAPIUnreachable(
        f"cannot reach the Scrappey API at {redact_url(api_url)}: "
        f"{api_text(reason, key)}; check SCRAPPEY_API_URL"
    )


class _NotTheAPI(ScrappeyTransportError):
    """A 404/405 that is no command's reply: the path is not the API's."""

    def __init__(self, reason: str) -> None:
        self.reason = f"{reason}, not the API"
        super().__init__(f"The server answered {self.reason}; check SCRAPPEY_API_URL")


def _connect_reason(error: aiohttp.ClientConnectorError) -> str:
    cause = error.os_error
    if isinstance(cause, ConnectionError) and cause.errno:
        return os.strerror(cause.errno)  # "Connection refused"
    return cause.strerror or str(cause)


def parse_reply(status: int, raw: bytes, *, key: str = "") -> ApiReply:
    """Classify one HTTP answer of the API (shared by the crawl and the CLI).

    Raises :class:`ScrappeyAuthError` for 401, :class:`ScrappeyTransportError`
    for redirects, garbage or retryable statuses, and for a 404/405 that is
    no command's reply (a wrong SCRAPPEY_API_URL), :class:`ScrappeyAPIError`
    for another 4xx that is not a command's reply; the caller checks the
    reply's own error. *key* is scrubbed from every text of the API quoted
    in an error.
    """
    if status == 401:
        raise ScrappeyAuthError("The Scrappey API rejected the API key (HTTP 401)")
    if 300 <= status < 400:
        # Following it would re-post the command, key included, elsewhere.
        raise _NotTheAPI(f"HTTP {status}, a redirect")
    data = _json_object(raw)
    if data is None:
        raise _unreadable(status, raw)
    if status in _RETRYABLE_HTTP or status >= 500:
        raise ScrappeyTransportError(
            f"The Scrappey API answered HTTP {status}", may_be_charged=False
        )
    reported = _reported(data, key)
    _check_path(status, data, reported, key)
    if status >= 400 and (reported is None or reported.kind is ErrorKind.BAD_REPLY):
        # A 4xx is never a page, whatever its JSON looks like (402, 404…).
        detail = data.get("message") or data.get("detail") or json.dumps(data)
        raise ScrappeyAPIError(
            f"HTTP {status}: {detail}", code=None, kind=ErrorKind.CONFIG, key=key
        )
    problem = None if reported else page_problem(data)
    not_a_page = None
    if problem is not None:
        not_a_page = ScrappeyAPIError(
            problem.message, code=None, kind=problem.kind, key=key
        )
    return ApiReply(status, data, raw, reported, not_a_page)


def _check_path(
    status: int, data: dict[str, Any], reported: ScrappeyAPIError | None, key: str
) -> None:
    """Raise :class:`_NotTheAPI` for a 404/405 that no command would answer."""
    if status not in _NOT_THE_API:
        return
    if reported is not None and (
        reported.code is not None or reported.kind is ErrorKind.SESSION
    ):
        return  # a command's reply that happens to come with this status
    detail = reported.api_message if reported else api_text(json.dumps(data), key)
    raise _NotTheAPI(f"HTTP {status} ({detail})")


def parse_balance(status: int, raw: bytes, *, key: str = "") -> float:
    """The number of a ``GET /balance`` answer; errors as :meth:`ScrappeyClient.balance`."""
    if status == 401:
        raise ScrappeyAuthError("The Scrappey API rejected the API key (HTTP 401)")
    data = _json_object(raw) if status == 200 else None
    value = data.get("balance") if data is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = math.nan
    if math.isfinite(value):
        return float(value)
    what = f"HTTP {status}" if status != 200 else "JSON without a number in 'balance'"
    raise ScrappeyAPIError(
        f"the balance endpoint answered {what}",
        code=None,
        kind=ErrorKind.BAD_REPLY,
        key=key,
    )


def _unreadable(status: int, raw: bytes) -> ScrappeyError:
    what = "a truncated or invalid JSON" if raw[:1] in (b"{", b"[") else "a non-JSON"
    if status in _NOT_THE_API:
        return _NotTheAPI(f"HTTP {status} with {what} body")
    if status < 400 or status in _RETRYABLE_HTTP or status >= 500:
        # A cut 200 may be a charged success; an error status is not one.
        return ScrappeyTransportError(
            f"The Scrappey API answered HTTP {status} with {what} body",
            may_be_charged=status < 400,
        )
    return ScrappeyAPIError(
        f"HTTP {status} with {what} body", code=None, kind=ErrorKind.CONFIG
    )


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The reply's JSON object; ``None`` for anything else, or nested too deep.

    The depth bound keeps every later ``json.dumps`` of a part of the reply
    (headers, error objects) clear of RecursionError.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    level: list[Any] = [data]
    for _ in range(_MAX_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return data
    return None


def _reported(data: dict[str, Any], key: str) -> ScrappeyAPIError | None:
    message = _error_of(data)
    if message is None:
        if data.get("data") in (None, "success"):
            return None
        # "failed", "pending"…: not a success, and nothing says why.
        problem = page_problem(data)
        text = problem.message if problem else "no 'data': 'success'"
        return ScrappeyAPIError(text, code=None, kind=ErrorKind.BAD_REPLY, key=key)
    code = _code_of(data, message)
    return ScrappeyAPIError(message, code=code, kind=classify(code, message), key=key)


def _error_of(data: dict[str, Any]) -> str | None:
    """The error message a reply carries, or ``None``.

    ``data == "success"`` wins: a documented success shape also carries an
    ``error`` key. Otherwise a non-empty ``error`` is the message, and
    ``data: "error"`` without one is an unknown error.
    """
    if data.get("data") == "success":
        return None
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("code") or json.dumps(error)
    if error not in (None, ""):
        return error if isinstance(error, str) else json.dumps(error)
    return "Unknown error" if data.get("data") == "error" else None


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
