"""The demo: ``python3 dev.py demo`` or ``python -m example_project.demo``.

Starts the demo site (example_project/demo_site.py) and a local Scrappey
server on free ports, runs the ``members``, ``multi`` and ``existing``
spiders against them as real ``scrapy crawl`` commands in example_project/
(so the project's settings are used, with the local API URL and a demo key
passed through the environment), stops everything and prints a summary.
During ``multi`` the local server "bans" every session after
``MULTI_BAN_AFTER`` requests with an anti-bot vendor's block page; the
plugin's ban detectors recognise them with no spider code, and the summary
shows the bans by vendor. Each spider's cost (``scrappey/cost/total``) is
shown next to what the local server charged it.

Then the ``challenge`` spider crawls pages behind a JavaScript challenge
through a second local server with the browser engine (``engine="auto"``):
every page is real content, and the summary shows how many challenges the
site served for how many pages (one per session). Without Chromium and
Playwright the demo says how to install them and skips that spider.

Exits non-zero if a spider fails, scrapes nothing, finishes for another
reason than "finished" or logs an error, or if Scrappey sessions are still
open on the server after the crawls, or if a spider's cost differs from what
the server charged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy_scrappey.local import Faults, LocalScrappey
from scrapy_scrappey.local.engine_choice import missing_browser

from .demo_site import BAN_AFTER, LOGOUT_AFTER, DemoSite
from .processes import stop_process

if TYPE_CHECKING:
    from collections.abc import Coroutine

PROJECT_DIR = Path(__file__).resolve().parent
OUTPUT_DIR = PROJECT_DIR / "output"
#: Accepted by the local server only; it is not a Scrappey key.
DEMO_KEY = "local-demo-key-not-a-real-scrappey-key"
#: During ``multi``, the local server bans each session after this many
#: requests, with these vendors' block pages in turn (Akamai's comes as HTTP 200).
MULTI_BAN_AFTER = 5
BAN_VENDORS = ("cloudflare", "akamai", "datadome")
#: (spider, what it shows, the local server's faults during it)
SPIDERS = (
    (
        "members",
        "init logs each session in; check retires logged-out/banned",
        Faults(),
    ),
    (
        "multi",
        "two host names; one session per domain; vendor bans detected",
        Faults(ban_after_requests=MULTI_BAN_AFTER, ban_vendors=BAN_VENDORS),
    ),
    (
        "existing",
        "hand-written API calls; the middleware adds a session",
        Faults(),
    ),
)
SPIDER_TIMEOUT = 40.0  # seconds; each crawl takes about two
CHALLENGE_SHOWS = "JS challenge solved once per session (browser engine)"
BROWSER_HINT = (
    "to install it: pip install 'scrapy-scrappey[browser]' and "
    "apt-get install chromium (or set SCRAPPEY_LOCAL_CHROMIUM)"
)
_CLOSED_RE = re.compile(r"Spider closed \(([^)]*)\)")
# From the stats Scrapy dumps at the end of a crawl.
_INITS_RE = re.compile(r"'scrappey/sessions/init/ok': (\d+)")
_RETIRED_RE = re.compile(r"'scrappey/sessions/retired/\w+': (\d+)")
_BANS_RE = re.compile(r"'scrappey/bans/(\w+)': (\d+)")
_COST_RE = re.compile(r"'scrappey/cost/total': ([\d.]+)")
_ERROR_RE = re.compile(r"^\S+ \S+ \[[^\]]+\] (?:ERROR|CRITICAL): .*$", re.MULTILINE)


class Servers:
    """The demo site and the local Scrappey server, on an event loop in a thread."""

    def __init__(self) -> None:
        # The member area logs browsers out and bans them, as real sites do.
        self.site = DemoSite(logout_after=LOGOUT_AFTER, ban_after=BAN_AFTER)
        self.scrappey = LocalScrappey(api_key=DEMO_KEY)
        # The http engine cannot run the challenge's script; a browser can.
        self.browser = LocalScrappey(api_key=DEMO_KEY, engine="auto")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="demo-servers", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._run(self.site.start())
        self._run(self.scrappey.start())
        self._run(self.browser.start(), timeout=60)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self.browser.stop())
            self._run(self.scrappey.stop())
            self._run(self.site.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()

    def reset_site(self, faults: Faults) -> None:
        """Let the next spider meet the demo site as the first one did, and *faults*."""

        async def reset() -> None:
            self.site.reset()
            self.scrappey.faults = faults

        self._run(reset())

    def stats(self, server: LocalScrappey | None = None) -> dict[str, Any]:
        """A local server's ``/__local__/stats`` document (default: the http one)."""
        url = f"{(server or self.scrappey).base_url}/__local__/stats"
        with urllib.request.urlopen(url, timeout=10) as reply:
            stats: dict[str, Any] = json.load(reply)
        return stats

    def _run(self, coro: Coroutine[Any, Any, None], timeout: float = 15) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)


@dataclass
class Run:
    """One ``scrapy crawl``."""

    spider: str
    returncode: int | None = None
    finish_reason: str | None = None
    items: int = 0
    errors: list[str] = field(default_factory=list)
    created: int = 0
    destroyed: int = 0
    #: Sessions made ready by an init, and sessions retired for their health.
    inits: int = 0
    retired: int = 0
    #: Block pages the plugin's ban detectors recognised, by vendor.
    bans: Counter[str] = field(default_factory=Counter)
    #: What the crawl counted it spent, and what the local server charged it.
    cost: float = 0.0
    charged: float = 0.0
    #: JavaScript challenges the demo site served during the crawl.
    challenges: int = 0
    log: str = ""

    def problems(self) -> list[str]:
        found = []
        if self.returncode != 0:
            found.append(f"exit code {self.returncode}")
        if self.finish_reason != "finished":
            found.append(f"finish reason {self.finish_reason!r}")
        if self.items == 0:
            found.append("no items")
        if self.errors:
            found.append(f"{len(self.errors)} error(s) logged")
        if round(self.cost, 6) != round(self.charged, 6):
            found.append(f"cost {self.cost:g}, but the server charged {self.charged:g}")
        return found


def run_spider(
    servers: Servers,
    spider: str,
    faults: Faults,
    *,
    verbose: bool,
    server: LocalScrappey | None = None,
) -> Run:
    """``scrapy crawl SPIDER -a site=...`` in example_project/, with the demo key."""
    run = Run(spider)
    server = server or servers.scrappey
    output = OUTPUT_DIR / f"{spider}.jsonl"
    output.unlink(missing_ok=True)
    env = {
        **os.environ,
        "SCRAPPEY_API_KEY": DEMO_KEY,
        "SCRAPPEY_API_URL": server.url,
    }
    for name in ("SCRAPY_SETTINGS_MODULE", "SCRAPY_PROJECT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider]
    cmd += ["-a", f"site={servers.site.url}", "-s", "LOG_LEVEL=INFO"]
    servers.reset_site(faults)
    before = servers.stats(server)
    process = subprocess.Popen(
        cmd,
        cwd=PROJECT_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    try:
        run.log, _ = process.communicate(timeout=SPIDER_TIMEOUT)
        run.returncode = process.returncode
    except subprocess.TimeoutExpired:
        run.errors.append(f"timed out after {SPIDER_TIMEOUT:.0f} s")
    finally:
        stop_process(process)
    if verbose:
        print(run.log, file=sys.stderr)
    after = servers.stats(server)
    run.created = after["sessions"]["created"] - before["sessions"]["created"]
    run.destroyed = after["sessions"]["destroyed"] - before["sessions"]["destroyed"]
    run.charged = after["charged"]["total"] - before["charged"]["total"]
    run.cost = sum(float(n) for n in _COST_RE.findall(run.log))
    run.inits = sum(int(n) for n in _INITS_RE.findall(run.log))
    run.retired = sum(int(n) for n in _RETIRED_RE.findall(run.log))
    for vendor, count in _BANS_RE.findall(run.log):
        run.bans[vendor] += int(count)
    closed = _CLOSED_RE.findall(run.log)
    run.finish_reason = closed[-1] if closed else None
    run.errors += _ERROR_RE.findall(run.log)
    if output.exists():
        with output.open(encoding="utf-8") as lines:
            run.items = sum(1 for line in lines if line.strip())
    return run


def _bans_line(runs: list[Run], served: int) -> str:
    """Bans by vendor over all the crawls, and the block pages the server served."""
    bans: Counter[str] = Counter()
    for run in runs:
        bans.update(run.bans)
    by_vendor = ", ".join(f"{vendor} {n}" for vendor, n in sorted(bans.items()))
    return (
        f"  Bans detected: {by_vendor or 'none'} "
        f"(block pages served by the local server: {served})."
    )


def run_challenge(servers: Servers, *, verbose: bool) -> Run | None:
    """The ``challenge`` spider on the browser engine; ``None`` without one."""
    if servers.browser.engine.name != "browser":
        why = missing_browser() or "Chromium did not launch"
        print(
            f"  {'challenge':<9} skipped: no browser engine ({why}); {BROWSER_HINT}",
            flush=True,
        )
        return None
    served = servers.site.challenges_served
    run = run_spider(
        servers, "challenge", Faults(), verbose=verbose, server=servers.browser
    )
    print(_row(run, CHALLENGE_SHOWS), flush=True)
    run.challenges = servers.site.challenges_served - served
    return run


def _row(run: Run, shows: str) -> str:
    return (
        f"  {run.spider:<9} {run.items:>5}  {run.finish_reason or '-':<9} "
        f"{f'{run.created}/{run.destroyed}':<27} {run.inits:>5} "
        f"{run.retired:>7} {run.bans.total():>4} {run.cost:>5g}  {shows}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m example_project.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the crawls' logs"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    servers = Servers()
    runs: list[Run] = []
    try:
        servers.start()
        print("scrapy-scrappey demo")
        print(
            f"  demo site:      {servers.site.url} "
            f"(also {servers.site.url_for('localhost')})"
        )
        print(f"  local Scrappey: {servers.scrappey.url}")
        engine = servers.browser.engine.name
        print(f"  local Scrappey: {servers.browser.url} ({engine} engine)")
        print(
            f"\n  {'spider':<9} {'items':>5}  {'finish':<9} "
            f"{'sessions created/destroyed':<27} {'inits':>5} {'retired':>7} "
            f"{'bans':>4} {'cost':>5}  what it shows"
        )
        for spider, shows, faults in SPIDERS:
            run = run_spider(servers, spider, faults, verbose=args.verbose)
            runs.append(run)
            print(_row(run, shows), flush=True)
        challenge = run_challenge(servers, verbose=args.verbose)
        server_stats = servers.stats()
        final = server_stats["sessions"]
        browser_open = servers.stats(servers.browser)["sessions"]["open"]
    except KeyboardInterrupt:
        print("\nDemo interrupted.", file=sys.stderr)
        return 130
    finally:
        servers.stop()

    if challenge is not None:
        runs.append(challenge)
    failures = [f"{r.spider}: {', '.join(r.problems())}" for r in runs if r.problems()]
    if final["open"] or browser_open:
        failures.append(
            f"{final['open'] + browser_open} session(s) still open on the servers"
        )
    print(
        f"\n  Local Scrappey: {final['created']} sessions created, "
        f"{final['destroyed']} destroyed, {final['open']} still open after the crawls."
    )
    print(_bans_line(runs, server_stats["bans"]["block_pages"]))
    if challenge is not None:
        print(
            f"  JS challenge: {challenge.challenges} served for {challenge.items} "
            f"pages ({challenge.created} session(s), browser engine)."
        )
    print(
        f"  Items: {OUTPUT_DIR.relative_to(PROJECT_DIR.parent)}/"
        f"{{{','.join(spider for spider, _, _ in SPIDERS)}}}.jsonl"
    )
    for run in runs:
        if run.problems() and not args.verbose:
            print(f"\n--- log of {run.spider} (last 40 lines) ---", file=sys.stderr)
            print("\n".join(run.log.splitlines()[-40:]), file=sys.stderr)
    return verdict(failures, started)


def verdict(failures: list[str], started: float, where: str = "") -> int:
    """Print whether a demo passed (and where its output is); its exit code."""
    elapsed = time.monotonic() - started
    if failures:
        print(f"\nDemo FAILED in {elapsed:.1f} s{where}:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"\nDemo OK in {elapsed:.1f} s{where}.")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
