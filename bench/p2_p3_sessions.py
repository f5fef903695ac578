"""P2 session setup and P3 teardown, driving SessionManager and through a crawl.

P2: domain scope, 200 domains, 200 ms ``sessions.create``: time until every
pool has a session, for several SCRAPPEY_API_CONCURRENCY values.
P3: 1,000 open sessions, 100 ms ``sessions.destroy``: time of ``close()``.
Then the same through a real crawl of a spider with 200 allowed_domains, also
with a one-step session init (SCRAPPEY_SESSION_INIT, a login-like
``request.post`` answered in 200 ms) on every session.
"""

from __future__ import annotations

import asyncio
import time

from scrapy import Spider

from bench.common import (
    KEY,
    Row,
    StatsStub,
    crawl,
    emit,
    quick_flag,
    run,
    servers,
    settings,
)
from bench.spiders import CountSpider
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.config import Config
from scrapy_scrappey.sessions import SessionManager

DOMAINS = 200
CREATE_LATENCY = 0.2
DESTROY_LATENCY = 0.1
INIT_LATENCY = 0.2
#: A login-like init step; only ``request.post`` is slowed, not the pages.
INIT_STEP = {
    "cmd": "request.post",
    "url": "http://init.bench.test/login",
    "postData": "u=1",
}


def _fatal(reason: str, message: str) -> None:
    raise RuntimeError(f"{reason}: {message}")


def _open_on(srv) -> int:  # type: ignore[no-untyped-def]
    """Sessions open on the local server (the manager keeps no public count)."""
    return int(srv.stats()["sessions"]["open"])


async def _setup_time(api: str, concurrency: int, pools: list[str], pool_size: int = 1):  # type: ignore[no-untyped-def]
    config = Config(
        api_key=KEY, api_url=api, pool_size=pool_size, api_concurrency=concurrency
    )
    client = ScrappeyClient(api, KEY)
    manager = SessionManager(config, client, StatsStub(), on_fatal=_fatal)
    t0 = time.perf_counter()
    await manager.start(pools)
    return time.perf_counter() - t0, manager, client


async def p2(srv, quick: bool) -> list[Row]:  # type: ignore[no-untyped-def]
    rows = []
    pools = [f"domain:d{i}.bench.test" for i in range(DOMAINS)]
    sequential = DOMAINS * CREATE_LATENCY
    srv.set_faults(latency={"sessions.create": CREATE_LATENCY})
    for conc in [32, 64] if quick else [8, 32, 64, 128]:
        before = _open_on(srv)
        elapsed, manager, client = await _setup_time(srv.api, conc, pools)
        opened = _open_on(srv) - before
        srv.set_faults()  # fast teardown
        await manager.close()
        await client.close()
        srv.set_faults(latency={"sessions.create": CREATE_LATENCY})
        ideal = -(-DOMAINS // conc) * CREATE_LATENCY
        rows.append(
            Row(
                "P2 setup",
                f"SessionManager.start, {DOMAINS} pools, API concurrency {conc}",
                round(elapsed, 3),
                "s",
                round(ideal, 2),
                round(elapsed / ideal, 2),
                "<= 1.5 s",
                elapsed <= 1.5,
            )
        )
        if opened != DOMAINS:
            rows.append(
                Row(
                    "P2 setup",
                    f"sessions opened (conc {conc})",
                    opened,
                    "",
                    DOMAINS,
                    check=False,
                )
            )
    rows.append(Row("P2 setup", "sequential creation would take", sequential, "s"))
    srv.set_faults()
    return rows


async def p3(srv, quick: bool) -> list[Row]:  # type: ignore[no-untyped-def]
    rows = []
    n = 1000
    for conc in [64] if quick else [32, 64, 128]:
        srv.set_faults()
        before = _open_on(srv)
        _, manager, client = await _setup_time(
            srv.api, conc, [f"p{i}" for i in range(10)], pool_size=n // 10
        )
        deadline = time.perf_counter() + 30
        opened = _open_on(srv) - before
        while opened < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)  # start() returns once each pool has one
            opened = _open_on(srv) - before
        srv.set_faults(latency={"sessions.destroy": DESTROY_LATENCY})
        t0 = time.perf_counter()
        await manager.close()
        elapsed = time.perf_counter() - t0
        await client.close()
        left = _open_on(srv) - before
        ideal = -(-n // conc) * DESTROY_LATENCY
        rows.append(
            Row(
                "P3 teardown",
                f"SessionManager.close, {opened} sessions, API concurrency {conc}",
                round(elapsed, 3),
                "s",
                round(ideal, 2),
                round(elapsed / ideal, 2),
                "<= 3 s",
                elapsed <= 3.0,
            )
        )
        if opened != n or left:
            rows.append(
                Row(
                    "P3 teardown",
                    f"sessions opened / left open (conc {conc})",
                    f"{opened}/{left}",
                    "",
                    f"{n}/0",
                    check=False,
                )
            )
    srv.set_faults()
    server_open = srv.stats()["sessions"]["open"]
    rows.append(
        Row(
            "P3 teardown",
            "sessions still open on the server",
            server_open,
            "",
            0,
            check=server_open == 0,
        )
    )
    # close() while sessions.create calls are in flight (fixed in d188eb0).
    srv.set_faults(latency={"sessions.create": CREATE_LATENCY})
    _, manager, client = await _setup_time(srv.api, 64, ["race"], pool_size=1)
    racing = asyncio.ensure_future(manager.start([f"race{i + 2}" for i in range(21)]))
    await asyncio.sleep(CREATE_LATENCY / 2)
    await manager.close()
    await asyncio.gather(racing, return_exceptions=True)  # SpiderClosing
    await client.close()
    await asyncio.sleep(CREATE_LATENCY * 2)  # let the server finish the creates
    srv.set_faults()
    leaked = srv.stats()["sessions"]["open"] - server_open
    rows.append(
        Row(
            "P3 teardown",
            "close() with 21 sessions.create in flight: left open on server",
            leaked,
            "",
            0,
            target="0 (ledger off)",
            ok=leaked == 0,
            check=leaked == 0,
        )
    )
    return rows


class DomainsSpider(CountSpider):
    """CountSpider over 200 hosts, each in allowed_domains."""

    name = "bench_domains"


async def _domain_crawl(  # type: ignore[no-untyped-def]
    srv, create: float, destroy: float, init: float | None = None
) -> dict:
    hosts = [f"d{i}.bench.test" for i in range(DOMAINS)]
    latency = {"sessions.create": create, "sessions.destroy": destroy}
    extra: dict = {}
    if init is not None:
        latency["request.post"] = init
        extra["SCRAPPEY_SESSION_INIT"] = [INIT_STEP]
    srv.set_faults(latency=latency)
    posts = srv.stats()["requests"]["by_command"].get("request.post", 0)
    s = settings(srv.api, SCRAPPEY_SESSION_SCOPE="domain", **extra)
    t0 = time.perf_counter()
    crawler = await crawl(
        DomainsSpider, s, base="", n=DOMAINS * 2, hosts=hosts, allowed_domains=hosts
    )
    t_end = time.perf_counter()
    spider = crawler.spider
    st = crawler.stats.get_stats()
    srv.set_faults()
    return {
        "ready": spider.t_start - t0,
        "teardown": t_end - spider.t_last,
        "count": spider.count,
        "created": st.get("scrappey/sessions/created", 0),
        "destroyed": st.get("scrappey/sessions/destroyed", 0),
        "leaked": st.get("scrappey/sessions/leaked", 0),
        "inits": st.get("scrappey/sessions/init/ok", 0),
        "init_posts": srv.stats()["requests"]["by_command"].get("request.post", 0)
        - posts,
    }


async def crawl_rows(srv) -> list[Row]:  # type: ignore[no-untyped-def]
    base = await _domain_crawl(srv, 0.0, 0.0)
    slow = await _domain_crawl(srv, CREATE_LATENCY, DESTROY_LATENCY)
    rows = [
        Row(
            "P2 setup",
            f"crawl, {DOMAINS} allowed_domains: open until start() (default API concurrency)",
            round(slow["ready"], 3),
            "s",
            round(base["ready"], 3),
            None,
            "<= 1.5 s over baseline",
            slow["ready"] - base["ready"] <= 1.5,
        ),
        Row(
            "P3 teardown",
            f"crawl, {DOMAINS} domain sessions: last response to crawl end",
            round(slow["teardown"], 3),
            "s",
            round(base["teardown"], 3),
            None,
            "<= 3 s",
            slow["teardown"] <= 3.0,
        ),
    ]
    rows += _init_rows(await _domain_crawl(srv, CREATE_LATENCY, 0.0, INIT_LATENCY))
    for name, r in (("no latency", base), ("slow API", slow)):
        good = (
            r["count"] == DOMAINS * 2
            and r["created"] == r["destroyed"] == DOMAINS
            and not r["leaked"]
        )
        rows.append(
            Row(
                "P2/P3 crawl",
                f"{name}: pages / created / destroyed / leaked",
                f"{r['count']}/{r['created']}/{r['destroyed']}/{r['leaked']}",
                "",
                f"{DOMAINS * 2}/{DOMAINS}/{DOMAINS}/0",
                check=good,
            )
        )
    return rows


def _init_rows(r: dict) -> list[Row]:
    """P2 with a one-step init: every session created, then logged in, at start."""
    # Pipelined: each session's init follows its own create, 64 creates at once.
    ideal = -(-DOMAINS // 64) * CREATE_LATENCY + INIT_LATENCY
    good = (
        r["count"] == DOMAINS * 2
        and r["created"] == r["destroyed"] == r["inits"] == r["init_posts"] == DOMAINS
        and not r["leaked"]
    )
    return [
        Row(
            "P2 setup",
            f"crawl, {DOMAINS} allowed_domains, one-step init "
            f"({CREATE_LATENCY:g} s create + {INIT_LATENCY:g} s init): open until start()",
            round(r["ready"], 3),
            "s",
            round(ideal, 2),
            round(r["ready"] / ideal, 2),
            "<= 2 s",
            r["ready"] <= 2.0,
        ),
        Row(
            "P2/P3 crawl",
            "one-step init: pages / created / inits ok / init requests / leaked",
            f"{r['count']}/{r['created']}/{r['inits']}/{r['init_posts']}/{r['leaked']}",
            "",
            f"{DOMAINS * 2}/{DOMAINS}/{DOMAINS}/{DOMAINS}/0",
            check=good,
        ),
    ]


async def main() -> list[Row]:
    quick = quick_flag()
    with servers(static=True, max_sessions=5000, session_ttl=None) as srv:
        rows = await p2(srv, quick)
        rows += await p3(srv, quick)
        rows += await crawl_rows(srv)
    return rows


_ = Spider  # re-exported for type checkers of subclasses

if __name__ == "__main__":
    emit(run(main))
