"""What a worker writes as it goes, so that a killed worker's work is not lost.

A feed export writes nothing a ``kill -9`` can recover (scale-out.md problem
6), so the scale-out workers use these instead:

* :class:`ItemLines` (item pipeline): each item as one JSON line, flushed at
  once, to ``WORKER_ITEMS_FILE``.
* :class:`StatsFile` (extension): the crawl's stats and finish reason as JSON
  to ``WORKER_STATS_FILE`` when the spider closes, with the CPU seconds
  the worker used (``worker/cpu_seconds``).

Both do nothing when their setting is unset.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.utils.serialize import ScrapyJSONEncoder

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from typing_extensions import Self

_ENCODER = ScrapyJSONEncoder(sort_keys=True)


class ItemLines:
    """Item pipeline: append each item to ``WORKER_ITEMS_FILE`` and flush."""

    def __init__(self, path: str | None) -> None:
        self._file: IO[str] | None = None
        if path:
            self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        pipeline = cls(crawler.settings.get("WORKER_ITEMS_FILE"))
        crawler.signals.connect(pipeline.close, signal=signals.spider_closed)
        return pipeline

    def process_item(self, item: Any) -> Any:
        if self._file is not None:
            self._file.write(_ENCODER.encode(ItemAdapter(item).asdict()) + "\n")
            self._file.flush()
        return item

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StatsFile:
    """Extension: the stats and ``finish_reason`` to ``WORKER_STATS_FILE`` at close."""

    def __init__(self, crawler: Crawler, path: str) -> None:
        self.crawler = crawler
        self.path = Path(path)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        extension = cls(crawler, crawler.settings.get("WORKER_STATS_FILE") or "")
        if extension.path.name:
            # Connected after the core stats: runs once they hold the finish reason.
            crawler.signals.connect(extension.write, signal=signals.spider_closed)
        return extension

    def write(self, spider: Spider, reason: str) -> None:
        assert self.crawler.stats is not None
        stats = dict(self.crawler.stats.get_stats())
        stats["finish_reason"] = reason
        # What this worker cost in CPU, for the benchmark (P10).
        stats["worker/cpu_seconds"] = round(time.process_time(), 3)
        self.path.write_text(_ENCODER.encode(stats), encoding="utf-8")
