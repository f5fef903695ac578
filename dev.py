#!/usr/bin/env python3
"""The project's commands, runnable with nothing but Python 3.10+.

    python3 dev.py test    # lint, format check, type check and the whole test suite
    python3 dev.py demo    # run the example project's demo crawl (see README)
    python3 dev.py bench   # run the benchmarks (add --quick for a smoke run)
    python3 dev.py ci      # what .ci/run runs: test, demo, quick benchmarks

Each command creates ``.venv`` and installs the project into it when needed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SCRAPPEY_DEV_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _ensure_venv() -> None:
    if not PY.exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".scrapy-scrappey-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("dev.py: installing the project and its dev tools", flush=True)
    _run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    _run([str(PY), "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]"])
    stamp.write_text(digest)


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    # The commands are this file's own tool invocations, never user input.
    result = subprocess.run(cmd, cwd=ROOT, check=False)  # noqa: S603
    if result.returncode:
        sys.exit(result.returncode)


def test(args: list[str]) -> None:
    _ensure_venv()
    _run([str(BIN / "ruff"), "check", "."])
    _run([str(BIN / "ruff"), "format", "--check", "."])
    _run([str(BIN / "mypy")])
    _run([str(PY), "-m", "pytest", *args])


def demo(args: list[str]) -> None:
    _ensure_venv()
    _run([str(PY), "-m", "example_project.demo", *args])


def bench(args: list[str]) -> None:
    _ensure_venv()
    _run([str(PY), "-m", "bench", *args])


def ci(args: list[str]) -> None:
    test(args)
    demo([])
    bench(["--quick"])


COMMANDS = {"test": test, "demo": demo, "bench": bench, "ci": ci}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
