"""Turning a Scrapy request into a Scrappey ``request.*`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.settings import default_settings

from .exceptions import ScrappeyConfigError

if TYPE_CHECKING:
    from scrapy import Request

#: HEAD has no command; it is sent as ``request.get`` and the body is dropped
#: from the response, the same mapping as the official Python SDK.
METHOD_COMMANDS: dict[str, str] = {
    "GET": "request.get",
    "HEAD": "request.get",
    "POST": "request.post",
    "PUT": "request.put",
    "PATCH": "request.patch",
    "DELETE": "request.delete",
}

#: Headers that describe the connection to the API, not the page request, or
#: that travel in their own field (Cookie → ``cookies``).
_NOT_FORWARDED = frozenset(
    {
        b"accept-encoding",
        b"connection",
        b"content-length",
        b"cookie",
        b"host",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Values Scrapy adds on its own. Forwarding them would replace the remote
#: browser's realistic headers with a bot signature, so only headers a user
#: set (or changed) are forwarded.
_SCRAPY_DEFAULTS: dict[bytes, bytes] = {
    b"user-agent": str(default_settings.USER_AGENT).encode(),
    **{
        k.lower().encode(): v.encode()
        for k, v in default_settings.DEFAULT_REQUEST_HEADERS.items()
    },
}

_RESERVED_PARAMS = ("cmd", "url")


def merge_params(
    defaults: dict[str, Any], meta_value: object, request: Request
) -> dict[str, Any]:
    """``SCRAPPEY_DEFAULT_PARAMS`` overlaid with the ``scrappey`` meta dict.

    A ``None`` value in the meta dict removes a default.
    """
    params = dict(defaults)
    if meta_value is True:
        return params
    if not isinstance(meta_value, dict):
        raise ScrappeyConfigError(
            f"The 'scrappey' meta key of {request} must be True, False or a dict of "
            f"API parameters, got {meta_value!r}."
        )
    for name, value in meta_value.items():
        if name in _RESERVED_PARAMS:
            raise ScrappeyConfigError(
                f"The 'scrappey' meta key of {request} sets {name!r}, which the plugin "
                f"derives from the request itself; remove it."
            )
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return params


def build_payload(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    """The JSON command for *request*; *params* win over the mapped fields."""
    cmd = METHOD_COMMANDS.get(request.method.upper())
    if cmd is None:
        raise ScrappeyConfigError(
            f"{request}: Scrappey has no command for the {request.method} method "
            f"(supported: {', '.join(METHOD_COMMANDS)}). Set meta 'scrappey': False "
            f"to send it directly."
        )
    payload: dict[str, Any] = {"cmd": cmd, "url": request.url}
    headers = _custom_headers(request)
    if headers:
        payload["customHeaders"] = headers
    cookie = request.headers.get(b"Cookie")
    if cookie:
        payload["cookies"] = cookie.decode("latin-1")
    if request.body and cmd != "request.get":
        payload["postData"] = _post_data(request)
    payload.update(params)
    payload["cmd"], payload["url"] = cmd, request.url
    return payload


def _custom_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, values in request.headers.items():
        lower = name.lower()
        if lower in _NOT_FORWARDED or not values:
            continue
        if len(values) == 1 and _SCRAPY_DEFAULTS.get(lower) == values[0]:
            continue
        headers[name.decode("latin-1")] = ", ".join(v.decode("latin-1") for v in values)
    return headers


def _post_data(request: Request) -> str:
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError as ex:
        raise ScrappeyConfigError(
            f"{request}: the request body is not UTF-8 text, and Scrappey's postData "
            f"only carries text. Send binary uploads with meta 'scrappey': False."
        ) from ex
