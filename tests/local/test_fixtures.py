"""The documented request bodies, sent as they are, get well-formed answers.

Only ``url`` is rewritten (to the local target's echo page) and
``${SESSION_ID}`` replaced by a created session; a session id written into a
fixture is created first, as its author would have done. Options the HTTP
engine cannot honour (browserActions, screenshot, captcha solving, autoparse,
proxy) are accepted: the answer is a normal success envelope without those
extras.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from ._support import harness

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scrappey"
REQUEST_FIXTURES = sorted(p.name for p in FIXTURES.glob("request_*.json"))
SESSION_FIXTURES = sorted(p.name for p in FIXTURES.glob("sessions_*.json"))
BROWSER_ONLY = {
    "screenshot",
    "screenshotUrl",
    "videoUrl",
    "javascriptReturn",
    "markdown",
}


def _load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return body


def _keys(name: str) -> set[str]:
    return set(_load(name))


def test_all_documented_bodies_are_covered() -> None:
    assert len(REQUEST_FIXTURES) == 13
    assert len(SESSION_FIXTURES) == 4


async def _prepare(h: Any, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("session") == "${SESSION_ID}":
        body["session"] = await h.api.create()
    elif isinstance(body.get("session"), str):
        await h.api.create(body["session"])
    if "url" in body:
        body["url"] = h.site.url("/echo")
    return body


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
@deferred_f_from_coro_f
async def test_documented_request_body(name: str) -> None:
    async with harness() as h:
        body = await _prepare(h, _load(name))
        reply = await h.api.send(body)
    assert reply["data"] == "success", reply
    assert reply.get("session") == body.get("session")
    solution = reply["solution"]
    documented = _keys("response_success_mock_official_tests.json")
    if "session" not in body:  # the session is echoed only when one was named
        documented.discard("session")
    assert documented <= set(reply)
    assert set(_load("response_success_mock_official_tests.json")["solution"]) <= set(
        solution
    )
    assert solution["verified"] is True
    assert solution["statusCode"] == 200
    assert solution["currentUrl"] == body["url"]
    assert not BROWSER_ONLY & set(solution)
    assert ("innerText" in solution) is (body.get("innerText") is True)
    echo = json.loads(solution["response"])
    assert echo["method"] == body["cmd"].split(".")[1].upper()
    _check_body_sent(body, echo)
    for header, value in body.get("customHeaders", {}).items():
        sent = {k.lower(): v for k, v in echo["headers"].items()}
        assert sent[header.lower()] == value


def _check_body_sent(body: dict[str, Any], echo: dict[str, Any]) -> None:
    post_data = body.get("postData")
    if post_data is None:
        assert echo["body"] == ""
    elif isinstance(post_data, str):
        assert echo["body"] == post_data
    else:
        assert json.loads(echo["body"]) == post_data


@pytest.mark.parametrize("name", SESSION_FIXTURES)
@deferred_f_from_coro_f
async def test_documented_session_body(name: str) -> None:
    async with harness() as h:
        body = _load(name)
        if body.get("session") == "${SESSION_ID}":
            body["session"] = await h.api.create()
        reply = await h.api.send(body)
        stats = h.server.stats()
    assert reply["data"] == "success", reply
    assert isinstance(reply["timeElapsed"], int)
    inferred = FIXTURES / "inferred"
    if body["cmd"] == "sessions.create":
        assert _keys("inferred/sessions_create_response.json") <= set(reply)
        assert stats["open_sessions"] == [reply["session"]]
    elif body["cmd"] == "sessions.destroy":
        assert set(reply) == {"data", "timeElapsed"}
        assert stats["sessions"]["destroyed"] == 1
    else:
        expected = set(
            json.loads((inferred / "sessions_list_response.json").read_text())
        )
        assert set(reply) == expected | {"data"}
        assert (reply["open"], reply["limit"]) == (0, 100)


@deferred_f_from_coro_f
async def test_error_and_active_shapes_match_the_inferred_fixtures() -> None:
    async with harness() as h:
        sid = await h.api.create()
        active = await h.api.cmd("sessions.active", session=sid)
        error = await h.api.cmd("request.get", url="http://127.0.0.1:1/", session=sid)
    assert _keys("inferred/sessions_active_response.json") <= set(active)
    assert _keys("inferred/error_response_body.json") - {"info"} == set(error)
    assert error["solution"] == _load("inferred/error_response_body.json")["solution"]
