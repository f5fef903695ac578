"""ScrappeyItemMetadata: the cost and provenance of each item, in four item kinds."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import attrs
import pytest
import scrapy
from scrapy import Request
from scrapy.exceptions import NotConfigured
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Addon, ScrappeyItemMetadata
from scrapy_scrappey.exceptions import ScrappeyConfigError
from tests.crawl import KEY, PagesSpider, crawl, settings_for


class ScrapyItem(scrapy.Item):
    url = scrapy.Field()
    scrappey = scrapy.Field()


@dataclasses.dataclass
class DataItem:
    url: str
    scrappey: dict[str, Any] | None = None


@attrs.define
class AttrsItem:
    url: str
    scrappey: dict[str, Any] | None = None


@dataclasses.dataclass
class NoFieldItem:
    url: str


class KindsSpider(PagesSpider):
    """One item of each kind per page, and a page fetched without Scrappey."""

    async def start(self):  # type: ignore[no-untyped-def]
        async for request in super().start():
            yield request
        # As if copied from a Scrappey response's meta.
        stale = {"scrappey_cost": {"cost": 9.0, "type": "browser"}}
        yield Request(
            self.urls[0] + "?direct",
            meta={"scrappey": False, **stale},
            callback=self.parse,
            dont_filter=True,
        )

    def parse(self, response):  # type: ignore[no-untyped-def]
        url = response.url
        yield {"url": url}
        yield ScrapyItem(url=url)
        yield DataItem(url=url)
        yield AttrsItem(url=url)
        yield NoFieldItem(url=url)


def _field(item: Any) -> Any:
    if isinstance(item, (dict, scrapy.Item)):
        return item.get("scrappey")
    return getattr(item, "scrappey", None)


@deferred_f_from_coro_f
async def test_every_item_kind_carries_its_page_cost_and_provenance(
    tmp_path, local_server, target_site, caplog
):
    urls = [target_site.url("/page/1"), target_site.url("/page/2")]
    settings = settings_for(
        local_server,
        tmp_path,
        ADDONS={"scrapy_scrappey.Addon": 0},
        SCRAPPEY_ITEM_FIELD="scrappey",
    )
    with caplog.at_level(logging.WARNING, logger="scrapy_scrappey"):
        result = await crawl(KindsSpider, settings, urls=urls)
    direct = [i for i in result.items if _url(i).endswith("?direct")]
    proxied = [i for i in result.items if not _url(i).endswith("?direct")]
    assert len(proxied) == 10
    assert len(direct) == 5
    sessions = {c["session"] for c in local_server.stats()["commands"]}
    for item in proxied:
        if isinstance(item, NoFieldItem):
            assert item == NoFieldItem(url=item.url)  # left unchanged
            continue
        data = _field(item)
        assert set(data) == {"session", "pool", "cost", "type"}
        assert data["session"] in sessions
        assert (data["pool"], data["cost"], data["type"]) == ("spider", 0.2, "request")
    assert all(_field(i) is None for i in direct)  # no Scrappey, no metadata
    warnings = [m for m in caplog.messages if "ScrappeyItemMetadata" in m]
    assert warnings == [
        (
            "NoFieldItem items have no 'scrappey' field, so ScrappeyItemMetadata leaves "
            "them unchanged: declare the field (SCRAPPEY_ITEM_FIELD) on the item class"
        )
    ]


def _url(item: Any) -> str:
    url: str = item["url"] if isinstance(item, (dict, scrapy.Item)) else item.url
    return url


def test_the_addon_enables_it_only_with_a_field():
    for field, enabled in ((None, False), ("", False), ("cost", True)):
        settings = Settings({"SCRAPPEY_ITEM_FIELD": field})
        Addon().update_settings(settings)
        spider_mws = settings.getdict("SPIDER_MIDDLEWARES")
        assert (ScrappeyItemMetadata in spider_mws) is enabled, field


def test_it_is_off_without_a_field_and_refuses_a_bad_one():
    crawler = get_crawler(settings_dict={"SCRAPPEY_API_KEY": KEY})
    with pytest.raises(NotConfigured, match="SCRAPPEY_ITEM_FIELD is not set"):
        ScrappeyItemMetadata.from_crawler(crawler)
    crawler = get_crawler(
        settings_dict={"SCRAPPEY_API_KEY": KEY, "SCRAPPEY_ITEM_FIELD": ["x"]}
    )
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_ITEM_FIELD must be"):
        ScrappeyItemMetadata.from_crawler(crawler)
