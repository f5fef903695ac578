"""What the demo spiders share: where the demo site is (``-a site=URL``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import Spider

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

#: The demo site's account (example_project/demo_site.py); not a secret.
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"

#: 127.0.0.1 and localhost reach the same demo site but are two domains.
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class DemoSpider(Spider):
    """A spider of the demo site.

    The site's base URL comes from the ``site`` spider argument
    (``scrapy crawl members -a site=http://127.0.0.1:PORT``), else from the
    ``DEMO_SITE`` setting (or environment variable).
    """

    site: str = ""
    allowed_domains: list[str]

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        site = spider.site or crawler.settings.get("DEMO_SITE") or ""
        if not site.startswith(("http://", "https://")):
            raise ValueError(
                f"The {cls.name} spider needs the demo site's URL: "
                "scrapy crawl NAME -a site=http://127.0.0.1:PORT "
                "(start the site with: python -m example_project.demo_site)"
            )
        spider.site = site.rstrip("/")
        spider.allowed_domains = spider.domains()
        return spider

    def domains(self) -> list[str]:
        """The spider's ``allowed_domains``: by default the site's host."""
        return [self.site_host]

    @property
    def site_host(self) -> str:
        return urlsplit(self.site).hostname or ""

    def site_on(self, host: str) -> str:
        """The site's base URL under another host name."""
        parts = urlsplit(self.site)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}"
