"""Shared helpers for the local-server tests: a target site and an API client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from scrapy_scrappey.local import LocalScrappey

if TYPE_CHECKING:
    import subprocess
    from collections.abc import AsyncIterator

BINARY = bytes(range(256)) * 4
HTML = (
    "<html><head><title>T</title><style>p {color: red}</style></head>"
    "<body><h1>Hello &amp; welcome</h1><script>var x = 1;</script>"
    "<p>First   para</p><p>Second</p></body></html>"
)


async def _set_cookie(request: web.Request) -> web.Response:
    name = request.query.get("name", "visited")
    value = request.query.get("value", "yes")
    response = web.Response(text=f"<p>set {name}</p>", content_type="text/html")
    response.set_cookie(name, value, httponly=True, max_age=3600, samesite="Strict")
    response.set_cookie("plain", "1")
    return response


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "cookies": dict(request.cookies),
            "headers": dict(request.headers),
            "body": (await request.read()).decode("utf-8", "replace"),
            "query": dict(request.query),
        }
    )


async def _redirect(request: web.Request) -> web.Response:
    hops = int(request.match_info["n"])
    if hops == 0:
        raise web.HTTPFound("/html")
    response = web.HTTPFound(f"/redirect/{hops - 1}")
    response.set_cookie(f"hop{hops}", str(hops))
    raise response


async def _html(request: web.Request) -> web.Response:
    return web.Response(text=HTML, content_type="text/html")


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"key": "value", "number": 42})


async def _binary(request: web.Request) -> web.Response:
    return web.Response(body=BINARY, content_type="application/octet-stream")


async def _latin1(request: web.Request) -> web.Response:
    return web.Response(
        body="café".encode("latin-1"), content_type="text/plain", charset="iso-8859-1"
    )


async def _multi(request: web.Request) -> web.Response:
    response = web.Response(text="multi")
    response.headers.add("X-Multi", "one")
    response.headers.add("X-Multi", "two")
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.Response(text="late")


@dataclass
class Target:
    """The target site: ``url("/echo")`` gives the absolute URL."""

    base_url: str

    def url(self, path: str) -> str:
        return self.base_url + path


@contextlib.asynccontextmanager
async def target_site() -> AsyncIterator[Target]:
    """A small aiohttp site on 127.0.0.1, on a free port."""
    app = web.Application()
    app.router.add_get("/set-cookie", _set_cookie)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/redirect/{n}", _redirect)
    app.router.add_get("/html", _html)
    app.router.add_get("/json", _json)
    app.router.add_get("/binary", _binary)
    app.router.add_get("/latin1", _latin1)
    app.router.add_get("/multi", _multi)
    app.router.add_get("/slow", _slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        yield Target(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


class Api:
    """A minimal client of the local server, as a user's code would write it."""

    def __init__(
        self, http: aiohttp.ClientSession, server: LocalScrappey, key: str | None
    ) -> None:
        self.http = http
        self.server = server
        self.key = key

    async def raw(self, body: Any, *, key: str | None = None) -> tuple[int, str, str]:
        """POST *body* (bytes/str as is, else JSON); return status, content type, text."""
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        params = {"key": key or self.key} if (key or self.key) else {}
        async with self.http.post(
            self.server.url, data=data, params=params
        ) as response:
            return response.status, response.content_type, await response.text()

    async def send(self, body: Any) -> dict[str, Any]:
        """POST *body*; the reply must be HTTP 200 JSON."""
        status, content_type, text = await self.raw(body)
        assert status == 200, text
        assert content_type == "application/json"
        reply: dict[str, Any] = json.loads(text)
        return reply

    async def cmd(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return await self.send({"cmd": cmd, **fields})

    async def create(self, session: str | None = None, **fields: Any) -> str:
        if session is not None:
            fields["session"] = session
        reply = await self.cmd("sessions.create", **fields)
        assert reply["data"] == "success", reply
        session_id: str = reply["session"]
        return session_id

    async def local(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call a ``/__local__`` route."""
        url = self.server.base_url + path
        async with self.http.request(method, url, json=body) as response:
            return response.status, await response.json()


@dataclass
class Harness:
    server: LocalScrappey
    site: Target
    api: Api


@contextlib.asynccontextmanager
async def harness(
    *, key: str | None = None, **server_kwargs: Any
) -> AsyncIterator[Harness]:
    """A target site, a local server (``LocalScrappey(**server_kwargs)``) and a client."""
    async with (
        target_site() as site,
        LocalScrappey(api_key=key, **server_kwargs) as server,
        aiohttp.ClientSession() as http,
    ):
        yield Harness(server, site, Api(http, server, key))


def first_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The first stdout line of a server subprocess: its API URL."""
    # readline() blocks; a reader thread lets a broken start fail the test
    # instead of hanging it.
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    return lines.get(timeout=timeout).strip()
