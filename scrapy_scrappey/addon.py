"""``ADDONS = {"scrapy_scrappey.Addon": 0}``: enable the plugin in one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .fingerprint import RequestFingerprinter
from .item_metadata import ITEM_METADATA_PRIORITY, ScrappeyItemMetadata
from .middleware import ScrappeyMiddleware

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

#: After HttpCacheMiddleware (900), so cached pages cost no API call, and after
#: the cookie (700), proxy (750) and stats (850) middlewares, so their work is
#: in the request we translate.
MIDDLEWARE_PRIORITY = 950


class Addon:
    """Scrapy add-on: adds :class:`~scrapy_scrappey.ScrappeyMiddleware` at 950,
    :class:`~scrapy_scrappey.RequestFingerprinter` as the fingerprinter, and
    :class:`~scrapy_scrappey.ScrappeyItemMetadata` when ``SCRAPPEY_ITEM_FIELD`` is set."""

    def update_settings(self, settings: BaseSettings) -> None:
        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES",
            ScrappeyMiddleware,
            MIDDLEWARE_PRIORITY,
        )
        # At "addon" priority, this replaces Scrapy's default only: a
        # fingerprinter set by the project, the spider or the command line wins.
        settings.set("REQUEST_FINGERPRINTER_CLASS", RequestFingerprinter, "addon")
        if settings.get("SCRAPPEY_ITEM_FIELD"):
            settings.setdefault_in_component_priority_dict(
                "SPIDER_MIDDLEWARES", ScrappeyItemMetadata, ITEM_METADATA_PRIORITY
            )
