"""A target site only a browser gets through, on 127.0.0.1 and a free port.

* ``/js/{n}``: the content (``<p id='n'>rendered n</p>``) is written by JavaScript.
* ``/challenge/{n}``: without a valid ``clearance`` cookie, HTTP 503 and the
  demo site's "Just a moment..." page (its inline script computes a token
  from a nonce, stores it as that cookie and reloads); with it, the page.
  ``challenges_served`` / ``challenges_passed`` count both.
* ``/storage``: counts its visits in ``localStorage`` (``<p id='count'>``).
* ``/form``: an input and a button that copies it into ``<p id='out'>``.
* ``/tall``: a page taller than the screen, ``#bottom`` at its end.
* ``/echo``: method, cookies, headers and body as JSON.
* ``/set-cookie``: sets ``sid=s1`` and shows it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import TYPE_CHECKING

import psutil
from aiohttp import web
from typing_extensions import Self

from example_project.demo_site import challenge_page

if TYPE_CHECKING:
    from collections.abc import Callable


def browser_process() -> psutil.Process:
    """The main Chromium process under this test process (the driver's child)."""
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = proc.parent()
            if "chrom" in proc.name() and "chrom" not in parent.name():
                return proc
    raise AssertionError("no Chromium process found")


class BrowserSite:
    """``async with BrowserSite() as site: site.url("/js/1")``."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(8)
        self.challenges_served = 0
        self.challenges_passed = 0
        self.hits: list[str] = []
        #: Called with each ``/js/…`` path as it is requested (tests kill things).
        self.on_js: Callable[[str], None] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/js/{n}", self._js)
        app.router.add_get("/challenge/{n}", self._challenge)
        app.router.add_get("/storage", self._page(_STORAGE))
        app.router.add_get("/form", self._page(_FORM))
        app.router.add_get("/tall", self._page(_TALL))
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/set-cookie", self._set_cookie)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _js(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        if self.on_js is not None:
            self.on_js(request.path)
        n = request.match_info["n"]
        html = (
            f"<html><head><title>JS {n}</title></head><body><div id='app'></div>"
            "<script>document.getElementById('app').innerHTML ="
            f" \"<p id='n'>rendered {n}</p>\";</script></body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def _challenge(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        challenge = challenge_page(request, self.nonce)
        if challenge is not None:
            self.challenges_served += 1
            return challenge
        self.challenges_passed += 1
        n = request.match_info["n"]
        return web.Response(
            text=f"<html><body><p id='n'>secret {n}</p></body></html>",
            content_type="text/html",
        )

    def _page(self, html: str) -> web.Handler:
        async def handler(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            return web.Response(text=html, content_type="text/html")

        return handler

    async def _echo(self, request: web.Request) -> web.Response:
        data = {
            "method": request.method,
            "cookies": dict(request.cookies),
            "headers": dict(request.headers),
            "body": await request.text(),
        }
        return web.Response(text=json.dumps(data), content_type="application/json")

    async def _set_cookie(self, request: web.Request) -> web.Response:
        response = web.Response(text="<p>cookie set</p>", content_type="text/html")
        response.set_cookie("sid", "s1", path="/")
        return response


_STORAGE = """<html><body><p id='count'></p><script>
const c = Number(localStorage.getItem('c') || 0) + 1;
localStorage.setItem('c', String(c));
document.getElementById('count').textContent = String(c);
</script></body></html>"""
_FORM = """<html><body><input id='q'><button id='go'
onclick="document.getElementById('out').textContent = 'got ' + document.getElementById('q').value">
Go</button><p id='out'></p></body></html>"""
_TALL = """<html><body><div style='height: 5000px'>top</div>
<p id='bottom'>bottom</p></body></html>"""
