"""A real ``redis-server`` on 127.0.0.1 for the Redis tests (no fake Redis)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Self

#: Where Debian's package puts it, in case /usr/sbin is not on PATH.
_CANDIDATES = ("/usr/bin/redis-server", "/usr/sbin/redis-server")


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    return found or next((p for p in _CANDIDATES if Path(p).exists()), None)


def free_tcp_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, no persistence, stopped by PID."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_tcp_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start it (again, on the same port: a restart loses every key)."""
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = (self.folder / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server did not start: {text[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for *condition*: a safeguard against a hang, not a timing assertion."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")
