"""Helpers to run real crawls against LocalScrappey and the target site."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapy import Request, Spider, signals, version_info
from scrapy.utils.test import get_crawler

if TYPE_CHECKING:
    from collections.abc import Iterable

MIDDLEWARES = {"scrapy_scrappey.ScrappeyMiddleware": 950}
KEY = "TESTKEY-9f8e7d6c5b4a"
#: A DOWNLOAD_DELAY without random variation, in this Scrapy's words (the
#: other setting would be ignored, or warn as deprecated).
NO_JITTER: dict[str, Any] = (
    {"DOWNLOAD_DELAY_JITTER": 0}
    if version_info >= (2, 19)
    else {"RANDOMIZE_DOWNLOAD_DELAY": False}
)


def settings_for(server: Any, tmp_path: Any, **extra: Any) -> dict[str, Any]:
    return {
        "DOWNLOADER_MIDDLEWARES": MIDDLEWARES,
        "SCRAPPEY_API_KEY": KEY,
        "SCRAPPEY_API_URL": server.url,
        "SCRAPPEY_LEDGER_DIR": str(tmp_path / "ledger"),
        "SCRAPPEY_SESSION_CREATE_BACKOFF": 0.05,
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "RETRY_TIMES": 3,
        "DOWNLOAD_TIMEOUT": 10,
        **extra,
    }


class PagesSpider(Spider):
    """Fetches ``urls`` (a list of URLs or (url, meta) pairs) and yields one item each."""

    name = "pages"

    def __init__(self, urls: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urls = urls
        self.errors: list[Any] = []

    async def start(self):  # type: ignore[no-untyped-def]
        for entry in self.urls:
            url, meta = entry if isinstance(entry, tuple) else (entry, {})
            yield Request(
                url,
                meta=meta,
                callback=self.parse,
                errback=self.errback,
                dont_filter=True,
            )

    def parse(self, response):  # type: ignore[no-untyped-def]
        yield {
            "url": response.url,
            "request_url": response.request.url,
            "status": response.status,
            "session": response.meta.get("scrappey_session"),
            "flags": response.flags,
            "cls": type(response).__name__,
            "text": response.text if hasattr(response, "text") else None,
        }

    def errback(self, failure):  # type: ignore[no-untyped-def]
        self.errors.append(failure.value)


@dataclass
class Result:
    crawler: Any
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, Any]:
        return self.crawler.stats.get_stats()

    @property
    def spider(self) -> Any:
        return self.crawler.spider


async def crawl(
    spider_cls: type[Spider], settings: dict[str, Any], **kwargs: Any
) -> Result:
    crawler = get_crawler(spider_cls, settings)
    result = Result(crawler)

    def collect(item: dict[str, Any]) -> None:
        result.items.append(item)

    crawler.signals.connect(collect, signal=signals.item_scraped, weak=False)
    await crawler.crawl_async(**kwargs)
    return result


def max_overlap(events: Iterable[tuple[Any, ...]], name: str) -> int:
    """The most *name* things under way at once, from ``("start", name, …)``
    events and any other event (``"end"``, ``"cancelled"``) that closes one."""
    now = most = 0
    for event, what, *_ in events:
        if what == name:
            now += 1 if event == "start" else -1
            most = max(most, now)
    return most
