"""Translating between API fields and plain HTTP.

Inbound, :func:`build_spec` turns a validated ``request.*`` into what is sent
to the target: ``customHeaders`` as given (minus framing headers), the
``cookies`` string as a Cookie header for this request, ``postData`` as the
body — a string as is (form content type when none is given), an object
JSON-encoded unless the content type is a form, then url-encoded.

Outbound, :func:`build_solution` renders the ``solution`` object of the
success envelope from what the target answered.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import json
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from scrapy_scrappey.local.engine import DEFAULT_TIMEOUT, FetchSpec

if TYPE_CHECKING:
    from scrapy_scrappey.local.engine import FetchResult
    from scrapy_scrappey.local.validation import RequestParams

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
# Framing is the client library's job; a stale value would corrupt the request.
_DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "host"})
_CHARSET_RE = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


def build_spec(params: RequestParams, user_agent: str) -> FetchSpec:
    """The HTTP request for *params*, presenting *user_agent* unless overridden."""
    headers = [
        (k, v) for k, v in params.custom_headers.items() if k.lower() not in _DROPPED
    ]
    names = {name.lower() for name, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", params.user_agent or user_agent))
    if params.referer and "referer" not in names:
        headers.append(("Referer", params.referer))
    if params.cookies:
        headers = _with_cookies(headers, params.cookies)
    body, content_type = _body(params.post_data, _header(headers, "content-type"))
    if body is not None and "content-type" not in names:
        headers.append(("Content-Type", content_type))
    return FetchSpec(
        method=params.method,
        url=params.url,
        headers=headers,
        body=body,
        cookiejar=params.cookiejar,
        timeout=params.timeout or DEFAULT_TIMEOUT,
        user_agent=_header(headers, "user-agent") or user_agent,
        browser=params.browser,
    )


def build_solution(result: FetchResult, params: RequestParams) -> dict[str, Any]:
    """The ``solution`` object; extras only when the command asked for them."""
    headers = join_headers(result.headers)
    content_type = headers.get("content-type", "")
    text = decode_body(result.body, content_type)
    solution: dict[str, Any] = {
        "verified": True,
        "type": result.engine,
        "statusCode": result.status,
        "currentUrl": result.url,
        "response": text,
        "responseHeaders": headers,
        "cookies": result.cookies,
        "cookieString": "; ".join(f"{c['name']}={c['value']}" for c in result.cookies),
        "userAgent": result.user_agent,
    }
    # A browser measures innerText itself; the HTML approximation is the fallback.
    if params.inner_text and "innerText" not in result.extras:
        solution["innerText"] = inner_text(text, content_type)
    if params.base64_response:
        solution["base64Response"] = base64.b64encode(result.body).decode("ascii")
    if params.list_all_redirects:
        solution["listAllRedirectsResponse"] = list(result.redirects)
    solution.update(result.extras)  # screenshot, javascriptReturn, …
    return solution


def join_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names; repeated headers joined with ``", "``.

    ``set-cookie`` values are joined with a newline instead, because cookie
    dates contain commas.
    """
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in joined:
            sep = "\n" if key == "set-cookie" else ", "
            joined[key] = f"{joined[key]}{sep}{value}"
        else:
            joined[key] = value
    return joined


def decode_body(body: bytes, content_type: str) -> str:
    """The body as text: declared charset if known, else UTF-8, never failing."""
    match = _CHARSET_RE.search(content_type)
    encoding = "utf-8"
    if match:
        with contextlib.suppress(LookupError):  # unknown charset: stay with UTF-8
            encoding = codecs.lookup(match.group(1)).name
    return body.decode(encoding, errors="replace")


def inner_text(text: str, content_type: str) -> str:
    """What a browser's ``innerText`` would roughly show: text without tags.

    Non-HTML bodies (JSON, plain text) are shown as they are, like a browser
    rendering them.
    """
    if "html" not in content_type.lower() and not text.lstrip().startswith("<"):
        return text
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return parser.text()


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "template", "noscript"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self._parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self._parts).splitlines())
        return "\n".join(line for line in lines if line)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _with_cookies(
    headers: list[tuple[str, str]], cookies: str
) -> list[tuple[str, str]]:
    given = _header(headers, "cookie")
    rest = [(k, v) for k, v in headers if k.lower() != "cookie"]
    return [*rest, ("Cookie", f"{given}; {cookies}" if given else cookies)]


def _body(
    post_data: str | dict[str, Any] | None, content_type: str | None
) -> tuple[bytes | None, str]:
    if post_data is None:
        return None, ""
    if isinstance(post_data, str):
        return post_data.encode("utf-8"), content_type or _FORM
    if content_type and _FORM in content_type.lower():
        return urlencode(_form_fields(post_data), doseq=True).encode(
            "ascii"
        ), content_type
    return json.dumps(post_data).encode("utf-8"), content_type or _JSON


def _form_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {key: _form_value(value) for key, value in data.items()}


def _form_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_form_value(item) for item in value]
    # Numbers, booleans, null and nested objects: their JSON text is the least
    # surprising form value ("true", not Python's "True").
    return json.dumps(value)
