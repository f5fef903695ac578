"""A local Scrappey-compatible API server, for tests, demos and benchmarks.

Run it as ``python -m scrapy_scrappey.local`` (or ``scrappey-local``); the
first line it prints is the API URL. From Python::

    from scrapy_scrappey.local import Faults, LocalScrappey

    async with LocalScrappey(faults=Faults(error_rate=0.1, seed=1)) as server:
        ...  # SCRAPPEY_API_URL = server.url

It speaks the documented protocol (``request.get/post/put/patch/delete``,
``sessions.create/destroy/list/active``, ``/balance``) and can inject faults.
The http engine (the class's default) fetches targets with aiohttp
(``solution.type == "request"``), one cookie jar per session, and ignores
browser-only options. The browser engine (``engine="browser"`` or ``"auto"``;
``browser.py``) renders pages in Chromium, one browser context per session,
and performs ``browserActions``, ``cssSelector``, ``screenshot`` and the like.
"""

from __future__ import annotations

from scrapy_scrappey.local.faults import Faults
from scrapy_scrappey.local.server import LocalScrappey

__all__ = ["Faults", "LocalScrappey"]
