"""``challenge``: pages behind a JavaScript challenge, solved once per session.

The demo site's ``/protected/N`` pages answer a browser without its
``clearance`` cookie with "Just a moment..." (HTTP 503) and a script that
computes the cookie and reloads, as Cloudflare-style challenges do. Only a
real browser gets through: run this spider against the local server's
browser engine (``scrappey-local --engine browser``) or the real API. The
Scrappey session keeps the cookie, so the challenge is solved on the first
page only; the others load straight away. The spider itself knows nothing
about the challenge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy import Request

from ..demosite import DemoSpider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from scrapy.http import TextResponse


class ChallengeSpider(DemoSpider):
    name = "challenge"
    custom_settings = {
        # The pages are fetched one after the other: the first one solves the
        # challenge for the session, and the others ride on its cookie.
        "CONCURRENT_REQUESTS": 1,
        "ROBOTSTXT_OBEY": False,
    }

    #: How many pages to fetch (``-a pages=N``); the demo site has 6.
    pages: int | str = 6

    async def start(self) -> AsyncIterator[Request]:
        for n in range(1, int(self.pages) + 1):
            yield Request(f"{self.site}/protected/{n}", callback=self.parse)

    def parse(self, response: TextResponse) -> Iterator[dict[str, Any]]:
        secret = response.css("p.secret::text").get()
        if secret is None:
            # Still the challenge page: no browser ran it.
            self.logger.error("Challenge not passed at %s", response.url)
            return
        yield {"url": response.url, "text": secret}
