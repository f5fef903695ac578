"""The downloader middlewares of a running crawl, for components that need one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

_T = TypeVar("_T")


def downloader_middlewares(crawler: Crawler) -> tuple[Any, ...]:
    """The enabled downloader middlewares, in ``process_request`` order.

    Empty before the crawl has an engine (the middlewares are built with it).
    """
    try:
        engine = crawler.engine
    except RuntimeError:  # Scrapy >= 2.19, before the crawl starts
        return ()
    return () if engine is None else tuple(engine.downloader.middleware.middlewares)


def find_middleware(crawler: Crawler, cls: type[_T]) -> _T | None:
    """The first enabled downloader middleware that is a *cls*, if any."""
    return next(
        (m for m in downloader_middlewares(crawler) if isinstance(m, cls)), None
    )
