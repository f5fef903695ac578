"""The browser fields of a ``request.*`` command, checked.

``browserActions``, ``cssSelector``, ``screenshot`` (with ``screenshotWidth``
/ ``screenshotHeight``), ``video`` and ``requestType`` only change what the
browser engine does; the http engine ignores them, as it always has. Their
shapes are checked whatever the engine, so a command that works against the
local http engine does not fail later against a browser.

Action ``wait`` values are milliseconds, as in the API's official examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scrapy_scrappey.local.protocol import ApiError

#: The ``browserActions`` types the browser engine performs; others (captcha
#: solving, logins, …) are accepted and skipped, like unknown fields.
ACTION_TYPES = (
    "click",
    "type",
    "wait",
    "wait_for_selector",
    "execute_js",
    "scroll",
    "goto",
    "hover",
    "wait_for_function",
    "wait_for_load_state",
    "if",
)
#: The largest screenshot side accepted, in pixels.
MAX_SCREENSHOT_SIDE = 8000


@dataclass(frozen=True)
class BrowserParams:
    """What the browser engine should do beyond loading the page."""

    actions: tuple[dict[str, Any], ...] = ()
    css_selector: str | None = None
    screenshot: bool = False
    screenshot_size: tuple[int, int] | None = None
    video: bool = False
    #: ``requestType: "request"``: the session's HTTP client, no rendering.
    plain_request: bool = False
    #: ``innerText: true``: the browser's own, measured only when asked for.
    inner_text: bool = False


def invalid(name: str, why: str) -> ApiError:
    """The error for a bad field: ``Invalid parameter 'name': why``.

    Here rather than in ``validation``, which imports this module for the
    browser fields (and this helper for all the others).
    """
    return ApiError(None, f"Invalid parameter {name!r}: {why}")


def browser_params(body: dict[str, Any]) -> BrowserParams:
    """The browser fields of *body* (defaults when absent)."""
    selector = body.get("cssSelector")
    if selector is not None and (not isinstance(selector, str) or not selector):
        raise invalid("cssSelector", "must be a non-empty string")
    request_type = body.get("requestType", "browser")
    if request_type not in ("browser", "request"):
        raise invalid("requestType", "must be 'browser' or 'request'")
    return BrowserParams(
        actions=_actions(body.get("browserActions")),
        css_selector=selector,
        screenshot=body.get("screenshot") is True,
        screenshot_size=_screenshot_size(body),
        video=body.get("video") is True,
        plain_request=request_type == "request",
        inner_text=body.get("innerText") is True,
    )


def _actions(value: object) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid("browserActions", "must be a list of action objects")
    for index, action in enumerate(value):
        if not isinstance(action, dict) or not isinstance(action.get("type"), str):
            raise invalid("browserActions", f"item {index} needs a string 'type'")
        _check_action(index, action)
    return tuple(value)


def _check_action(index: int, action: dict[str, Any]) -> None:
    kind = action["type"]
    needs = {"click": "cssSelector", "type": "cssSelector", "goto": "url"}
    needs.update(wait_for_selector="cssSelector", execute_js="code")
    needs.update(hover="cssSelector", wait_for_function="code")
    needs["if"] = "condition"
    key = needs.get(kind)
    if key is not None and not isinstance(action.get(key), str):
        raise invalid("browserActions", f"item {index} ({kind}) needs a string {key!r}")
    if kind == "goto" and not action["url"].startswith(("http://", "https://")):
        # file:// would hand the server's own files to any client.
        raise invalid("browserActions", f"item {index} (goto) needs an http(s) URL")
    if kind == "type" and not isinstance(action.get("text"), str):
        raise invalid("browserActions", f"item {index} (type) needs a string 'text'")
    if kind == "if":
        # The branches run too: the same checks (nesting is bounded by validation).
        for branch in ("then", "or"):
            if action.get(branch) is not None:
                _actions(action[branch])
    for name in ("wait", "timeout"):
        number = action.get(name)
        if number is not None and not _positive_number(number):
            raise invalid(
                "browserActions", f"item {index}: {name!r} must be a number >= 0"
            )


def _screenshot_size(body: dict[str, Any]) -> tuple[int, int] | None:
    width, height = body.get("screenshotWidth"), body.get("screenshotHeight")
    if width is None and height is None:
        return None
    for name, side in (("screenshotWidth", width), ("screenshotHeight", height)):
        if side is None:
            raise invalid(name, "is required when the other screenshot side is set")
        if isinstance(side, bool) or not isinstance(side, int):
            raise invalid(name, "must be a whole number of pixels")
        if not 1 <= side <= MAX_SCREENSHOT_SIDE:
            raise invalid(name, f"must be between 1 and {MAX_SCREENSHOT_SIDE}")
    assert isinstance(width, int)
    assert isinstance(height, int)
    return width, height


def _positive_number(value: object) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0
    )
