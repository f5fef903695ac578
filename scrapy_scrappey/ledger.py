"""A crash-safety ledger of the Scrappey sessions a crawl has open.

Remote sessions cost money and accounts cap how many may be open at once, so a
crawl that dies without destroying its sessions (``kill -9``, OOM killer, power
cut of the laptop) must not leave them for the server's idle timeout to reap.
The ledger makes that recoverable:

* a session id is written to disk *before* ``sessions.create`` is sent and
  removed *after* ``sessions.destroy`` succeeded, so every session that may
  exist remotely is on disk;
* each run owns one file and holds an exclusive lock on a sibling lock file for
  as long as it lives; the operating system drops that lock when the process
  dies, however it dies, so a lock that can be taken means the run is dead, even
  if its pid has since been reused;
* the next crawl with the same API key (or ``sessions cleanup``) calls
  :meth:`SessionLedger.orphans`, destroys what dead runs left behind and calls
  :meth:`SessionLedger.forget_orphan` for each (:mod:`scrapy_scrappey.orphans`).

Layout, under ``SCRAPPEY_LEDGER_DIR`` (by default ``.scrapy/scrappey-sessions``
of the project, see :func:`scrapy_scrappey.config.default_ledger_dir`)::

    scrappey-sessions/
        <fingerprint>/              # 16 hex chars of sha256(api_url NUL key)
            <run-id>.json           # {"format": ..., "sessions": {id: recorded_at}}
            <run-id>.lock           # flock-ed by the run while it is alive

The key itself is never written; the fingerprint only tells runs of the same
account and endpoint apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy_scrappey._redact import redact_url

if TYPE_CHECKING:
    # typing.Self requires Python 3.11
    from typing_extensions import Self

    from .config import Config

logger = logging.getLogger(__name__)

FORMAT = "scrapy-scrappey-session-ledger"
FORMAT_VERSION = 1

if sys.platform == "win32":  # pragma: no cover - the test suite runs on POSIX
    import msvcrt

    def _try_lock(fd: int) -> bool:
        # Windows releases byte-range locks when the owning process exits,
        # which is the same guarantee flock gives on POSIX.
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        # flock locks belong to the open file description, so they also tell
        # two ledgers of one process apart, and die with the process.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def fingerprint(api_url: str, api_key: str) -> str:
    """Identify an (API URL, key) pair without revealing the key.

    *api_url* is compared as given: :class:`~scrapy_scrappey.config.Account`
    normalises it (no trailing slash) for crawls and the command line alike.
    """
    material = f"{api_url}\0{api_key}".encode()
    return hashlib.sha256(material).hexdigest()[:16]


@dataclass(frozen=True)
class LedgerEntry:
    """One session id recorded by some run."""

    session_id: str
    run_id: str
    created: float  # epoch seconds when recorded
    path: Path  # the run file it came from


@dataclass
class _RunFile:
    """A run file loaded in memory, with the lock that makes us its only writer."""

    path: Path
    lock_fd: int | None
    header: dict[str, Any]
    sessions: dict[str, float] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.header["run_id"])

    @property
    def lock_path(self) -> Path:
        return self.path.with_suffix(".lock")


def _new_run_id() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}"


def _write(run: _RunFile) -> None:
    """Replace the run file atomically: readers see the old or the new list."""
    doc = {**run.header, "sessions": run.sessions}
    tmp = run.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    # No fsync: the ledger guards against the process dying, and the page
    # cache outlives the process. After a power cut the server's idle timeout
    # has long reaped the sessions anyway.
    tmp.replace(run.path)


def _parse(path: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Read a run file; ValueError if it is not one we can understand."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a scrapy-scrappey session ledger file")
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported ledger format version {doc.get('version')!r}")
    sessions = doc.pop("sessions", None)
    if not isinstance(doc.get("run_id"), str) or not isinstance(sessions, dict):
        raise TypeError("malformed session ledger file")
    return doc, {str(sid): float(ts) for sid, ts in sessions.items()}


def _release(run: _RunFile) -> None:
    if run.lock_fd is not None:
        os.close(run.lock_fd)  # closing the descriptor drops the lock
        run.lock_fd = None


def _remove(run: _RunFile) -> None:
    """Delete a run's files: the list first, so a run file never lacks its lock."""
    run.path.unlink(missing_ok=True)
    run.path.with_suffix(".tmp").unlink(missing_ok=True)
    # Windows cannot delete a file that is still open, so release first; a
    # prober that locks the file in between finds no list and gives up.
    _release(run)
    run.lock_path.unlink(missing_ok=True)


class SessionLedger:
    """The on-disk record of the sessions of one crawl, and of dead crawls.

    All methods are synchronous and cheap: a few small file writes per session,
    never per request. Methods that write raise :class:`OSError` when the
    directory is not writable; reading unreadable files of other runs only logs
    a warning.
    """

    def __init__(self, directory: Path | str, *, api_url: str, api_key: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint(api_url, api_key)
        self.run_id = _new_run_id()
        self._api_url = redact_url(api_url)
        self._run_dir = self.directory / self.fingerprint
        self._own: _RunFile | None = None
        self._used = False  # a closed run's id is never reused
        self._claims: dict[Path, _RunFile] = {}

    @classmethod
    def for_config(cls, config: Config) -> Self | None:
        """The opened ledger of a crawl with *config*; None when it is disabled."""
        if not config.ledger_enabled:
            return None
        ledger = cls(config.ledger_dir, api_url=config.api_url, api_key=config.api_key)
        ledger.open()
        return ledger

    @property
    def path(self) -> Path | None:
        """This run's file, or None before :meth:`open`."""
        return self._own.path if self._own else None

    def open(self) -> None:
        """Create and lock this run's file. Calling it again does nothing.

        After :meth:`close`, opening again starts a new run with a new id.
        """
        self._ensure_open()

    def record(self, session_id: str) -> None:
        """Note *session_id* before ``sessions.create`` is sent for it."""
        run = self._ensure_open()
        run.sessions[session_id] = time.time()
        _write(run)

    def forget(self, session_id: str) -> None:
        """Drop *session_id* once it was destroyed or is known to be gone."""
        run = self._own
        if run is not None and run.sessions.pop(session_id, None) is not None:
            _write(run)

    def orphans(self) -> list[LedgerEntry]:
        """Sessions recorded by dead runs with the same API URL and key.

        Live runs, including other ledgers of this process, and this run are
        never included. The dead runs returned stay claimed by this ledger
        (other processes see them as live) until :meth:`forget_orphan` empties
        them or :meth:`close` is called, so two crawls starting together do not
        both destroy the same leftovers. Dead runs with nothing left in them
        are deleted on the way.
        """
        entries: list[LedgerEntry] = []
        for path in self._other_run_files():
            run = self._claims.get(path) or self._claim(path)
            if run is None:
                continue
            if not run.sessions:
                self._drop_claim(run)
                continue
            entries.extend(
                LedgerEntry(sid, run.run_id, created, path)
                for sid, created in run.sessions.items()
            )
        return entries

    def forget_orphan(self, entry: LedgerEntry) -> None:
        """Drop an entry of :meth:`orphans` after its session was destroyed.

        The dead run's file is deleted when its last entry goes.
        """
        run = self._claims.get(entry.path) or self._claim(entry.path)
        if run is None:
            logger.debug(
                "Not forgetting %s: run file %s is live or gone",
                entry.session_id,
                entry.path,
            )
            return
        run.sessions.pop(entry.session_id, None)
        if run.sessions:
            _write(run)
        else:
            self._drop_claim(run)

    def inspect(self) -> list[tuple[LedgerEntry, bool]]:
        """Every recorded entry for this API URL and key, with whether its run is live.

        For reporting (``python -m scrapy_scrappey sessions list``): each run's
        lock is taken only for a moment and released again.
        """
        found: list[tuple[LedgerEntry, bool]] = []
        for path in sorted(self._run_dir.glob("*.json")):
            run, live = self._peek(path)
            if run is not None:
                found.extend(
                    (LedgerEntry(sid, run.run_id, created, path), live)
                    for sid, created in run.sessions.items()
                )
        return found

    def close(self) -> None:
        """Release this run's lock and any claimed dead runs.

        This run's file is deleted when empty. Ids still in it are sessions
        that could not be destroyed: the file stays, and the next crawl with the
        same key (or ``sessions cleanup``) destroys them.
        """
        for claim in self._claims.values():
            _release(claim)
        self._claims.clear()
        run, self._own = self._own, None
        if run is None:
            return
        if run.sessions:
            logger.warning(
                "%d Scrappey session(s) may still be open; they stay in %s "
                "for the next crawl with this API key to destroy (or run "
                "`python -m scrapy_scrappey sessions cleanup`)",
                len(run.sessions),
                run.path,
            )
            _release(run)
        else:
            _remove(run)
            # A folder per API URL and key: one left empty (a mistyped URL)
            # would be listed by `sessions cleanup` forever. Fails harmlessly
            # while another crawl with this key still has its files there.
            with contextlib.suppress(OSError):
                self._run_dir.rmdir()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _ensure_open(self) -> _RunFile:
        if self._own is not None:
            return self._own
        if self._used:
            self.run_id = _new_run_id()
        self._used = True
        path = self._run_dir / f"{self.run_id}.json"
        # The lock exists before the list does, so no reader ever sees a list
        # of a live run without the lock that proves it is live.
        fd = self._create_lock(path.with_suffix(".lock"))
        if not _try_lock(fd):  # pragma: no cover - run ids are unique
            os.close(fd)
            raise RuntimeError(f"session ledger {path} is locked by another process")
        run = _RunFile(path, fd, self._header())
        _write(run)
        self._own = run
        return run

    def _create_lock(self, lock_path: Path) -> int:
        flags, mode = os.O_RDWR | os.O_CREAT, 0o600
        self._run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return os.open(lock_path, flags, mode)
        except FileNotFoundError:
            # Another crawl's close removed the empty folder in between.
            self._run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            return os.open(lock_path, flags, mode)

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "run_id": self.run_id,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "created": time.time(),
            "api_url": self._api_url,
        }

    def _other_run_files(self) -> list[Path]:
        own = self._own.path if self._own else None
        return [p for p in sorted(self._run_dir.glob("*.json")) if p != own]

    def _load(self, path: Path) -> _RunFile | None:
        try:
            header, sessions = _parse(path)
        except FileNotFoundError:
            return None  # its run finished meanwhile
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("Ignoring unreadable session ledger file %s: %s", path, exc)
            return None
        return _RunFile(path, None, header, sessions)

    def _claim(self, path: Path) -> _RunFile | None:
        """Lock a dead run's file for this ledger; None if live, gone or unreadable."""
        # Parse before locking, so foreign files never get a lock file created
        # next to them.
        if self._load(path) is None:
            return None
        fd = self._lock_other(path)
        if fd is None:
            return None
        run = self._load(path)  # again: it may have changed before we got the lock
        if run is None:
            os.close(fd)
            path.with_suffix(".lock").unlink(missing_ok=True)
            return None
        run.lock_fd = fd
        self._claims[path] = run
        return run

    def _lock_other(self, path: Path) -> int | None:
        try:
            fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            logger.warning("Cannot lock session ledger file %s: %s", path, exc)
            return None
        if _try_lock(fd):
            return fd
        os.close(fd)
        return None

    def _drop_claim(self, run: _RunFile) -> None:
        self._claims.pop(run.path, None)
        _remove(run)

    def _peek(self, path: Path) -> tuple[_RunFile | None, bool]:
        if self._own is not None and path == self._own.path:
            return self._own, True
        if path in self._claims:
            return self._claims[path], False
        run = self._load(path)
        if run is None:
            return None, False
        fd = self._lock_other(path)
        if fd is not None:
            os.close(fd)
        return run, fd is None
