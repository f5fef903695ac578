"""The API key never shows: logs (DEBUG, every logger), stats, items,
exceptions, response URLs, ledger files and CLI output, on every path."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import TYPE_CHECKING, Any

import pytest
from scrapy import Request, Spider
from scrapy.http import JsonRequest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import ScrappeyConfigError, ScrappeyTransportError
from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for

if TYPE_CHECKING:
    from pathlib import Path

MARKER = "MARKERKEY-7f3a9c2e51d8b4"
VISIBLE = MARKER[:4]  # key_hint shows this much, and no more
FORBIDDEN = MARKER[:5]


def _exception_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), "".join(traceback.format_exception(error))]


def _log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = logging.Formatter()
    texts = [caplog.text]
    for record in caplog.records:
        texts += [record.getMessage(), str(record.msg), repr(record.args)]
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(formatter.formatException(record.exc_info))
        if record.exc_text:
            texts.append(record.exc_text)
    return texts


def _ledger_texts(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    texts = []
    for path in directory.rglob("*"):
        texts.append(str(path))
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return texts


def _assert_clean(texts: list[str], where: str) -> None:
    for text in texts:
        assert FORBIDDEN not in text, f"the key leaks into {where}: {text[:2000]}"


def _check(result: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    _assert_clean(_log_texts(caplog), "the logs")
    stats = result.stats
    _assert_clean([str(k) for k in stats] + [str(v) for v in stats.values()], "stats")
    _assert_clean([repr(item) for item in result.items], "items")
    for error in result.spider.errors:
        _assert_clean(_exception_texts(error), "an errback exception")
    _assert_clean(_ledger_texts(tmp_path / "ledger"), "the ledger directory")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _settings(server: Any, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return settings_for(
        server,
        tmp_path,
        SCRAPPEY_API_KEY=MARKER,
        LOG_LEVEL="DEBUG",
        **extra,
    )


@deferred_f_from_coro_f
async def test_key_hidden_on_success_faults_timeouts_expiry_and_retries(
    tmp_path,
    debug_logs,
    make_local_server,
    target_site,
):
    faults = Faults(
        error_rate=0.2,
        http_502_rate=0.1,
        truncated_rate=0.2,
        slow_rate=0.2,
        slow_seconds=2,
        expire_after_requests=3,
        seed=5,
    )
    server = await make_local_server(api_key=MARKER, faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(40)]
    settings = _settings(
        server,
        tmp_path,
        DOWNLOAD_TIMEOUT=1,
        RETRY_TIMES=1,  # some pages run out of retries: errbacks too
        SCRAPPEY_SESSION_POOL_SIZE=2,
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    injected = stats["faults"]
    for kind in ("errors", "http_502", "truncated", "slow"):
        assert injected[kind], kind
    assert stats["sessions"]["expired"]
    assert result.items
    assert result.spider.errors  # failures after the last retry
    assert result.stats["retry/count"]
    assert any(VISIBLE in r.getMessage() for r in debug_logs.records)
    _check(result, debug_logs, tmp_path)


@deferred_f_from_coro_f
async def test_key_hidden_on_config_error_codes(
    tmp_path, debug_logs, make_local_server, target_site
):
    faults = Faults(error_rate=1.0, error_codes=("CODE-0015",))
    server = await make_local_server(api_key=MARKER, faults=faults)
    result = await crawl(
        PagesSpider, _settings(server, tmp_path), urls=[target_site.url("/page/1")]
    )
    assert result.spider.errors
    _check(result, debug_logs, tmp_path)


@deferred_f_from_coro_f
async def test_key_hidden_on_401(tmp_path, debug_logs, make_local_server, target_site):
    server = await make_local_server(api_key="another-key")
    result = await crawl(
        PagesSpider, _settings(server, tmp_path), urls=[target_site.url("/page/1")]
    )
    assert result.stats["finish_reason"] == "scrappey_bad_api_key"
    _check(result, debug_logs, tmp_path)


@deferred_f_from_coro_f
async def test_key_hidden_on_401_mid_crawl(
    tmp_path, debug_logs, make_local_server, target_site
):
    server = await make_local_server(api_key=MARKER)
    server.api_key = "revoked"
    settings = _settings(server, tmp_path, SCRAPPEY_SESSION_SCOPE="none")
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert result.stats["finish_reason"] == "scrappey_bad_api_key"
    assert result.spider.errors
    _check(result, debug_logs, tmp_path)


@deferred_f_from_coro_f
async def test_key_hidden_when_sessions_cannot_be_created_or_destroyed(
    tmp_path,
    debug_logs,
    make_local_server,
    target_site,
):
    # Creates failing at first, then destroys failing for good: the close
    # logs the leaked ids and the ledger keeps them on disk.
    faults = Faults(fail_creates=2, fail_destroys=10_000)
    server = await make_local_server(api_key=MARKER, faults=faults)
    settings = _settings(server, tmp_path, SCRAPPEY_CLOSE_TIMEOUT=1)
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    stats = server.stats()
    assert result.stats["scrappey/sessions/leaked"] == 1
    assert stats["sessions"]["open"] == 1
    assert _ledger_texts(tmp_path / "ledger")
    _check(result, debug_logs, tmp_path)


@deferred_f_from_coro_f
async def test_key_hidden_when_every_create_fails(
    tmp_path, debug_logs, make_local_server, target_site
):
    faults = Faults(fail_creates=10_000)
    server = await make_local_server(api_key=MARKER, faults=faults)
    settings = _settings(
        server,
        tmp_path,
        SCRAPPEY_SESSION_CREATE_ATTEMPTS=2,
        SCRAPPEY_SESSION_OVER_LIMIT_WAIT=0,
    )
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert result.stats["finish_reason"] == "scrappey_sessions_unavailable"
    _check(result, debug_logs, tmp_path)


class RawSpider(Spider):
    """POSTs Scrappey commands itself (raw mode), some with ?key= in the URL."""

    name = "raw"

    def __init__(self, commands: list[tuple[str, dict[str, Any]]], **kw: Any) -> None:
        super().__init__(**kw)
        self.commands = commands
        self.errors: list[Any] = []

    async def start(self):  # type: ignore[no-untyped-def]
        for api_url, command in self.commands:
            yield JsonRequest(
                api_url,
                data=command,
                callback=self.parse,
                errback=self.errback,
                dont_filter=True,
            )

    def parse(self, response):  # type: ignore[no-untyped-def]
        yield {
            "url": response.url,
            "status": response.status,
            "body": response.text,
            "session": response.meta.get("scrappey_session"),
        }

    def errback(self, failure):  # type: ignore[no-untyped-def]
        self.errors.append(failure.value)


@deferred_f_from_coro_f
async def test_key_hidden_in_raw_mode(
    tmp_path, debug_logs, make_local_server, target_site
):
    faults = Faults(expire_after_requests=2)
    server = await make_local_server(api_key=MARKER, faults=faults)
    keyed = f"{server.url}?key={MARKER}"
    commands = [
        (server.url, {"cmd": "request.get", "url": target_site.url("/page/1")}),
        (server.url, {"cmd": "request.get", "url": target_site.url("/page/2")}),
        (keyed, {"cmd": "request.get", "url": target_site.url("/page/3")}),
        (server.url, {"cmd": "sessions.list"}),
        (server.url, {"cmd": "no.such.command"}),
        (keyed, {"cmd": "request.get", "url": target_site.url("/page/4")}),
    ]
    settings = _settings(server, tmp_path, CONCURRENT_REQUESTS=1)
    result = await crawl(RawSpider, settings, commands=commands)
    assert len(result.items) + len(result.spider.errors) == len(commands)
    assert {i["url"] for i in result.items} >= {server.url}
    _check(result, debug_logs, tmp_path)


def _cli(argv: list[str]) -> int:
    from scrapy_scrappey.cli import main

    return main(argv)


@deferred_f_from_coro_f
async def test_key_hidden_in_cli_output(
    tmp_path, capsys, make_local_server, target_site
):
    pytest.importorskip("scrapy_scrappey.cli")
    srv = await make_local_server(api_key=MARKER, faults=Faults(fail_destroys=10_000))
    # Leave a session behind (destroy fails at close) for the CLI to find.
    settings = _settings(
        srv, tmp_path, SCRAPPEY_CLOSE_TIMEOUT=1, SCRAPPEY_SESSION_CREATE_ATTEMPTS=1
    )
    await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert srv.stats()["sessions"]["open"] == 1
    srv.faults = Faults()
    capsys.readouterr()
    common = ["--api-url", srv.url, "--ledger-dir", str(tmp_path / "ledger")]
    runs = [
        ["sessions", "list", "--key", MARKER, *common],
        ["sessions", "cleanup", "--key", MARKER, *common],
        ["sessions", "list", "--key", MARKER + "-wrong", *common],
        [
            "sessions",
            "list",
            "--key",
            MARKER,
            "--api-url",
            srv.url + "?key=" + MARKER,
        ],
    ]
    codes = [await asyncio.to_thread(_cli, argv) for argv in runs]
    stats = srv.stats()
    out = capsys.readouterr()
    assert codes[0] == 0
    assert codes[1] == 0
    assert codes[2] != 0
    assert stats["sessions"]["open"] == 0
    _assert_clean([out.out, out.err], "the CLI output")
    _assert_clean(_ledger_texts(tmp_path / "ledger"), "the ledger directory")


def test_marker_is_a_real_check():
    assert FORBIDDEN in f"http://x/api?key={MARKER}"
    assert FORBIDDEN not in f"key: {VISIBLE}…"
    assert Request  # imported for the raw spider's siblings


@deferred_f_from_coro_f
async def test_timeout_error_chain_does_not_carry_the_key(make_local_server):
    server = await make_local_server(faults=Faults(latency={"request.get": 2}))
    client = ScrappeyClient(server.url, MARKER)
    try:
        with pytest.raises(ScrappeyTransportError) as info:
            await client.call({"cmd": "request.get", "url": "http://x"}, timeout=0.2)
        text = "".join(traceback.format_exception(info.value))
        assert MARKER not in text
        assert MARKER[4:] not in text
        with pytest.raises(ScrappeyConfigError, match="not JSON"):
            await client.call(
                {"cmd": "request.get", "url": "http://x", "bad": {1, 2}}, timeout=1
            )
    finally:
        await client.close()
