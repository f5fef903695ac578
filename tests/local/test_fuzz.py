"""Fuzzing the local server: whatever arrives, a JSON envelope comes back.

Hypothesis generates command bodies (any JSON value, mutated valid commands,
random bytes, deep nesting, huge strings, odd text and body encodings) and
``/__local__/faults`` bodies, sent to a server subprocess whose memory is
measured. The runs are derandomized and bounded, so they are reproducible and
take seconds. Targets of ``request.*`` are the server's own small routes and a
closed port on 127.0.0.1: nothing else is ever fetched.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import subprocess
import sys
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._support import first_line

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY = "FUZZKEY-0123456789"
ENVELOPE = {"data", "error", "solution", "timeElapsed"}
# Head room over the RSS after warm-up: about twice what a run takes. Keeping
# every huge string sent, as the command log once did, takes over 200 MB.
RSS_HEADROOM = 80 * 1024 * 1024
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Served:
    """A server subprocess and how to talk to it."""

    proc: subprocess.Popen[str]
    port: int
    stderr: Path

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, str, bytes]:
        """One request on a fresh connection: status, content type, body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("POST", path, body=body, headers=headers or {})
            response = connection.getresponse()
            return (
                response.status,
                response.getheader("Content-Type", ""),
                response.read(),
            )
        finally:
            connection.close()

    def command(self, body: bytes, headers: dict[str, str] | None = None) -> Any:
        status, content_type, data = self.post(f"/api/v1?key={KEY}", body, headers)
        assert status == 200, data[:300]
        assert content_type.startswith("application/json")
        return json.loads(data)

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def targets(self) -> list[str]:
        base = f"http://127.0.0.1:{self.port}"
        return [
            f"{base}/api/v1/balance",  # small JSON; 405 envelope for a POST
            f"{base}/nowhere",  # 404 envelope
            f"http://localhost:{self.port}/api/v1/balance",
            "http://127.0.0.1:1/closed",  # connection refused
        ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    stderr_path = tmp_path_factory.mktemp("fuzz") / "stderr.txt"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scrapy_scrappey.local",
                "--port",
                "0",
                "--api-key",
                KEY,
                "--log-level",
                "WARNING",
                "--max-sessions",
                "20",
                "--read-timeout",
                "10",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        port = urlsplit(first_line(proc)).port
        assert port is not None
        yield Served(proc, port, stderr_path)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=15)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- strategies --------------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "",
        "\ud800",
        "a\udfffb",
        "\x00",
        "\r\nX-Injected: 1",
        "é",
        "😀",
        "a b;",
        "expires",
        "NaN",
        "../..",
        "%00",
        "\u202e",
    ]
)
TEXT = st.one_of(st.text(max_size=30), ODD_TEXT)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
COMMANDS = st.sampled_from(
    [
        "request.get",
        "request.post",
        "request.put",
        "request.patch",
        "request.delete",
        "sessions.create",
        "sessions.destroy",
        "sessions.list",
        "sessions.active",
    ]
)
FIELDS = st.sampled_from(
    [
        "cmd",
        "url",
        "session",
        "postData",
        "customHeaders",
        "cookies",
        "cookiejar",
        "timeout",
        "userAgent",
        "referer",
        "browser",
        "locales",
        "innerText",
        "base64Response",
        "listAllRedirects",
        "closeAfterUse",
        "proxy",
    ]
)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _nested(depth: int, kind: str) -> str:
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    return opening * depth + "0" + closing * depth


@st.composite
def valid_commands(draw: st.DrawFn, targets: list[str]) -> dict[str, Any]:
    """A command the server would serve as it is."""
    cmd = draw(COMMANDS)
    body: dict[str, Any] = {"cmd": cmd}
    session = draw(st.sampled_from([None, "fuzz-a", "fuzz-b"]))
    if session is not None:
        body["session"] = session
    if cmd.startswith("request."):
        body["url"] = draw(st.sampled_from(targets))
        body.update(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "postData": st.one_of(TEXT, st.dictionaries(TEXT, TEXT)),
                        "customHeaders": st.sampled_from([FORM, {"X-A": "1"}]),
                        "cookiejar": st.just([{"key": "k", "value": "v"}]),
                        "cookies": st.just("a=1"),
                        "timeout": st.integers(1, 5000),
                        "innerText": st.booleans(),
                        "base64Response": st.booleans(),
                        "listAllRedirects": st.booleans(),
                        "closeAfterUse": st.booleans(),
                    },
                )
            )
        )
    elif cmd == "sessions.create":
        body["browser"] = [{"name": draw(st.sampled_from(["chrome", "firefox"]))}]
    return body


@st.composite
def mutated_commands(draw: st.DrawFn, targets: list[str]) -> dict[str, Any]:
    """A valid command with some fields replaced, dropped or added."""
    body = draw(valid_commands(targets))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(FIELDS)
        action = draw(st.sampled_from(["replace", "drop", "odd"]))
        if action == "drop":
            body.pop(field, None)
        elif action == "odd" and field == "customHeaders":
            body[field] = draw(st.dictionaries(TEXT, TEXT, max_size=2))
        elif action == "odd" and field == "cookiejar":
            body[field] = [
                {"key": draw(TEXT), "value": draw(TEXT), "domain": draw(TEXT)}
            ]
        elif action == "odd" and field == "url":
            # Never a host other than 127.0.0.1/localhost: odd paths only.
            body[field] = draw(st.sampled_from(targets)) + draw(TEXT)
        else:
            body[field] = draw(JSON_VALUES)
    if body.get("url") not in targets and isinstance(body.get("url"), str):
        # A random string can look like http://some-host/: keep it unfetchable.
        body["url"] = "nohost" + body["url"]
    return body


@st.composite
def command_bodies(draw: st.DrawFn, targets: list[str]) -> tuple[bytes, dict[str, str]]:
    """Raw body bytes and request headers."""
    # "huge" twice: memory is only bounded if it holds over many of them.
    kind = draw(
        st.sampled_from(
            ["value", "valid", "mutated", "bytes", "deep", "huge", "huge", "encoded"]
        )
    )
    body: bytes
    if kind == "value":
        body = json.dumps(draw(JSON_VALUES)).encode()
    elif kind == "valid":
        body = json.dumps(draw(valid_commands(targets))).encode()
    elif kind == "mutated":
        body = json.dumps(draw(mutated_commands(targets))).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "deep":
        depth = draw(st.integers(50, 5000))
        nested = _nested(depth, draw(st.sampled_from(["list", "dict"])))
        where = draw(st.sampled_from(["body", "postData", "locales"]))
        text = (
            nested
            if where == "body"
            else (
                f'{{"cmd": "request.post", "url": "{targets[0]}", '
                f'"customHeaders": {json.dumps(FORM)}, "{where}": {nested}}}'
            )
        )
        body = text.encode()
    elif kind == "huge":
        size = draw(st.sampled_from([500_000, 1_000_000, 2_000_000, 4_000_000]))
        field = draw(st.sampled_from(["url", "session", "url", "postData"]))
        command = {"cmd": "request.get", "url": targets[0], field: "x" * size}
        if field == "url":
            command["url"] = targets[1] + "?q=" + "x" * size
        body = json.dumps(command).encode()
    else:
        text = json.dumps(draw(valid_commands(targets)), ensure_ascii=False)
        codec = draw(
            st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "utf-8-sig"])
        )
        body = text.encode(codec, errors="replace")
    return _encode(draw, body)


def _encode(draw: st.DrawFn, body: bytes) -> tuple[bytes, dict[str, str]]:
    coding = draw(st.sampled_from([None, None, "gzip", "deflate", "br", "identity"]))
    if coding is None:
        return body, {}
    if draw(st.booleans()):  # sometimes really encoded, sometimes only declared
        body = (
            gzip.compress(body)
            if coding == "gzip"
            else (zlib.compress(body) if coding == "deflate" else body)
        )
    return body, {"Content-Encoding": coding}


FAULT_FIELDS = st.sampled_from(
    [
        "latency",
        "error_rate",
        "error_codes",
        "http_502_rate",
        "truncated_rate",
        "slow_rate",
        "slow_seconds",
        "expire_after_requests",
        "fail_creates",
        "fail_destroys",
        "seed",
        "bogus",
    ]
)
FAULT_VALUES = st.one_of(
    JSON_VALUES,
    st.floats(0, 1),
    st.dictionaries(COMMANDS, st.one_of(NUMBERS, TEXT), max_size=2),
    st.lists(st.sampled_from(["CODE-0001", "CODE-9999", "x"]), max_size=3),
)


# -- tests -------------------------------------------------------------------


def _check_envelope(reply: Any) -> None:
    assert isinstance(reply, dict)
    assert reply.get("data") in ("success", "error"), reply
    if reply["data"] == "error":
        assert isinstance(reply["error"], str)
        assert "CODE-10000" not in reply["error"], reply["error"]  # a server bug
        # Bad input must be named, not fail the fetch as a transient error.
        assert "ValueError" not in reply["error"], reply["error"]
        assert reply["solution"] == {"verified": False}


def test_fuzzed_commands_always_get_an_envelope(served: Served) -> None:
    targets = served.targets()
    # Warm-up, so that the RSS baseline includes the lazily built HTTP client.
    for target in targets:
        served.command(json.dumps({"cmd": "request.get", "url": target}).encode())
    baseline = served.rss()
    peak = [baseline]

    @settings(FUZZ, max_examples=1000)
    @given(command_bodies(targets))
    def run(case: tuple[bytes, dict[str, str]]) -> None:
        body, headers = case
        _check_envelope(served.command(body, headers))
        peak[0] = max(peak[0], served.rss())

    run()
    after = served.command(b'{"cmd": "sessions.list"}')
    fetched = served.command(
        json.dumps({"cmd": "request.get", "url": targets[0]}).encode()
    )
    log = served.log()
    assert after["data"] == "success"
    assert fetched["data"] == "success"
    assert fetched["solution"]["statusCode"] == 401  # the balance wants a key
    assert peak[0] - baseline < RSS_HEADROOM, (baseline, peak[0])
    assert "Traceback" not in log
    assert KEY not in log


def test_fuzzed_faults_always_get_an_envelope(served: Served) -> None:
    @settings(FUZZ, max_examples=300)
    @given(
        st.one_of(
            st.dictionaries(FAULT_FIELDS, FAULT_VALUES, max_size=4).map(
                lambda d: json.dumps(d).encode()
            ),
            JSON_VALUES.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=100),
            st.integers(50, 5000).map(lambda n: _nested(n, "list").encode()),
        )
    )
    def run(body: bytes) -> None:
        status, content_type, data = served.post("/__local__/faults", body)
        reply = json.loads(data)
        assert content_type.startswith("application/json")
        if status == 200:
            assert set(reply) >= {"error_rate", "latency", "seed"}
        else:
            assert status == 400, data[:300]
            assert set(reply) == ENVELOPE
            _check_envelope(reply)
        # Back to no faults: a fuzzed latency must not slow later examples.
        assert served.post("/__local__/faults", b"{}")[0] == 200

    run()
    after = served.command(b'{"cmd": "sessions.list"}')
    assert after["data"] == "success"
    assert "Traceback" not in served.log()


def test_malformed_request_line_stays_out_of_the_log(served: Served) -> None:
    with contextlib.closing(
        http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    ) as connection:
        connection.connect()
        assert connection.sock is not None
        connection.sock.sendall(f"GET /api/v1?key={KEY} HTTP/1.1 junk\r\n\r\n".encode())
        # The server closes the connection after its answer.
        reply = b"".join(iter(lambda: connection.sock.recv(65536), b""))  # type: ignore[union-attr]
    assert reply.startswith(b"HTTP/1.0 400 ")
    assert KEY.encode() not in reply
    assert b'"data": "error"' in reply
    assert KEY not in served.log()
