"""The official SDK (PyPI ``scrappey`` 1.0.7) against the local browser engine.

Its sync client blocks, so it runs in a worker thread while the server keeps
serving on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

scrappey = pytest.importorskip("scrappey", reason="the official SDK is a dev extra")

KEY = "sdk-key-0123456789"
TAKE_H1 = {"type": "execute_js", "code": "document.querySelector('p').textContent"}


@deferred_f_from_coro_f
async def test_async_client_end_to_end(make_local_server, browser_engine, browser_site):
    server = await make_local_server(engine=browser_engine, api_key=KEY)
    async with scrappey.AsyncScrappey(api_key=KEY, base_url=server.url) as client:
        created = await client.create_session(session="sdk-async")
        await client.get(url=browser_site.url("/set-cookie"), session="sdk-async")
        echo = await client.post(
            url=browser_site.url("/echo"),
            postData="a=1",
            session="sdk-async",
            innerText=True,
        )
        shot = await client.screenshot(
            url=browser_site.url("/js/1"), width=300, height=200
        )
        acted = await client.browser_action(
            url=browser_site.url("/js/4"), actions=[TAKE_H1], session="sdk-async"
        )
        active = await client.is_session_active("sdk-async")
        listed = await client.list_sessions()
        await client.destroy_session("sdk-async")
    _check(created, echo, shot, acted)
    assert active is True
    assert [s["session"] for s in listed["sessions"]] == ["sdk-async"]
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_sync_client_end_to_end(make_local_server, browser_engine, browser_site):
    server = await make_local_server(engine=browser_engine, api_key=KEY)

    def run() -> tuple[Any, ...]:
        with scrappey.Scrappey(api_key=KEY, base_url=server.url) as client:
            created = client.create_session(session="sdk-sync")
            client.get(url=browser_site.url("/set-cookie"), session="sdk-sync")
            echo = client.post(
                url=browser_site.url("/echo"),
                postData="a=1",
                session="sdk-sync",
                innerText=True,
            )
            shot = client.screenshot(
                url=browser_site.url("/js/1"), width=300, height=200
            )
            acted = client.browser_action(
                url=browser_site.url("/js/4"), actions=[TAKE_H1], session="sdk-sync"
            )
            client.destroy_session("sdk-sync")
            return created, echo, shot, acted

    results = await asyncio.get_running_loop().run_in_executor(None, run)
    _check(*results)
    assert server.stats()["sessions"]["open"] == 0


def _check(created: Any, echo: Any, shot: Any, acted: Any) -> None:
    assert created["data"] == "success"
    sent = json.loads(echo["solution"]["innerText"])
    assert (sent["method"], sent["body"]) == ("POST", "a=1")
    assert sent["cookies"] == {"sid": "s1"}  # kept by the session since the GET
    png = base64.b64decode(shot["solution"]["screenshot"])
    assert png.startswith(b"\x89PNG")
    assert int.from_bytes(png[16:20], "big") == 300
    assert acted["solution"]["javascriptReturn"] == ["rendered 4"]
    assert acted["solution"]["type"] == "browser"
