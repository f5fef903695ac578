"""Scrapy responses built from Scrappey API replies."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any

from scrapy.http import HtmlResponse, JsonResponse, Response, TextResponse, XmlResponse
from scrapy.http.headers import Headers
from scrapy.responsetypes import responsetypes

if TYPE_CHECKING:
    from scrapy import Request

#: The body arrives decoded, so these would describe bytes we never got.
_DROPPED_HEADERS = frozenset(
    {b"content-encoding", b"content-length", b"transfer-encoding"}
)
_FLAG = "scrappey"


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

    ``url`` is ``solution.currentUrl`` (the final URL after redirects),
    ``status`` is ``solution.statusCode``, the body is ``solution.response``
    (or the bytes of ``solution.base64Response`` when present), and the class
    is chosen by :mod:`scrapy.responsetypes` from the headers and body.
    """
    solution = api_response.get("solution")
    if not isinstance(solution, dict):
        solution = {}
    url = solution.get("currentUrl") or request.url
    headers = _headers(solution.get("responseHeaders"))
    body, is_text = _body(solution, headers)
    # Sniffing decoded bytes mistakes binaries for text; trust headers then.
    sniff = body if is_text else None
    cls = _scrappey_class(responsetypes.from_args(headers=headers, url=url, body=sniff))
    kwargs: dict[str, Any] = {
        "url": url,
        "status": _status(solution.get("statusCode")),
        "headers": headers,
        "body": b"" if request.method == "HEAD" else body,
        "request": request,
        "flags": [_FLAG],
        "raw_api_response": api_response,
    }
    if issubclass(cls, TextResponse) and is_text:
        # solution.response is already text; we encoded it as UTF-8 whatever
        # charset the target announced, so the header must say so too (the
        # HTTP cache rebuilds responses from headers and body).
        kwargs["encoding"] = "utf-8"
        _declare_utf8(headers, cls)
    return cls(**kwargs)


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


def _status(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 999:
        return value
    if isinstance(value, str) and value.isdigit():
        return _status(int(value))
    # request mode may omit it; the API only answers "success" for a fetched page
    return 200


def _headers(raw: object) -> Headers:
    headers = Headers()
    if not isinstance(raw, dict):
        return headers
    for name, value in raw.items():
        if str(name).lower().encode() in _DROPPED_HEADERS:
            continue
        values = value if isinstance(value, list) else [value]
        headers.setlist(str(name), [_header_value(v) for v in values])
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
    return value if isinstance(value, str) else json.dumps(value)


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
    return text.encode("utf-8"), True
