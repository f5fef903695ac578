"""Helpers for reliability tests that run the server and the crawl as processes.

The local server runs as ``python -m scrapy_scrappey.local`` and is read
through ``GET /__local__/stats`` (server-side truth); the crawl runs as
``tests/reliability_spider.py`` under ``CrawlerProcess``, so Scrapy installs
its own signal handlers and a ``kill -9`` kills a real crawl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Self

ROOT = Path(__file__).resolve().parent.parent
SPIDER = Path(__file__).resolve().parent / "reliability_spider.py"
STATIC_BODY = "<html><body><p id='n'>static</p></body></html>"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    env.pop("SCRAPPEY_API_KEY", None)
    return env


class ServerProcess:
    """``python -m scrapy_scrappey.local`` in a subprocess; use as a context manager."""

    def __init__(self, log_path: Path, *flags: str) -> None:
        self.log_path = log_path
        self.flags = flags
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scrapy_scrappey.local", "--port", "0", *self.flags],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=child_env(),
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.__exit__()
            raise RuntimeError(
                f"local server did not start: {self.log_path.read_text()}"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    @property
    def base(self) -> str:
        return self.url.rsplit("/api/", 1)[0]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/__local__/stats", timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def set_faults(self, **fields: Any) -> None:
        request = urllib.request.Request(
            self.base + "/__local__/faults",
            data=json.dumps(fields).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()


def spider_cmd(
    api_url: str, ledger_dir: Path, out: Path, *, key: str, **options: Any
) -> list[str]:
    cmd = [
        sys.executable,
        str(SPIDER),
        "--api-url",
        api_url,
        "--ledger-dir",
        str(ledger_dir),
        "--key",
        key,
        "--out",
        str(out),
    ]
    for name, value in options.items():
        cmd += ["--" + name.replace("_", "-"), str(value)]
    return cmd


def start_spider(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
        )


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05
) -> Any:
    """Poll *predicate* until truthy (returned) or raise after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def ledger_ids(ledger_dir: Path) -> set[str]:
    """Session ids listed in the run files of *ledger_dir* (read as plain JSON)."""
    ids: set[str] = set()
    for path in ledger_dir.rglob("*.json"):
        doc = json.loads(path.read_text())
        ids.update(doc.get("sessions", {}))
    return ids
