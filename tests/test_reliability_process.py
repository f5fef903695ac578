"""Real ``scrapy`` processes: one SIGINT, two SIGINTs, and ``kill -9``.

The server and the crawl both run as subprocesses; every assertion about
sessions reads the server's ``/__local__/stats`` (server-side truth).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.reliability_support import (
    ROOT,
    STATIC_BODY,
    ServerProcess,
    child_env,
    ledger_ids,
    spider_cmd,
    start_spider,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

KEY = "PROCKEY-3b9d1e7a55c2"
POOL = 3


def _in_flight(server: ServerProcess) -> bool:
    stats = server.stats()
    return stats["requests"]["by_command"].get("request.get", 0) > 0


def _run(server: ServerProcess, tmp_path: Path, name: str, **options: object):  # type: ignore[no-untyped-def]
    out = tmp_path / f"{name}.json"
    cmd = spider_cmd(
        server.url, tmp_path / "ledger", out, key=KEY, pool=POOL, **options
    )
    return start_spider(cmd, tmp_path / f"{name}.log"), out


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_one_sigint_closes_gracefully_and_destroys_every_session(
    tmp_path, make_server_process
):
    flags = ("--static-body", STATIC_BODY, "--latency", "request.get=1")
    server = make_server_process(*flags)
    proc, out = _run(server, tmp_path, "crawl", count=200, concurrency=30)
    wait_for(lambda: _in_flight(server), timeout=30)
    assert server.stats()["sessions"]["open"] == POOL
    os.kill(proc.pid, signal.SIGINT)
    code = _wait_exit(proc, timeout=20)
    stats = server.stats()
    log = (tmp_path / "crawl.log").read_text()
    assert code == 0, log
    summary = json.loads(out.read_text())
    assert summary["reason"] == "shutdown"
    assert summary["responses"] < 200
    # In-flight API calls were cancelled, not awaited: the server answered
    # calls that the crawl never turned into responses.
    assert stats["requests"]["by_command"]["request.get"] > summary["responses"]
    assert summary["duplicates"] == 0
    assert stats["sessions"]["open"] == 0
    assert stats["sessions"]["created"] == stats["sessions"]["destroyed"] == POOL
    assert ledger_ids(tmp_path / "ledger") == set()


def test_two_sigints_force_exit_and_the_next_crawl_destroys_the_leftovers(
    tmp_path,
    make_server_process,
):
    # A slow sessions.destroy keeps the graceful close busy when the second
    # SIGINT arrives, so the forced stop really leaves sessions open.
    flags = (
        "--static-body",
        STATIC_BODY,
        "--latency",
        "request.get=1",
        "--latency",
        "sessions.destroy=5",
    )
    server = make_server_process(*flags)
    proc, _ = _run(server, tmp_path, "first", count=200, concurrency=30)
    wait_for(lambda: _in_flight(server), timeout=30)
    left = set(server.stats()["open_sessions"])
    assert len(left) == POOL
    os.kill(proc.pid, signal.SIGINT)
    wait_for(
        lambda: server.stats()["requests"]["by_command"].get("sessions.destroy"),
        timeout=10,
    )
    os.kill(proc.pid, signal.SIGINT)
    _wait_exit(proc, timeout=20)
    stats = server.stats()
    assert stats["sessions"]["destroyed"] == 0  # forced: not waiting for destroys
    assert set(stats["open_sessions"]) == left
    # The crash-safety ledger still lists what the forced exit left open.
    assert ledger_ids(tmp_path / "ledger") == left

    server.set_faults()  # no more slow destroys
    proc, out = _run(server, tmp_path, "second", count=5)
    assert _wait_exit(proc, timeout=60) == 0
    stats = server.stats()
    summary = json.loads(out.read_text())
    assert summary["reason"] == "finished"
    assert summary["unique"] == 5
    assert summary["stats"]["scrappey/sessions/orphans_destroyed"] == POOL
    assert stats["sessions"]["open"] == 0
    assert ledger_ids(tmp_path / "ledger") == set()


def _kill_9_mid_crawl(server: ServerProcess, tmp_path: Path) -> set[str]:
    proc, _ = _run(server, tmp_path, "killed", count=500, concurrency=30)
    wait_for(lambda: _in_flight(server), timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    left = set(server.stats()["open_sessions"])
    assert len(left) == POOL
    assert ledger_ids(tmp_path / "ledger") == left
    return left


def test_after_kill_9_the_next_crawl_destroys_the_orphans_before_creating(
    tmp_path,
    make_server_process,
):
    flags = ("--static-body", STATIC_BODY, "--latency", "request.get=0.2")
    server = make_server_process(*flags)
    left = _kill_9_mid_crawl(server, tmp_path)
    before = len(server.stats()["commands"])
    proc, out = _run(server, tmp_path, "next", count=5)
    assert _wait_exit(proc, timeout=60) == 0
    stats = server.stats()
    summary = json.loads(out.read_text())
    assert summary["unique"] == 5
    assert summary["stats"]["scrappey/sessions/orphans_destroyed"] == POOL
    assert stats["sessions"]["open"] == 0
    commands = stats["commands"][before:]
    orphan_destroys = [
        i
        for i, c in enumerate(commands)
        if c["cmd"] == "sessions.destroy" and c["session"] in left
    ]
    creates = [i for i, c in enumerate(commands) if c["cmd"] == "sessions.create"]
    assert len(orphan_destroys) == POOL
    assert len(creates) == POOL
    assert max(orphan_destroys) < min(creates)
    assert ledger_ids(tmp_path / "ledger") == set()


def test_after_kill_9_the_cleanup_command_destroys_the_orphans(
    tmp_path, make_server_process
):
    pytest.importorskip("scrapy_scrappey.cli")
    flags = ("--static-body", STATIC_BODY, "--latency", "request.get=0.2")
    server = make_server_process(*flags)
    left = _kill_9_mid_crawl(server, tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scrapy_scrappey",
            "sessions",
            "cleanup",
            "--api-url",
            server.url,
            "--key",
            KEY,
            "--ledger-dir",
            str(tmp_path / "ledger"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        cwd=ROOT,
    )
    stats = server.stats()
    assert result.returncode == 0, result.stdout + result.stderr
    assert KEY not in result.stdout + result.stderr
    assert stats["sessions"]["open"] == 0
    destroyed = {
        c["session"] for c in stats["commands"] if c["cmd"] == "sessions.destroy"
    }
    assert destroyed == left
    assert ledger_ids(tmp_path / "ledger") == set()
