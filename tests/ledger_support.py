"""A crawl that records sessions in a ledger and dies without cleaning up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from scrapy_scrappey.ledger import SessionLedger

_CHILD = """
import os, sys, time
from scrapy_scrappey.ledger import SessionLedger
ledger = SessionLedger(sys.argv[1], api_url=sys.argv[2], api_key=os.environ["LEDGER_KEY"])
ledger.open()
for session_id in sys.argv[3:]:
    ledger.record(session_id)
print("ready", flush=True)
time.sleep(120)
"""


def run_and_kill(directory: Path, api_url: str, ids: list[str], *, key: str) -> None:
    """Record *ids* in the ledger from a child process, then SIGKILL it."""
    env = {**os.environ, "LEDGER_KEY": key}
    cmd = [sys.executable, "-c", _CHILD, str(directory), api_url, *ids]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def recorded_ids(ledger: SessionLedger) -> list[str]:
    """The session ids in *ledger*'s own run file, as written on disk."""
    if ledger.path is None:
        return []
    return list(json.loads(ledger.path.read_text(encoding="utf-8"))["sessions"])
