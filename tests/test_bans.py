"""Ban detectors in real crawls: the local server bans sessions with vendors' block pages.

The target site's ``/decoy/{n}`` pages carry every vendor's presence
(cookies, tag scripts, ``server: cloudflare``, a Turnstile widget in a form);
the local server's ``ban_after_requests`` fault answers a session's later
requests with a vendor's block page (some with HTTP 200). The plugin must
retire exactly the banned sessions, at their block page, and deliver every
page with its real content.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import aiohttp
from scrapy import Request
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.bans import BUILTIN_DETECTORS
from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.antibot_pages import ANTIBOT_PAGES
from scrapy_scrappey.responses import from_api_response
from tests.crawl import PagesSpider, crawl, settings_for

if TYPE_CHECKING:
    from scrapy.http import Response

BAN_AFTER = 3
#: Two of them (Akamai, F5) come with HTTP 200.
VENDORS = ("cloudflare", "akamai", "datadome", "f5")
REQUEST_COMMANDS = ("request.get", "request.post")
#: The page number both kinds of target pages show.
_CONTENT = re.compile(r"<p id=[\"']n[\"']>(\d+)</p>")


def _session_commands(log: list[dict[str, Any]], session: str) -> list[str]:
    return [c["cmd"] for c in log if c["session"] == session]


def _last_request_index(log: list[dict[str, Any]]) -> int:
    return max(i for i, c in enumerate(log) if c["cmd"] in REQUEST_COMMANDS)


@deferred_f_from_coro_f
async def test_banned_sessions_are_retired_at_their_block_page_and_decoys_pass(
    tmp_path, make_local_server, target_site
):
    assert {ANTIBOT_PAGES[v].status for v in VENDORS} >= {200, 403}
    server = await make_local_server(
        faults=Faults(ban_after_requests=BAN_AFTER, ban_vendors=VENDORS)
    )
    urls = [target_site.url(f"/decoy/{n}") for n in range(24)]
    urls += [target_site.url(f"/page/{n}") for n in range(24, 32)]
    settings = settings_for(
        server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=3, RETRY_TIMES=5
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats, served = result.stats, server.stats()
    log = served["commands"]

    # Every page arrived once, with its own content, never a block page.
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    for item in result.items:
        n = item["url"].rsplit("/", 1)[1]
        assert item["status"] == 200
        assert (
            f"<p id='n'>{n}</p>" in item["text"]
            or f'<p id="n">{n}</p>' in (item["text"])
        )
    assert result.spider.errors == []

    # Each session serves BAN_AFTER pages, so 32 pages over a pool of 3 ban at
    # least (32 - 3 * 3) / 3 sessions: every vendor came, in turn.
    banned: dict[str, str] = served["bans"]["sessions"]
    assert len(banned) >= 8
    by_vendor = served["bans"]["by_vendor"]
    assert set(by_vendor) == set(VENDORS)
    assert max(by_vendor.values()) - min(by_vendor.values()) <= 1
    # One block page per banned session: it was never used again...
    assert served["bans"]["block_pages"] == len(banned)
    for session in banned:
        commands = _session_commands(log, session)
        assert commands.count("request.get") == BAN_AFTER + 1, commands
        # ...and was destroyed right after it.
        assert commands[-1] == "sessions.destroy", commands

    # The plugin counted what the server served, by vendor.
    assert {
        vendor: stats.get(f"scrappey/bans/{vendor}", 0) for vendor in VENDORS
    } == by_vendor
    assert {
        vendor: stats.get(f"retry/reason_count/scrappey/banned/{vendor}", 0)
        for vendor in VENDORS
    } == by_vendor
    assert stats["scrappey/sessions/retired/banned"] == len(banned)
    retired = {
        k: v for k, v in stats.items() if k.startswith("scrappey/sessions/retired/")
    }
    assert sum(retired.values()) == len(banned)

    # Sessions that were never banned were closed only at the end of the crawl.
    end = _last_request_index(log)
    created = {c["session"] for c in log if c["cmd"] == "sessions.create"}
    healthy = created - set(banned)
    assert healthy
    for i, command in enumerate(log):
        if command["cmd"] == "sessions.destroy" and command["session"] in healthy:
            assert i > end, command
    assert Counter(c["cmd"] for c in log)["sessions.destroy"] == len(created)
    assert served["sessions"]["open"] == 0


async def _fetch_through(server: Any, url: str, session: str | None) -> Response:
    """*url* fetched through the local server, as the plugin builds its response."""
    command: dict[str, Any] = {"cmd": "request.get", "url": url}
    if session is not None:
        command["session"] = session
    async with aiohttp.ClientSession() as http:
        if session is not None:
            create = {"cmd": "sessions.create", "session": session}
            async with http.post(server.url, json=create) as reply:
                assert (await reply.json())["data"] == "success"
        async with http.post(server.url, json=command) as reply:
            answer = await reply.json()
    return from_api_response(answer, request=Request(url))


@deferred_f_from_coro_f
async def test_every_served_block_page_is_detected_as_its_vendor(
    make_local_server, target_site
):
    vendors = tuple(ANTIBOT_PAGES)
    server = await make_local_server(
        faults=Faults(ban_after_requests=0, ban_vendors=vendors)
    )
    url = target_site.url("/page/1")
    found = {}
    for n, vendor in enumerate(vendors):
        response = await _fetch_through(server, url, f"s{n}")
        assert response.status == ANTIBOT_PAGES[vendor].status
        fired = [name for name, d in BUILTIN_DETECTORS.items() if d(response)]
        found[vendor] = fired
    # Each page is recognised by its own vendor's detector, and by no other.
    assert found == {vendor: [vendor] for vendor in vendors}
    assert target_site.hits == []  # the edge answered, not the site


@deferred_f_from_coro_f
async def test_decoy_page_through_the_server_fires_no_detector(
    local_server, target_site
):
    response = await _fetch_through(local_server, target_site.url("/decoy/7"), "s")
    assert response.status == 200
    assert response.headers[b"Server"] == b"cloudflare"
    cookies = b"\n".join(response.headers.getlist(b"Set-Cookie"))
    for name in (b"__cf_bm=", b"_abck=", b"_px3=", b"datadome=", b"incap_ses_"):
        assert name in cookies
    assert 'class="cf-turnstile"' in response.text
    assert [name for name, d in BUILTIN_DETECTORS.items() if d(response)] == []


class _InitSpider(PagesSpider):
    """The first session's init fetches INIT_FETCHES pages; later ones fetch one."""

    INIT_FETCHES = BAN_AFTER + 1

    def __init__(self, init_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_url = init_url
        self.inits: list[tuple[str, list[int]]] = []

    async def scrappey_session_init(self, session_id, pool, download):  # type: ignore[no-untyped-def]
        fetches = self.INIT_FETCHES if not self.inits else 1
        statuses: list[int] = []
        self.inits.append((session_id, statuses))
        # Kept as they come: the banned fetch raises, the earlier ones stay.
        while len(statuses) < fetches:
            statuses.append((await download(Request(self.init_url))).status)
        return True


@deferred_f_from_coro_f
async def test_a_block_page_during_init_retires_the_session_before_any_page(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(
        faults=Faults(ban_after_requests=BAN_AFTER, ban_vendors=("imperva",))
    )
    urls = [target_site.url(f"/decoy/{n}") for n in range(6)]
    result = await crawl(
        _InitSpider,
        settings_for(server, tmp_path, RETRY_TIMES=5),
        urls=urls,
        init_url=target_site.url("/page/init"),
    )
    served = server.stats()
    first, *_ = result.spider.inits
    # The init's last fetch got Imperva's page (HTTP 200): the check failed.
    assert first[1] == [200] * BAN_AFTER
    assert served["bans"]["sessions"][first[0]] == "imperva"
    commands = _session_commands(served["commands"], first[0])
    assert commands == [
        "sessions.create",
        *["request.get"] * (BAN_AFTER + 1),
        "sessions.destroy",
    ]
    assert result.stats["scrappey/bans/imperva"] == served["bans"]["block_pages"]
    # Counted as a ban and a failed init; pages' bans are retried requests.
    stats, pages_banned = result.stats, served["bans"]["block_pages"] - 1
    assert stats["scrappey/sessions/init/failed"] == 1
    assert stats["scrappey/sessions/retired/init"] == 1
    assert stats["scrappey/sessions/retired/banned"] == pages_banned
    assert stats["retry/reason_count/scrappey/banned/imperva"] == pages_banned
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    assert served["sessions"]["open"] == 0
