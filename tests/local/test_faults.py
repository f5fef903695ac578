"""Fault injection: every knob, the seed, and the runtime controls."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.codes import TRANSIENT_CODES, find_code
from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.faults import FaultInjector

from ._support import harness


@deferred_f_from_coro_f
async def test_latency_per_command() -> None:
    faults = Faults(latency={"sessions.create": 0.2, "request.get": 0.25})
    async with harness(faults=faults) as h:
        started = time.monotonic()
        sid = await h.api.create()
        create_time = time.monotonic() - started
        answered = []

        async def send(cmd: str, **fields: object) -> dict[str, object]:
            reply = await h.api.cmd(cmd, **fields)
            answered.append(cmd)
            return reply

        # sessions.list has no latency: sent after the slow request.get, it
        # is answered first.
        get = asyncio.ensure_future(
            send("request.get", url=h.site.url("/html"), session=sid)
        )
        await asyncio.sleep(0.05)
        await send("sessions.list")
        reply = await get
    assert create_time >= 0.2
    assert reply["timeElapsed"] >= 250
    assert answered == ["sessions.list", "request.get"]


@deferred_f_from_coro_f
async def test_error_rate_with_chosen_code() -> None:
    async with harness(faults=Faults(error_rate=1.0, error_codes=("CODE-0001",))) as h:
        sid = await h.api.create()
        reply = await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        listed = await h.api.cmd("sessions.list")
        stats = h.server.stats()
    assert reply["data"] == "error"
    assert reply["error"] == "CODE-0001 Server is overloaded: injected fault"
    assert reply["solution"] == {"verified": False}
    assert reply["session"] == sid
    assert listed["data"] == "success"  # faults leave sessions.* alone
    assert stats["faults"]["errors"] == 1
    assert h.server.balance == 1000.0


@deferred_f_from_coro_f
async def test_error_codes_default_to_transient_ones() -> None:
    async with harness(faults=Faults(error_rate=1.0, seed=3)) as h:
        replies = [
            await h.api.cmd("request.get", url=h.site.url("/html")) for _ in range(15)
        ]
    codes = {find_code(r["error"]) for r in replies}
    assert codes <= set(TRANSIENT_CODES)
    assert len(codes) > 3


@deferred_f_from_coro_f
async def test_http_502_rate() -> None:
    async with harness(faults=Faults(http_502_rate=1.0)) as h:
        status, content_type, text = await h.api.raw(
            {"cmd": "request.get", "url": h.site.url("/html")}
        )
        stats = h.server.stats()
    assert status == 502
    assert content_type == "text/html"
    assert "<title>502 Bad Gateway</title>" in text
    assert stats["faults"]["http_502"] == 1


@deferred_f_from_coro_f
async def test_truncated_rate() -> None:
    async with harness(faults=Faults(truncated_rate=1.0)) as h:
        status, content_type, text = await h.api.raw(
            {"cmd": "request.get", "url": h.site.url("/html")}
        )
        stats = h.server.stats()
    assert status == 200
    assert content_type == "application/json"
    assert text.startswith('{"solution": {"verified": true')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert stats["faults"]["truncated"] == 1


@deferred_f_from_coro_f
async def test_slow_rate() -> None:
    async with harness(faults=Faults(slow_rate=1.0, slow_seconds=0.3)) as h:
        reply = await h.api.cmd("request.get", url=h.site.url("/html"))
        stats = h.server.stats()
    assert reply["data"] == "success"
    assert reply["timeElapsed"] >= 300
    assert stats["faults"]["slow"] == 1


@deferred_f_from_coro_f
async def test_expire_after_requests() -> None:
    async with harness(faults=Faults(expire_after_requests=2)) as h:
        sid = await h.api.create()
        url = h.site.url("/html")
        first = await h.api.cmd("request.get", url=url, session=sid)
        second = await h.api.cmd("request.get", url=url, session=sid)
        third = await h.api.cmd("request.get", url=url, session=sid)
        stats = h.server.stats()
    assert first["data"] == second["data"] == "success"
    assert third["error"] == f"Session not found: {sid}"
    assert stats["sessions"]["expired"] == 1
    assert stats["open_sessions"] == []


@deferred_f_from_coro_f
async def test_fail_creates() -> None:
    async with harness(faults=Faults(fail_creates=2)) as h:
        first = await h.api.cmd("sessions.create")
        second = await h.api.cmd("sessions.create", session="x")
        third = await h.api.cmd("sessions.create", session="x")
        stats = h.server.stats()
    assert find_code(first["error"]) == "CODE-0029"
    assert "session" not in first
    assert second["error"].startswith("CODE-0029 Too many sessions open")
    assert second["session"] == "x"
    assert third["data"] == "success"
    assert stats["faults"]["create_failures"] == 2
    assert stats["sessions"]["created"] == 1


@deferred_f_from_coro_f
async def test_over_limit_window() -> None:
    async with harness(faults=Faults(over_limit_seconds=0.5)) as h:
        refused = [await h.api.cmd("sessions.create") for _ in range(3)]
        await asyncio.sleep(0.6)
        accepted = await h.api.cmd("sessions.create")
        stats = h.server.stats()
    assert [find_code(r["error"]) for r in refused] == ["CODE-0029"] * 3
    assert accepted["data"] == "success"
    assert stats["faults"]["create_failures"] == 3
    assert stats["sessions"]["created"] == 1


def test_over_limit_seconds_validated() -> None:
    with pytest.raises(ValueError, match="over_limit_seconds"):
        Faults(over_limit_seconds=-1)


@deferred_f_from_coro_f
async def test_injected_errors_counted_per_session() -> None:
    async with harness(faults=Faults(error_rate=1.0, error_codes=("CODE-0010",))) as h:
        sid = await h.api.create()
        for _ in range(2):
            await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        await h.api.cmd("request.get", url=h.site.url("/html"))
        stats = h.server.stats()
    assert stats["faults"]["errors"] == 3
    assert stats["errors_by_session"] == {sid: [1, 2]}


@deferred_f_from_coro_f
async def test_fail_destroys() -> None:
    async with harness(faults=Faults(fail_destroys=1)) as h:
        sid = await h.api.create()
        first = await h.api.cmd("sessions.destroy", session=sid)
        second = await h.api.cmd("sessions.destroy", session=sid)
        stats = h.server.stats()
    assert first["error"] == "CODE-0031 Request error, please try again: injected fault"
    assert first["session"] == sid
    assert second["data"] == "success"
    assert stats["faults"]["destroy_failures"] == 1
    assert stats["sessions"]["destroyed"] == 1


async def _outcomes(seed: int) -> list[str]:
    async with harness(
        faults=Faults(error_rate=0.5, truncated_rate=0.5, seed=seed)
    ) as h:
        outcomes = []
        for _ in range(12):
            _, _, text = await h.api.raw(
                {"cmd": "request.get", "url": h.site.url("/json")}
            )
            outcomes.append(
                find_code(text) or ("truncated" if text[-1] != "}" else "ok")
            )
        return outcomes


@deferred_f_from_coro_f
async def test_seed_makes_faults_reproducible() -> None:
    first, second, other = await _outcomes(11), await _outcomes(11), await _outcomes(12)
    assert first == second
    assert first != other
    assert {"ok", "truncated"} <= set(first)
    assert any(o.startswith("CODE-") for o in first)


@deferred_f_from_coro_f
async def test_faults_change_at_runtime() -> None:
    async with harness() as h:
        url = h.site.url("/html")
        assert (await h.api.cmd("request.get", url=url))["data"] == "success"
        h.server.faults = Faults(error_rate=1.0, error_codes=("CODE-0024",))
        assert (
            find_code((await h.api.cmd("request.get", url=url))["error"]) == "CODE-0024"
        )
        h.server.faults.error_rate = 0.0  # in-place changes apply to the next command
        assert (await h.api.cmd("request.get", url=url))["data"] == "success"
        h.server.faults.fail_creates = 1
        assert (await h.api.cmd("sessions.create"))["data"] == "error"
        assert (await h.api.cmd("sessions.create"))["data"] == "success"


@deferred_f_from_coro_f
async def test_faults_over_http() -> None:
    async with harness() as h:
        status, body = await h.api.local(
            "POST",
            "/__local__/faults",
            {"error_rate": 1.0, "error_codes": ["CODE-0005"]},
        )
        assert status == 200
        assert body["error_rate"] == 1.0
        assert body["error_codes"] == ["CODE-0005"]
        assert body["fail_creates"] == 0
        reply = await h.api.cmd("request.get", url=h.site.url("/html"))
        assert find_code(reply["error"]) == "CODE-0005"
        assert h.server.faults.error_codes == ("CODE-0005",)
        status, current = await h.api.local("GET", "/__local__/faults")
        assert (status, current) == (200, body)
        status, error = await h.api.local(
            "POST", "/__local__/faults", {"error_rate": 2}
        )
        assert status == 400
        assert "error_rate" in error["error"]
        status, error = await h.api.local("POST", "/__local__/faults", {"nope": 1})
        assert status == 400
        assert "nope" in error["error"]
        status, error = await h.api.local("POST", "/__local__/faults", [1])
        assert status == 400
        status, _ = await h.api.local("POST", "/__local__/faults", {})
        assert status == 200
        assert (await h.api.cmd("request.get", url=h.site.url("/html")))[
            "data"
        ] == "success"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"http_502_rate": -0.1}, "http_502_rate"),
        ({"truncated_rate": "x"}, "truncated_rate"),
        ({"slow_rate": True}, "slow_rate"),
        ({"slow_seconds": -1}, "slow_seconds"),
        ({"slow_seconds": float("nan")}, "slow_seconds"),
        ({"slow_seconds": float("inf")}, "slow_seconds"),
        ({"slow_seconds": 10**400}, "slow_seconds"),
        ({"latency": {"request.get": float("nan")}}, "request.get"),
        ({"latency": {"request.get": 10**400}}, "request.get"),
        ({"error_rate": float("nan")}, "error_rate"),
        ({"error_codes": [["CODE-0001"]]}, "error_codes"),
        ({"error_codes": [7]}, "error_codes"),
        ({"error_codes": ["CODE-9999"]}, "CODE-9999"),
        ({"error_codes": []}, "error_codes"),
        ({"latency": {"request.fly": 1}}, "request.fly"),
        ({"latency": {"request.get": -1}}, "request.get"),
        ({"expire_after_requests": 0}, "expire_after_requests"),
        ({"fail_creates": -1}, "fail_creates"),
        ({"fail_destroys": 1.5}, "fail_destroys"),
        ({"seed": "abc"}, "seed"),
        ({"latency": 3}, "latency"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_faults_are_rejected(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults.from_dict(fields)


def test_faults_round_trip_and_single_code_string() -> None:
    faults = Faults(latency={"sessions.destroy": 5.0}, error_codes="CODE-0001", seed=4)  # type: ignore[arg-type]
    assert faults.error_codes == ("CODE-0001",)
    assert Faults.from_dict(faults.to_dict()) == faults
    assert json.loads(json.dumps(faults.to_dict()))["latency"] == {
        "sessions.destroy": 5.0
    }


def test_zero_rates_draw_nothing() -> None:
    # Turning on one knob must not shift the random sequence of another.
    injector = FaultInjector(Faults(error_rate=0.5, seed=9, truncated_rate=0.0))
    reference = FaultInjector(Faults(error_rate=0.5, seed=9))
    plans = [injector.plan_request("request.get") for _ in range(20)]
    assert plans == [reference.plan_request("request.get") for _ in range(20)]


@deferred_f_from_coro_f
async def test_latency_counts_toward_concurrency_window() -> None:
    async with harness(faults=Faults(latency={"request.get": 0.15})) as h:
        sid = await h.api.create()
        await asyncio.gather(
            *(
                h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
                for _ in range(2)
            )
        )
        assert h.server.stats()["max_concurrent_per_session"] == 2
