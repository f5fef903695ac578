"""Helpers for reliability tests that run the server and the crawl as processes.

The local server runs as ``python -m scrapy_scrappey.local`` and is read
through ``GET /__local__/stats`` (server-side truth); the crawl runs as
``tests/reliability_spider.py`` under ``CrawlerProcess``, so Scrapy installs
its own signal handlers and a ``kill -9`` kills a real crawl.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from example_project.processes import ROOT, ServerProcess, child_env

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ROOT", "ServerProcess", "child_env"]

SPIDER = Path(__file__).resolve().parent / "reliability_spider.py"
STATIC_BODY = "<html><body><p id='n'>static</p></body></html>"


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
