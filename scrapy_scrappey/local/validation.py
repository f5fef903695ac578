"""Checking API request bodies before anything is served.

Every problem becomes an :class:`~scrapy_scrappey.local.protocol.ApiError`
whose text names the offending field, so bad input never reaches a handler
as an exception. A missing or unknown ``cmd`` uses CODE-0004 ("Invalid cmd
command"); bad fields use ``"Invalid parameter '<field>': <why>"`` without a
code, because the API documents none for them. Unknown fields are accepted
and ignored, as a client written for the real API may send options the local
server cannot honour (``browserActions``, ``screenshot``, captcha options, …).

Every field, known or not, must be nested at most :data:`MAX_NESTING` levels
deep and hold valid Unicode (no lone surrogates, which JSON's ``\\ud800``
escapes can carry but UTF-8 cannot): the server recurses into some values and
encodes others, and either would fail later without naming the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

from yarl import URL

from scrapy_scrappey.codes import INVALID_CMD_CODE
from scrapy_scrappey.local.browser_params import BrowserParams, browser_params, invalid
from scrapy_scrappey.local.protocol import (
    ALL_COMMANDS,
    BROWSER_NAME_CODE,
    REQUEST_COMMANDS,
    ApiError,
)

#: How deep a field's value may nest arrays and objects.
MAX_NESTING = 100
#: The longest ``timeout`` accepted, in milliseconds (a day).
MAX_TIMEOUT_MS = 86_400_000
#: The longest session id accepted; ids are kept for the server's lifetime.
MAX_SESSION_ID = 256

_BROWSER_NAMES = ("firefox", "chrome", "safari")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_HEADER_BREAK_RE = re.compile("[\r\n\x00]")
_TOO_DEEP = f"nested more than {MAX_NESTING} levels deep"
_JSON_TYPES: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


@dataclass(frozen=True)
class CookieSpec:
    """One ``cookiejar`` entry (``key`` or ``name``, ``value``, ``domain``, ``path``)."""

    name: str
    value: str
    domain: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class RequestParams:
    """The validated fields of a ``request.*`` command."""

    cmd: str
    method: str
    url: str
    session: str | None = None
    post_data: str | dict[str, Any] | None = None
    custom_headers: dict[str, str] = field(default_factory=dict)
    cookies: str | None = None
    cookiejar: tuple[CookieSpec, ...] = ()
    timeout: float | None = None
    user_agent: str | None = None
    referer: str | None = None
    inner_text: bool = False
    base64_response: bool = False
    list_all_redirects: bool = False
    close_after_use: bool = False
    #: What only a browser engine does (``browserActions``, ``screenshot``, …).
    browser: BrowserParams = field(default_factory=BrowserParams)


def invalid_body(why: str) -> ApiError:
    """The error for a body that is not a usable JSON object."""
    return ApiError(None, f"Invalid request body: {why}")


def _decode_json(raw: bytes) -> Any:
    """Decode a JSON body; any failure is an :class:`ApiError`."""
    try:
        return json.loads(raw)
    except RecursionError as exc:
        # The C decoder gives up near the interpreter's recursion limit.
        raise invalid_body(_TOO_DEEP) from exc
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise invalid_body(f"not valid JSON ({exc})") from exc


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode the POST body into a JSON object whose fields are all usable."""
    body = _decode_json(raw)
    if not isinstance(body, dict):
        kind = _JSON_TYPES.get(type(body), type(body).__name__)
        raise invalid_body(f"must be a JSON object, not {kind}")
    for name, value in body.items():
        _check_field(name, value)
    return body


def command_name(body: dict[str, Any]) -> str:
    """The ``cmd`` of *body*, which must be one of the supported commands."""
    cmd = body.get("cmd")
    if cmd is None:
        raise ApiError(INVALID_CMD_CODE, "'cmd' is missing")
    if not isinstance(cmd, str):
        raise ApiError(INVALID_CMD_CODE, "'cmd' must be a string")
    if cmd not in ALL_COMMANDS:
        raise ApiError(
            INVALID_CMD_CODE, f"{cmd!r} is not one of {', '.join(ALL_COMMANDS)}"
        )
    return cmd


def optional_session(body: dict[str, Any]) -> str | None:
    """The ``session`` field, ``None`` when absent or null."""
    value = body.get("session")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise invalid("session", "must be a non-empty string")
    if len(value) > MAX_SESSION_ID:
        raise invalid("session", f"must be at most {MAX_SESSION_ID} characters")
    return value


def required_session(body: dict[str, Any], cmd: str) -> str:
    """The ``session`` field of a command that cannot do without one."""
    value = optional_session(body)
    if value is None:
        raise invalid("session", f"required for {cmd}")
    return value


def check_browser(body: dict[str, Any]) -> None:
    """Reject browser specs the API rejects (CODE-0030 for an unknown name).

    Clients send a name (``"chrome"``), or a list of names or of objects
    with a ``name``.
    """
    specs = body.get("browser")
    if specs is None:
        return
    for spec in specs if isinstance(specs, list) else [specs]:
        name = spec.get("name") if isinstance(spec, dict) else spec
        if not isinstance(spec, (dict, str)):
            raise invalid("browser", "must be a name or a list of names or objects")
        if name not in _BROWSER_NAMES:
            raise ApiError(BROWSER_NAME_CODE, f"got {name!r:.80}")


def optional_string(body: dict[str, Any], name: str) -> str | None:
    """A field that must be a string when present."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(name, "must be a string")
    return value


def request_params(cmd: str, body: dict[str, Any]) -> RequestParams:
    """Validate the fields of a ``request.*`` command."""
    check_browser(body)
    return RequestParams(
        cmd=cmd,
        method=REQUEST_COMMANDS[cmd],
        url=_url(body),
        session=optional_session(body),
        post_data=_post_data(body),
        custom_headers=_custom_headers(body),
        cookies=_cookies(body),
        cookiejar=_cookiejar(body),
        timeout=_timeout(body),
        user_agent=header_string(body, "userAgent"),
        referer=header_string(body, "referer"),
        inner_text=body.get("innerText") is True,
        base64_response=body.get("base64Response") is True,
        list_all_redirects=body.get("listAllRedirects") is True,
        close_after_use=body.get("closeAfterUse") is True,
        browser=browser_params(body),
    )


def _url(body: dict[str, Any]) -> str:
    value = body.get("url")
    if value is None:
        raise invalid("url", "is required")
    if not isinstance(value, str):
        raise invalid("url", "must be a string")
    try:
        url = URL(value)
    except (ValueError, TypeError) as exc:
        raise invalid("url", f"cannot be parsed ({exc})") from exc
    if url.scheme not in ("http", "https"):
        raise invalid("url", "must be an http:// or https:// URL")
    if not url.raw_host:
        raise invalid("url", "has no host")
    return value


def _post_data(body: dict[str, Any]) -> str | dict[str, Any] | None:
    value = body.get("postData")
    if value is None or isinstance(value, (str, dict)):
        return value
    raise invalid("postData", "must be a string or an object")


def _custom_headers(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("customHeaders")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("customHeaders", "must be an object")
    headers: dict[str, str] = {}
    for name, header in value.items():
        if not _TOKEN_RE.fullmatch(name):
            raise invalid("customHeaders", f"{name!r:.80} is not a header name")
        # bool is an int subclass but "True" is never a meant header value.
        if isinstance(header, bool) or not isinstance(header, (str, int, float)):
            raise invalid("customHeaders", f"value of {name!r} must be a string")
        headers[name] = _check_header("customHeaders", str(header), name)
    return headers


def _cookies(body: dict[str, Any]) -> str | None:
    """``cookies`` as a Cookie header: a string, ``{name: value}`` or a list."""
    value = body.get("cookies")
    if value is None or isinstance(value, str):
        return header_string(body, "cookies")
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [_cookie_pair(item) for item in value]
    else:
        raise invalid("cookies", "must be a string, an object or a list of cookies")
    for name, item in pairs:
        if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
            raise invalid("cookies", f"{name!r:.80} is not a cookie name")
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise invalid("cookies", f"value of {name!r} must be a string")
    text = "; ".join(f"{name}={item}" for name, item in pairs)
    return _check_header("cookies", text) or None


def _cookie_pair(item: object) -> tuple[object, object]:
    if not isinstance(item, dict):
        raise invalid("cookies", "list items must be {name, value} objects")
    return item.get("name", item.get("key")), item.get("value")


def header_string(body: dict[str, Any], name: str) -> str | None:
    """A string field that is sent as (part of) an HTTP header."""
    value = optional_string(body, name)
    return value if value is None else _check_header(name, value)


def _check_header(field: str, value: str, header: str | None = None) -> str:
    # The HTTP client refuses these (header injection); as a fetch error the
    # refusal would read as a transient CODE-0031 and be retried for ever.
    if _HEADER_BREAK_RE.search(value):
        subject = f"value of {header!r} " if header else ""
        raise invalid(field, f"{subject}must not contain CR, LF or NUL characters")
    return value


def _cookiejar(body: dict[str, Any]) -> tuple[CookieSpec, ...]:
    value = body.get("cookiejar")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid("cookiejar", "must be a list of cookie objects")
    return tuple(_cookie_spec(item) for item in value)


def _cookie_spec(item: object) -> CookieSpec:
    if not isinstance(item, dict):
        raise invalid("cookiejar", "items must be objects")
    # The docs disagree on the key name; both spellings are accepted.
    name = item.get("name", item.get("key"))
    value = item.get("value")
    if not isinstance(name, str) or not name:
        raise invalid("cookiejar", "items need a string 'key' or 'name'")
    if not isinstance(value, str):
        raise invalid("cookiejar", f"value of cookie {name!r} must be a string")
    domain, path = item.get("domain"), item.get("path")
    if not isinstance(domain, (str, type(None))) or not isinstance(
        path, (str, type(None))
    ):
        raise invalid("cookiejar", f"domain and path of {name!r} must be strings")
    _check_cookie(name, domain)
    return CookieSpec(name, value, domain or None, path or None)


def _check_cookie(name: str, domain: str | None) -> None:
    # The session's jar takes cookies through Python's parser and a URL of the
    # domain; what they refuse is refused here, naming the cookie.
    try:
        SimpleCookie()[name] = ""
    except CookieError as exc:
        raise invalid(
            "cookiejar", f"cookie name {name!r:.80} is refused ({exc})"
        ) from exc
    if domain:
        try:
            URL.build(scheme="http", host=domain.lstrip("."))
        except ValueError as exc:
            raise invalid(
                "cookiejar", f"domain of {name!r} is not a host ({exc})"
            ) from exc


def _timeout(body: dict[str, Any]) -> float | None:
    value = body.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid("timeout", "must be a number of milliseconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid("timeout", f"must be a finite number, got {value!r}")
    # Compared before any float(): a 400-digit integer does not fit a float.
    if value > MAX_TIMEOUT_MS:
        raise invalid("timeout", f"must be at most {MAX_TIMEOUT_MS} ms (a day)")
    if value <= 0:
        raise invalid("timeout", "must be positive")
    return float(value) / 1000.0


def _check_field(name: str, value: object) -> None:
    """Walk *value* without recursion: depth and Unicode of every part."""
    _check_text(name, name)
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(name, item)
        elif isinstance(item, (dict, list)):
            if depth >= MAX_NESTING:
                raise invalid(name, _TOO_DEEP)
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                item = item.values()
            pending.extend((child, depth + 1) for child in item)


def _check_text(name: str, text: str) -> None:
    if _SURROGATE_RE.search(text):
        raise invalid(
            name, "contains a lone surrogate (\\ud800-\\udfff), not valid Unicode"
        )
