"""Bad input gets a clear error envelope (HTTP 200), never a traceback or a 500."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from ._support import harness

URL = "http://127.0.0.1:1/never-fetched"

BAD_BODIES: list[tuple[Any, str]] = [
    (b"{not json", "Invalid request body: not valid JSON"),
    (b"", "Invalid request body: not valid JSON"),
    (b"\xff\xfe\x00garbage", "Invalid request body: not valid JSON"),
    ([1, 2], "Invalid request body: must be a JSON object, not an array"),
    (b'"just a string"', "Invalid request body: must be a JSON object, not a string"),
    (b"null", "Invalid request body: must be a JSON object, not null"),
    (b"12", "Invalid request body: must be a JSON object, not a number"),
    ({}, "CODE-0004 Invalid cmd command: 'cmd' is missing"),
    ({"cmd": 5}, "CODE-0004 Invalid cmd command: 'cmd' must be a string"),
    (
        {"cmd": "request.fly"},
        "CODE-0004 Invalid cmd command: 'request.fly' is not one of",
    ),
    ({"cmd": "balance"}, "CODE-0004 Invalid cmd command: 'balance'"),
    ({"cmd": "screenshot"}, "CODE-0004 Invalid cmd command: 'screenshot'"),
    ({"cmd": "request.get"}, "Invalid parameter 'url': is required"),
    ({"cmd": "request.get", "url": 5}, "Invalid parameter 'url': must be a string"),
    (
        {"cmd": "request.get", "url": "ftp://127.0.0.1/"},
        "Invalid parameter 'url': must be an http",
    ),
    (
        {"cmd": "request.get", "url": "no-scheme"},
        "Invalid parameter 'url': must be an http",
    ),
    ({"cmd": "request.get", "url": "http://"}, "Invalid parameter 'url': has no host"),
    (
        {"cmd": "request.get", "url": "http://[::1"},
        "Invalid parameter 'url': cannot be parsed",
    ),
    (
        {"cmd": "request.get", "url": URL, "customHeaders": "a: b"},
        "Invalid parameter 'customHeaders': must be an object",
    ),
    (
        {"cmd": "request.get", "url": URL, "customHeaders": {"a": {"b": 1}}},
        "Invalid parameter 'customHeaders': value of 'a' must be a string",
    ),
    (
        {"cmd": "request.post", "url": URL, "postData": 5},
        "Invalid parameter 'postData': must be a string or an object",
    ),
    (
        {"cmd": "request.post", "url": URL, "postData": [1]},
        "Invalid parameter 'postData': must be a string or an object",
    ),
    (
        {"cmd": "request.get", "url": URL, "session": 5},
        "Invalid parameter 'session': must be a non-empty string",
    ),
    (
        {"cmd": "request.get", "url": URL, "session": ""},
        "Invalid parameter 'session': must be a non-empty string",
    ),
    (
        {"cmd": "request.get", "url": URL, "cookies": {"a": "b"}},
        "Invalid parameter 'cookies': must be a string",
    ),
    (
        {"cmd": "request.get", "url": URL, "cookiejar": "a=b"},
        "Invalid parameter 'cookiejar': must be a list",
    ),
    (
        {"cmd": "request.get", "url": URL, "cookiejar": [5]},
        "Invalid parameter 'cookiejar': items must be objects",
    ),
    (
        {"cmd": "request.get", "url": URL, "cookiejar": [{"value": "v"}]},
        "Invalid parameter 'cookiejar': items need a string 'key' or 'name'",
    ),
    (
        {"cmd": "request.get", "url": URL, "cookiejar": [{"key": "k", "value": 1}]},
        "Invalid parameter 'cookiejar': value of cookie 'k' must be a string",
    ),
    (
        {
            "cmd": "request.get",
            "url": URL,
            "cookiejar": [{"key": "k", "value": "v", "path": 1}],
        },
        "Invalid parameter 'cookiejar': domain and path of 'k' must be strings",
    ),
    (
        {"cmd": "request.get", "url": URL, "timeout": "1000"},
        "Invalid parameter 'timeout': must be a number of milliseconds",
    ),
    (
        {"cmd": "request.get", "url": URL, "timeout": True},
        "Invalid parameter 'timeout': must be a number of milliseconds",
    ),
    (
        {"cmd": "request.get", "url": URL, "timeout": -5},
        "Invalid parameter 'timeout': must be positive",
    ),
    (
        {"cmd": "request.get", "url": URL, "userAgent": 5},
        "Invalid parameter 'userAgent': must be a string",
    ),
    (
        {"cmd": "request.get", "url": URL, "referer": ["x"]},
        "Invalid parameter 'referer': must be a string",
    ),
    (
        {"cmd": "request.get", "url": URL, "browser": "chrome"},
        "Invalid parameter 'browser': must be a list of objects",
    ),
    (
        {"cmd": "sessions.create", "session": 5},
        "Invalid parameter 'session': must be a non-empty string",
    ),
    (
        {"cmd": "sessions.create", "browser": [{"name": "edge"}]},
        "CODE-0030 Browser name must be: firefox, chrome or safari: got 'edge'",
    ),
    (
        {"cmd": "sessions.destroy"},
        "Invalid parameter 'session': required for sessions.destroy",
    ),
    (
        {"cmd": "sessions.active", "session": None},
        "Invalid parameter 'session': required for sessions.active",
    ),
]


@pytest.mark.parametrize(("body", "error"), BAD_BODIES)
@deferred_f_from_coro_f
async def test_bad_body_gets_error_envelope(
    body: Any, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = body if isinstance(body, bytes) else None
    async with harness() as h:
        if raw is not None:
            status, content_type, text = await h.api.raw(raw)
            assert (status, content_type) == (200, "application/json")
            reply = json.loads(text)
        else:
            reply = await h.api.send(body)
        stats = h.server.stats()
    assert reply["data"] == "error"
    assert reply["error"].startswith(error)
    assert reply["solution"] == {"verified": False}
    assert isinstance(reply["timeElapsed"], int)
    assert "session" not in reply
    assert stats["requests"]["total"] == 1
    assert stats["requests_per_session"] == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


@deferred_f_from_coro_f
async def test_error_envelope_names_the_session_when_one_was_given() -> None:
    async with harness() as h:
        reply = await h.api.cmd("request.get", session="s1", customHeaders=[])
    assert reply["error"] == "Invalid parameter 'url': is required"
    assert reply["session"] == "s1"


@deferred_f_from_coro_f
async def test_invalid_commands_are_counted() -> None:
    async with harness() as h:
        await h.api.raw(b"nope")
        await h.api.cmd("request.fly")
        await h.api.cmd("sessions.list")
        stats = h.server.stats()
    assert stats["requests"] == {
        "total": 3,
        "by_command": {"invalid": 2, "sessions.list": 1},
    }
    assert [c["cmd"] for c in stats["commands"]] == [
        "invalid",
        "invalid",
        "sessions.list",
    ]


@deferred_f_from_coro_f
async def test_wrong_http_method_is_not_a_server_error() -> None:
    async with harness() as h, h.api.http.get(h.server.url) as response:
        assert response.status == 405


@deferred_f_from_coro_f
async def test_unhonoured_options_are_accepted() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.get",
            url=h.site.url("/html"),
            browserActions=[{"type": "click", "cssSelector": "a"}],
            screenshot=True,
            requestType="browser",
            proxy="http://user:pass@10.0.0.1:8080",
            innerText="true",  # only JSON true is honoured, like the real API
        )
    assert reply["data"] == "success"
    assert "screenshot" not in reply["solution"]
    assert "javascriptReturn" not in reply["solution"]
    assert "innerText" not in reply["solution"]
