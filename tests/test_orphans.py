"""Destroying what dead runs left in the ledger (crawls and `sessions cleanup`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.ledger import SessionLedger
from scrapy_scrappey.orphans import destroy_orphans, destroy_orphans_blocking
from tests.crawl import KEY as CRAWL_KEY
from tests.crawl import PagesSpider, crawl, settings_for
from tests.ledger_support import run_and_kill

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

API_URL = "http://127.0.0.1:9/api/v1"
KEY = "MARKERKEY1234567890"


def ledger_in(directory: Path) -> SessionLedger:
    return SessionLedger(directory, api_url=API_URL, api_key=KEY)


def left_over(directory: Path) -> list[str]:
    checker = ledger_in(directory)
    try:
        return sorted(e.session_id for e in checker.orphans())
    finally:
        checker.close()


def test_each_session_is_destroyed_once_and_only_the_gone_are_forgotten(
    tmp_path: Path,
) -> None:
    # Two dead runs both name "shared" (a resumed job), each has its own too.
    run_and_kill(tmp_path, API_URL, ["shared", "first"], key=KEY)
    run_and_kill(tmp_path, API_URL, ["shared", "second"], key=KEY)
    calls: list[list[str]] = []

    def destroy(ids: list[str]) -> list[str]:
        calls.append(ids)
        return [sid for sid in ids if sid != "second"]  # "second" fails

    ledger = ledger_in(tmp_path)
    sweep = destroy_orphans_blocking(ledger, destroy, also=["api-only", "first"])
    ledger.close()
    assert len(calls) == 1
    assert sorted(calls[0]) == ["api-only", "first", "second", "shared"]
    assert calls[0][-1] == "api-only"  # orphans first, then the extra ids
    assert sweep.targets == calls[0]
    assert sweep.failed == ["second"]
    assert left_over(tmp_path) == ["second"]


def test_nothing_to_destroy_calls_nothing(tmp_path: Path) -> None:
    def destroy(ids: list[str]) -> list[str]:
        raise AssertionError(ids)

    ledger = ledger_in(tmp_path)
    sweep = destroy_orphans_blocking(ledger, destroy)
    ledger.close()
    assert sweep.targets == []
    assert sweep.failed == []


@deferred_f_from_coro_f
async def test_async_destroy_step(tmp_path: Path) -> None:
    run_and_kill(tmp_path, API_URL, ["a", "b"], key=KEY)

    async def destroy(ids: list[str]) -> list[str]:
        return ids[:1]

    ledger = ledger_in(tmp_path)
    sweep = await destroy_orphans(ledger, destroy)
    ledger.close()
    assert sweep.targets == ["a", "b"]
    assert sweep.failed == ["b"]
    assert left_over(tmp_path) == ["b"]


def test_a_ledger_write_error_after_a_destroy_is_logged_not_raised(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_and_kill(tmp_path, API_URL, ["a", "b"], key=KEY)
    ledger = ledger_in(tmp_path)
    forget = ledger.forget_orphan
    broken = {"a"}

    def flaky_forget(entry):  # type: ignore[no-untyped-def]
        if entry.session_id in broken:
            raise OSError("disk full")
        forget(entry)

    monkeypatch.setattr(ledger, "forget_orphan", flaky_forget)
    with caplog.at_level(logging.WARNING, logger="scrapy_scrappey.orphans"):
        sweep = destroy_orphans_blocking(ledger, lambda ids: ids)
    ledger.close()
    assert sweep.failed == []
    assert "Could not update the Scrappey session ledger: disk full" in caplog.text
    # "b" was forgotten; the stale "a" costs the next cleanup a "not found".
    assert left_over(tmp_path) == ["a"]


def _sweep_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "scrapy_scrappey.orphans" and r.levelno == logging.WARNING
    ]


@deferred_f_from_coro_f
async def test_a_crawl_destroys_orphans_and_keeps_them_out_of_its_own_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, local_server, target_site
) -> None:
    client = ScrappeyClient(local_server.url, CRAWL_KEY)
    try:
        await client.call({"cmd": "sessions.create", "session": "orphan"}, timeout=5)
    finally:
        await client.close()
    # "expired" is no longer open on the server: gone all the same.
    run_and_kill(
        tmp_path / "ledger", local_server.url, ["orphan", "expired"], key=CRAWL_KEY
    )
    caplog.set_level(logging.DEBUG)
    settings = settings_for(local_server, tmp_path)
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert len(result.items) == 1
    (warning,) = _sweep_warnings(caplog)
    assert warning.endswith("did not shut down cleanly; destroyed 2")
    assert result.stats["scrappey/sessions/orphans_found"] == 2
    assert result.stats["scrappey/sessions/orphans_destroyed"] == 2
    assert result.stats["scrappey/sessions/created"] == 1
    assert result.stats["scrappey/sessions/destroyed"] == 1  # this crawl's only
    (line,) = [m for r in caplog.records if "API request(s)" in (m := r.getMessage())]
    assert "sessions created 1, destroyed 1," in line
    assert line.endswith("; sessions of earlier crawls: found 2, destroyed 2")
    destroyed = [
        r for r in caplog.records if r.getMessage().startswith("Destroyed Scrappey")
    ]
    assert [r.levelno for r in destroyed] == [logging.DEBUG] * 2
    assert "Destroyed Scrappey session orphan" in destroyed[0].getMessage()
    assert local_server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_orphans_a_wrong_api_url_cannot_destroy_stay_in_the_ledger_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, free_port, target_site
) -> None:
    url = f"http://127.0.0.1:{free_port}/api/v1"
    run_and_kill(tmp_path / "ledger", url, ["a", "b"], key=CRAWL_KEY)
    settings = settings_for(_Url(url), tmp_path)
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert result.stats["finish_reason"] == "scrappey_api_unreachable"
    (warning,) = _sweep_warnings(caplog)
    assert warning.endswith(
        "destroyed 0; the other 2 stay in the ledger for the next crawl or "
        "`python -m scrapy_scrappey sessions cleanup`"
    )
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 2  # the sweep's warning and the one error
    assert "check SCRAPPEY_API_URL" in problems[1].getMessage()
    assert "scrappey/sessions/destroy_failed" not in result.stats
    checker = SessionLedger(tmp_path / "ledger", api_url=url, api_key=CRAWL_KEY)
    try:
        assert sorted(e.session_id for e in checker.orphans()) == ["a", "b"]
    finally:
        checker.close()


class _Url:
    def __init__(self, url: str) -> None:
        self.url = url
