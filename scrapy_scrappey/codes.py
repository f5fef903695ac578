"""The Scrappey error codes, their messages and how the plugin treats them.

The table comes from the community n8n node that the Scrappey maintainer kept
(a copy is ``tests/fixtures/scrappey/error_codes_table.json``, with its source
next to it); the classification is ours, because the API documents no retry
semantics.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class ErrorKind(enum.Enum):
    """What a client should do about an API-level error."""

    #: Worth retrying as is (overload, proxy hiccups, solver failures).
    TRANSIENT = "transient"
    #: The session is gone (expired, unknown, its browser closed): retry on a new one.
    SESSION = "session"
    #: Bound to the session's proxy or browser, fixed when it was created
    #: (tunnel/proxy failures, proxy or browser blocked, internal browser
    #: error): counted against the session (SCRAPPEY_SESSION_MAX_ERRORS),
    #: which is then retired; the request is retried.
    SESSION_BOUND = "session_bound"
    #: Too many sessions open: back off, free sessions, try again later.
    SESSION_LIMIT = "session_limit"
    #: The request itself is wrong; retrying cannot help.
    CONFIG = "config"
    #: Retrying the same URL makes things worse (the API banned it for a while).
    FATAL_URL = "fatal_url"
    #: The reply reports no error but holds no page either (no solution, a
    #: ``data`` other than "success", a bad statusCode): retried as is.
    BAD_REPLY = "bad_reply"
    #: A success whose ``solution.verified`` is false: the API did not vouch
    #: for the page (and does not bill it), so it is no page: retried as is.
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class ErrorCode:
    code: str
    message: str
    kind: ErrorKind


_T, _B, _L, _C, _F = (
    ErrorKind.TRANSIENT,
    ErrorKind.SESSION_BOUND,
    ErrorKind.SESSION_LIMIT,
    ErrorKind.CONFIG,
    ErrorKind.FATAL_URL,
)

_TABLE: tuple[tuple[str, str, ErrorKind], ...] = (
    ("CODE-0001", "Server is overloaded", _T),
    ("CODE-0002", "Cloudflare blocked", _B),
    ("CODE-0003", "Cloudflare too many attempts, try again", _T),
    ("CODE-0004", "Invalid cmd command", _C),
    ("CODE-0005", "Tunnel connection failed", _B),
    ("CODE-0006", "ERR_HTTP_RESPONSE_CODE_FAILURE", _T),
    ("CODE-0007", "Could not click turnstile button", _T),
    ("CODE-0008", "Ticketmaster blocked", _B),
    ("CODE-0009", "Error from ChatGPT, try again", _T),
    ("CODE-0010", "Blocked proxy on Datadome", _B),
    ("CODE-0011", "Could not solve datadome", _T),
    ("CODE-0012", "Could not parse datadome cookie", _T),
    ("CODE-0013", "Captcha solver datadome cookie error", _T),
    ("CODE-0014", "Could not load Datadome", _T),
    ("CODE-0015", "Socks4 With Authentication not Supported", _C),
    ("CODE-0016", "Socks5 With Authentication not Supported", _C),
    (
        "CODE-0017",
        "Cloudflare updated and is currently not solvable, try again later",
        _T,
    ),
    ("CODE-0018", "Too high error rate for this URL", _F),
    ("CODE-0019", "The proxy server is refusing connections", _B),
    ("CODE-0020", "Could not find intercept request", _T),
    ("CODE-0021", "Unknown error occurred with request", _T),
    ("CODE-0022", "Captcha type solve_captcha is not found", _C),
    ("CODE-0023", "Turnstile solve_captcha was not found", _C),
    ("CODE-0024", "Proxy timeout - proxy too slow", _B),
    ("CODE-0025", "NS_ERROR_NET_TIMEOUT - proxy too slow", _B),
    ("CODE-0026", "Internal browser error", _B),
    ("CODE-0027", "No elements found for this CSS selector", _C),
    ("CODE-0028", "Could not solve perimeterx", _T),
    ("CODE-0029", "Too many sessions open", _L),
    ("CODE-0030", "Browser name must be: firefox, chrome or safari", _C),
    ("CODE-0031", "Request error, please try again", _T),
    ("CODE-0032", "Turnstile captcha could not be solved", _B),
    ("CODE-0033", "Mt captcha could not be solved", _T),
    ("CODE-0034", "Datadome captcha could not be solved after 5 attempts", _B),
    ("CODE-0035", "Could not load geetest", _T),
    ("CODE-0036", "Keyboard action value not found", _C),
    ("CODE-0037", "Datadome was blocked", _B),
    ("CODE-0038", "Could not solve FingerprintJS challenge", _T),
    ("CODE-10000", "Unknown error - has to be specified", _T),
)

#: Every documented code, by its name (``"CODE-0029"``).
ERROR_CODES: dict[str, ErrorCode] = {
    code: ErrorCode(code, message, kind) for code, message, kind in _TABLE
}

#: Codes that are safe to inject as transient faults in tests.
TRANSIENT_CODES: tuple[str, ...] = tuple(
    c.code for c in ERROR_CODES.values() if c.kind is ErrorKind.TRANSIENT
)

#: Codes bound to a session's proxy or browser (see ``ErrorKind.SESSION_BOUND``).
SESSION_BOUND_CODES: tuple[str, ...] = tuple(
    c.code for c in ERROR_CODES.values() if c.kind is ErrorKind.SESSION_BOUND
)

SESSION_LIMIT_CODE = "CODE-0029"
INVALID_CMD_CODE = "CODE-0004"

_CODE_RE = re.compile(r"CODE-\d{4,5}")

#: Substrings of error texts that mean the session no longer exists. The API
#: documents no code for this; the maintainer's own client retries on the
#: first one, and the local server answers with it.
SESSION_GONE_MARKERS: tuple[str, ...] = (
    "session not found",
    "session expired",
    "session has expired",
    "session does not exist",
    "session doesn't exist",
    "target closed",
    "browser closed",
    "context destroyed",
)


def find_code(text: str) -> str | None:
    """Return the first ``CODE-nnnn`` in *text*, if any."""
    match = _CODE_RE.search(text)
    return match.group(0) if match else None


def describe(code: str) -> str:
    """``"CODE-0029 (Too many sessions open)"``, or the code alone if unknown."""
    known = ERROR_CODES.get(code)
    return f"{code} ({known.message})" if known else code
