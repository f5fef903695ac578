"""Spiders used by the benchmarks."""

from __future__ import annotations

import time
from typing import Any

from scrapy import Request, Spider


class CountSpider(Spider):
    """Requests ``n`` pages ``{base}/page/{i}`` and counts the answers.

    Requests are yielded lazily, so the scheduler stays small however large
    ``n`` is. ``on_count`` (optional) is called with the running count.
    """

    name = "bench_count"

    def __init__(
        self,
        base: str,
        n: int,
        hosts: list[str] | None = None,
        on_count: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.base, self.n, self.hosts = base, n, hosts
        self.on_count = on_count
        self.count = 0
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.t_start: float | None = None
        self.t_first: float | None = None
        self.t_last: float | None = None

    async def start(self):  # type: ignore[no-untyped-def]
        self.t_start = time.perf_counter()
        for i in range(self.n):
            if self.hosts:
                url = f"http://{self.hosts[i % len(self.hosts)]}/page/{i}"
            else:
                url = f"{self.base}/page/{i}"
            yield Request(url, callback=self.parse, errback=self.err, dont_filter=True)

    def parse(self, response):  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.count += 1
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        if self.on_count is not None:
            self.on_count(self.count)

    def err(self, failure):  # type: ignore[no-untyped-def]
        self.errors += 1
        self.t_last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        assert self.t_start is not None
        assert self.t_last is not None
        return self.t_last - self.t_start


class PoolsSpider(CountSpider):
    """A :class:`CountSpider` whose page ``i`` goes to the named pool ``p{i % pools}``."""

    name = "bench_pools"

    def __init__(self, *args: Any, pools: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pools = pools

    def scrappey_session_pool(self, request: Request) -> str:
        return f"p{page_number(request.url) % self.pools}"


def page_number(url: str) -> int:
    """``i`` of a ``…/page/{i}`` URL."""
    return int(url.rsplit("/", 1)[1])
