"""``quotes``: https://quotes.toscrape.com through the real Scrappey API.

Needs a real key: ``SCRAPPEY_API_KEY=... scrapy crawl quotes``. Follows the
pagination and each quote's author page; yields ``quote`` and ``author``
items. All requests share one Scrappey session (the default spider scope).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy import Request, Spider

if TYPE_CHECKING:
    from collections.abc import Iterator

    from scrapy.http import TextResponse


class QuotesSpider(Spider):
    name = "quotes"
    allowed_domains = ["quotes.toscrape.com"]
    start_urls = ["https://quotes.toscrape.com/"]

    def parse(self, response: TextResponse) -> Iterator[Request | dict[str, Any]]:
        for quote in response.css("div.quote"):
            yield {
                "type": "quote",
                "text": quote.css("span.text::text").get(),
                "author": quote.css("small.author::text").get(),
                "tags": quote.css("div.tags a.tag::text").getall(),
            }
            # The "(about)" link next to the author's name.
            author_page = quote.css("small.author ~ a::attr(href)").get()
            if author_page:
                yield response.follow(author_page, callback=self.parse_author)
        yield from response.follow_all(css="li.next a", callback=self.parse)

    def parse_author(self, response: TextResponse) -> Iterator[dict[str, Any]]:
        details = response.css("div.author-details")
        yield {
            "type": "author",
            "name": (details.css("h3.author-title::text").get() or "").strip(),
            "born": details.css("span.author-born-date::text").get(),
            "born_location": details.css("span.author-born-location::text").get(),
            "description": (
                details.css("div.author-description::text").get() or ""
            ).strip(),
            "url": response.url,
        }
