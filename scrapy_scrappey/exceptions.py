"""Exceptions raised by the plugin.

Transport failures subclass :class:`OSError` so that Scrapy's stock
``RetryMiddleware`` retries them (``OSError`` is in ``RETRY_EXCEPTIONS``).
"""

from __future__ import annotations

from scrapy.exceptions import IgnoreRequest

from ._redact import api_text
from .codes import ERROR_CODES, ErrorKind, describe


class ScrappeyError(Exception):
    """Base class of every error this plugin raises."""


class ScrappeyConfigError(ScrappeyError, ValueError):
    """A setting, spider attribute or meta key has an invalid value."""


class ScrappeyTransportError(ScrappeyError, OSError):
    """The API could not be reached or answered garbage (5xx page, cut JSON, timeout).

    Retried by Scrapy's ``RetryMiddleware`` like any other network error.
    """

    #: Whether the command may have run and been charged: not when the API
    #: answered an error status (429, 5xx) or was never reached.
    may_be_charged: bool = True

    def __init__(self, message: str, *, may_be_charged: bool = True) -> None:
        super().__init__(message)
        self.may_be_charged = may_be_charged


class ScrappeyAPIUnreachable(ScrappeyTransportError):
    """Nothing was sent to the API: ``SCRAPPEY_API_URL`` is wrong or down.

    The connection failed (refused, DNS failure) or what answered is not the
    API (HTTP 404 or 405). Unlike a timeout after sending, such a call cannot
    have created anything remotely.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, may_be_charged=False)


class ScrappeyAuthError(ScrappeyError):
    """The API rejected the key (HTTP 401)."""


class ScrappeyAPIError(ScrappeyError):
    """The API answered ``{"data": "error"}``, or a reply that holds no page.

    :attr:`code` is the ``CODE-nnnn`` found in the reply (``None`` if none) and
    :attr:`kind` says what to do about it. :attr:`api_message` is what the API
    said, bounded, with control characters escaped and *key* (the API key,
    in any form) redacted.
    """

    def __init__(
        self, message: str, *, code: str | None, kind: ErrorKind, key: str = ""
    ) -> None:
        message = api_text(message, key)
        self.code = code
        self.kind = kind
        self.api_message = message
        if code and code in message:
            super().__init__(message)
        elif code and code in ERROR_CODES and ERROR_CODES[code].message in message:
            super().__init__(f"{code}: {message}")
        else:
            super().__init__(f"{_prefix(code, kind)}: {message}")


def _prefix(code: str | None, kind: ErrorKind) -> str:
    if code:
        return describe(code)
    if kind is ErrorKind.BAD_REPLY:
        return "Unreadable Scrappey API reply"
    return "Scrappey API error"


class SessionsUnavailable(ScrappeyError):
    """No session could be created for a pool within the configured budget."""


class SpiderClosing(ScrappeyError):
    """The spider is closing; the request will not be sent."""

    def __init__(self, message: str = "the spider is closing") -> None:
        super().__init__(message)


class SessionWaitTimeout(ScrappeyError):
    """A request waited longer than ``SCRAPPEY_SESSION_WAIT_TIMEOUT`` for a session."""


class SessionCheckFailed(ScrappeyError, IgnoreRequest):
    """A page failed the session check on every session it was retried on.

    An :class:`~scrapy.exceptions.IgnoreRequest`, so the request's errback
    gets it; the rejected page never reaches a callback.
    """
