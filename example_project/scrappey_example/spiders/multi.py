"""``multi``: crawl the demo site under two host names, one session per domain.

Domain session scope: the middleware keeps one Scrappey session per
allowed domain (here 127.0.0.1 and localhost, the same site under two
names), opened when the spider starts. Requests for a host always go
through that host's session, as a browser keeps one cookie jar per site.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import Request

from ..demosite import LOOPBACK_NAMES, DemoSpider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from scrapy.http import TextResponse


class MultiSpider(DemoSpider):
    name = "multi"
    scrappey_session_scope = "domain"

    #: Host names to crawl the site under, comma-separated (``-a hosts=...``).
    #: Default: the site's host and, for a loopback site, its other name.
    hosts = ""

    def domains(self) -> list[str]:
        if self.hosts:
            return [h.strip() for h in self.hosts.split(",") if h.strip()]
        host = self.site_host
        if host in LOOPBACK_NAMES:
            return [host, *(name for name in LOOPBACK_NAMES if name != host)]
        return [host]

    async def start(self) -> AsyncIterator[Request]:
        for host in self.allowed_domains:
            yield Request(f"{self.site_on(host)}/articles", callback=self.parse)

    def parse(self, response: TextResponse) -> Iterator[Request]:
        yield from response.follow_all(css="li.article a", callback=self.parse_article)
        yield from response.follow_all(css="a.next", callback=self.parse)

    def parse_article(self, response: TextResponse) -> Iterator[dict[str, Any]]:
        yield {
            "host": urlsplit(response.url).hostname,
            "title": response.css("h1::text").get(),
            "text": response.css("p.text::text").get(),
            "url": response.url,
            "session": response.meta.get("scrappey_session"),
        }
