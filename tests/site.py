"""A small target website for crawl tests, bound to 127.0.0.1 on a free port."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter

from aiohttp import web
from typing_extensions import Self


class TargetSite:
    """``async with TargetSite() as site: site.url("/page/1")``.

    With ``ban_after=N``, a browser (told apart by the ``browser`` cookie the
    site gives it) that already fetched N ``/page/…`` or ``/members…`` pages
    gets "Access denied" with ``ban_status`` instead; ``banned`` holds the
    browsers that got it.
    """

    def __init__(
        self, *, delay: float = 0.0, ban_after: int | None = None, ban_status: int = 403
    ) -> None:
        self.delay = delay
        self.ban_after = ban_after
        self.ban_status = ban_status
        self.pages_by_browser: Counter[str] = Counter()
        self.banned: set[str] = set()
        self.hits: list[str] = []
        self.active = 0
        self.max_active = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/page/{n}", self._page)
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_get("/members", self._members)
        app.router.add_get("/members/{n}", self._members)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/data.json", self._json)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _track(self, request: web.Request) -> None:
        self.hits.append(str(request.rel_url))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.active -= 1

    def _watched(self, request: web.Request, page: web.Response) -> web.Response:
        """*page*, or "Access denied" for a browser over ``ban_after`` pages."""
        if self.ban_after is None:
            return page
        browser = request.cookies.get("browser") or secrets.token_hex(4)
        self.pages_by_browser[browser] += 1
        if self.pages_by_browser[browser] > self.ban_after:
            self.banned.add(browser)
            page = web.Response(
                status=self.ban_status,
                text="<h1 id='denied'>Access denied</h1>",
                content_type="text/html",
            )
        page.set_cookie("browser", browser, path="/")
        return page

    async def _page(self, request: web.Request) -> web.Response:
        await self._track(request)
        n = request.match_info["n"]
        html = f"<html><head><title>Page {n}</title></head><body><p id='n'>{n}</p></body></html>"
        return self._watched(request, web.Response(text=html, content_type="text/html"))

    async def _login_form(self, request: web.Request) -> web.Response:
        await self._track(request)
        return web.Response(
            text="<form method=post><input type=hidden name=csrf value=t0k3n>"
            "<input name=user></form>",
            content_type="text/html",
        )

    async def _login(self, request: web.Request) -> web.Response:
        await self._track(request)
        form = await request.post()
        response = web.Response(
            text=f"<p id='who'>{form.get('user')}</p><a href='/logout'>Log out</a>",
            content_type="text/html",
        )
        response.set_cookie("auth", str(form.get("user")), path="/")
        return response

    async def _members(self, request: web.Request) -> web.Response:
        await self._track(request)
        user = request.cookies.get("auth")
        if not user:
            raise web.HTTPFound("/login")
        n = request.match_info.get("n", "")
        html = f"<p id='member'>{user}</p><p id='n'>{n}</p>"
        return self._watched(request, web.Response(text=html, content_type="text/html"))

    async def _echo(self, request: web.Request) -> web.Response:
        await self._track(request)
        body = await request.text()
        data = {
            "method": request.method,
            "headers": dict(request.headers),
            "cookies": dict(request.cookies),
            "body": body,
        }
        return web.Response(text=json.dumps(data), content_type="application/json")

    async def _redirect(self, request: web.Request) -> web.Response:
        await self._track(request)
        raise web.HTTPFound("/page/redirected")

    async def _status(self, request: web.Request) -> web.Response:
        await self._track(request)
        code = int(request.match_info["code"])
        return web.Response(
            status=code, text=f"status {code}", content_type="text/html"
        )

    async def _json(self, request: web.Request) -> web.Response:
        await self._track(request)
        return web.json_response({"items": [1, 2, 3]})
