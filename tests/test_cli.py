from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
import requests

from scrapy_scrappey.cli import AUTH_MESSAGE, main
from scrapy_scrappey.ledger import SessionLedger
from scrapy_scrappey.redis_link import RedisLink
from tests.ledger_support import recorded_ids
from tests.ledger_support import run_and_kill as _run_and_kill

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

KEY = "MARKERKEY1234567890"


# -- the local Scrappey server ----------------------------------------------------


class Api:
    """A running ``scrapy_scrappey.local`` server, driven through its HTTP API."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        reply = requests.post(
            self.url, params={"key": self.key}, json=payload, timeout=10
        )
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def create(self) -> str:
        return str(self.call({"cmd": "sessions.create"})["session"])

    def open_ids(self) -> list[str]:
        return [s["session"] for s in self.call({"cmd": "sessions.list"})["sessions"]]

    def set_faults(self, **faults: Any) -> None:
        root = self.url.split("/api/", 1)[0]
        requests.post(
            f"{root}/__local__/faults", json=faults, timeout=10
        ).raise_for_status()

    def reset(self) -> None:
        """Default faults and no open session."""
        self.set_faults()
        for session_id in self.open_ids():
            self.call({"cmd": "sessions.destroy", "session": session_id})


@pytest.fixture(scope="module")
def cli_server() -> Iterator[str]:
    """``python -m scrapy_scrappey.local`` accepting only KEY; yields its API URL."""
    cmd = [sys.executable, "-m", "scrapy_scrappey.local", "--port", "0"]
    cmd += ["--max-sessions", "10", "--session-ttl", "0", "--log-level", "ERROR"]
    env = {**os.environ, "SCRAPPEY_LOCAL_API_KEY": KEY}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture
def api(cli_server: str) -> Api:
    server = Api(cli_server, KEY)
    server.reset()
    return server


# -- helpers -------------------------------------------------------------------


# A crawl that records sessions and then dies without any chance to clean up.
def run_and_kill(
    directory: Path, api_url: str, ids: list[str], *, key: str = KEY
) -> None:
    _run_and_kill(directory, api_url, ids, key=key)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SCRAPPEY_API_KEY", "SCRAPPEY_API_URL", "SCRAPY_SETTINGS_MODULE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    return tmp_path / "ledger"


def cli(
    capsys: pytest.CaptureFixture[str], *argv: str, key: str | None = KEY
) -> tuple[int, str, str]:
    """Run the command line in-process; the key comes from the environment."""
    with pytest.MonkeyPatch.context() as mp:
        if key is not None:
            mp.setenv("SCRAPPEY_API_KEY", key)
        code = main(list(argv))
    out, err = capsys.readouterr()
    assert KEY not in out
    assert KEY not in err
    return code, out, err


def sessions(
    capsys: pytest.CaptureFixture[str],
    action: str,
    url: str,
    ledger_dir: Path,
    *extra: str,
    key: str | None = KEY,
) -> tuple[int, str, str]:
    """`sessions ACTION` against *url*, with the ledger in *ledger_dir*."""
    argv = ["sessions", action, "--api-url", url, "--ledger-dir", str(ledger_dir)]
    return cli(capsys, *argv, *extra, key=key)


def table(out: str) -> dict[str, list[str]]:
    """Rows of the `sessions list` table, keyed by session id."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("SESSION"))
    header = re.split(r"\s{2,}", lines[start])
    assert header == ["SESSION", "SOURCE", "STATE", "LAST ACCESSED", "WORKER"]
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("open "):
            break
        cells = re.split(r"\s{2,}", line)
        assert len(cells) == 5, line
        rows[cells[0]] = cells[1:]
    return rows


def dir_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


# -- sessions list ---------------------------------------------------------------


def test_list_merges_api_and_ledger(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    api_only, crashed, live = api.create(), api.create(), api.create()
    run_and_kill(ledger_dir, api.url, [crashed, "ledger-only"])
    with SessionLedger(ledger_dir, api_url=api.url, api_key=KEY) as running:
        running.record(live)
        code, out, _ = sessions(capsys, "list", api.url, ledger_dir)
        running.forget(live)
    assert code == 0
    rows = table(out)
    assert set(rows) == {api_only, crashed, live, "ledger-only"}
    assert rows[api_only][:2] == ["api", "-"]
    assert rows[crashed][:2] == ["api+ledger", "orphan (run dead)"]
    assert rows[live][:2] == ["api+ledger", "live run"]
    assert rows["ledger-only"] == ["ledger", "orphan (run dead)", "-", "-"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[api_only][2])
    assert "open 3 of limit 10" in out.splitlines()
    assert "2 orphaned session(s)" in out
    assert "key MARK…" in out
    # Listing neither destroys nor claims anything.
    assert len(api.open_ids()) == 3
    assert len(SessionLedger(ledger_dir, api_url=api.url, api_key=KEY).orphans()) == 2


def test_list_with_nothing_open(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    code, out, err = sessions(capsys, "list", api.url, ledger_dir)
    assert code == 0
    assert "No open sessions." in out
    assert out.splitlines()[-1] == "open 0 of limit 10"
    assert err == ""


def test_list_takes_url_from_environment_and_key_from_option(
    capsys: pytest.CaptureFixture[str],
    api: Api,
    ledger_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session_id = api.create()
    monkeypatch.setenv("SCRAPPEY_API_URL", api.url)
    argv = ["sessions", "list", "--key", KEY, "--ledger-dir", str(ledger_dir)]
    code, out, _ = cli(capsys, *argv, key=None)
    assert code == 0
    assert table(out)[session_id][:2] == ["api", "-"]


def test_list_uses_the_default_ledger_directory(
    capsys: pytest.CaptureFixture[str], api: Api, tmp_path: Path
) -> None:
    default = tmp_path / ".scrapy" / "scrappey-sessions"
    run_and_kill(default, api.url, ["crashed"])
    code, out, _ = cli(capsys, "sessions", "list", "--api-url", api.url)
    assert code == 0
    assert table(out)["crashed"] == ["ledger", "orphan (run dead)", "-", "-"]


# -- sessions cleanup ------------------------------------------------------------


def test_cleanup_destroys_what_dead_runs_left(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    ids = [api.create(), api.create()]
    run_and_kill(ledger_dir, api.url, [*ids, "expired-meanwhile"])
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir)
    assert code == 0
    lines = out.splitlines()
    for session_id in ids:
        assert f"destroyed     {session_id}" in lines
    assert "already gone  expired-meanwhile" in lines
    assert lines[-1] == "2 destroyed, 1 already gone, 0 failed (of 3)"
    assert api.open_ids() == []
    assert dir_files(ledger_dir) == []


def test_cleanup_leaves_live_runs_and_untracked_sessions_alone(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    untracked, live, crashed = api.create(), api.create(), api.create()
    run_and_kill(ledger_dir, api.url, [crashed])
    with SessionLedger(ledger_dir, api_url=api.url, api_key=KEY) as running:
        running.record(live)
        code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir)
        assert recorded_ids(running) == [live]
        running.forget(live)
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == [
        f"destroyed     {crashed}",
        "1 destroyed, 0 already gone, 0 failed (of 1)",
    ]
    assert lines[2].startswith("2 other open session(s) left alone")
    assert "sessions cleanup --all --yes" in lines[2]
    assert sorted(api.open_ids()) == sorted([untracked, live])


def test_cleanup_with_nothing_to_do(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir)
    assert code == 0
    assert out == "Nothing to clean up: no sessions left by dead runs.\n"
    api.create()
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir)
    assert code == 0
    assert "1 other open session(s) left alone" in out
    assert len(api.open_ids()) == 1


def test_cleanup_all_destroys_every_session(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    untracked, crashed = api.create(), api.create()
    run_and_kill(ledger_dir, api.url, [crashed, "expired-meanwhile"])
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir, "--all", "--yes")
    assert code == 0
    lines = out.splitlines()
    assert f"destroyed     {untracked}" in lines
    assert f"destroyed     {crashed}" in lines
    assert "already gone  expired-meanwhile" in lines
    assert lines[-1] == "2 destroyed, 1 already gone, 0 failed (of 3)"
    assert api.open_ids() == []
    assert dir_files(ledger_dir) == []


def test_cleanup_all_requires_yes(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    api.create()
    code, out, err = sessions(capsys, "cleanup", api.url, ledger_dir, "--all")
    assert code == 2
    assert out == ""
    assert "usage:" in err
    assert "--yes" in err
    assert len(api.open_ids()) == 1


def test_cleanup_reports_failures_and_keeps_them_in_the_ledger(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    stuck, fine = api.create(), api.create()
    run_and_kill(ledger_dir, api.url, [stuck, fine])
    api.set_faults(fail_destroys=1)  # the first destroy, of `stuck`, fails
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir)
    assert code == 1
    lines = out.splitlines()
    assert (
        f"failed        {stuck}: CODE-0031 Request error, please try again: injected fault"
        in lines
    )
    assert f"destroyed     {fine}" in lines
    assert lines[-1] == "1 destroyed, 0 already gone, 1 failed (of 2)"
    remaining = SessionLedger(ledger_dir, api_url=api.url, api_key=KEY).orphans()
    assert [e.session_id for e in remaining] == [stuck]


# -- --redis: the workers' shared ledger -----------------------------------------


@pytest.fixture
def workers(redis_server: Any) -> Iterator[Workers]:
    ledger = Workers(redis_server.url)
    yield ledger
    ledger.client.close()


class Workers:
    """The shared ledger of KEY's workers, written as workers would."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.key = RedisLink(url, KEY).key

    def now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def record(self, worker: str, session_id: str, *, alive: bool) -> None:
        deadline = self.now_ms() + (60_000 if alive else -1_000)
        self.client.zadd(self.key("workers"), {worker: deadline})
        self.client.hset(self.key("owners"), session_id, worker)
        self.client.hset(self.key("slots"), worker, 1)

    def owners(self) -> dict[str, str]:
        return dict(self.client.hgetall(self.key("owners")))


def test_list_with_redis_names_each_owner_alive_or_dead(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path, workers: Workers
) -> None:
    dead, live, plain = api.create(), api.create(), api.create()
    workers.record("w-dead", dead, alive=False)
    workers.record("w-live", live, alive=True)
    workers.record("w-dead", "gone-meanwhile", alive=False)
    argv = ("--redis", workers.url)
    code, out, _ = sessions(capsys, "list", api.url, ledger_dir, *argv)
    assert code == 0
    rows = table(out)
    assert rows[dead][0] == "api+redis"
    assert rows[dead][3] == "w-dead (dead)"
    assert rows[live][3] == "w-live (alive)"
    assert rows[plain][:1] + rows[plain][3:] == ["api", "-"]
    assert rows["gone-meanwhile"] == ["redis", "-", "-", "w-dead (dead)"]
    # Without --redis, the owner comes from the id alone.
    ours = "scrapy-scrappey-box-12-abcdef-0123456789abcdef"
    run_and_kill(ledger_dir, api.url, [ours])
    rows = table(sessions(capsys, "list", api.url, ledger_dir)[1])
    assert rows[ours][3] == "box-12-abcdef"
    assert rows[dead][3] == "-"


def test_cleanup_with_redis_destroys_the_sessions_of_dead_workers(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path, workers: Workers
) -> None:
    dead, live, plain = api.create(), api.create(), api.create()
    workers.record("w-dead", dead, alive=False)
    workers.record("w-live", live, alive=True)
    argv = ("--redis", workers.url)
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir, *argv)
    assert code == 0
    lines = out.splitlines()
    assert f"destroyed     {dead}" in lines
    assert "1 session(s) of dead worker(s) w-dead in Redis" in lines
    assert "1 destroyed, 0 already gone, 0 failed (of 1)" in lines
    assert sorted(api.open_ids()) == sorted([live, plain])
    assert workers.owners() == {live: "w-live"}
    assert workers.client.zrange(workers.key("workers"), 0, -1) == ["w-live"]
    assert workers.client.hkeys(workers.key("slots")) == ["w-live"]
    # No worker alive: every recorded session is a dead worker's.
    workers.client.zrem(workers.key("workers"), "w-live")
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir, *argv)
    assert code == 0
    assert f"destroyed     {live}" in out.splitlines()
    assert api.open_ids() == [plain]
    assert workers.owners() == {}


def test_cleanup_with_redis_keeps_what_it_could_not_destroy(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path, workers: Workers
) -> None:
    dead = api.create()
    workers.record("w-dead", dead, alive=False)
    workers.client.zadd(workers.key("alive"), {"w-dead": workers.now_ms() + 1_000})
    api.set_faults(fail_destroys=1)
    argv = ("--redis", workers.url)
    code, out, _ = sessions(capsys, "cleanup", api.url, ledger_dir, *argv)
    assert code == 1
    assert f"failed        {dead}: CODE-0031" in out
    assert api.open_ids() == [dead]
    # Its session is still open: its slot of the cap keeps counting, pinned
    # for one slot TTL (15 s), not released.
    assert workers.client.hkeys(workers.key("slots")) == ["w-dead"]
    pinned = workers.client.zscore(workers.key("alive"), "w-dead")
    assert pinned > workers.now_ms() + 10_000
    # Owned by the cleanup that gave up, which is gone: the next one retries.
    (owner,) = workers.owners().values()
    assert owner.startswith("cli-")
    assert workers.client.zcard(workers.key("workers")) == 0


def test_redis_unreachable_or_malformed(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path, free_port: int
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port}/0"
    for action in ("list", "cleanup"):
        code, _, err = sessions(capsys, action, api.url, ledger_dir, "--redis", url)
        assert code == 1
        assert f"cannot use Redis at redis://:***@127.0.0.1:{free_port}/0" in err
        assert "--redis" in err
        assert "s3cret" not in err
    code, _, err = sessions(capsys, "list", api.url, ledger_dir, "--redis", "http://h")
    assert code == 2
    assert "--redis must be a redis://" in err


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["list", "cleanup"])
def test_rejected_key(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path, action: str
) -> None:
    wrong = "MARKERKEY1234567890-wrong"
    run_and_kill(ledger_dir, api.url, ["crashed"], key=wrong)
    code, out, err = sessions(capsys, action, api.url, ledger_dir, key=wrong)
    assert code == 1
    assert err == f"python -m scrapy_scrappey: error: {AUTH_MESSAGE}\n"
    assert wrong not in out + err
    # The leftover was not touched.
    assert len(SessionLedger(ledger_dir, api_url=api.url, api_key=wrong).orphans()) == 1


@pytest.mark.parametrize("action", ["list", "cleanup"])
def test_server_down(
    capsys: pytest.CaptureFixture[str], ledger_dir: Path, action: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1"
    run_and_kill(ledger_dir, url, ["crashed"])
    code, out, err = sessions(capsys, action, url, ledger_dir)
    assert code == 1
    assert out == ""
    prefix = "python -m scrapy_scrappey: error: cannot reach the Scrappey API"
    assert err == f"{prefix} at {url} ([Errno 111] Connection refused)\n"
    assert len(SessionLedger(ledger_dir, api_url=url, api_key=KEY).orphans()) == 1


def test_key_in_api_url_is_refused_like_in_a_crawl(
    capsys: pytest.CaptureFixture[str], ledger_dir: Path
) -> None:
    code, out, err = sessions(
        capsys, "list", f"http://127.0.0.1:9/v1?key={KEY}", ledger_dir
    )
    assert code == 2
    assert out == ""
    assert "SCRAPPEY_API_URL must not contain the API key" in err


def test_api_url_with_a_trailing_slash_finds_the_crawls_ledger(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    crashed = api.create()
    run_and_kill(ledger_dir, api.url, [crashed])  # crawls record the normalised URL
    code, out, _ = sessions(capsys, "cleanup", api.url + "/", ledger_dir)
    assert code == 0
    assert f"destroyed     {crashed}" in out.splitlines()
    assert api.open_ids() == []


def _serve(
    answer: Callable[[dict[str, Any] | None], tuple[int, bytes]],
) -> Iterator[str]:
    """Serve *answer* (the posted JSON, or None if not JSON → status and body)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                posted = json.loads(raw)
            except ValueError:
                posted = None
            status, body = answer(posted)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        yield url


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on a thread; yields its API URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api/v1"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


@pytest.fixture
def broken_api() -> Iterator[str]:
    """A server that answers every call with an HTML error page."""
    yield from _serve(lambda _: (502, b"<h1>Bad gateway</h1>"))


@pytest.mark.parametrize("action", ["list", "cleanup"])
def test_broken_api(
    capsys: pytest.CaptureFixture[str], broken_api: str, ledger_dir: Path, action: str
) -> None:
    code, out, err = sessions(capsys, action, broken_api, ledger_dir)
    assert code == 1
    assert out == ""
    assert (
        "sessions.list failed: The Scrappey API answered HTTP 502 with a non-JSON body"
        in err
    )


@pytest.fixture
def destroy_errors_api() -> Iterator[str]:
    """Lists nothing; refuses each destroy with the error named by the session id."""
    errors = {
        "browser-crashed": "Browser closed unexpectedly",  # a SESSION error
        "overloaded": "CODE-0001 Server is overloaded",  # transient
    }

    def answer(command: dict[str, Any] | None) -> tuple[int, bytes]:
        assert command is not None
        if command["cmd"] == "sessions.list":
            reply: dict[str, Any] = {"sessions": [], "open": 0, "limit": 10}
        else:
            reply = {"data": "error", "error": errors[command["session"]]}
        return 200, json.dumps(reply).encode()

    yield from _serve(answer)


def test_already_gone_is_the_api_errors_kind_not_its_wording(
    capsys: pytest.CaptureFixture[str], destroy_errors_api: str, ledger_dir: Path
) -> None:
    run_and_kill(ledger_dir, destroy_errors_api, ["browser-crashed", "overloaded"])
    code, out, _ = sessions(capsys, "cleanup", destroy_errors_api, ledger_dir)
    assert code == 1
    lines = out.splitlines()
    assert "already gone  browser-crashed" in lines  # no "not found" in its text
    assert "failed        overloaded: CODE-0001 Server is overloaded" in lines
    remaining = SessionLedger(
        ledger_dir, api_url=destroy_errors_api, api_key=KEY
    ).orphans()
    assert [e.session_id for e in remaining] == ["overloaded"]


def test_unusable_ledger_directory(
    capsys: pytest.CaptureFixture[str], api: Api, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    code, out, err = sessions(capsys, "cleanup", api.url, not_a_dir / "ledger")
    assert code == 0  # nothing recorded there, so nothing to clean
    assert out == "Nothing to clean up: no sessions left by dead runs.\n"
    (tmp_path / ".scrapy").write_text("")  # the default directory cannot exist
    code, out, err = cli(capsys, "sessions", "cleanup", "--api-url", api.url)
    assert code == 0  # the same for the default directory: reading creates nothing
    assert out == "Nothing to clean up: no sessions left by dead runs.\n"
    assert err == ""


def test_ledger_write_errors_are_reported(
    capsys: pytest.CaptureFixture[str], api: Api, ledger_dir: Path
) -> None:
    run_and_kill(ledger_dir, api.url, [])  # a dead run with nothing left in it
    (run_file,) = ledger_dir.rglob("*.json")
    run_file.with_suffix(".tmp").mkdir()  # deleting the dead run now fails
    code, out, err = sessions(capsys, "cleanup", api.url, ledger_dir)
    assert code == 1
    assert out == ""
    assert err.startswith(
        "python -m scrapy_scrappey: error: cannot use the session ledger: "
    )


def test_missing_key(capsys: pytest.CaptureFixture[str], ledger_dir: Path) -> None:
    code, out, err = sessions(
        capsys, "list", "http://127.0.0.1:9/", ledger_dir, key=None
    )
    assert code == 2
    assert out == ""
    assert "usage:" in err
    assert "SCRAPPEY_API_KEY is not set" in err
    assert "or pass --key." in err


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["sessions", "frobnicate"],
        ["sessions", "list", "--bogus"],
        ["sessions", "list", "--timeout", "0"],
        ["sessions", "list", "--timeout", "soon"],
        ["sessions", "list", "--yes"],
        ["sessions", "list", "--key"],
    ],
)
def test_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage:" in err


@pytest.mark.parametrize("argv", [[], ["sessions"]])
def test_incomplete_command_prints_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("usage: python -m scrapy_scrappey")


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "sessions", "cleanup", "--help")
    assert code == 0
    assert "--all" in out


def test_usage_errors_do_not_echo_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "sessions", "list", KEY)
    assert code == 2
    assert "unrecognized arguments: MARK…" in err


# -- python -m scrapy_scrappey ------------------------------------------------------


def test_module_entry_point(api: Api, ledger_dir: Path) -> None:
    session_id = api.create()
    env = {**os.environ, "SCRAPPEY_API_KEY": KEY}
    cmd = [sys.executable, "-m", "scrapy_scrappey"]
    args = ["sessions", "list", "--api-url", api.url, "--ledger-dir", str(ledger_dir)]
    result = subprocess.run(
        [*cmd, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert session_id in table(result.stdout)
    assert KEY not in result.stdout + result.stderr

    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: python -m scrapy_scrappey")


def test_project_settings_are_used(api: Api, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "myproject").mkdir(parents=True)
    (project / "scrapy.cfg").write_text("[settings]\ndefault = myproject.settings\n")
    (project / "myproject" / "__init__.py").write_text("")
    (project / "myproject" / "settings.py").write_text(
        f"SCRAPPEY_API_URL = {api.url!r}\n"
        f"SCRAPPEY_API_KEY = {KEY!r}\n"
        "SCRAPPEY_LEDGER_DIR = 'sessions-ledger'\n"
    )
    run_and_kill(project / "sessions-ledger", api.url, ["crashed"])
    cmd = [sys.executable, "-m", "scrapy_scrappey", "sessions", "list"]
    result = subprocess.run(
        cmd, cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert table(result.stdout)["crashed"] == ["ledger", "orphan (run dead)", "-", "-"]
    assert KEY not in result.stdout + result.stderr
    # The options win over the project's settings.
    other = tmp_path / "other-ledger"
    run_and_kill(other, api.url, ["elsewhere"])
    result = subprocess.run(
        [*cmd, "--ledger-dir", str(other)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(table(result.stdout)) == {"elsewhere"}


def test_a_redirect_of_the_api_is_not_followed(
    capsys: pytest.CaptureFixture[str], ledger_dir: Path
) -> None:
    moved: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.startswith("/moved"):
                moved.append(self.path)
            self.send_response(307)
            self.send_header("Location", "/moved")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        code, out, err = sessions(capsys, "list", url, ledger_dir)
    assert code == 1
    assert out == ""
    assert "HTTP 307" in err
    assert "SCRAPPEY_API_URL" in err
    assert moved == []


# -- balance -----------------------------------------------------------------------


def test_balance_prints_what_the_server_charged(
    capsys: pytest.CaptureFixture[str], make_server_process: Any
) -> None:
    flags = ["--balance", "2", "--prices", "request=0.5", "--static-body", "<p>x</p>"]
    server = make_server_process(*flags)
    page = {"cmd": "request.get", "url": "http://127.0.0.1:9/"}
    reply = requests.post(server.url, params={"key": KEY}, json=page, timeout=10)
    assert reply.json()["data"] == "success"
    assert cli(capsys, "balance", "--api-url", server.url) == (0, "1.5\n", "")


def test_balance_with_a_rejected_key(
    capsys: pytest.CaptureFixture[str], api: Api
) -> None:
    wrong = "MARKERKEY1234567890-wrong"
    code, out, err = cli(capsys, "balance", "--api-url", api.url, key=wrong)
    assert (code, out) == (1, "")
    assert err == f"python -m scrapy_scrappey: error: {AUTH_MESSAGE}\n"
    assert wrong not in err


def test_balance_endpoint_missing_or_down(
    capsys: pytest.CaptureFixture[str], api: Api
) -> None:
    elsewhere = api.url.replace("/api/v1", "/other/v1")
    code, out, err = cli(capsys, "balance", "--api-url", elsewhere)
    assert (code, out) == (1, "")
    assert err == (
        f"python -m scrapy_scrappey: error: cannot read the balance at {elsewhere}: "
        "Unreadable Scrappey API reply: the balance endpoint answered HTTP 404\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"
    code, out, err = cli(capsys, "balance", "--api-url", down, "--key", KEY, key=None)
    assert (code, out) == (1, "")
    assert err == (
        "python -m scrapy_scrappey: error: cannot reach the Scrappey API at "
        f"{down} ([Errno 111] Connection refused)\n"
    )
