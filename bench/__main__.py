"""Run the benchmarks: ``python -m bench`` (or ``python3 dev.py bench``).

    python -m bench                 # full run (a few minutes)
    python -m bench --quick         # smoke run (< 90 s), what CI runs
    python -m bench --only p2,p5    # some benchmarks
    python -m bench --results bench/RESULTS.md   # also write the Markdown report

Each benchmark runs in its own subprocess (its servers in another one) and
prints rows: benchmark, metric, value, baseline, ratio, target and whether the
target was met. Targets are information only; the exit status is non-zero only
if a benchmark crashed or a correctness check failed (a session used by two
requests at once, sessions left open, pages lost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULT_MARK, ROOT

BENCHMARKS = {
    "p1": ("bench.p1_overhead", "P1 overhead: plugin vs direct crawl, CPU profile"),
    "p2p3": ("bench.p2_p3_sessions", "P2 session setup, P3 teardown"),
    "p4": ("bench.p4_memory", "P4 memory: RSS growth, bytes per session"),
    "p4base": (
        "bench.p4_memory --direct",
        "P4 memory baseline: the crawl without the plugin",
    ),
    "p5": ("bench.p5_fairness", "P5 lease fairness"),
    "p6": ("bench.p6_naive", "P6 vs blocking requests in deferToThread"),
    "p7": ("bench.p7_pools", "P7 many named pools: fairness, per-pool concurrency"),
    "p8": ("bench.p8_detectors", "P8 ban detectors: time per response"),
    "p9": ("bench.p9_browser", "P9 browser engine vs bare Playwright"),
    "p10": ("bench.p10_scale", "P10 scale-out: 1, 2, 3 scrapy-redis workers"),
}
TIMEOUT = {"quick": 120, "full": 600}


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "pass" if value else "MISS"
    return str(value)


def table(rows: list[dict]) -> list[str]:
    head = [
        "benchmark",
        "metric",
        "value",
        "unit",
        "baseline",
        "ratio",
        "target",
        "vs target",
    ]
    body = []
    for r in rows:
        verdict = _fmt(r["ok"])
        if not r["check"]:
            verdict = "CHECK FAILED"
        body.append(
            [
                r["bench"],
                r["metric"],
                _fmt(r["value"]),
                r["unit"],
                _fmt(r["baseline"]),
                _fmt(r["ratio"]),
                r["target"],
                verdict,
            ]
        )
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in body),
    ]


def machine() -> list[str]:
    import aiohttp
    import psutil
    import scrapy

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- CPU: {cpu}, nproc {os.cpu_count()}",
        f"- Memory: {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, Scrapy {scrapy.__version__}, aiohttp {aiohttp.__version__}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, small counts")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--results", type=Path, help="also write a Markdown report there"
    )
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    mode = "quick" if args.quick else "full"
    rows: list[dict] = []
    failures: list[str] = []
    started = time.perf_counter()
    for name in names:
        module, title = BENCHMARKS[name]
        print(f"== {title} ({mode})", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", *module.split()] + (
            ["--quick"] if args.quick else []
        )
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=TIMEOUT[mode],
                check=False,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"{name}: timed out after {TIMEOUT[mode]} s")
            continue
        got = [
            json.loads(line[len(RESULT_MARK) :])
            for line in proc.stdout.splitlines()
            if line.startswith(RESULT_MARK)
        ]
        if proc.returncode or not got:
            failures.append(f"{name}: exit {proc.returncode}")
            sys.stderr.write(proc.stderr[-4000:])
            continue
        rows += got[-1]
        print("\n".join(table(got[-1])), flush=True)
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    total = time.perf_counter() - started
    failed_checks = [f"{r['bench']}: {r['metric']}" for r in rows if not r["check"]]
    print(f"\n== All results ({mode} mode, {total:.0f} s)")
    print("\n".join(table(rows)))
    if args.results:
        text = [
            f"# Benchmark results ({mode} mode)",
            "",
            (
                f"Command: `python -m bench{' --quick' if args.quick else ''}` "
                f"(= `python3 dev.py bench`), total {total:.0f} s, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
            ),
            "",
            "## Machine",
            "",
            *machine(),
            "",
            "## Results",
            "",
            "Targets are information only (noisy 2-core VM).",
            "",
            *table(rows),
            "",
        ]
        args.results.write_text("\n".join(text))
    for line in failures + [f"check failed: {c}" for c in failed_checks]:
        print("FAIL " + line, file=sys.stderr)
    return 1 if failures or failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
