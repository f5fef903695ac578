"""request.* commands against a real target: every documented envelope field."""

from __future__ import annotations

import base64
import json

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local.sessions import DEFAULT_USER_AGENT

from ._support import BINARY, harness

SOLUTION_KEYS = {
    "verified",
    "type",
    "statusCode",
    "currentUrl",
    "response",
    "responseHeaders",
    "cookies",
    "cookieString",
    "userAgent",
}
COOKIE_KEYS = {
    "name",
    "value",
    "domain",
    "path",
    "expires",
    "httpOnly",
    "secure",
    "sameSite",
}


@deferred_f_from_coro_f
async def test_get_success_envelope() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.get", url=h.site.url("/set-cookie?name=sid&value=42")
        )
    assert set(reply) == {
        "solution",
        "timeElapsed",
        "data",
    }  # no session named, none echoed
    assert reply["data"] == "success"
    assert isinstance(reply["timeElapsed"], int)
    assert reply["timeElapsed"] >= 0
    solution = reply["solution"]
    assert set(solution) == SOLUTION_KEYS
    assert solution["verified"] is True
    assert solution["type"] == "request"
    assert solution["statusCode"] == 200
    assert solution["currentUrl"] == h.site.url("/set-cookie?name=sid&value=42")
    assert solution["response"] == "<p>set sid</p>"
    assert solution["responseHeaders"]["content-type"] == "text/html; charset=utf-8"
    assert all(name == name.lower() for name in solution["responseHeaders"])
    assert solution["userAgent"] == DEFAULT_USER_AGENT
    cookies = {c["name"]: c for c in solution["cookies"]}
    assert set(cookies) == {"sid", "plain"}
    sid = cookies["sid"]
    assert set(sid) == COOKIE_KEYS
    assert sid["value"] == "42"
    assert sid["domain"] == "127.0.0.1"
    assert sid["path"] == "/"
    assert sid["httpOnly"] is True
    assert sid["secure"] is False
    assert sid["sameSite"] == "Strict"
    assert sid["expires"] > 0
    assert cookies["plain"]["expires"] == -1
    assert cookies["plain"]["httpOnly"] is False
    assert solution["cookieString"] == "; ".join(
        f"{c['name']}={c['value']}" for c in solution["cookies"]
    )


@deferred_f_from_coro_f
async def test_repeated_headers_are_joined() -> None:
    async with harness() as h:
        multi = await h.api.cmd("request.get", url=h.site.url("/multi"))
        cookies = await h.api.cmd("request.get", url=h.site.url("/set-cookie"))
    assert multi["solution"]["responseHeaders"]["x-multi"] == "one, two"
    set_cookie = cookies["solution"]["responseHeaders"]["set-cookie"].split("\n")
    assert len(set_cookie) == 2
    assert set_cookie[0].startswith("visited=yes")
    assert set_cookie[1].startswith("plain=1")


@deferred_f_from_coro_f
async def test_redirects_are_followed_and_listed() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.get", url=h.site.url("/redirect/2"), listAllRedirects=True
        )
        plain = await h.api.cmd("request.get", url=h.site.url("/redirect/1"))
    solution = reply["solution"]
    assert solution["statusCode"] == 200
    assert solution["currentUrl"] == h.site.url("/html")
    assert solution["listAllRedirectsResponse"] == [
        h.site.url("/redirect/2"),
        h.site.url("/redirect/1"),
        h.site.url("/redirect/0"),
        h.site.url("/html"),
    ]
    # Cookies set on redirect hops end up in the jar of the request.
    assert {c["name"] for c in solution["cookies"]} == {"hop2", "hop1"}
    assert "listAllRedirectsResponse" not in plain["solution"]


@deferred_f_from_coro_f
async def test_target_status_is_reported_not_an_error() -> None:
    async with harness() as h:
        reply = await h.api.cmd("request.get", url=h.site.url("/no-such-page"))
    assert reply["data"] == "success"
    assert reply["solution"]["statusCode"] == 404
    assert "404" in reply["solution"]["response"]


@deferred_f_from_coro_f
async def test_inner_text_of_html_and_json() -> None:
    async with harness() as h:
        html = await h.api.cmd("request.get", url=h.site.url("/html"), innerText=True)
        data = await h.api.cmd("request.get", url=h.site.url("/json"), innerText=True)
        plain = await h.api.cmd("request.get", url=h.site.url("/html"))
    assert html["solution"]["innerText"] == "Hello & welcome\nFirst para\nSecond"
    assert json.loads(data["solution"]["innerText"]) == {"key": "value", "number": 42}
    assert "innerText" not in plain["solution"]


@deferred_f_from_coro_f
async def test_binary_and_base64_response() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.get", url=h.site.url("/binary"), base64Response=True
        )
        plain = await h.api.cmd("request.get", url=h.site.url("/binary"))
    solution = reply["solution"]
    assert base64.b64decode(solution["base64Response"]) == BINARY
    assert solution["responseHeaders"]["content-type"] == "application/octet-stream"
    assert isinstance(solution["response"], str)
    assert "base64Response" not in plain["solution"]


@deferred_f_from_coro_f
async def test_declared_charset_is_used() -> None:
    async with harness() as h:
        reply = await h.api.cmd("request.get", url=h.site.url("/latin1"))
    assert reply["solution"]["response"] == "café"


@pytest.mark.parametrize("verb", ["post", "put", "patch", "delete"])
@deferred_f_from_coro_f
async def test_methods_and_string_body(verb: str) -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            f"request.{verb}", url=h.site.url("/echo"), postData="a=1&b=2"
        )
    echo = json.loads(reply["solution"]["response"])
    assert echo["method"] == verb.upper()
    assert echo["body"] == "a=1&b=2"
    assert echo["headers"]["Content-Type"] == "application/x-www-form-urlencoded"


@deferred_f_from_coro_f
async def test_get_sends_no_body() -> None:
    async with harness() as h:
        reply = await h.api.cmd("request.get", url=h.site.url("/echo?x=1"))
    echo = json.loads(reply["solution"]["response"])
    assert echo["method"] == "GET"
    assert echo["body"] == ""
    assert echo["query"] == {"x": "1"}


@pytest.mark.parametrize(
    ("headers", "expected_body", "expected_type"),
    [
        ({}, {"name": "Jo", "n": 1}, "application/json"),
        (
            {"content-type": "application/json"},
            {"name": "Jo", "n": 1},
            "application/json",
        ),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            "name=Jo&n=1",
            "application/x-www-form-urlencoded",
        ),
    ],
)
@deferred_f_from_coro_f
async def test_object_post_data_encoding(
    headers: dict[str, str], expected_body: object, expected_type: str
) -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.post",
            url=h.site.url("/echo"),
            postData={"name": "Jo", "n": 1},
            customHeaders=headers,
        )
    echo = json.loads(reply["solution"]["response"])
    body = echo["body"] if isinstance(expected_body, str) else json.loads(echo["body"])
    assert body == expected_body
    assert echo["headers"]["Content-Type"] == expected_type


@deferred_f_from_coro_f
async def test_custom_headers_cookies_and_user_agent() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.get",
            url=h.site.url("/echo"),
            customHeaders={"X-Test": "yes", "Content-Length": "999"},
            cookies="a=b; c=d",
            userAgent="MyAgent/1.0",
            referer="http://127.0.0.1/from",
        )
    echo = json.loads(reply["solution"]["response"])
    assert echo["headers"]["X-Test"] == "yes"
    assert echo["headers"]["User-Agent"] == "MyAgent/1.0"
    assert echo["headers"]["Referer"] == "http://127.0.0.1/from"
    assert echo["cookies"] == {"a": "b", "c": "d"}
    assert reply["solution"]["userAgent"] == "MyAgent/1.0"


@deferred_f_from_coro_f
async def test_user_agent_from_custom_headers_is_reported() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.get",
            url=h.site.url("/echo"),
            customHeaders={"user-agent": "Hdr/2"},
        )
    assert json.loads(reply["solution"]["response"])["headers"]["User-Agent"] == "Hdr/2"
    assert reply["solution"]["userAgent"] == "Hdr/2"


@deferred_f_from_coro_f
async def test_connection_failure_is_code_0031() -> None:
    async with harness() as h:
        reply = await h.api.cmd("request.get", url="http://127.0.0.1:1/", session=None)
    assert reply["data"] == "error"
    assert reply["error"].startswith("CODE-0031 Request error, please try again: ")
    assert "127.0.0.1:1" in reply["error"]
    assert reply["solution"] == {"verified": False}
    assert "session" not in reply


@deferred_f_from_coro_f
async def test_target_timeout_is_code_0031() -> None:
    async with harness() as h:
        reply = await h.api.cmd(
            "request.get", url=h.site.url("/slow?seconds=2"), timeout=200
        )
    assert reply["data"] == "error"
    assert reply["error"].startswith(
        "CODE-0031 Request error, please try again: timeout"
    )
    assert 150 <= reply["timeElapsed"] < 1500


@deferred_f_from_coro_f
async def test_balance_goes_down_per_successful_request() -> None:
    async with harness(balance=10.0, prices={"request": 1.5}) as h:
        await h.api.cmd("request.get", url=h.site.url("/html"))
        await h.api.cmd("request.get", url=h.site.url("/html"))
        await h.api.cmd("request.get", url="http://127.0.0.1:1/")  # failed: free
        async with h.api.http.get(h.server.url + "/balance") as response:
            assert response.status == 200
            assert await response.json() == {"balance": 7.0}
        charged = h.server.stats()["charged"]
    assert h.server.balance == 7.0
    assert charged == {
        "total": 3.0,
        "by_type": {"request": 3.0},
        "calls": 2,
        "balance": 7.0,
    }


@deferred_f_from_coro_f
async def test_a_request_the_balance_cannot_pay_for_gets_an_error() -> None:
    async with harness(balance=0.5, prices={"request": 0.2}) as h:
        replies = [
            await h.api.cmd("request.get", url=h.site.url("/html")) for _ in range(3)
        ]
        charged = h.server.stats()["charged"]
    assert [r["data"] for r in replies] == ["success", "success", "error"]
    assert replies[2]["error"].startswith("Insufficient balance: 0.1 left")
    assert (charged["total"], charged["calls"], h.server.balance) == (0.4, 2, 0.1)
