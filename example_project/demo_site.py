"""The demo website the example spiders crawl: ``python -m example_project.demo_site``.

A tiny aiohttp app on 127.0.0.1 (a free port unless ``--port`` is given). It
answers under both ``127.0.0.1`` and ``localhost``, which count as two
domains, and has:

* ``/articles?page=N``: public, paginated list of articles (``/articles/ID``);
* ``/login``: a login form (POST ``user`` and ``password``) that sets the
  ``member`` cookie and redirects to ``/members``;
* ``/members?page=N``: members-only, paginated notes; without a valid
  ``member`` cookie it redirects to ``/login``;
* ``/protected/N`` (N = 1..``PROTECTED_PAGES``): behind a JavaScript
  challenge, like Cloudflare's "Just a moment...": without a valid
  ``clearance`` cookie, HTTP 503 and a page whose inline script computes a
  token, stores it in that cookie and reloads. Only a browser gets through;
  ``challenges_served`` and ``protected_served`` count both answers.

Like a real site, it can also turn against a browser (both off unless asked
for: ``DemoSite(logout_after=LOGOUT_AFTER, ban_after=BAN_AFTER)``, or
``--logout-after`` / ``--ban-after``):

* ``logout_after=N``: every other login (the 2nd, 4th, …) is good for N
  ``/members`` pages; the next one logs the browser out (the login cookie no
  longer works: redirect to ``/login``, an ordinary 200 login page once
  followed). The others last as long as the browser, so a crawl meets both
  faults.
* ``ban_after=N``: the site tells browsers apart by a ``browser`` cookie it
  sets on its first answer to each; a browser that has made N requests to
  the member area (``/login`` and ``/members`` pages) gets an "Access denied"
  page there (HTTP 200, ``<h1>Access denied</h1>``, ``p.denied``) from then
  on. The public pages stay open to it.

:meth:`DemoSite.reset` forgets every login and browser (the demo calls it
before each spider, so that each one meets the same site).

The command prints the site URL as its first stdout line and runs until
Ctrl-C. In Python: ``async with DemoSite() as site: site.url``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler
    from typing_extensions import Self

#: The demo account (not a secret: the site only exists on this machine).
USER = "demo"
PASSWORD = "demo-password"

PER_PAGE = 3
#: (id, title, text) of the public articles.
ARTICLES = [(n, f"Article {n}", f"Public text of article {n}.") for n in range(1, 10)]
#: The members-only notes: only visible with the login cookie.
MEMBER_NOTES = [f"Members-only note {n}" for n in range(1, 10)]
COOKIE = "member"
#: The cookie by which the site tells browsers apart (``ban_after``).
BROWSER_COOKIE = "browser"
#: The JavaScript challenge's cookie, and how many pages it protects.
CHALLENGE_COOKIE = "clearance"
PROTECTED_PAGES = 6
#: The challenge page: ``{nonce}`` is the site's; the script derives the cookie.
CHALLENGE_HTML = """<!DOCTYPE html><html><head><title>Just a moment...</title></head>
<body><p>Checking your browser before accessing the site.</p><script>
let h = 2166136261;
const nonce = "{nonce}";
for (let round = 0; round < 2000; round++)
  for (let i = 0; i < nonce.length; i++) {{
    h ^= nonce.charCodeAt(i); h = Math.imul(h, 16777619) >>> 0;
  }}
document.cookie = "clearance=" + h.toString(16) + "; path=/";
location.reload();
</script></body></html>"""
#: The demo's settings of ``logout_after`` and ``ban_after``.
LOGOUT_AFTER = 1
BAN_AFTER = 4

_T = TypeVar("_T")


@dataclass(frozen=True)
class Hit:
    """One request the site answered."""

    method: str
    host: str
    path: str
    logged_in: bool
    #: The ``browser`` cookie it came with ("" for a new browser).
    browser: str = ""
    #: Answered with the "Access denied" page.
    denied: bool = False


class DemoSite:
    """The demo website; ``async with DemoSite() as site: site.url``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        logout_after: int | None = None,
        ban_after: int | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._tokens: dict[str, str] = {}  # login cookie value -> user name
        self.logout_after = logout_after
        self.ban_after = ban_after
        self._login_pages: dict[str, int] = {}  # login cookie value -> pages
        self._short_logins: set[str] = set()  # those logout_after applies to
        self._logins = 0
        self._browser_requests: dict[str, int] = {}  # browser cookie -> requests
        self.port = 0
        self.hits: list[Hit] = []
        self.nonce = secrets.token_hex(8)
        self.challenges_served = 0
        self.protected_served = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the site's base URL."""
        return self.url_for("127.0.0.1")

    def url_for(self, host: str, path: str = "") -> str:
        """The site's URL under another host name, e.g. ``localhost``."""
        return f"http://{host}:{self.port}{path}"

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/", self._home)
        app.router.add_get("/robots.txt", self._robots)
        app.router.add_get("/articles", self._articles)
        app.router.add_get("/articles/{id}", self._article)
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_get("/members", self._members)
        app.router.add_get("/protected/{n}", self._protected)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ------------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        sent = request.cookies.get(BROWSER_COOKIE, "")
        # A browser without the cookie is new: it gets one with this answer.
        browser = sent or (secrets.token_urlsafe(8) if self.ban_after else "")
        denied = self._count_browser(browser, request.path)
        self.hits.append(
            Hit(
                method=request.method,
                host=request.url.host or "",
                path=str(request.rel_url),
                logged_in=self._user(request) is not None,
                browser=sent,
                denied=denied,
            )
        )
        if denied:
            return _page("Access denied", _DENIED)
        try:
            response = await handler(request)
        except web.HTTPException as ex:  # redirects, 404s: responses too
            if browser != sent:
                ex.set_cookie(BROWSER_COOKIE, browser, path="/", httponly=True)
            raise
        if browser != sent:
            response.set_cookie(BROWSER_COOKIE, browser, path="/", httponly=True)
        return response

    def _count_browser(self, browser: str, path: str) -> bool:
        """Count a member-area request of *browser*; whether it is denied (``ban_after``)."""
        if self.ban_after is None or not browser or not path.startswith(_WATCHED):
            return False
        self._browser_requests[browser] = self._browser_requests.get(browser, 0) + 1
        return self._browser_requests[browser] > self.ban_after

    def reset(self) -> None:
        """Forget every login and browser (``hits`` are kept)."""
        self._tokens.clear()
        self._login_pages.clear()
        self._short_logins.clear()
        self._browser_requests.clear()
        self._logins = 0

    def _user(self, request: web.Request) -> str | None:
        return self._tokens.get(request.cookies.get(COOKIE, ""))

    async def _home(self, request: web.Request) -> web.Response:
        return _page(
            "Demo site",
            '<p><a href="/articles">Articles</a> (public)</p>'
            '<p><a href="/members">Members area</a> (login required)</p>',
        )

    async def _protected(self, request: web.Request) -> web.Response:
        n = request.match_info["n"]
        if n not in {str(i) for i in range(1, PROTECTED_PAGES + 1)}:
            raise web.HTTPNotFound
        challenge = challenge_page(request, self.nonce)
        if challenge is not None:
            self.challenges_served += 1
            return challenge
        self.protected_served += 1
        return _page(f"Protected page {n}", f'<p class="secret">Protected page {n}</p>')

    async def _robots(self, request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n")

    async def _articles(self, request: web.Request) -> web.Response:
        page = _page_number(request, len(ARTICLES))
        rows = "".join(
            f'<li class="article"><a href="/articles/{n}">{html.escape(title)}</a></li>'
            for n, title, _ in _slice(ARTICLES, page)
        )
        body = f'<ul class="articles">{rows}</ul>' + _pager(
            "/articles", page, len(ARTICLES)
        )
        return _page(f"Articles, page {page}", body)

    async def _article(self, request: web.Request) -> web.Response:
        try:
            _, title, text = ARTICLES[int(request.match_info["id"]) - 1]
        except (ValueError, IndexError):
            raise web.HTTPNotFound from None
        return _page(title, f'<p class="text">{html.escape(text)}</p>')

    async def _login_form(self, request: web.Request, error: str = "") -> web.Response:
        message = f'<p class="error">{html.escape(error)}</p>' if error else ""
        return _page(
            "Log in",
            message + '<form id="login" method="post" action="/login">'
            '<input name="user"> <input name="password" type="password"> '
            '<button type="submit">Log in</button></form>',
            status=403 if error else 200,
        )

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        user, password = str(form.get("user", "")), str(form.get("password", ""))
        if not (
            secrets.compare_digest(user, USER)
            and secrets.compare_digest(password, PASSWORD)
        ):
            return await self._login_form(request, "Wrong user name or password.")
        token = secrets.token_urlsafe(16)
        self._logins += 1
        if self._logins % 2 == 0:  # the 2nd, 4th… login
            self._short_logins.add(token)
        self._tokens[token] = user
        response = web.HTTPFound("/members")
        response.set_cookie(COOKIE, token, path="/", httponly=True)
        raise response

    async def _members(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None or self._logged_out(request.cookies[COOKIE]):
            raise web.HTTPFound("/login")
        page = _page_number(request, len(MEMBER_NOTES))
        notes = "".join(
            f'<li class="note">{html.escape(note)}</li>'
            for note in _slice(MEMBER_NOTES, page)
        )
        body = (
            f'<p class="welcome">Logged in as <b class="user">{html.escape(user)}</b></p>'
            f'<ul class="notes">{notes}</ul>'
            + _pager("/members", page, len(MEMBER_NOTES))
        )
        return _page(f"Members, page {page}", body)

    def _logged_out(self, token: str) -> bool:
        """Count a members page of this login; whether it just ended (``logout_after``)."""
        pages = self._login_pages[token] = self._login_pages.get(token, 0) + 1
        if (
            self.logout_after is None
            or token not in self._short_logins
            or pages <= self.logout_after
        ):
            return False
        del self._tokens[token]
        return True


#: The member area, where ``ban_after`` counts and denies.
_WATCHED = ("/login", "/members")
_DENIED = (
    '<p class="denied">Your browser made too many requests. '
    "Access to this site is denied.</p>"
)


def challenge_page(request: web.Request, nonce: str) -> web.Response | None:
    """The challenge (HTTP 503) unless *request* carries the cookie it sets."""
    if request.cookies.get(CHALLENGE_COOKIE) == challenge_token(nonce):
        return None
    return web.Response(
        status=503, text=CHALLENGE_HTML.format(nonce=nonce), content_type="text/html"
    )


def challenge_token(nonce: str) -> str:
    """What the challenge script computes for *nonce* (FNV-1a, 2000 rounds)."""
    h = 2166136261
    for _ in range(2000):
        for ch in nonce:
            h ^= ord(ch)
            h = (h * 16777619) & 0xFFFFFFFF
    return format(h, "x")


def _page_number(request: web.Request, total: int) -> int:
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        raise web.HTTPNotFound from None
    if not 1 <= page <= _pages(total):
        raise web.HTTPNotFound
    return page


def _pages(total: int) -> int:
    return -(-total // PER_PAGE)


def _slice(rows: list[_T], page: int) -> list[_T]:
    return rows[(page - 1) * PER_PAGE : page * PER_PAGE]


def _pager(path: str, page: int, total: int) -> str:
    if page >= _pages(total):
        return ""
    return f'<a class="next" href="{path}?page={page + 1}">Next</a>'


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    text = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html", status=status)


async def _serve(port: int, logout_after: int | None, ban_after: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    async with DemoSite(
        port=port, logout_after=logout_after, ban_after=ban_after
    ) as site:
        print(site.url, flush=True)
        print(
            f"Demo site up: {site.url} and {site.url_for('localhost')} "
            f"(login {USER} / {PASSWORD}); Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m example_project.demo_site", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--logout-after",
        type=int,
        metavar="N",
        help=f"a login is good for N members pages (the demo: {LOGOUT_AFTER})",
    )
    parser.add_argument(
        "--ban-after",
        type=int,
        metavar="N",
        help=f"'Access denied' to a browser after N requests (the demo: {BAN_AFTER})",
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.logout_after, args.ban_after))


if __name__ == "__main__":
    main()
