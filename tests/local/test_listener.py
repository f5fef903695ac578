"""The HTTP layer: envelopes for HTTP-level errors, read timeouts, no echoed keys.

Most of these talk raw HTTP over asyncio streams, as a broken or hostile
client would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults, server

from ._support import harness

KEY = "SECRETKEY-0123456789"
# Only a guard against a hung test, never an expected duration.
GUARD = 20.0
ENVELOPE_KEYS = {"data", "error", "solution", "timeElapsed"}


async def _send(port: int, data: bytes) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def _read_reply(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP reply."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    body = await asyncio.wait_for(reader.readexactly(length), GUARD)
    return int(status_line.split()[1]), headers, body


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), GUARD) == b""


def _envelope(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/json")
    reply: dict[str, Any] = json.loads(body)
    assert set(reply) == ENVELOPE_KEYS
    assert reply["data"] == "error"
    assert reply["solution"] == {"verified": False}
    return reply


@deferred_f_from_coro_f
async def test_unfinished_headers_are_cut_off() -> None:
    async with harness(read_timeout=0.3) as h:
        reader, writer = await _send(
            h.server.port, b"POST /api/v1 HTTP/1.1\r\nHost: x\r\nContent-Le"
        )
        closed = await _closed_by_server(reader)
        writer.close()
        after = await h.api.cmd("sessions.list")
        stats = h.server.stats()
    assert closed
    assert after["data"] == "success"
    assert stats["requests"]["total"] == 1


@deferred_f_from_coro_f
async def test_short_body_is_answered_408_and_closed() -> None:
    async with harness(read_timeout=0.3) as h:
        reader, writer = await _send(
            h.server.port,
            b"POST /api/v1?key=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        )
        status, headers, body = await _read_reply(reader)
        closed = await _closed_by_server(reader)
        writer.close()
        after = await h.api.cmd("sessions.list")
        stats = h.server.stats()
    assert status == 408
    assert headers["connection"] == "close"
    assert _envelope(headers, body)["error"] == (
        "Request Timeout: POST /api/v1: the request body did not arrive within 0.3 s"
    )
    assert closed
    assert after["data"] == "success"
    assert stats["requests"]["by_command"] == {"sessions.list": 1}


@deferred_f_from_coro_f
async def test_serving_time_is_not_read_time() -> None:
    # The timeout covers receiving a request, not a slow command.
    faults = Faults(latency={"sessions.list": 0.6})
    async with harness(read_timeout=0.2, faults=faults) as h:
        first = await h.api.cmd("sessions.list")
        second = await h.api.cmd("sessions.list")  # on the kept-alive connection
    assert first["data"] == second["data"] == "success"


MALFORMED = [
    b"GET /api/v1?key=" + KEY.encode() + b" HTTP/1.1 junk\r\n\r\n",
    b"G\x00T /api/v1?key=" + KEY.encode() + b" HTTP/1.1\r\n\r\n",
    b"POST /api/v1?key=" + KEY.encode() + b"\x00 HTTP/1.1\r\n\r\n",
    b"POST /api/v1?key=" + KEY.encode() + b" HTTP/7.0\r\n\r\n",
    b"POST /api/v1?a=1&key=" + KEY.encode() + b"x" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"POST /api/v1 HTTP/1.1\r\nX-Key " + KEY.encode() + b": 1\r\n\r\n",
    b"POST /api/v1 HTTP/1.1\r\nContent-Length: " + KEY.encode() + b"\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
@deferred_f_from_coro_f
async def test_malformed_request_is_an_envelope_without_echo(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with harness() as h:
        reader, writer = await _send(h.server.port, request_bytes)
        status, headers, body = await _read_reply(reader)
        closed = await _closed_by_server(reader)
        writer.close()
        after = await h.api.cmd("sessions.list")
    assert status == 400
    reply = _envelope(headers, body)
    assert reply["error"].startswith("Bad HTTP request: ")
    assert len(reply["error"]) > len("Bad HTTP request: ")
    assert KEY not in body.decode("latin-1")
    assert KEY[:10] not in caplog.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert closed
    assert after["data"] == "success"


@deferred_f_from_coro_f
async def test_wrong_path_and_method_are_envelopes() -> None:
    async with harness() as h:
        base = h.server.base_url
        replies = []
        for method, url in (
            ("GET", f"{base}/nope?key={KEY}"),
            ("GET", f"{h.server.url}?key={KEY}"),
            ("DELETE", f"{base}/__local__/stats"),
        ):
            async with h.api.http.request(method, url) as response:
                assert response.content_type == "application/json"
                replies.append((response.status, await response.json()))
        after = await h.api.cmd("sessions.list")
    assert [status for status, _ in replies] == [404, 405, 405]
    assert [set(reply) for _, reply in replies] == [ENVELOPE_KEYS] * 3
    assert [reply["error"] for _, reply in replies] == [
        "Not Found: GET /nope",
        "Method Not Allowed: GET /api/v1 (allowed: POST)",
        "Method Not Allowed: DELETE /__local__/stats (allowed: GET, HEAD)",
    ]
    assert after["data"] == "success"


@deferred_f_from_coro_f
async def test_oversized_bodies_are_envelopes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "_MAX_BODY", 1024)
    small = json.dumps({"cmd": "sessions.list", "pad": "x" * 900}).encode()
    bomb = gzip.compress(
        json.dumps({"cmd": "sessions.list", "pad": "x" * 5000}).encode()
    )
    async with harness() as h:
        replies = []
        for data, headers in (
            (b"x" * 4096, {}),
            (bomb, {"Content-Encoding": "gzip"}),
            (small, {}),
        ):
            async with h.api.http.post(
                h.server.url, data=data, headers=headers
            ) as response:
                replies.append((response.status, await response.json()))
    (big_status, big), (bomb_status, inflated), (ok_status, ok) = replies
    assert (big_status, bomb_status, ok_status) == (413, 413, 200)
    assert big["error"] == (
        "Request Entity Too Large: POST /api/v1: "
        "Maximum request body size 1024 exceeded."
    )
    assert inflated["error"] == big["error"]  # decoded size counts
    assert set(big) == set(inflated) == ENVELOPE_KEYS
    assert ok["data"] == "success"
