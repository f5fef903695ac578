"""Bad input gets a clear error envelope (HTTP 200), never a traceback or a 500."""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from ._support import harness

URL = "http://127.0.0.1:1/never-fetched"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


# Deeper than Python's JSON decoder can go (it stops near the recursion limit).
TOO_DEEP_TO_DECODE = b"[" * 100_000 + b"]" * 100_000

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
        # A string, an object and a list of cookies are all accepted; not a number.
        {"cmd": "request.get", "url": URL, "cookies": 5},
        "Invalid parameter 'cookies': must be a string, an object or a list",
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
        # A name and a list of names or objects are accepted; not a number.
        {"cmd": "request.get", "url": URL, "browser": 5},
        "Invalid parameter 'browser': must be a name or a list of names or objects",
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
    (TOO_DEEP_TO_DECODE, "Invalid request body: nested more than 100 levels deep"),
    (
        b'{"cmd": "request.get", "extra": ' + TOO_DEEP_TO_DECODE + b"}",
        "Invalid request body: nested more than 100 levels deep",
    ),
    (
        {
            "cmd": "request.post",
            "url": URL,
            "customHeaders": FORM,
            "postData": {"field": _nested(500)},
        },
        "Invalid parameter 'postData': nested more than 100 levels deep",
    ),
    (
        {"cmd": "sessions.create", "locales": _nested(101)},
        "Invalid parameter 'locales': nested more than 100 levels deep",
    ),
    (
        {"cmd": "request.post", "url": URL, "postData": "caf\ud800"},
        "Invalid parameter 'postData': contains a lone surrogate",
    ),
    (
        {
            "cmd": "request.post",
            "url": URL,
            "customHeaders": FORM,
            "postData": {"\udfff": 1},
        },
        "Invalid parameter 'postData': contains a lone surrogate",
    ),
    (
        {"cmd": "request.get", "url": URL + "\ud800"},
        "Invalid parameter 'url': contains a lone surrogate",
    ),
    (
        {"cmd": "request.get", "url": URL, "cookiejar": [{"key": "a b", "value": "v"}]},
        "Invalid parameter 'cookiejar': cookie name 'a b' is refused",
    ),
    (
        {
            "cmd": "request.get",
            "url": URL,
            "cookiejar": [{"key": "expires", "value": ""}],
        },
        "Invalid parameter 'cookiejar': cookie name 'expires' is refused",
    ),
    (
        {
            "cmd": "request.get",
            "url": URL,
            "cookiejar": [{"key": "k", "value": "v", "domain": "a b.example"}],
        },
        "Invalid parameter 'cookiejar': domain of 'k' is not a host",
    ),
    (
        {"cmd": "request.get", "url": URL, "timeout": float("inf")},
        "Invalid parameter 'timeout': must be a finite number, got inf",
    ),
    (
        {"cmd": "request.get", "url": URL, "timeout": float("nan")},
        "Invalid parameter 'timeout': must be a finite number, got nan",
    ),
    (
        {"cmd": "request.get", "url": URL, "timeout": 10**400},
        "Invalid parameter 'timeout': must be at most 86400000 ms",
    ),
    (
        {"cmd": "request.get", "url": URL, "customHeaders": {"X-A": "1\r\nX-B: 2"}},
        "Invalid parameter 'customHeaders': value of 'X-A' must not contain CR, LF",
    ),
    (
        {"cmd": "request.get", "url": URL, "customHeaders": {"X A": "1"}},
        "Invalid parameter 'customHeaders': 'X A' is not a header name",
    ),
    (
        {"cmd": "request.get", "url": URL, "userAgent": "UA\nX-B: 2"},
        "Invalid parameter 'userAgent': must not contain CR, LF or NUL",
    ),
    (
        {"cmd": "request.get", "url": URL, "cookies": "a=1\x00"},
        "Invalid parameter 'cookies': must not contain CR, LF or NUL",
    ),
    (
        {"cmd": "sessions.create", "userAgent": "UA\r\n"},
        "Invalid parameter 'userAgent': must not contain CR, LF or NUL",
    ),
    (
        {"cmd": "request.get", "url": URL, "session": "s" * 257},
        "Invalid parameter 'session': must be at most 256 characters",
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


@pytest.mark.parametrize(
    ("encoding", "error"),
    [
        ("gzip", "cannot be decoded as Content-Encoding 'gzip'"),
        ("deflate", "cannot be decoded as Content-Encoding 'deflate'"),
        ("br", "Content-Encoding 'br' is not supported"),
    ],
)
@deferred_f_from_coro_f
async def test_body_not_in_its_declared_encoding(
    encoding: str, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"cmd": "sessions.list"}).encode()
    headers = {"Content-Encoding": encoding}
    async with harness() as h:
        replies = []
        # Short and long bodies: aiohttp used to fail on the short ones while
        # parsing, before any route was known.
        for data in (b"{}", body * 200):
            async with h.api.http.post(
                h.server.url, data=data, headers=headers
            ) as response:
                replies.append((response.status, await response.json()))
        faults_url = h.server.base_url + "/__local__/faults"
        async with h.api.http.post(faults_url, data=b"{}", headers=headers) as response:
            faults_reply = response.status, await response.json()
        stats = h.server.stats()
    for status, reply in replies:
        assert status == 200
        assert reply["data"] == "error"
        assert reply["error"].startswith(f"Invalid request body: {error}")
    assert faults_reply[0] == 400
    assert faults_reply[1]["error"].startswith(f"Invalid request body: {error}")
    assert stats["requests"]["by_command"] == {"invalid": 2}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@deferred_f_from_coro_f
async def test_compressed_bodies_are_decoded() -> None:
    body = json.dumps({"cmd": "sessions.list"}).encode()
    async with harness() as h:
        replies = []
        for encoding, data in (
            ("gzip", gzip.compress(body)),
            ("deflate", zlib.compress(body)),
            ("gzip, identity", gzip.compress(body)),
            ("deflate, gzip", gzip.compress(zlib.compress(body))),
        ):
            headers = {"Content-Encoding": encoding}
            async with h.api.http.post(
                h.server.url, data=data, headers=headers
            ) as response:
                replies.append((await response.json())["data"])
    assert replies == ["success"] * 4


@deferred_f_from_coro_f
async def test_faults_route_refuses_deep_json_with_an_envelope() -> None:
    async with harness() as h:
        url = h.server.base_url + "/__local__/faults"
        async with h.api.http.post(url, data=TOO_DEEP_TO_DECODE) as response:
            deep = response.status, await response.json()
        async with h.api.http.post(
            url, json={"latency": {"request.get": _nested(200)}}
        ) as response:
            nested = response.status, await response.json()
        async with h.api.http.post(url, data=b"[1]") as response:
            array = response.status, await response.json()
        unchanged = h.server.faults
    assert deep == (
        400,
        {
            "data": "error",
            "error": "Invalid request body: nested more than 100 levels deep",
            "solution": {"verified": False},
            "timeElapsed": 0,
        },
    )
    assert nested[0] == 400
    assert nested[1]["error"] == (
        "Invalid parameter 'latency': nested more than 100 levels deep"
    )
    assert array[0] == 400
    assert array[1]["error"].startswith("Invalid request body: must be a JSON object")
    assert unchanged.latency == {}
