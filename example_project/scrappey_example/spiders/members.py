"""``members``: log in once, then read every members-only page in that session.

Spider session scope: the middleware opens one remote browser session when
the spider starts, sends every request through it and destroys it when the
spider closes. The site's login cookie lives in that remote session, so the
members pages, which redirect to the login form without it, stay reachable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from scrapy import FormRequest, Request
from scrapy.exceptions import CloseSpider

from ..demosite import DEMO_PASSWORD, DEMO_USER, DemoSpider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from scrapy.http import TextResponse


class MembersSpider(DemoSpider):
    name = "members"
    # One Scrappey session for the whole crawl (also the default scope).
    scrappey_session_scope = "spider"
    custom_settings = {
        # Scrapy's own cookie jar would also catch the login cookie from the
        # responses and send it back with every request (the middleware
        # forwards it as Scrappey's `cookies` field), so the login would work
        # even without a session. It is switched off here to show that the
        # remote session alone keeps the user logged in. Your spiders can
        # leave it on.
        "COOKIES_ENABLED": False,
    }

    user = DEMO_USER
    password = DEMO_PASSWORD

    async def start(self) -> AsyncIterator[Request]:
        yield Request(f"{self.site}/login", callback=self.log_in)

    def log_in(self, response: TextResponse) -> Iterator[Request]:
        # Sent through Scrappey like any other request; the site answers with
        # a cookie and a redirect to /members, both handled remotely.
        action = response.css("form#login::attr(action)").get() or response.url
        yield FormRequest(
            response.urljoin(action),
            formdata={"user": self.user, "password": self.password},
            callback=self.parse_members,
        )

    def parse_members(self, response: TextResponse) -> Iterator[Any]:
        if not response.css("p.welcome"):
            # Redirected to the login form: the login did not stick.
            self.logger.error("Not logged in at %s", response.url)
            raise CloseSpider("not_logged_in")
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
