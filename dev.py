#!/usr/bin/env python3
"""The project's commands, runnable with nothing but Python 3.10+.

    python3 dev.py test      # lint, format check, type check and the whole test suite
    python3 dev.py test-min  # the test suite on the oldest supported Scrapy (2.14)
    python3 dev.py demo      # run the example project's demo crawl (see README)
    python3 dev.py demo-redis  # 3 scrapy-redis workers sharing a real redis-server
    python3 dev.py bench     # run the benchmarks (add --quick for a smoke run)
    python3 dev.py ci        # what .ci/run runs: test, test-min, demo, demo-redis,
                             # quick benchmarks
                             # (installs Chromium and redis-server with apt-get first
                             # when root and missing)

Each command creates its virtual environment and installs the project into it
when needed (``.venv``, and ``.venv-min`` for test-min).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SCRAPPEY_DEV_VENV", ROOT / ".venv"))
VENV_MIN = Path(os.environ.get("SCRAPPEY_DEV_VENV_MIN", ROOT / ".venv-min"))
#: The oldest Scrapy the package claims to support (pyproject: scrapy>=2.14).
MIN_SCRAPY = "scrapy==2.14.0"
#: The extras the test environments get (pyproject.toml).
EXTRAS = "dev,browser,redis"


def _bin(env: Path, name: str) -> str:
    folder = env / ("Scripts" if os.name == "nt" else "bin")
    return str(folder / (name + (".exe" if os.name == "nt" else "")))


def _ensure_venv(env: Path, *pins: str) -> str:
    python = _bin(env, "python")
    if not Path(python).exists():
        print(f"dev.py: creating {env}", flush=True)
        venv.EnvBuilder(with_pip=True).create(env)
    stamp = env / ".scrapy-scrappey-installed"
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + repr(pins).encode()
    ).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        print(f"dev.py: installing the project into {env}", flush=True)
        _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        _run([python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[{EXTRAS}]", *pins])
        stamp.write_text(digest)
    return python


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    # The commands are this file's own tool invocations, never user input.
    result = subprocess.run(cmd, cwd=ROOT, check=False)  # noqa: S603
    if result.returncode:
        sys.exit(result.returncode)


def test(args: list[str]) -> None:
    python = _ensure_venv(VENV)
    _run([_bin(VENV, "ruff"), "check", "."])
    _run([_bin(VENV, "ruff"), "format", "--check", "."])
    _run([_bin(VENV, "mypy")])
    _run([python, "-m", "pytest", *args])


def test_min(args: list[str]) -> None:
    python = _ensure_venv(VENV_MIN, MIN_SCRAPY)
    _run([python, "-m", "pytest", "-m", "not slow", *args])


def demo(args: list[str]) -> None:
    _run([_ensure_venv(VENV), "-m", "example_project.demo", *args])


def demo_redis(args: list[str]) -> None:
    _run([_ensure_venv(VENV), "-m", "example_project.demo_redis", *args])


def bench(args: list[str]) -> None:
    _run([_ensure_venv(VENV), "-m", "bench", *args])


def _ensure_system_package(program: str, package: str, needed_by: str) -> None:
    """Install Debian's *package* when *program* is missing (the *needed_by* tests).

    Needs root and apt-get; without them those tests skip, saying why.
    """
    if shutil.which(program) or Path("/usr/sbin", program).exists():
        return
    if not shutil.which("apt-get") or getattr(os, "geteuid", lambda: 1)() != 0:
        print(f"dev.py: no {program} and no root apt-get: {needed_by} tests will skip")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", package],
    ):
        print("+ " + " ".join(cmd), flush=True)
        # Fixed commands; a failure only makes those tests skip.
        if subprocess.run(cmd, env=env, check=False).returncode:  # noqa: S603
            print(f"dev.py: installing {package} failed: {needed_by} tests will skip")
            return


def _ensure_chromium() -> None:
    """Debian's Chromium for the browser-engine tests."""
    if not os.environ.get("SCRAPPEY_LOCAL_CHROMIUM"):
        _ensure_system_package("chromium", "chromium", "browser")


def ci(args: list[str]) -> None:
    _ensure_chromium()
    _ensure_system_package("redis-server", "redis-server", "Redis")
    test(args)
    test_min([])
    demo([])
    demo_redis([])
    bench(["--quick"])


COMMANDS = {
    "test": test,
    "test-min": test_min,
    "demo": demo,
    "demo-redis": demo_redis,
    "bench": bench,
    "ci": ci,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
