"""A local Scrappey-compatible API server, for tests, demos and benchmarks.

Run it as ``python -m scrapy_scrappey.local`` (or ``scrappey-local``); the
first line it prints is the API URL. From Python::

    from scrapy_scrappey.local import Faults, LocalScrappey

    async with LocalScrappey(faults=Faults(error_rate=0.1, seed=1)) as server:
        ...  # SCRAPPEY_API_URL = server.url

It speaks the documented protocol (``request.get/post/put/patch/delete``,
``sessions.create/destroy/list/active``, ``/balance``), fetches targets with
a plain HTTP client (``solution.type == "request"``), keeps one cookie jar per
session, and can inject faults. Options that need a real browser
(``browserActions``, ``screenshot``, captcha solving, …) are accepted and
ignored: the reply is a normal success envelope without those extras.
"""

from __future__ import annotations

from scrapy_scrappey.local.faults import Faults
from scrapy_scrappey.local.server import LocalScrappey

__all__ = ["Faults", "LocalScrappey"]
