"""``shops``: the scale-out spider, run by many workers over scrapy-redis.

Every worker runs ``scrapy crawl shops`` with the same Redis; the seeds are
pushed to ``shops:start_urls`` (``{"url": "http://shop-0.test:PORT/p/0"}``),
the requests go through the shared queue and dupefilter, so each page is
crawled once by whichever worker pops it. Domain session scope: a worker
keeps one Scrappey session per shop domain, and ``SCRAPPEY_MAX_SESSIONS``
caps the sessions of all the workers together (``SCRAPPEY_REDIS_URL``).

Run it (see example_project/README.md; ``python3 dev.py demo-redis`` does it
all)::

    scrapy crawl shops -a worker=w1 -a domains=10 \\
        -s REDIS_URL=redis://127.0.0.1:6379/0 \\
        -s SCRAPPEY_REDIS_URL=redis://127.0.0.1:6379/0

Items carry the page, the worker that crawled it and the session used.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from ..redis_compat import REDIS_WORKER_SETTINGS, DrainingRedisSpider

if TYPE_CHECKING:
    from collections.abc import Iterator

    from scrapy import Request
    from scrapy.http import TextResponse


class ShopsSpider(DrainingRedisSpider):
    name = "shops"
    custom_settings: ClassVar[dict[str, Any]] = {
        **REDIS_WORKER_SETTINGS,
        "SCRAPPEY_SESSION_SCOPE": "domain",
        # robots.txt would cost one API request per domain and worker.
        "ROBOTSTXT_OBEY": False,
    }

    #: ``-a worker=NAME``: this worker's name in the items (default host-pid).
    worker = ""
    #: ``-a domains=N``: the site's domains, shop-0.test … shop-<N-1>.test.
    domains = "10"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker = self.worker or f"{socket.gethostname()}-{os.getpid()}"
        try:
            count = int(self.domains)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"-a domains wants a number >= 1, got {self.domains!r}")
        # Not allowed_domains: their session pools would all open at start, 10
        # per worker, more than an account cap of 12 lets three workers hold.
        # Each domain's pool opens on its first request instead.
        self.shops = {f"shop-{n}.test" for n in range(count)}

    def parse(self, response: TextResponse) -> Iterator[dict[str, Any] | Request]:
        yield {
            "page": int(response.css("h1.page::attr(data-n)").get("-1")),
            "url": response.url,
            "worker": self.worker,
            "session": response.meta.get("scrappey_session"),
        }
        for link in response.css("a.link::attr(href)").getall():
            if urlsplit(link).hostname in self.shops:
                yield response.follow(link)
