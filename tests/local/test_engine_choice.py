"""Choosing the engine: --engine http|browser|auto and where Chromium is found."""

from __future__ import annotations

import logging
import subprocess
import sys

import aiohttp
import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local.engine_choice import (
    EngineUnavailable,
    find_chromium,
    missing_browser,
)

MISSING = "/nonexistent/chromium"


@deferred_f_from_coro_f
async def test_auto_falls_back_to_http_in_one_line(make_local_server, caplog):
    caplog.set_level(logging.INFO, logger="scrapy_scrappey.local.engine_choice")
    server = await make_local_server(engine="auto", chromium=MISSING)
    lines = [r.getMessage() for r in caplog.records if "Engine:" in r.getMessage()]
    assert server.engine.name == "request"
    assert server.stats()["engine"] == {"name": "http"}
    assert len(lines) == 1
    assert lines[0].startswith("Engine: http (browser engine unavailable: ")
    assert MISSING in lines[0]
    assert "apt-get install chromium" in lines[0]


@deferred_f_from_coro_f
async def test_browser_engine_refuses_to_start_without_chromium(make_local_server):
    with pytest.raises(EngineUnavailable, match="Chromium not found at"):
        await make_local_server(engine="browser", chromium=MISSING)


def test_chromium_comes_from_the_argument_then_the_environment(monkeypatch, tmp_path):
    fake = tmp_path / "my-chromium"
    fake.write_text("")
    monkeypatch.setenv("SCRAPPEY_LOCAL_CHROMIUM", str(fake))
    assert find_chromium() == str(fake)
    with pytest.raises(EngineUnavailable, match="not found at '/nope'"):
        find_chromium("/nope")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("SCRAPPEY_LOCAL_CHROMIUM")
    with pytest.raises(EngineUnavailable, match="no Chromium on PATH"):
        find_chromium()


def test_bad_engine_name_is_refused():
    from scrapy_scrappey.local import LocalScrappey

    with pytest.raises(ValueError, match="engine must be one of"):
        LocalScrappey(engine="quantum")  # type: ignore[arg-type]


def test_cli_browser_engine_without_chromium_exits_with_the_reason():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scrapy_scrappey.local",
            "--engine",
            "browser",
            "--chromium",
            MISSING,
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"--engine browser: Chromium not found at '{MISSING}'" in done.stderr


def test_cli_auto_without_chromium_serves_with_http(make_server_process):
    server = make_server_process("--engine", "auto", "--chromium", MISSING)
    server.__exit__()  # stop it: the log is complete
    log = server.log_path.read_text()
    lines = [line for line in log.splitlines() if "Engine:" in line]
    assert len(lines) == 1
    assert "Engine: http (browser engine unavailable: Chromium not found" in lines[0]


@deferred_f_from_coro_f
async def test_cli_browser_engine_renders_pages(make_server_process, browser_site):
    missing = missing_browser()
    if missing:
        pytest.skip(f"browser engine unavailable: {missing}")
    server = make_server_process("--engine", "browser", "--max-sessions", "3")
    body = {"cmd": "request.get", "url": browser_site.url("/js/5")}
    # Not urllib: the site answering the browser runs on this event loop.
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.url, json=body) as reply,
    ):
        solution = (await reply.json())["solution"]
    server.__exit__()  # stop it: the log is complete
    log = server.log_path.read_text()
    assert solution["type"] == "browser"
    assert "rendered 5" in solution["response"]
    assert "Engine: browser (Chromium " in log
