"""``members``: every session logs in before its first page; bad pages retire it.

Spider session scope: one remote browser session serves the whole crawl. The
site's login cookie lives in that browser, and the site may log a browser out
after a while or deny one that fetched too many pages. Two hooks of the
plugin keep the crawl clean:

* ``scrappey_session_init`` runs on every session the plugin creates (the
  first one and every replacement) before it serves a page: it reads the
  login form and logs in, on that session.
* ``scrappey_session_check`` runs on every page fetched on a session: a login
  form or an "Access denied" page instead of members' notes retires the
  session (destroyed, replaced, logged in again) and the page is fetched
  again. Only real members pages reach ``parse_members``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from scrapy import FormRequest, Request
from scrapy.http import TextResponse

from ..demosite import DEMO_PASSWORD, DEMO_USER, DemoSpider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from scrapy.http import Response


class MembersSpider(DemoSpider):
    name = "members"
    # One Scrappey session at a time for the whole crawl (also the default).
    scrappey_session_scope = "spider"
    custom_settings = {
        # The login must live in the remote browser: Scrapy's own cookie jar
        # would carry one browser's cookies to its replacement.
        "COOKIES_ENABLED": False,
        # What the site answers a browser it has blocked.
        "SCRAPPEY_SESSION_BAN_STATUSES": [403, 429],
    }

    user = DEMO_USER
    password = DEMO_PASSWORD

    async def scrappey_session_init(
        self,
        session_id: str,
        pool: str,
        download: Callable[[Request], Awaitable[Response]],
    ) -> bool:
        form: Any = await download(Request(f"{self.site}/login"))
        action = form.css("form#login::attr(action)").get() or form.url
        page: Any = await download(
            FormRequest(
                form.urljoin(action),
                formdata={"user": self.user, "password": self.password},
            )
        )
        self.logger.info("Logged in on Scrappey session %s", session_id)
        return bool(page.css("p.welcome"))

    def scrappey_session_check(self, response: Response, request: Request) -> bool:
        if not urlsplit(request.url).path.startswith("/members"):
            return True  # the login form (the init judges it), robots.txt…
        # Logged out (sent to the login form) or denied: not a members page.
        return isinstance(response, TextResponse) and bool(response.css("p.welcome"))

    async def start(self) -> AsyncIterator[Request]:
        yield Request(f"{self.site}/members", callback=self.parse_members)

    def parse_members(self, response: TextResponse) -> Iterator[Any]:
        user = response.css("b.user::text").get()
        page = parse_qs(urlsplit(response.url).query).get("page", ["1"])[0]
        for note in response.css("li.note::text").getall():
            yield {
                "note": note,
                "user": user,
                "page": int(page),
                "url": response.url,
                # The id of the Scrappey session that fetched this page.
                "session": response.meta.get("scrappey_session"),
            }
        yield from response.follow_all(css="a.next", callback=self.parse_members)
