"""The dashboard at ``GET /`` and the key rule of the harness routes."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import LocalScrappey

from ._support import Api

KEY = "dash-key-0123456789"


async def _api(started: Any, make_local_server: Any, **kwargs: Any) -> Api:
    server: LocalScrappey = await make_local_server(**kwargs)
    http = await started(aiohttp.ClientSession())
    return Api(http, server, kwargs.get("api_key"))


async def _status(api: Api, path: str) -> int:
    async with api.http.get(api.server.base_url + path) as response:
        await response.read()
        return response.status


@deferred_f_from_coro_f
async def test_dashboard_is_html_polling_the_stats(started, make_local_server):
    api = await _api(started, make_local_server)
    async with api.http.get(api.server.base_url + "/") as response:
        html = await response.text()
        assert response.status == 200
        assert response.content_type == "text/html"
    assert "/__local__/stats" in html
    assert '<table id="sessions">' in html


@deferred_f_from_coro_f
async def test_stats_carry_what_the_dashboard_shows(
    started, make_local_server, target_site
):
    api = await _api(started, make_local_server, balance=50)
    session = await api.create("watched")
    await api.cmd("request.get", url=target_site.url("/page/1"), session=session)
    await api.cmd("request.get", url="ftp://nope", session=session)
    stats = api.server.stats()
    (row,) = stats["session_details"]
    assert row["id"] == "watched"
    assert row["engine"] == "request"
    assert row["requests"] == 1
    assert row["last_url"] == target_site.url("/page/1")
    # The http engine answers solution.type "request": 0.2 at the default prices.
    assert row["cost"] == pytest.approx(0.2)
    assert row["age"] >= 0
    assert stats["engine"] == {"name": "http"}
    assert stats["balance"] == pytest.approx(49.8) == stats["charged"]["balance"]
    outcomes = [(c["cmd"], c["outcome"]) for c in stats["commands"]]
    assert outcomes[0] == ("sessions.create", "success")
    assert outcomes[1] == ("request.get", "success")
    assert outcomes[2][0] == "request.get"
    assert outcomes[2][1].startswith("Invalid parameter 'url'")


ROWS_TEXT = "document.querySelector('#sessions tbody').innerText"
DESTROY_JS = """fetch('/api/v1', {method: 'POST', body: JSON.stringify(
  {cmd: 'sessions.destroy', session: 'gone-session'})}).then(r => r.json()).then(j => j.data)"""


@deferred_f_from_coro_f
async def test_dashboard_shows_sessions_live_in_a_browser(
    started, make_local_server, browser_engine, tmp_path
):
    api = await _api(started, make_local_server, engine=browser_engine)
    await api.create("shown-session")
    await api.create("gone-session")
    # The page stays open while a session is destroyed; its poll must notice.
    actions = [
        {"type": "wait_for_selector", "cssSelector": "#sessions td"},
        {"type": "execute_js", "code": ROWS_TEXT},
        {"type": "execute_js", "code": DESTROY_JS},
        {"type": "wait_for_function", "code": f"!{ROWS_TEXT}.includes('gone-session')"},
        {"type": "execute_js", "code": ROWS_TEXT},
    ]
    reply = await api.cmd(
        "request.get",
        url=api.server.base_url + "/",
        browserActions=actions,
        screenshot=True,
    )
    assert reply["data"] == "success", reply
    before, destroyed, after = reply["solution"]["javascriptReturn"]
    # Kept as the test's artifact (pytest's tmp_path).
    shot = base64.b64decode(reply["solution"]["screenshot"])
    (tmp_path / "dashboard.png").write_bytes(shot)
    assert "shown-session" in before
    assert "gone-session" in before
    assert destroyed == "success"
    assert "shown-session" in after
    assert "gone-session" not in after
    assert api.server.stats()["open_sessions"] == ["shown-session"]


def test_non_loopback_bind_needs_a_key():
    with pytest.raises(ValueError, match="needs an API key"):
        LocalScrappey(host="0.0.0.0")


@deferred_f_from_coro_f
async def test_harness_routes_want_the_key_off_loopback(started, make_local_server):
    api = await _api(started, make_local_server, host="0.0.0.0", api_key=KEY)
    assert await _status(api, "/") == 401
    assert await _status(api, "/__local__/stats") == 401
    assert await _status(api, f"/?key={KEY}") == 200
    assert await _status(api, f"/__local__/stats?key={KEY}") == 200


@deferred_f_from_coro_f
async def test_harness_routes_are_open_on_loopback(started, make_local_server):
    api = await _api(started, make_local_server, api_key=KEY)
    assert await _status(api, "/") == 200
    assert await _status(api, "/__local__/stats") == 200
