"""Helpers shared by the benchmark modules (run inside a benchmark subprocess)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = str(Path(__file__).resolve().parent.parent)
RESULT_MARK = "BENCH-ROWS "
KEY = "bench-key"


@dataclass
class Row:
    bench: str
    metric: str
    value: float | str
    unit: str = ""
    baseline: float | str | None = None
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None  # versus the target: information only
    check: bool = True  # a correctness check; False makes the run fail

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def emit(rows: list[Row]) -> None:
    """Hand the rows to ``bench.__main__`` (last line of stdout)."""
    print(RESULT_MARK + json.dumps([r.to_dict() for r in rows]), flush=True)


class Servers:
    """A ``bench.servers`` subprocess: ``api`` and ``site`` URLs, stats, faults."""

    def __init__(self, **opts: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", json.dumps(opts)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench.servers did not start")
        info = json.loads(line)
        self.api: str = info["api"]
        self.site: str = info["site"]
        self.base = self.api.rsplit("/api/", 1)[0]
        self.ps = psutil.Process(self.proc.pid)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/__local__/stats", timeout=30) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.base + "/__local__/reset", method="POST")
        urllib.request.urlopen(req, timeout=30).close()

    def set_faults(self, **faults: Any) -> None:
        req = urllib.request.Request(
            self.base + "/__local__/faults",
            data=json.dumps(faults).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=30).close()

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def servers(**opts: Any):  # type: ignore[no-untyped-def]
    s = Servers(**opts)
    try:
        yield s
    finally:
        s.close()


def run(coro_fn: Any) -> Any:
    """Run ``coro_fn()`` on Scrapy's asyncio reactor and return its result."""
    from scrapy.utils.reactor import install_reactor

    install_reactor("twisted.internet.asyncioreactor.AsyncioSelectorReactor")
    from scrapy.utils.defer import deferred_from_coro
    from twisted.internet import reactor
    from twisted.python.failure import Failure

    box: dict[str, Any] = {}

    def done(result: Any) -> None:
        box["result"] = result
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(  # type: ignore[attr-defined]
        lambda: deferred_from_coro(coro_fn()).addBoth(done)
    )
    reactor.run()  # type: ignore[attr-defined]
    result = box.get("result")
    if isinstance(result, Failure):
        result.raiseException()
    return result


def settings(api_url: str | None, **extra: Any) -> dict[str, Any]:
    """Crawl settings; ``api_url=None``: without the plugin."""
    base: dict[str, Any] = {
        "LOG_LEVEL": "WARNING",
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "COOKIES_ENABLED": False,
        "CONCURRENT_REQUESTS": 32,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
        "DOWNLOAD_TIMEOUT": 30,
        "RETRY_ENABLED": False,
        "LOGSTATS_INTERVAL": 0,
        "MEMUSAGE_ENABLED": False,
    }
    if api_url is not None:
        base.update(
            DOWNLOADER_MIDDLEWARES={"scrapy_scrappey.ScrappeyMiddleware": 950},
            SCRAPPEY_API_KEY=KEY,
            SCRAPPEY_API_URL=api_url,
            SCRAPPEY_LEDGER_ENABLED=False,
            SCRAPPEY_SESSION_CREATE_BACKOFF=0.05,
        )
    base.update(extra)
    return base


async def crawl(spider_cls: Any, settings_: dict[str, Any], **kwargs: Any) -> Any:
    from scrapy.crawler import Crawler

    crawler = Crawler(spider_cls, settings_)
    await crawler.crawl_async(**kwargs)
    return crawler


def cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def quick_flag() -> bool:
    return "--quick" in sys.argv


class StatsStub:
    """The part of a Scrapy stats collector the SessionManager uses."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def inc_value(self, key: str, count: int = 1, start: int = 0) -> None:
        self.values[key] = self.values.get(key, start) + count

    def get_value(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set_value(self, key: str, value: Any) -> None:
        self.values[key] = value
