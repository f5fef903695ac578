from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING

import pytest

from scrapy_scrappey.ledger import FORMAT, LedgerEntry, SessionLedger, fingerprint
from tests.ledger_support import recorded_ids
from tests.ledger_support import run_and_kill as _run_and_kill

if TYPE_CHECKING:
    from pathlib import Path

API_URL = "http://127.0.0.1:9/api/v1"
KEY = "MARKERKEY1234567890"


def run_and_kill(directory: Path, ids: list[str], *, key: str = KEY) -> None:
    _run_and_kill(directory, API_URL, ids, key=key)


def make(directory: Path, key: str = KEY, api_url: str = API_URL) -> SessionLedger:
    return SessionLedger(directory, api_url=api_url, api_key=key)


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def test_record_and_forget_round_trip(tmp_path: Path) -> None:
    ledger = make(tmp_path)
    ledger.open()
    ledger.record("s1")
    ledger.record("s2")
    assert recorded_ids(ledger) == ["s1", "s2"]
    assert ledger.path is not None
    doc = json.loads(ledger.path.read_text())
    assert doc["format"] == FORMAT
    assert doc["run_id"] == ledger.run_id
    assert doc["pid"] == os.getpid()
    assert list(doc["sessions"]) == ["s1", "s2"]

    ledger.forget("s1")
    ledger.forget("never-recorded")
    assert recorded_ids(ledger) == ["s2"]
    assert list(json.loads(ledger.path.read_text())["sessions"]) == ["s2"]
    ledger.forget("s2")
    ledger.close()
    assert files(tmp_path) == []


def test_run_file_layout(tmp_path: Path) -> None:
    with make(tmp_path) as ledger:
        assert ledger.path == tmp_path / ledger.fingerprint / f"{ledger.run_id}.json"
        assert ledger.path.with_suffix(".lock").exists()
        assert len(ledger.fingerprint) == 16


def test_record_opens_implicitly_and_open_is_idempotent(tmp_path: Path) -> None:
    ledger = make(tmp_path)
    assert recorded_ids(ledger) == []
    assert ledger.path is None
    ledger.record("s1")
    path = ledger.path
    ledger.open()
    assert ledger.path == path
    assert recorded_ids(ledger) == ["s1"]
    ledger.forget("s1")
    ledger.close()
    ledger.close()


def test_reopening_after_close_starts_a_new_run(tmp_path: Path) -> None:
    ledger = make(tmp_path)
    ledger.record("leaked")
    first = ledger.run_id
    ledger.close()
    ledger.open()
    assert ledger.run_id != first
    assert recorded_ids(ledger) == []
    assert [e.session_id for e in ledger.orphans()] == ["leaked"]
    ledger.close()


def test_the_last_empty_run_removes_its_folder_and_others_keep_it(
    tmp_path: Path,
) -> None:
    first, second = make(tmp_path), make(tmp_path)
    first.open()
    second.open()
    folder = tmp_path / first.fingerprint
    second.close()
    assert folder.is_dir()  # the first run's files are still in it
    first.close()
    assert list(tmp_path.iterdir()) == []
    # A folder removed by another crawl's close is made again on open.
    third = make(tmp_path)
    third.record("s1")
    assert recorded_ids(third) == ["s1"]
    third.close()
    assert folder.is_dir()  # s1 may still be open: its run file stays


def test_file_is_always_valid_json(tmp_path: Path) -> None:
    ledger = make(tmp_path)
    ledger.open()
    assert ledger.path is not None
    path = ledger.path
    stop = threading.Event()
    reads: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                reads.append(len(json.loads(path.read_text())["sessions"]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            ledger.record(f"s{i}")
            if i % 2:
                ledger.forget(f"s{i}")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert reads
    assert len(recorded_ids(ledger)) == 150
    ledger.close()


def test_live_ledgers_with_the_same_key_are_not_orphans(tmp_path: Path) -> None:
    first, second = make(tmp_path), make(tmp_path)
    first.record("a")
    second.record("b")
    assert first.orphans() == []
    assert second.orphans() == []
    assert make(tmp_path).orphans() == []
    first.close()
    # first kept "a" (never forgotten): now it is a leftover for the other run.
    assert [e.session_id for e in second.orphans()] == ["a"]
    second.forget("b")
    second.close()


def test_killed_run_leaves_orphans_that_are_cleaned(tmp_path: Path) -> None:
    run_and_kill(tmp_path, ["dead-1", "dead-2"])
    ledger = make(tmp_path)
    ledger.record("mine")
    orphans = ledger.orphans()
    assert sorted(e.session_id for e in orphans) == ["dead-1", "dead-2"]
    assert all(isinstance(e, LedgerEntry) for e in orphans)
    dead_file = orphans[0].path
    assert dead_file.exists()
    assert dead_file != ledger.path
    assert orphans[0].run_id in dead_file.name
    assert orphans[0].created > 0

    ledger.forget_orphan(orphans[0])
    assert dead_file.exists()
    assert [e.session_id for e in ledger.orphans()] == [orphans[1].session_id]
    ledger.forget_orphan(orphans[1])
    assert not dead_file.exists()
    assert not dead_file.with_suffix(".lock").exists()
    assert ledger.orphans() == []

    ledger.forget("mine")
    ledger.close()
    assert files(tmp_path) == []


def test_orphans_are_claimed_by_one_ledger_at_a_time(tmp_path: Path) -> None:
    run_and_kill(tmp_path, ["dead-1"])
    first, second = make(tmp_path), make(tmp_path)
    assert [e.session_id for e in first.orphans()] == ["dead-1"]
    # Asking again returns the same claim rather than treating it as live.
    assert [e.session_id for e in first.orphans()] == ["dead-1"]
    assert second.orphans() == []
    first.close()  # gave up without destroying: the leftover goes back to the pool
    entries = second.orphans()
    assert [e.session_id for e in entries] == ["dead-1"]
    second.forget_orphan(entries[0])
    second.close()
    assert files(tmp_path) == []


def test_empty_dead_run_files_are_removed(tmp_path: Path) -> None:
    run_and_kill(tmp_path, [])
    assert len(files(tmp_path)) == 2  # the run file and its lock
    assert make(tmp_path).orphans() == []
    assert files(tmp_path) == []


def test_other_keys_and_urls_are_not_orphans(tmp_path: Path) -> None:
    run_and_kill(tmp_path, ["other-key"], key="ANOTHERKEY0987654321")
    assert make(tmp_path).orphans() == []
    assert make(tmp_path, api_url="http://127.0.0.1:8/api/v1").orphans() == []
    entries = make(tmp_path, key="ANOTHERKEY0987654321").orphans()
    assert [e.session_id for e in entries] == ["other-key"]


def test_fingerprint_tells_urls_and_keys_apart() -> None:
    # The URL comes normalised from Account (see test_config): taken as given.
    assert fingerprint(API_URL, KEY) == fingerprint(API_URL, KEY)
    assert fingerprint(API_URL, KEY) != fingerprint(API_URL, KEY + "x")
    assert fingerprint(API_URL, KEY) != fingerprint(API_URL + "2", KEY)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b'{"hello": "world"}',
        b"[1, 2]",
        json.dumps(
            {"format": FORMAT, "version": 99, "run_id": "x", "sessions": {}}
        ).encode(),
        json.dumps(
            {"format": FORMAT, "version": 1, "run_id": "x", "sessions": []}
        ).encode(),
        json.dumps(
            {"format": FORMAT, "version": 1, "run_id": "x", "sessions": {"a": "b"}}
        ).encode(),
    ],
)
def test_unreadable_files_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    run_and_kill(tmp_path, ["dead-1"])
    ledger = make(tmp_path)
    bad = tmp_path / ledger.fingerprint / "zz-bad.json"
    bad.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="scrapy_scrappey.ledger"):
        assert [e.session_id for e in ledger.orphans()] == ["dead-1"]
        assert [e.session_id for e, _ in ledger.inspect()] == ["dead-1"]
    assert str(bad) in caplog.text
    assert bad.read_bytes() == content
    assert not bad.with_suffix(".lock").exists()
    ledger.close()


def test_inspect_tells_live_from_dead_runs(tmp_path: Path) -> None:
    run_and_kill(tmp_path, ["dead-1"])
    live = make(tmp_path)
    live.record("live-1")
    seen = {e.session_id: is_live for e, is_live in make(tmp_path).inspect()}
    assert seen == {"dead-1": False, "live-1": True}
    # Inspecting did not claim the dead run.
    assert [e.session_id for e in live.orphans()] == ["dead-1"]
    mine = {e.session_id: is_live for e, is_live in live.inspect()}
    assert mine == {"dead-1": False, "live-1": True}
    live.close()


def test_key_is_never_written(tmp_path: Path) -> None:
    run_and_kill(tmp_path, ["dead-1"])
    ledger = make(tmp_path, api_url=f"{API_URL}?key={KEY}")
    ledger.record("s1")
    ledger.close()
    written = files(tmp_path)
    assert written
    for path in written:
        assert KEY not in path.name
        assert KEY.encode() not in path.read_bytes()
