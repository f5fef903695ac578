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

    ``/decoy/{n}`` is a normal page (``<p id='n'>``) that carries every
    anti-bot vendor's *presence* and none of its block signals: see
    :func:`decoy_page`.
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
        app.router.add_get("/decoy/{n}", self._decoy)
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

    async def _decoy(self, request: web.Request) -> web.Response:
        await self._track(request)
        return decoy_page(request.match_info["n"])

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
        page = web.Response(text=html, content_type="text/html")
        # A cookie of the member's own, for Scrapy's jar to collect: the
        # account-isolation tests check it never reaches another account.
        page.set_cookie("member_seen", user, path="/")
        return self._watched(request, page)

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


#: Vendor cookies that ride on normal pages (the reference grades them WEAK).
_DECOY_COOKIES = {
    "__cf_bm": "kq3Xw9d0.1733065200-1.0.1.1-Qm5cbWx0",
    "_abck": "0F3C2B1A9E8D7C6B5A49382716~0~YAAQ~-1~-1~-1",
    "bm_sz": "D1E2F3A4B5C6~YAAQ",
    "_px3": "4f6e5d4c3b2a1908",
    "_pxvid": "0c1b2a3d-4e5f-11ef-9a8b-7c6d5e4f3a2b",
    "datadome": "Bt0v~yq3kM9xWc2sRr8LdNf5Hh1ZpQ",
    "incap_ses_1360_2814657": "c3R5bGU9ImhlaWdodDoxMDAlIj4=",
    "TS01a2b3c4": "01f3e2d1c0b9a8f7e6d5c4b3a2918070",
    "aws-waf-token": "8c9e7f1a-2b3d-4e5f-6a7b:AQoAiQ",
}
_DECOY_HEADERS = {
    "Server": "cloudflare",
    "CF-RAY": "8ec9a3f1bd2e0c4a-AMS",
    "X-DataDome": "protected",
    "X-Iinfo": "10-23114720-0 0NNN RT(1733065200 0) q(0 -1 -1 -1) r(0 -1)",
    "X-CDN": "Imperva",
    "X-Amz-Cf-Id": "t3Vq0XlK9a2bR8yM1cN4dP7eQ6fS5gU==",
}
# Tag scripts and sensors of every vendor, a Turnstile and a reCAPTCHA widget
# inside a form, and an article quoting block pages' English text.
_DECOY_BODY = """<!DOCTYPE html><html lang="en"><head><title>Article {n}</title>
<script>window.ddjskey = '3F1B2A9C8D7E6F5A4B3C2D1E0F9A8B';window.ddoptions = {{}};</script>
<script src="https://js.datadome.co/tags.js" async></script>
<script>window._pxAppId = 'PXk2Lm9Qa1';</script>
<script src="//client.perimeterx.net/PXk2Lm9Qa1/main.min.js" async></script>
<script type="text/javascript" src="/akam/13/7f3e2a1b" defer></script>
<script>var bmak = bmak || {{}}; bmak.sensor_data = '';</script>
<script src="/_Incapsula_Resource?SWJIYLWA=719d34d31c8e3a6e6fffd425f7e032f3" async></script>
<script>window.__CF$cv$params={{r:'8ec9a3f1bd2e0c4a',t:'MTczMzA2NTIwMA=='}};</script>
<script src="/cdn-cgi/challenge-platform/scripts/jsd/main.js" async></script>
<script src="https://challenges.cloudflare.com/turnstile/v0/api.js" async defer></script>
<script src="https://www.google.com/recaptcha/api.js" async defer></script>
</head><body><main><article>
<h1>Article {n}</h1><p id="n">{n}</p>
<p>Anyone who browses a lot has met pages titled "Just a moment..." or
"Access Denied", and pages asking them to verify you are human or to press
&amp; hold a button. "Sorry, you have been blocked" is another classic. This
article is about them; it is not one of them.</p>
{filler}
</article>
<form id="contact" method="post" action="/contact">
<input name="email" type="email">
<div class="cf-turnstile" data-sitekey="0x4AAAAAAABkMYinukE8nzY"></div>
<input type="hidden" name="cf-turnstile-response" value="">
<div class="g-recaptcha" data-sitekey="6LeIxAcTAAAAAJcZVRqyHh71UMIEGNQ_MXjiZKhI"></div>
<button type="submit">Send</button></form>
<p class="grecaptcha-note">This site is protected by reCAPTCHA and the Google
Privacy Policy and Terms of Service apply.</p>
</main></body></html>
"""
_FILLER = "<p>" + "Ordinary article text about the weather and the news. " * 20 + "</p>"


def decoy_page(n: str) -> web.Response:
    """A normal page with every vendor's presence (cookies, tags, headers, widgets)."""
    html = _DECOY_BODY.format(n=n, filler=_FILLER * 5)
    response = web.Response(text=html, content_type="text/html", headers=_DECOY_HEADERS)
    for name, value in _DECOY_COOKIES.items():
        response.set_cookie(name, value, path="/")
    return response
