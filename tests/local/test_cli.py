"""``python -m scrapy_scrappey.local``: the subprocess contract and the flags."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.codes import TRANSIENT_CODES
from scrapy_scrappey.local.__main__ import build_parser, faults_from_args, main
from scrapy_scrappey.local.faults import Faults

from ._support import first_line, target_site

if TYPE_CHECKING:
    from pathlib import Path

KEY = "cli-key-0123456789"


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scrapy_scrappey.local", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=15)
    return proc.returncode, stderr


@deferred_f_from_coro_f
async def test_subprocess_serves_and_stops_on_sigterm() -> None:
    async with target_site() as site:
        with _start(
            "--api-key", KEY, "--max-sessions", "1", "--latency", "sessions.list=0.05"
        ) as proc:
            try:
                url = first_line(proc)
                assert url.startswith("http://127.0.0.1:")
                assert url.endswith("/api/v1")
                async with aiohttp.ClientSession() as http:
                    replies = [
                        await _post(
                            http, url, {"cmd": "sessions.create", "session": "p"}
                        ),
                        await _post(
                            http,
                            url,
                            {
                                "cmd": "request.get",
                                "url": site.url("/set-cookie"),
                                "session": "p",
                            },
                        ),
                        await _post(
                            http,
                            url,
                            {
                                "cmd": "request.get",
                                "url": site.url("/echo"),
                                "session": "p",
                            },
                        ),
                        await _post(http, url, {"cmd": "sessions.create"}),
                        await _post(http, url, {"cmd": "sessions.list"}),
                    ]
                    async with http.post(
                        url, json={"cmd": "sessions.list"}
                    ) as response:
                        assert response.status == 401
                    base = url.removesuffix("/api/v1")
                    async with http.get(base + "/__local__/stats") as response:
                        stats = await response.json()
            finally:
                returncode, stderr = _stop(proc)
    assert replies[0]["session"] == "p"
    assert replies[1]["solution"]["statusCode"] == 200
    assert json.loads(replies[2]["solution"]["response"])["cookies"] == {
        "visited": "yes",
        "plain": "1",
    }
    assert replies[3]["error"].startswith("CODE-0029")
    assert replies[4]["open"] == 1
    assert stats["requests"]["total"] == 5
    assert returncode == 0
    assert "request.get session=p url=" in stderr
    assert "Local Scrappey stopped" in stderr
    assert KEY not in stderr
    assert "Traceback" not in stderr


async def _post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(url, params={"key": KEY}, json=body) as response:
        assert response.status == 200
        reply: dict[str, Any] = await response.json()
        return reply


@deferred_f_from_coro_f
async def test_subprocess_static_file_faults_and_sigint(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><body>from a file</body></html>", encoding="utf-8")
    with _start(
        "--static-file", str(page), "--fail-creates", "1", "--seed", "1"
    ) as proc:
        try:
            url = first_line(proc)
            async with aiohttp.ClientSession() as http:
                failed = await _post(http, url, {"cmd": "sessions.create"})
                fetched = await _post(
                    http, url, {"cmd": "request.get", "url": "http://127.0.0.1:1/x"}
                )
                base = url.removesuffix("/api/v1")
                async with http.post(
                    base + "/__local__/faults", json={"http_502_rate": 1.0}
                ) as r:
                    assert r.status == 200
                async with http.post(
                    url, json={"cmd": "request.get", "url": "http://127.0.0.1:1/"}
                ) as r:
                    assert r.status == 502
        finally:
            returncode, stderr = _stop(proc, signal.SIGINT)
    assert str(failed["error"]).startswith("CODE-0029")
    assert fetched["solution"]["response"] == "<html><body>from a file</body></html>"
    assert returncode == 0, stderr


@deferred_f_from_coro_f
async def test_subprocess_bans_sessions_with_vendor_pages() -> None:
    with _start(
        "--static-body", "<p>ok</p>", "--ban-after-requests", "1",
        "--ban-vendors", "imperva,sucuri",
    ) as proc:  # fmt: skip
        try:
            url = first_line(proc)
            statuses = []
            async with aiohttp.ClientSession() as http:
                for session in ("a", "b"):
                    await _post(
                        http, url, {"cmd": "sessions.create", "session": session}
                    )
                    for _ in range(2):
                        command = {"cmd": "request.get", "session": session}
                        reply = await _post(
                            http, url, {**command, "url": "http://127.0.0.1:1/"}
                        )
                        solution = reply["solution"]
                        statuses.append(
                            (solution["statusCode"], solution["response"][:9])
                        )
        finally:
            returncode, stderr = _stop(proc)
    # Session a: a page, then Imperva's (HTTP 200); b: a page, then Sucuri's.
    assert statuses == [
        (200, "<p>ok</p>"),
        (200, "<html sty"),
        (200, "<p>ok</p>"),
        (403, "<!DOCTYPE"),
    ]
    assert returncode == 0, stderr


def test_bad_flags_exit_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--error-rate", "2"],
        ["--latency", "request.get"],
        ["--unknown-session", "x"],
        ["--read-timeout", "0"],
        ["--slow-seconds", "nan"],
    ):
        with pytest.raises(SystemExit) as excinfo:
            main(argv)
        assert excinfo.value.code == 2
    err = capsys.readouterr().err
    for name in ("error_rate", "read_timeout", "slow_seconds"):
        assert name in err


def test_port_in_use_exits_1() -> None:
    with _start() as first:
        try:
            port = first_line(first).split(":")[2].split("/")[0]
            with _start("--port", port) as second:
                _, stderr = second.communicate(timeout=15)
                assert second.returncode == 1
                assert "Cannot serve" in stderr
        finally:
            _stop(first)


def test_help_documents_the_rules(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--help"])
    assert excinfo.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--api-key",
        "--session-ttl",
        "--max-sessions",
        "--unknown-session",
        "--static-body",
        "--static-file",
        "--latency",
        "--error-rate",
        "--error-codes",
        "--http-502-rate",
        "--truncated-rate",
        "--slow-rate",
        "--slow-seconds",
        "--expire-after-requests",
        "--fail-creates",
        "--fail-destroys",
        "--over-limit-seconds",
        "--seed",
        "--read-timeout",
        "CODE-0029",
        "Session not found",
    ):
        assert flag in text


def test_fault_flags_build_faults() -> None:
    args = build_parser().parse_args(
        [
            "--latency",
            "request.get=0.2",
            "--latency",
            "sessions.destroy=5",
            "--error-rate",
            "0.1",
            "--error-codes",
            "CODE-0001, CODE-0024",
            "--http-502-rate",
            "0.2",
            "--truncated-rate",
            "0.3",
            "--slow-rate",
            "0.4",
            "--slow-seconds",
            "1.5",
            "--expire-after-requests",
            "3",
            "--fail-creates",
            "2",
            "--fail-destroys",
            "1",
            "--over-limit-seconds",
            "2.5",
            "--seed",
            "42",
        ]
    )
    assert faults_from_args(args) == Faults(
        latency={"request.get": 0.2, "sessions.destroy": 5.0},
        error_rate=0.1,
        error_codes=("CODE-0001", "CODE-0024"),
        http_502_rate=0.2,
        truncated_rate=0.3,
        slow_rate=0.4,
        slow_seconds=1.5,
        expire_after_requests=3,
        fail_creates=2,
        fail_destroys=1,
        over_limit_seconds=2.5,
        seed=42,
    )
    assert faults_from_args(build_parser().parse_args([])) == Faults()
    assert Faults().error_codes == TRANSIENT_CODES
