"""The servers of a scale-out run, each a process stopped by its PID.

* :class:`RedisServer`: a real ``redis-server`` (Debian's) on a free port of
  127.0.0.1; optionally with an append-only file, so that a restart on the
  same port keeps the queue.
* :class:`ServerProcess`: the local Scrappey server,
  ``python -m scrapy_scrappey.local``, read through ``/__local__/stats``.

The tests (``tests/redis_support.py``, ``tests/reliability_support.py``), the
``demo-redis`` command and the P10 benchmark all start them from here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

ROOT = Path(__file__).resolve().parent.parent
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


def child_env() -> dict[str, str]:
    """The environment of a child process: this checkout first, no proxy, no key."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    env.pop("SCRAPPEY_API_KEY", None)
    return env


def stop_process(proc: subprocess.Popen[Any], grace: float = 10) -> None:
    """SIGTERM *proc*, then SIGKILL it if it is still there after *grace* seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, stopped by PID.

    Without *aof* nothing is persisted (a restart loses every key); with it,
    every write goes to an append-only file in *folder* (``fsync always``),
    so a restart on the same port finds the data again.
    """

    def __init__(self, binary: str, folder: Path, *, aof: bool = False) -> None:
        self.binary = binary
        self.folder = folder
        self.aof = aof
        self.port = free_tcp_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start it (again, on the same port)."""
        persistence = ["--appendonly", "no"]
        if self.aof:
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        where = ["--bind", "127.0.0.1", "--port", str(self.port)]
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                *where,
                "--save",
                "",
                *persistence,
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

    def stop(self, *, graceful: bool = False) -> None:
        """Kill it (SIGKILL), or with *graceful* let it shut down (SIGTERM)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def command(self, *words: str) -> str:
        """One command's reply as text (``redis-cli``'s own parsing is not needed)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            parts = [f"*{len(words)}\r\n"]
            parts += [f"${len(w.encode())}\r\n{w}\r\n" for w in words]
            s.sendall("".join(parts).encode())
            with s.makefile("rb") as stream:
                return _read_reply(stream)

    def _answers(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False


def _read_reply(stream: IO[bytes]) -> str:
    line = stream.readline().decode().rstrip("\r\n")
    kind, rest = line[:1], line[1:]
    if kind == "$":
        size = int(rest)
        return "" if size < 0 else stream.read(size + 2)[:-2].decode()
    if kind == "-":
        raise OSError(f"redis error: {rest}")
    return rest  # +simple string or :integer


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
        stop_process(self.proc)
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
