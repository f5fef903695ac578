"""The ``ban_after_requests`` fault: banned sessions get vendors' block pages."""

from __future__ import annotations

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.__main__ import build_parser, faults_from_args
from scrapy_scrappey.local.antibot_pages import ANTIBOT_PAGES, VENDORS, block_page
from scrapy_scrappey.local.faults import FaultInjector

from ._support import HTML, harness

#: One strong marker per vendor (the signature reference's grading), checked
#: in what the server hands back: a header or a body substring.
_STRONG = {
    "cloudflare": ("cf-mitigated", "window._cf_chl_opt"),
    "datadome": ("x-dd-b", "var dd={"),
    "perimeterx": (None, "/* PerimeterX assignments */"),
    "akamai": (None, "errors.edgesuite.net/18."),
    "imperva": (None, "Request unsuccessful. Incapsula incident ID:"),
    "aws_waf": ("x-amzn-waf-action", "window.gokuProps"),
    "kasada": ("x-kpsdk-ct", "KPSDK"),
    "f5": (None, "Your support ID is:"),
    "sucuri": ("x-sucuri-block", "Sucuri WebSite Firewall - Access Denied"),
}


def test_every_vendor_has_a_page_and_some_come_with_200() -> None:
    assert set(VENDORS) == set(_STRONG)
    assert {v for v, page in ANTIBOT_PAGES.items() if page.status == 200} == {
        "akamai",
        "imperva",
        "f5",
    }
    with pytest.raises(ValueError, match="'arkose'"):
        block_page("arkose")


def test_ban_vendors_rotate_in_ban_order() -> None:
    injector = FaultInjector(
        Faults(ban_after_requests=1, ban_vendors=("akamai", "datadome"))
    )
    assert injector.ban_vendor("a", 1) is None
    assert injector.ban_vendor("b", 2) == "akamai"
    assert injector.ban_vendor("a", 2) == "datadome"
    assert injector.ban_vendor("c", 5) == "akamai"
    # A banned session keeps its vendor.
    assert injector.ban_vendor("b", 3) == "akamai"


@deferred_f_from_coro_f
async def test_session_gets_block_pages_after_n_requests() -> None:
    faults = Faults(ban_after_requests=2, ban_vendors=tuple(VENDORS))
    async with harness(faults=faults) as h:
        url = h.site.url("/html")
        replies: dict[str, list[dict[str, object]]] = {}
        for vendor in VENDORS:
            sid = await h.api.create()
            replies[vendor] = [
                await h.api.cmd("request.get", url=url, session=sid) for _ in range(4)
            ]
        one_off = await h.api.cmd("request.get", url=url)
        stats = h.server.stats()
    for vendor, answers in replies.items():
        assert [a["data"] for a in answers] == ["success"] * 4
        solutions = [a["solution"] for a in answers]
        assert [s["response"] == HTML for s in solutions] == [True, True, False, False]
        page = ANTIBOT_PAGES[vendor]
        for blocked in solutions[2:]:
            assert isinstance(blocked, dict)
            assert blocked["statusCode"] == page.status
            assert blocked["currentUrl"] == url
            header, marker = _STRONG[vendor]
            assert marker in blocked["response"]
            if header is not None:
                assert header in blocked["responseHeaders"]
            names = [c["name"] for c in blocked["cookies"]]
            assert names == [name for name, _ in page.cookies]
    assert one_off["solution"]["response"] == HTML  # only sessions are banned
    assert stats["bans"]["block_pages"] == 2 * len(VENDORS)
    assert stats["bans"]["by_vendor"] == dict.fromkeys(VENDORS, 2)
    assert sorted(stats["bans"]["sessions"].values()) == sorted(VENDORS)


@deferred_f_from_coro_f
async def test_block_page_never_reaches_the_target_and_is_charged() -> None:
    faults = Faults(ban_after_requests=0, ban_vendors=("f5",))
    async with harness(faults=faults, balance=10) as h:
        sid = await h.api.create()
        reply = await h.api.cmd(
            "request.get", url=h.site.url("/set-cookie?name=seen"), session=sid
        )
        echo = await h.api.cmd("request.get", url=h.site.url("/echo"), session=sid)
        balance = h.server.balance
    assert "Request Rejected" in reply["solution"]["response"]
    assert "seen" not in reply["solution"]["cookieString"]
    # The target never answered, so it set no cookie in the session's jar.
    assert "Request Rejected" in echo["solution"]["response"]
    assert balance == 9.6  # two request-type replies at 0.2


@deferred_f_from_coro_f
async def test_ban_faults_over_http() -> None:
    async with harness() as h:
        status, body = await h.api.local(
            "POST",
            "/__local__/faults",
            {"ban_after_requests": 0, "ban_vendors": "kasada"},
        )
        assert (status, body["ban_vendors"]) == (200, ["kasada"])
        sid = await h.api.create()
        reply = await h.api.cmd("request.get", url=h.site.url("/html"), session=sid)
        status, error = await h.api.local(
            "POST", "/__local__/faults", {"ban_vendors": ["cloudflare", "nope"]}
        )
    assert reply["solution"]["statusCode"] == 429
    assert status == 400
    assert "'nope'" in error["error"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ban_after_requests": -1}, "ban_after_requests"),
        ({"ban_after_requests": 1.5}, "ban_after_requests"),
        ({"ban_vendors": []}, "ban_vendors"),
        ({"ban_vendors": ["cloudflare", "acme"]}, "'acme'"),
        ({"ban_vendors": 3}, "ban_vendors"),
    ],
)
def test_invalid_ban_faults_are_rejected(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Faults.from_dict(fields)


def test_ban_flags_build_faults() -> None:
    args = build_parser().parse_args(
        ["--ban-after-requests", "3", "--ban-vendors", "akamai, cloudflare"]
    )
    faults = faults_from_args(args)
    assert faults.ban_after_requests == 3
    assert faults.ban_vendors == ("akamai", "cloudflare")
    defaults = faults_from_args(build_parser().parse_args([]))
    assert (defaults.ban_after_requests, defaults.ban_vendors) == (None, VENDORS)
    with pytest.raises(ValueError, match="'acme'"):
        faults_from_args(build_parser().parse_args(["--ban-vendors", "acme"]))
