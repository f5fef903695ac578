"""The shops site the scale-out demo crawls: ``python -m example_project.shop_site``.

*pages* pages spread over *domains* host names, ``shop-0.test`` …
``shop-<domains-1>.test``, all served by one aiohttp app on 127.0.0.1 (the
local Scrappey server maps ``*.test`` to 127.0.0.1 with its ``resolve``
option). Page ``n`` lives at ``http://shop-<n % domains>.test:PORT/p/<n>``
and only there (another host gets a 404); page 0 is the seed. Every page links
to a few others on other domains (:func:`links`: each page is reached from
several, so losing one page in flight strands nothing) and back to the seed.

The site counts the fetches of every page (``fetched``), the server-side truth
of "each page crawled exactly once".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from typing_extensions import Self

PAGES = 300
DOMAINS = 10


def domain(n: int, domains: int) -> str:
    """The host name page *n* lives on."""
    return f"shop-{n % domains}.test"


def links(n: int, pages: int) -> list[int]:
    """The pages page *n* links to: the seed, the next ones, and two far away."""
    targets = {0, n + 1, n + 2, 2 * n + 1, (7 * n + 3) % pages}
    return sorted(t for t in targets if t < pages and t != n)


class ShopSite:
    """The site on a free port of 127.0.0.1 (async context manager)."""

    def __init__(
        self,
        pages: int = PAGES,
        domains: int = DOMAINS,
        *,
        port: int = 0,
        delay: float = 0.0,
    ) -> None:
        if pages < 1 or domains < 1:
            raise ValueError(f"pages and domains must be >= 1, got {pages}, {domains}")
        self.pages, self.domains, self.delay = pages, domains, delay
        self.fetched: Counter[int] = Counter()
        self.port = port
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/p/{n}", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, n: int) -> str:
        """Page *n*'s URL (page 0 is the seed)."""
        return f"http://{domain(n, self.domains)}:{self.port}/p/{n}"

    async def _page(self, request: web.Request) -> web.Response:
        try:
            n = int(request.match_info["n"])
        except ValueError:
            raise web.HTTPNotFound from None
        if not 0 <= n < self.pages or request.url.host != domain(n, self.domains):
            raise web.HTTPNotFound
        self.fetched[n] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        anchors = "".join(
            f'<li><a class="link" href="{self.url(t)}">page {t}</a></li>'
            for t in links(n, self.pages)
        )
        body = (
            f"<!DOCTYPE html><html><head><title>Shop page {n}</title></head><body>"
            f'<h1 class="page" data-n="{n}">Shop page {n}</h1><ul>{anchors}</ul>'
            "</body></html>"
        )
        return web.Response(text=body, content_type="text/html")


async def _serve(args: argparse.Namespace) -> None:
    async with ShopSite(args.pages, args.domains, port=args.port) as site:
        print(site.url(0), flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m example_project.shop_site", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pages", type=int, default=PAGES)
    parser.add_argument("--domains", type=int, default=DOMAINS)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
