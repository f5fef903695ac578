"""The servers of one benchmark, in their own process.

``python -m bench.servers '{"static": true, "max_sessions": 5000, ...}'`` starts
a :class:`LocalScrappey` and a plain aiohttp site serving the same page, prints
``{"api": ..., "site": ..., "pid": ...}`` as one JSON line and stops when its
stdin closes. The site's ``/page/{n}`` answers after a random delay drawn from
``[delay_min, delay_max]`` (seeded), ``/direct`` at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from aiohttp import web

from scrapy_scrappey.local import LocalScrappey
from scrapy_scrappey.local.faults import Faults

PAGE = (
    "<html><head><title>Bench page</title></head><body>"
    + "<p class='x'>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>" * 40
    + "</body></html>"
)


async def _serve(opts: dict) -> None:
    rng = random.Random(opts.get("seed", 1))
    lo, hi = float(opts.get("delay_min", 0.0)), float(opts.get("delay_max", 0.0))

    async def page(request: web.Request) -> web.Response:
        if hi > 0:
            await asyncio.sleep(rng.uniform(lo, hi))
        return web.Response(text=PAGE, content_type="text/html")

    async def direct(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/page/{n}", page)
    app.router.add_get("/direct", direct)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    site_url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    server = LocalScrappey(
        static_body=PAGE if opts.get("static", True) else None,
        max_sessions=int(opts.get("max_sessions", 5000)),
        session_ttl=opts.get("session_ttl"),
        faults=Faults(**opts.get("faults", {})),
        balance=1e12,
    )
    async with server:
        print(json.dumps({"api": server.url, "site": site_url}), flush=True)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_stdin() -> None:
            if not sys.stdin.buffer.read1(4096) and not done.done():
                done.set_result(None)

        loop.add_reader(sys.stdin.fileno(), on_stdin)
        await asyncio.wait_for(done, timeout=float(opts.get("max_seconds", 900)))
        loop.remove_reader(sys.stdin.fileno())
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(_serve(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
