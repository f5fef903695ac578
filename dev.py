#!/usr/bin/env python3
"""The project's commands, runnable with nothing but Python 3.10+.

    python3 dev.py test      # lint, format check, type check and the whole test suite
    python3 dev.py test-min  # the test suite on the oldest supported Scrapy (2.14)
    python3 dev.py demo      # run the example project's demo crawl (see README)
    python3 dev.py bench     # run the benchmarks (add --quick for a smoke run)
    python3 dev.py ci        # what .ci/run runs: test, test-min, demo, quick benchmarks
                             # (installs Chromium with apt-get first when root and missing)

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
        _run(
            [python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev,browser]", *pins]
        )
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


def bench(args: list[str]) -> None:
    _run([_ensure_venv(VENV), "-m", "bench", *args])


def _ensure_chromium() -> None:
    """Install Debian's Chromium for the browser-engine tests when it is missing.

    Needs root and apt-get; without them the browser tests skip, saying why.
    """
    if os.environ.get("SCRAPPEY_LOCAL_CHROMIUM") or shutil.which("chromium"):
        return
    if not shutil.which("apt-get") or getattr(os, "geteuid", lambda: 1)() != 0:
        print("dev.py: no chromium and no root apt-get: browser tests will skip")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium"],
    ):
        print("+ " + " ".join(cmd), flush=True)
        # Fixed commands; a failure only makes the browser tests skip.
        if subprocess.run(cmd, env=env, check=False).returncode:  # noqa: S603
            print("dev.py: installing chromium failed: browser tests will skip")
            return


def ci(args: list[str]) -> None:
    _ensure_chromium()
    test(args)
    test_min([])
    demo([])
    bench(["--quick"])


COMMANDS = {"test": test, "test-min": test_min, "demo": demo, "bench": bench, "ci": ci}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
