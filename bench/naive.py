"""The hand-written alternative: blocking ``requests`` calls in a thread.

What scrapy-flaresolverr and many blog posts do: one ``requests.post`` per
Scrapy request in Twisted's thread pool, no sessions, no connection reuse
across threads beyond ``requests``' own per-call connection.
"""

from __future__ import annotations

from typing import Any

import requests
from scrapy.http import HtmlResponse
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.threads import deferToThread


class NaiveScrappeyMiddleware:
    def __init__(self, api_url: str, key: str) -> None:
        self.api_url, self.key = api_url, key

    @classmethod
    def from_crawler(cls, crawler: Any) -> NaiveScrappeyMiddleware:
        s = crawler.settings
        return cls(s["SCRAPPEY_API_URL"], s["SCRAPPEY_API_KEY"])

    async def process_request(self, request: Any, spider: Any = None) -> Any:
        if request.meta.get("scrappey") is False:
            return None
        payload = {"cmd": "request.get", "url": request.url}
        reply = await maybe_deferred_to_future(
            deferToThread(
                requests.post,
                self.api_url,
                params={"key": self.key},
                json=payload,
                timeout=60,
            )
        )
        solution = reply.json().get("solution") or {}
        return HtmlResponse(
            url=solution.get("currentUrl") or request.url,
            status=int(solution.get("statusCode") or 200),
            body=(solution.get("response") or "").encode(),
            encoding="utf-8",
            request=request,
        )
