"""Destroying what dead runs left in the ledger (crawls and `sessions cleanup`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.ledger import SessionLedger
from scrapy_scrappey.orphans import destroy_orphans, destroy_orphans_blocking
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
