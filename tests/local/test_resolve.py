"""Host overrides: ``resolve=`` / ``--resolve``, many domains on 127.0.0.1."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from scrapy.utils.defer import deferred_f_from_coro_f
from yarl import URL

from scrapy_scrappey.local import LocalScrappey
from scrapy_scrappey.local.__main__ import main
from scrapy_scrappey.local.engine import HttpEngine
from scrapy_scrappey.local.engine_choice import missing_browser
from scrapy_scrappey.local.resolve import (
    address_for,
    chromium_args,
    parse_resolve,
    parse_resolve_args,
)

from ._support import Api, harness

if TYPE_CHECKING:
    from tests.browser_site import BrowserSite
    from tests.reliability_support import ServerProcess

RESOLVE = {"*.test": "127.0.0.1", "shop.example": "127.0.0.1"}


def _on(url: str, host: str) -> str:
    """*url* with its host replaced by *host* (same port and path)."""
    return str(URL(url).with_host(host))


async def _echo(api: Api, url: str, **fields: Any) -> dict[str, Any]:
    reply = await api.cmd("request.get", url=url, **fields)
    assert reply["data"] == "success", reply
    echoed: dict[str, Any] = json.loads(reply["solution"]["response"])
    return echoed


def test_rules_match_whole_hosts_case_insensitively_first_match_wins() -> None:
    rules = parse_resolve({"*.test": "127.0.0.1", "a?.example": "::1", "*": "10.0.0.1"})
    assert address_for(rules, "Shop.TEST.") == "127.0.0.1"
    assert address_for(rules, "deep.sub.test") == "127.0.0.1"
    assert address_for(rules, "a1.example") == "::1"
    assert address_for(rules, "test") == "10.0.0.1"  # "*.test" needs a label
    assert address_for(rules[:2], "a12.example") is None
    maps = "MAP *.test 127.0.0.1,MAP a?.example [::1],MAP * 10.0.0.1"
    assert chromium_args(rules) == (f"--host-resolver-rules={maps}",)
    assert chromium_args(()) == ()


@pytest.mark.parametrize(
    ("resolve", "message"),
    [
        ({"a b.test": "127.0.0.1"}, "'a b.test' is not a host pattern"),
        ({"[ab].test": "127.0.0.1"}, "'[ab].test' is not a host pattern"),
        ({"": "127.0.0.1"}, "'' is not a host pattern"),
        ({"x.test": "localhost"}, "the address for 'x.test' must be an IP address"),
        ({"x.test": 127}, "must be an IP address, got 127"),
        (["*.test"], "resolve must map host patterns to addresses"),
    ],
)
def test_bad_resolve_is_a_value_error_naming_it(resolve: Any, message: str) -> None:
    with pytest.raises(ValueError, match="resolve") as info:
        LocalScrappey(resolve=resolve)
    assert message in str(info.value)


def test_resolve_args_parse_and_name_the_flag() -> None:
    assert parse_resolve_args(["*.test=127.0.0.1", " b.example = ::1 "]) == {
        "*.test": "127.0.0.1",
        "b.example": "::1",
    }
    with pytest.raises(ValueError, match=r"--resolve wants PATTERN=ADDRESS, got 'x'"):
        parse_resolve_args(["x"])
    with pytest.raises(ValueError, match=r"--resolve: the address for 'x.test'"):
        parse_resolve_args(["x.test=nowhere"])


def test_bad_resolve_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--resolve", "*.test=not-an-ip"])
    assert info.value.code == 2
    assert "--resolve: the address for '*.test'" in capsys.readouterr().err


def test_resolve_with_an_engine_object_is_refused() -> None:
    with pytest.raises(ValueError, match=r"HttpEngine\(resolve=...\)"):
        LocalScrappey(engine=HttpEngine(), resolve=RESOLVE)


@deferred_f_from_coro_f
async def test_http_engine_connects_matching_hosts_to_the_address() -> None:
    async with harness(resolve=RESOLVE) as h:
        port = URL(h.site.base_url).port
        session = await h.api.create()
        for host in ("a.test", "b.test", "shop.example"):
            url = _on(h.site.url(f"/set-cookie?name={host[0]}"), host)
            await h.api.cmd("request.get", url=url, session=session)
        seen = {
            host: await _echo(h.api, _on(h.site.url("/echo"), host), session=session)
            for host in ("a.test", "b.test", "shop.example")
        }
    # The Host header names the URL's host and port; cookies stay per host.
    assert {host: e["headers"]["Host"] for host, e in seen.items()} == {
        "a.test": f"a.test:{port}",
        "b.test": f"b.test:{port}",
        "shop.example": f"shop.example:{port}",
    }
    assert {host: sorted(e["cookies"]) for host, e in seen.items()} == {
        "a.test": ["a", "plain"],
        "b.test": ["b", "plain"],
        "shop.example": ["plain", "s"],
    }


@deferred_f_from_coro_f
async def test_cli_resolve_flag(make_server_process: Any) -> None:
    async with harness() as h:
        server: ServerProcess = make_server_process("--resolve", "*.test=127.0.0.1")
        body = {"cmd": "request.get", "url": _on(h.site.url("/echo"), "x.test")}
        async with (
            aiohttp.ClientSession() as http,
            http.post(server.url, json=body) as response,
        ):
            reply = await response.json()
    assert reply["data"] == "success", reply
    echoed = json.loads(reply["solution"]["response"])
    assert echoed["headers"]["Host"] == f"x.test:{URL(h.site.base_url).port}"


@deferred_f_from_coro_f
async def test_browser_engine_maps_hosts_too(
    started: Any, make_local_server: Any, browser_site: BrowserSite
) -> None:
    missing = missing_browser()
    if missing is not None:
        pytest.skip(f"browser engine unavailable: {missing}")
    server = await make_local_server(engine="browser", resolve=RESOLVE)
    api = Api(await started(aiohttp.ClientSession()), server, None)
    reply = await api.cmd(
        "request.get",
        url=_on(browser_site.url("/echo"), "shop.example"),
        innerText=True,
    )
    assert reply["data"] == "success", reply
    echoed = json.loads(reply["solution"]["innerText"])
    assert echoed["headers"]["Host"] == f"shop.example:{URL(browser_site.url()).port}"
