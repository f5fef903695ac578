"""The wire format the local server speaks: command names, error texts, envelopes.

Every reply shape here mirrors the fixtures in ``tests/fixtures/scrappey/``.
Error texts put the documented code first (``"CODE-0031 Request error, please
try again: <cause>"``) because clients extract codes with a ``CODE-\\d+``
search over the ``error`` string.

Problems with a request field have no documented code, so their error text
carries none: ``"Invalid parameter 'customHeaders': must be an object"``. An
unknown session is reported as ``"Session not found: <id>"``, again without a
code, which clients recognise through
:data:`scrapy_scrappey.codes.SESSION_GONE_MARKERS` (see ``client.classify``).
"""

from __future__ import annotations

from typing import Any

from scrapy_scrappey.codes import ERROR_CODES, SESSION_LIMIT_CODE

API_PATH = "/api/v1"
BALANCE_PATH = "/api/v1/balance"

REQUEST_COMMANDS: dict[str, str] = {
    "request.get": "GET",
    "request.post": "POST",
    "request.put": "PUT",
    "request.patch": "PATCH",
    "request.delete": "DELETE",
}
SESSION_COMMANDS: tuple[str, ...] = (
    "sessions.create",
    "sessions.destroy",
    "sessions.list",
    "sessions.active",
)
ALL_COMMANDS: tuple[str, ...] = (*REQUEST_COMMANDS, *SESSION_COMMANDS)

REQUEST_ERROR_CODE = "CODE-0031"
BROWSER_NAME_CODE = "CODE-0030"

#: The documented 401 body (the Go SDK's mock), plus ``data`` like every reply.
INVALID_KEY_BODY: dict[str, str] = {"data": "error", "error": "invalid api key"}

# The table in codes.py keeps only the short message; where the documented text
# says more, clients may match on it, so the rest is added here verbatim.
_DETAILS: dict[str, str] = {
    SESSION_LIMIT_CODE: (
        "sessions will automatically close after 240 seconds. "
        "Contact support for more sessions."
    ),
}


class ApiError(Exception):
    """A command that is answered with an error envelope (HTTP 200).

    *code* is a documented ``CODE-nnnn`` or ``None`` when no code fits;
    *detail* is appended after the code's message.
    """

    def __init__(self, code: str | None, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail
        super().__init__(self.text)

    @property
    def text(self) -> str:
        """The client-facing ``error`` string."""
        return error_text(self.code, self.detail)


def error_text(code: str | None, detail: str | None = None) -> str:
    """``"CODE-0031 Request error, please try again: <detail>"`` and friends."""
    if code is None:
        return detail or "Unknown error"
    text = f"{code} {ERROR_CODES[code].message}"
    if code in _DETAILS:
        text = f"{text}; {_DETAILS[code]}"
    return f"{text}: {detail}" if detail else text


def server_bug() -> ApiError:
    """The error for a failure of the local server itself (a bug: it is logged)."""
    return ApiError("CODE-10000", "local server bug")


def session_not_found(session_id: str) -> ApiError:
    """The error for a session id that is not open (never was, destroyed, expired)."""
    return ApiError(None, f"Session not found: {session_id}")


def error_envelope(
    error: ApiError, elapsed_ms: int, session: str | None = None
) -> dict[str, Any]:
    """``{"data": "error", "error": …, "solution": {"verified": false}, …}``."""
    body: dict[str, Any] = {
        "data": "error",
        "error": error.text,
        "solution": {"verified": False},
        "timeElapsed": elapsed_ms,
    }
    if session is not None:
        body["session"] = session
    return body


def success_envelope(
    solution: dict[str, Any], elapsed_ms: int, session: str | None = None
) -> dict[str, Any]:
    """The ``request.*`` success envelope; ``session`` only when one was named."""
    body: dict[str, Any] = {
        "solution": solution,
        "timeElapsed": elapsed_ms,
        "data": "success",
    }
    if session is not None:
        body["session"] = session
    return body
