"""Scrapy responses built from Scrappey API replies."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from scrapy.http import HtmlResponse, JsonResponse, Response, TextResponse, XmlResponse
from scrapy.http.headers import Headers
from scrapy.responsetypes import responsetypes

from ._redact import redact_url
from .codes import ErrorKind
from .exceptions import ScrappeyAPIError

if TYPE_CHECKING:
    from scrapy import Request

#: The body arrives decoded, so these would describe bytes we never got.
_DROPPED_HEADERS = frozenset(
    {"content-encoding", "content-length", "transfer-encoding"}
)
_FLAG = "scrappey"
#: Flag of a response whose ``solution.currentUrl`` was not an absolute
#: http(s) URL (``file:``, ``javascript:``, relative…): it keeps request.url.
BAD_CURRENT_URL_FLAG = "scrappey_bad_current_url"
_STATUS_RE = re.compile(r"[1-5][0-9][0-9]", re.ASCII)
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_QUOTE_LIMIT = 40


class PageProblem(NamedTuple):
    """Why a reply that reports no error holds no page, and what to do about it."""

    message: str
    kind: ErrorKind


class ScrappeyMixin:
    """Adds :attr:`raw_api_response`: the API reply as parsed JSON (treat it as read-only)."""

    raw_api_response: dict[str, Any] | None

    def __init__(
        self, *args: Any, raw_api_response: dict[str, Any] | None = None, **kwargs: Any
    ):
        self.raw_api_response = raw_api_response
        super().__init__(*args, **kwargs)

    @property
    def scrappey_solution(self) -> dict[str, Any]:
        """``raw_api_response["solution"]``, or ``{}``."""
        solution = (self.raw_api_response or {}).get("solution")
        return solution if isinstance(solution, dict) else {}


class ScrappeyResponse(ScrappeyMixin, Response):
    attributes = (*Response.attributes, "raw_api_response")

    @staticmethod
    def from_api_response(
        api_response: dict[str, Any], *, request: Request
    ) -> Response:
        """Alternative constructor: see :func:`from_api_response`."""
        return from_api_response(api_response, request=request)


class ScrappeyTextResponse(ScrappeyMixin, TextResponse):
    attributes = (*TextResponse.attributes, "raw_api_response")


class ScrappeyHtmlResponse(ScrappeyMixin, HtmlResponse):
    attributes = (*HtmlResponse.attributes, "raw_api_response")


class ScrappeyXmlResponse(ScrappeyMixin, XmlResponse):
    attributes = (*XmlResponse.attributes, "raw_api_response")


class ScrappeyJsonResponse(ScrappeyMixin, JsonResponse):
    attributes = (*JsonResponse.attributes, "raw_api_response")


# Most specific first: JsonResponse and HtmlResponse are TextResponse subclasses.
_CLASSES: tuple[tuple[type[Response], type[Response]], ...] = (
    (JsonResponse, ScrappeyJsonResponse),
    (HtmlResponse, ScrappeyHtmlResponse),
    (XmlResponse, ScrappeyXmlResponse),
    (TextResponse, ScrappeyTextResponse),
)


def _scrappey_class(cls: type[Response]) -> type[Response]:
    for base, ours in _CLASSES:
        if issubclass(cls, base):
            return ours
    return ScrappeyResponse


def from_api_response(api_response: dict[str, Any], *, request: Request) -> Response:
    """Build the Scrapy response for a successful ``request.*`` reply.

    ``url`` is ``solution.currentUrl`` (the final URL after redirects) when it
    is an absolute http(s) URL, else ``request.url`` and the response carries
    the ``"scrappey_bad_current_url"`` flag; ``status`` is
    ``solution.statusCode``, the body is ``solution.response`` (or the bytes of
    ``solution.base64Response`` when present), and the class is chosen by
    :mod:`scrapy.responsetypes` from the headers and body.

    A reply that holds no page raises :class:`ScrappeyAPIError` (see
    :func:`page_problem`).
    """
    page = _read_page(api_response)
    if isinstance(page, PageProblem):
        raise ScrappeyAPIError(page.message, code=None, kind=page.kind)
    solution, status = page
    url = _current_url(solution.get("currentUrl"), request)
    flags = [_FLAG] if url is not None else [_FLAG, BAD_CURRENT_URL_FLAG]
    url = url or request.url
    headers = _headers(solution.get("responseHeaders"))
    body, is_text = _body(solution, headers)
    # Sniffing decoded bytes mistakes binaries for text; trust headers then.
    sniff = body if is_text else None
    cls = _scrappey_class(responsetypes.from_args(headers=headers, url=url, body=sniff))
    kwargs: dict[str, Any] = {
        "url": url,
        "status": status,
        "headers": headers,
        "body": b"" if request.method == "HEAD" else body,
        "request": request,
        "flags": flags,
        "raw_api_response": api_response,
    }
    if issubclass(cls, TextResponse) and is_text:
        # solution.response is already text; we encoded it as UTF-8 whatever
        # charset the target announced, so the header must say so too (the
        # HTTP cache rebuilds responses from headers and body).
        kwargs["encoding"] = "utf-8"
        _declare_utf8(headers, cls)
    return cls(**kwargs)


def page_problem(api_response: dict[str, Any]) -> PageProblem | None:
    """Why a ``request.*`` reply that reports no error holds no page, or ``None``.

    A page needs ``data: "success"``, a ``solution`` object and a
    ``solution.statusCode`` in 100-599. No documented success omits
    statusCode, so a reply without one is not a page either: inventing a 200
    would hand a filtered-out 404 to the callback (and the HTTP cache).
    ``solution.verified: false`` is the API saying the request failed (it is
    not billed): :attr:`ErrorKind.UNVERIFIED`, never a page.
    """
    page = _read_page(api_response)
    return page if isinstance(page, PageProblem) else None


def _read_page(
    api_response: dict[str, Any],
) -> tuple[dict[str, Any], int] | PageProblem:
    if api_response.get("data") != "success":
        return _bad(f"'data' is {_quote(api_response, 'data')}, not 'success'")
    solution = api_response.get("solution")
    if not isinstance(solution, dict):
        return _bad(f"'solution' is {_quote(api_response, 'solution')}, not an object")
    if solution.get("verified") is False:
        return PageProblem(
            "'solution.verified' is false: the API did not verify the page",
            ErrorKind.UNVERIFIED,
        )
    status = _status(solution.get("statusCode"))
    if status is None:
        quoted = _quote(solution, "statusCode")
        hint = (
            " (a 'filter' option must keep 'statusCode')" if quoted == "missing" else ""
        )
        return _bad(f"'solution.statusCode' is {quoted}, not 100-599{hint}")
    return solution, status


def _bad(message: str) -> PageProblem:
    return PageProblem(message, ErrorKind.BAD_REPLY)


def _quote(parent: dict[str, Any], name: str) -> str:
    """A short description of ``parent[name]`` for an error message."""
    if name not in parent:
        return "missing"
    value = parent[name]
    if isinstance(value, (dict, list)):
        return "an array" if isinstance(value, list) else "an object"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a huge number"  # repr() refuses ints beyond 4300 digits
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _QUOTE_LIMIT else f"{text[:_QUOTE_LIMIT]}…"


def raw_response(body: bytes, *, status: int, request: Request, url: str) -> Response:
    """The response of a raw-mode request: the API's JSON reply, unparsed."""
    return ScrappeyJsonResponse(
        url=url,
        status=status,
        headers={"Content-Type": "application/json"},
        body=body,
        request=request,
        flags=[_FLAG, "scrappey_raw"],
        raw_api_response=None,
    )


def _status(value: object) -> int | None:
    if isinstance(value, str) and _STATUS_RE.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def _current_url(value: object, request: Request) -> str | None:
    """The API's final URL, if it is one a response may have."""
    if value in (None, "", request.url):
        return request.url
    if not isinstance(value, str) or not value.strip().isprintable():
        return None
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    # The API's own URL, key included, must not become response.url.
    return redact_url(value)


def _headers(raw: object) -> Headers:
    headers = Headers()
    if not isinstance(raw, dict):
        return headers
    for name, value in raw.items():
        # A name that is no HTTP token would break the header block that
        # the HTTP cache writes (CR/LF, ":"); no server can have sent it.
        if not _TOKEN_RE.fullmatch(name) or name.lower() in _DROPPED_HEADERS:
            continue
        values = value if isinstance(value, list) else [value]
        if values:  # an empty list is no header (Scrapy would read it as None)
            headers.setlist(name, [_header_value(v) for v in values])
    return headers


_DEFAULT_TYPES: dict[type[Response], bytes] = {
    ScrappeyHtmlResponse: b"text/html",
    ScrappeyXmlResponse: b"text/xml",
    ScrappeyJsonResponse: b"application/json",
}
_CHARSET_RE = re.compile(rb"charset\s*=\s*[\"']?[\w.:-]+[\"']?", re.IGNORECASE)


def _declare_utf8(headers: Headers, cls: type[Response]) -> None:
    content_type = headers.get(b"Content-Type") or _DEFAULT_TYPES.get(
        cls, b"text/plain"
    )
    if _CHARSET_RE.search(content_type):
        content_type = _CHARSET_RE.sub(b"charset=utf-8", content_type)
    else:
        content_type += b"; charset=utf-8"
    headers[b"Content-Type"] = content_type


def _header_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return _CONTROL_RE.sub(" ", _valid_unicode(text))


def _valid_unicode(text: str) -> str:
    """*text* with lone surrogates (valid in JSON, not in UTF-8) replaced by U+FFFD."""
    return _SURROGATE_RE.sub("\ufffd", text)


def _body(solution: dict[str, Any], headers: Headers) -> tuple[bytes, bool]:
    encoded = solution.get("base64Response")
    if isinstance(encoded, str) and encoded:
        try:
            return base64.b64decode(encoded, validate=True), False
        except (binascii.Error, ValueError):
            pass  # fall back to the text body rather than lose the page
    text = solution.get("response")
    content_type = (headers.get(b"Content-Type") or b"").lower()
    inner = solution.get("innerText")
    # In browser mode a JSON document comes back wrapped in the browser's HTML
    # viewer; innerText holds the JSON itself.
    if (
        b"json" in content_type
        and isinstance(inner, str)
        and inner.lstrip()[:1] in ("{", "[")
    ):
        text = inner
    if not isinstance(text, str):
        text = "" if text is None else json.dumps(text)
    return _valid_unicode(text).encode("utf-8"), True
