"""Run the ``shops`` spider on many scrapy-redis workers, each its own process.

:class:`ScaleRun` is the one runner behind ``python3 dev.py demo-redis``, the
acceptance tests (tests/test_scale_out.py) and the P10 benchmark:

* a real ``redis-server`` on a free port of 127.0.0.1 (the queue, the
  dupefilter and the plugin's shared state, ``REDIS_URL`` and
  ``SCRAPPEY_REDIS_URL`` pointing at it), optionally with an append-only file
  so that :meth:`ScaleRun.restart_redis` keeps the queue;
* the shops site (example_project/shop_site.py) on an event loop in a thread;
* the local Scrappey server as a process, mapping ``*.test`` to 127.0.0.1;
* the seed in ``shops:start_urls``, then ``workers`` ``scrapy crawl shops``
  processes in example_project/, each writing its items and stats as it goes
  (``scrappey_example/worker_output.py``).

:meth:`ScaleRun.finish` waits for the workers and returns a :class:`ScaleResult`:
per worker its pages, sessions, finish reason and stats; the site's fetch
counts; the local server's stats; the Redis commands the run took.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .processes import (
    RedisServer,
    ServerProcess,
    child_env,
    find_redis_server,
    stop_process,
)
from .shop_site import ShopSite

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from typing_extensions import Self

PROJECT_DIR = Path(__file__).resolve().parent
#: Accepted by the local server only; it is not a Scrappey key.
KEY = "local-scale-key-not-a-real-scrappey-key"
_ERROR_RE = re.compile(r"^\S+ \S+ \[[^\]]+\] (?:ERROR|CRITICAL): .*$", re.MULTILINE)


@dataclass
class ScaleConfig:
    """What to run. ``settings`` are more ``-s NAME=VALUE`` for every worker."""

    workers: int = 3
    pages: int = 300
    domains: int = 10
    #: SCRAPPEY_MAX_SESSIONS (the account cap, shared through Redis).
    max_sessions: int = 12
    #: The local server's own cap (CODE-0029 past it); default: max_sessions.
    server_max_sessions: int | None = None
    #: Seconds the local server waits before answering each request.*.
    api_latency: float = 0.0
    concurrent_requests: int = 4
    #: SCRAPPEY_REDIS_HEARTBEAT, seconds.
    heartbeat: float = 1.0
    settings: dict[str, str] = field(default_factory=dict)
    server_flags: tuple[str, ...] = ()
    #: Redis keeps its data in an append-only file (restart_redis keeps the queue).
    aof: bool = False

    def worker_settings(self, redis_url: str) -> dict[str, str]:
        return {
            "REDIS_URL": redis_url,
            "SCRAPPEY_REDIS_URL": redis_url,
            "SCRAPPEY_REDIS_HEARTBEAT": str(self.heartbeat),
            "SCRAPPEY_MAX_SESSIONS": str(self.max_sessions),
            "CONCURRENT_REQUESTS": str(self.concurrent_requests),
            "LOG_LEVEL": "INFO",
            **self.settings,
        }

    def server_args(self) -> tuple[str, ...]:
        cap = self.server_max_sessions or self.max_sessions
        args: tuple[str, ...] = ("--api-key", KEY, "--max-sessions", str(cap))
        args += ("--resolve", "*.test=127.0.0.1", "--engine", "http")
        if self.api_latency:
            for cmd in ("request.get", "request.post"):
                args += ("--latency", f"{cmd}={self.api_latency}")
        return args + self.server_flags


@dataclass
class Worker:
    """One ``scrapy crawl shops`` process and its files."""

    name: str
    proc: subprocess.Popen[bytes]
    items_path: Path
    stats_path: Path
    log_path: Path
    killed_at: float | None = None
    #: Still running at the runner's timeout (then stopped by it).
    timed_out: bool = False

    def items(self) -> list[dict[str, Any]]:
        if not self.items_path.exists():
            return []
        lines = self.items_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@dataclass
class WorkerResult:
    name: str
    returncode: int | None
    finish_reason: str | None
    pages: list[int]
    sessions: set[str]
    stats: dict[str, Any]
    errors: list[str]
    log_path: Path
    killed_at: float | None
    timed_out: bool


@dataclass
class ScaleResult:
    workers: list[WorkerResult]
    #: The site's fetch count of every page.
    fetched: Counter[int]
    #: The local server's /__local__/stats at the end.
    server: dict[str, Any]
    #: Redis commands processed during the run (INFO stats).
    redis_commands: int
    #: Seconds from the first worker's start to the last one's end.
    elapsed: float

    def crawled(self) -> Counter[int]:
        """How many items each page got, over all the workers."""
        return Counter(page for w in self.workers for page in w.pages)

    def problems(self, *, expect_reason: str = "finished") -> list[str]:
        """What went wrong for a plain run (every page once, clean ends)."""
        found = [
            f"{w.name}: exit code {w.returncode}, finish reason {w.finish_reason!r}"
            for w in self.workers
            if w.killed_at is None
            and (w.returncode != 0 or w.finish_reason != expect_reason)
        ]
        found += [
            f"{w.name}: still running at the timeout"
            for w in self.workers
            if w.timed_out
        ]
        found += [f"{w.name}: {e}" for w in self.workers for e in w.errors[:3]]
        if self.server["sessions"]["open"]:
            found.append(f"{self.server['sessions']['open']} session(s) still open")
        return found


class ScaleRun:
    """Redis, the shops site, the local server and the workers; a context manager."""

    def __init__(self, config: ScaleConfig, folder: Path) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install redis-server)"
            )
        self.config = config
        self.folder = folder
        self.redis = RedisServer(binary, folder, aof=config.aof)
        self.site = ShopSite(config.pages, config.domains)
        self.workers: list[Worker] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: ServerProcess | None = None

    def __enter__(self) -> Self:
        self.redis.start()
        self._thread.start()
        self._call(self.site.start())
        server = ServerProcess(self.folder / "server.log", *self.config.server_args())
        self._server = server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for worker in self.workers:
                stop_process(worker.proc)
            if self._server is not None:
                self._server.__exit__()
            self._call(self.site.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()
            self.redis.stop()

    @property
    def server(self) -> ServerProcess:
        assert self._server is not None
        return self._server

    def seed(self) -> None:
        """Push page 0 (the seed) to ``shops:start_urls``."""
        self.redis.command(
            "LPUSH", "shops:start_urls", json.dumps({"url": self.site.url(0)})
        )

    def start_workers(self, count: int | None = None) -> list[Worker]:
        """Start *count* (default: the config's) more workers."""
        started = []
        for _ in range(self.config.workers if count is None else count):
            started.append(self._start_worker(f"w{len(self.workers) + 1}"))
            self.workers.append(started[-1])
        self._started_commands = self.redis_commands()
        self._started_at = time.monotonic()
        return started

    def kill(self, worker: Worker) -> float:
        """``kill -9`` *worker*; the time (``time.time()``) it was killed."""
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)
        worker.killed_at = time.time()
        return worker.killed_at

    def restart_redis(self, down_for: float) -> None:
        """Shut Redis down (SIGTERM: it writes its data), wait, start it again."""
        self.redis.stop(graceful=True)
        time.sleep(down_for)
        self.redis.start()

    def redis_commands(self) -> int:
        """``total_commands_processed`` (since this redis-server started)."""
        info = self.redis.command("INFO", "stats")
        found = re.search(r"total_commands_processed:(\d+)", info)
        return int(found.group(1)) if found else 0

    def finish(self, timeout: float) -> ScaleResult:
        """Wait for every worker (killed past *timeout* seconds), then collect."""
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.timed_out = not _wait(worker.proc, deadline)
        elapsed = time.monotonic() - self._started_at
        return ScaleResult(
            workers=[_result(w) for w in self.workers],
            fetched=Counter(self.site.fetched),
            server=self.server.stats(),
            redis_commands=self.redis_commands() - self._started_commands,
            elapsed=elapsed,
        )

    def _start_worker(self, name: str) -> Worker:
        out = self.folder / name
        worker_settings = self.config.worker_settings(self.redis.url)
        worker_settings["WORKER_ITEMS_FILE"] = f"{out}.items.jsonl"
        worker_settings["WORKER_STATS_FILE"] = f"{out}.stats.json"
        cmd = [sys.executable, "-m", "scrapy", "crawl", "shops"]
        cmd += ["-a", f"worker={name}", "-a", f"domains={self.config.domains}"]
        for setting, value in worker_settings.items():
            cmd += ["-s", f"{setting}={value}"]
        env = child_env()
        env.update(SCRAPPEY_API_KEY=KEY, SCRAPPEY_API_URL=self.server.url)
        for variable in ("SCRAPY_SETTINGS_MODULE", "SCRAPY_PROJECT"):
            env.pop(variable, None)
        log_path = Path(f"{out}.log")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return Worker(
            name, proc, Path(f"{out}.items.jsonl"), Path(f"{out}.stats.json"), log_path
        )

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=15)


def _result(worker: Worker) -> WorkerResult:
    stats: dict[str, Any] = {}
    if worker.stats_path.exists():
        stats = json.loads(worker.stats_path.read_text(encoding="utf-8"))
    items = worker.items()
    log = worker.log_path.read_text(encoding="utf-8", errors="replace")
    return WorkerResult(
        name=worker.name,
        returncode=worker.proc.returncode,
        finish_reason=stats.get("finish_reason"),
        pages=[int(item["page"]) for item in items],
        sessions={str(item["session"]) for item in items if item.get("session")},
        stats=stats,
        errors=_ERROR_RE.findall(log),
        log_path=worker.log_path,
        killed_at=worker.killed_at,
        timed_out=worker.timed_out,
    )


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether *proc* ended by *deadline* (else it is stopped)."""
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        stop_process(proc)
        return False
    return True
