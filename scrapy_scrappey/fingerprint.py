"""RequestFingerprinter: Scrapy's fingerprint, told apart by session and parameters."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from scrapy.utils.request import RequestFingerprinter as ScrapyFingerprinter

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    # typing.Self requires Python 3.11
    from typing_extensions import Self


class RequestFingerprinter:
    """Scrapy's default fingerprint plus the Scrappey meta keys.

    A ``scrappey_session`` string (a pool name, or a session id copied from
    ``response.meta``) and a non-empty ``scrappey`` parameter dict are part of
    the fingerprint, so the same URL fetched in the pools ``account-1`` and
    ``account-2`` is two requests for the dupefilter and the HTTP cache.
    A request without them keeps Scrapy's exact fingerprint, so existing HTTP
    caches and job directories stay valid.

    The fingerprint of a request object is computed once: the middleware
    writes the session id it used into the meta, and the HTTP cache must
    store the response under the key it looked it up with.
    """

    def __init__(self, crawler: Crawler | None = None) -> None:
        self._scrapy = ScrapyFingerprinter(crawler)
        self._cache: WeakKeyDictionary[Request, bytes] = WeakKeyDictionary()

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
        identity = _scrappey_identity(request.meta)
        if not identity:
            return base
        # default=repr: a value JSON cannot hold fails the request later, with
        # an error naming it, rather than the scheduler here.
        text = json.dumps(identity, sort_keys=True, default=repr)
        return hashlib.sha1(base + text.encode(), usedforsecurity=False).digest()


def _scrappey_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What in *meta* makes a request fetch something else than its URL alone."""
    identity: dict[str, Any] = {}
    session = meta.get("scrappey_session")
    if isinstance(session, str) and session:
        identity["session"] = session
    params = meta.get("scrappey")
    if isinstance(params, dict) and params:
        identity["params"] = params
    return identity
