"""RequestFingerprinter: Scrapy's fingerprint, told apart by named pool and parameters."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from scrapy.utils.request import RequestFingerprinter as ScrapyFingerprinter

from ._downloader import find_middleware
from .pool_config import pool_label
from .routing import is_named_pool, session_meta_pool

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    # typing.Self requires Python 3.11
    from typing_extensions import Self

    from .middleware import ScrappeyMiddleware


class RequestFingerprinter:
    """Scrapy's default fingerprint plus the Scrappey meta keys.

    The named pool a ``scrappey_session`` string routes to (a pool name, or
    the id of one of its sessions copied from ``response.meta``) and a
    non-empty ``scrappey`` parameter dict are part of the fingerprint, so the
    same URL fetched in the pools ``account-1`` and ``account-2`` is two
    requests for the dupefilter and the HTTP cache, while a chain that
    follows its session is deduplicated within its pool as in plain Scrapy.
    A request without them, or on a session of the spider or a domain pool,
    or on an id the crawl does not know, keeps Scrapy's exact fingerprint,
    so existing HTTP caches and job directories stay valid.

    The fingerprint of a request object is computed once: the middleware
    writes the session id it used into the meta, and the HTTP cache must
    store the response under the key it looked it up with.
    """

    def __init__(self, crawler: Crawler | None = None) -> None:
        self._crawler = crawler
        self._scrapy = ScrapyFingerprinter(crawler)
        self._cache: WeakKeyDictionary[Request, bytes] = WeakKeyDictionary()
        self._middleware: ScrappeyMiddleware | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def fingerprint(self, request: Request) -> bytes:
        cached = self._cache.get(request)
        if cached is None:
            cached = self._cache[request] = self._compute(request)
        return cached

    def _compute(self, request: Request) -> bytes:
        base = self._scrapy.fingerprint(request)
        identity = self._identity(request.meta)
        if not identity:
            return base
        # default=repr: a value JSON cannot hold fails the request later, with
        # an error naming it, rather than the scheduler here.
        text = json.dumps(identity, sort_keys=True, default=repr)
        return hashlib.sha1(base + text.encode(), usedforsecurity=False).digest()

    def _identity(self, meta: dict[str, Any]) -> dict[str, Any]:
        """What in *meta* makes a request fetch something else than its URL alone."""
        identity: dict[str, Any] = {}
        session = meta.get("scrappey_session")
        if isinstance(session, str) and session:
            pool, _ = session_meta_pool(session, self._pool_of)
            if pool is not None and is_named_pool(pool):
                identity["session"] = pool_label(pool)
        params = meta.get("scrappey")
        if isinstance(params, dict) and params:
            identity["params"] = params
        return identity

    def _pool_of(self, session_id: str) -> str | None:
        """The pool of a session of this crawl; ``None`` when it is unknown
        (no crawl, no ScrappeyMiddleware, or not one of its sessions)."""
        if self._middleware is None and self._crawler is not None:
            # Imported here: the middleware's start-up checks import this module.
            from .middleware import ScrappeyMiddleware

            self._middleware = find_middleware(self._crawler, ScrappeyMiddleware)
        middleware = self._middleware
        return None if middleware is None else middleware.session_pool(session_id)
