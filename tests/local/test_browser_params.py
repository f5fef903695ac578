"""Checking the browser fields of a request (any engine)."""

from __future__ import annotations

import aiohttp
import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local.browser_params import BrowserParams, browser_params
from scrapy_scrappey.local.protocol import ApiError

from ._support import Api


def test_defaults_when_absent():
    assert browser_params({}) == BrowserParams()


def test_fields_are_read():
    actions = [{"type": "click", "cssSelector": "a"}, {"type": "solve_captcha"}]
    params = browser_params(
        {
            "browserActions": actions,
            "cssSelector": "#x",
            "screenshot": True,
            "screenshotWidth": 640,
            "screenshotHeight": 480,
            "video": True,
            "requestType": "request",
        }
    )
    assert params == BrowserParams(
        actions=tuple(actions),
        css_selector="#x",
        screenshot=True,
        screenshot_size=(640, 480),
        video=True,
        plain_request=True,
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"browserActions": {"type": "click"}}, "'browserActions': must be a list"),
        ({"browserActions": [3]}, "item 0 needs a string 'type'"),
        (
            {"browserActions": [{"type": "click"}]},
            "item 0 (click) needs a string 'cssSelector'",
        ),
        (
            {"browserActions": [{"type": "type", "cssSelector": "a"}]},
            "needs a string 'text'",
        ),
        ({"browserActions": [{"type": "goto"}]}, "item 0 (goto) needs a string 'url'"),
        (
            {"browserActions": [{"type": "goto", "url": "file:///etc/passwd"}]},
            "item 0 (goto) needs an http(s) URL",
        ),
        (
            {
                "browserActions": [
                    {
                        "type": "if",
                        "condition": "1",
                        "then": [{"type": "goto", "url": "file:///"}],
                    }
                ]
            },
            "item 0 (goto) needs an http(s) URL",
        ),
        (
            {"browserActions": [{"type": "wait", "wait": -1}]},
            "'wait' must be a number >= 0",
        ),
        (
            {"browserActions": [{"type": "wait", "wait": True}]},
            "'wait' must be a number",
        ),
        ({"cssSelector": ""}, "'cssSelector': must be a non-empty string"),
        ({"requestType": "tls"}, "'requestType': must be 'browser' or 'request'"),
        ({"screenshotWidth": 10}, "'screenshotHeight': is required"),
        ({"screenshotWidth": 0, "screenshotHeight": 10}, "between 1 and 8000"),
        ({"screenshotWidth": 1.5, "screenshotHeight": 10}, "whole number of pixels"),
    ],
)
def test_bad_fields_name_the_culprit(body, error):
    with pytest.raises(ApiError) as raised:
        browser_params(body)
    assert error in raised.value.text


@deferred_f_from_coro_f
async def test_bad_browser_field_fails_before_the_session_is_used(
    started, make_local_server
):
    server = await make_local_server()
    http = await started(aiohttp.ClientSession())
    api = Api(http, server, None)
    session = await api.create("kept")
    reply = await api.cmd(
        "request.get", url="http://127.0.0.1:1/", session=session, cssSelector=""
    )
    stats = server.stats()
    assert (
        reply["error"] == "Invalid parameter 'cssSelector': must be a non-empty string"
    )
    assert stats["requests_per_session"] == {}
    assert stats["open_sessions"] == ["kept"]
