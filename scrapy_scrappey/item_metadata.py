"""ScrappeyItemMetadata: what the page behind each item cost, and where it came from.

The downloader middleware records, in the meta of each request it answers,
the session (``scrappey_session``), the pool (``scrappey_pool``) and the
charge (``scrappey_cost``: ``{"cost": …, "type": …}``) of its reply; this
spider middleware copies them into the ``SCRAPPEY_ITEM_FIELD`` field of every
item the response produces.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import NotConfigured

from .config import Config
from .responses import ScrappeyMixin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    # typing.Self requires Python 3.11
    from typing_extensions import Self

    from .cost import Charge

logger = logging.getLogger(__name__)

#: Where ScrappeyItemMetadata sits in SPIDER_MIDDLEWARES when the Addon adds it:
#: near the engine, so it sees the items every other spider middleware let out.
ITEM_METADATA_PRIORITY = 50


def record_charge(
    meta: MutableMapping[str, Any], charge: Charge, pool: str | None
) -> None:
    """Record the pool and charge of a reply in its request's meta."""
    meta["scrappey_pool"] = pool
    meta["scrappey_cost"] = {"cost": charge.amount, "type": charge.kind or None}


def metadata(meta: MutableMapping[str, Any]) -> dict[str, Any] | None:
    """The item metadata of a response's meta; ``None`` if Scrappey did not answer it."""
    if "scrappey_cost" not in meta:
        return None
    charge = meta["scrappey_cost"]
    return {
        "session": meta.get("scrappey_session"),
        "pool": meta.get("scrappey_pool"),
        "cost": charge["cost"],
        "type": charge["type"],
    }


class ScrappeyItemMetadata:
    """Spider middleware: writes ``{"session", "pool", "cost", "type"}`` into
    the ``SCRAPPEY_ITEM_FIELD`` field of items.

    Works through ``itemadapter``: dicts, ``scrapy.Item`` with the field
    declared, dataclass and attrs items. An item type that cannot take the
    field is warned about once and its items are left unchanged. The
    :class:`~scrapy_scrappey.Addon` enables it when ``SCRAPPEY_ITEM_FIELD`` is set.
    """

    def __init__(self, crawler: Crawler) -> None:
        field = Config.from_settings(crawler.settings).cost.item_field
        if field is None:
            raise NotConfigured("SCRAPPEY_ITEM_FIELD is not set")
        self.field = field
        self._warned: set[type] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_spider_output(
        self,
        response: Response,
        result: AsyncIterator[Any],
        spider: Spider | None = None,
    ) -> AsyncIterator[Any]:
        # Not from the meta alone: a direct request may carry a copy of the
        # meta of a Scrappey response.
        scrappey = isinstance(response, ScrappeyMixin) and response.request is not None
        data = metadata(response.meta) if scrappey else None
        async for output in result:
            if data is not None and ItemAdapter.is_item(output):
                self._write(output, dict(data), spider)
            yield output

    def _write(self, item: Any, data: dict[str, Any], spider: Spider | None) -> None:
        try:
            ItemAdapter(item)[self.field] = data
        except KeyError:
            if type(item) not in self._warned:
                self._warned.add(type(item))
                logger.warning(
                    "%(cls)s items have no %(field)r field, so ScrappeyItemMetadata "
                    "leaves them unchanged: declare the field (SCRAPPEY_ITEM_FIELD) "
                    "on the item class",
                    {"cls": type(item).__qualname__, "field": self.field},
                    extra={"spider": spider},
                )
