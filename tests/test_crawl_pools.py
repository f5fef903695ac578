"""Per-pool settings (SCRAPPEY_SESSION_POOLS), proven by real crawls on the server side."""

import asyncio
from collections import defaultdict
from urllib.parse import urlsplit

import pytest
from scrapy import Request
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import ScrappeyConfigError
from scrapy_scrappey.codes import SESSION_BOUND_CODES
from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for


def by_path(result):
    return {urlsplit(i["url"]).path: i for i in result.items}


def creates_by_session(api_calls):
    return {p["session"]: p for p in api_calls.sent("sessions.create")}


def login(site, user):
    return [
        {"cmd": "request.post", "url": site.url("/login"), "postData": f"user={user}"}
    ]


@deferred_f_from_coro_f
async def test_pool_params_and_request_params_reach_only_that_pool(
    tmp_path, local_server, target_site, api_calls
):
    # Acceptance 3: params in that pool's sessions.create, request_params in
    # that pool's request.* only; the scrappey meta dict still wins.
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_PARAMS={"premiumProxy": True},
        SCRAPPEY_DEFAULT_PARAMS={"retries": 1, "requestType": "browser"},
        SCRAPPEY_SESSION_POOLS={
            "de": {
                "params": {"proxyCountry": "Germany"},
                "request_params": {"requestType": "request", "mobileProxy": True},
            }
        },
    )
    urls = [
        (target_site.url("/page/de1"), {"scrappey_session": "de"}),
        (
            target_site.url("/page/de2"),
            {"scrappey_session": "de", "scrappey": {"mobileProxy": None}},
        ),
        target_site.url("/page/s1"),
    ]
    result = await crawl(PagesSpider, settings, urls=urls)
    items = by_path(result)
    assert len(items) == 3
    creates = creates_by_session(api_calls)
    de_session = items["/page/de1"]["session"]
    spider_session = items["/page/s1"]["session"]
    assert items["/page/de2"]["session"] == de_session != spider_session
    assert set(creates) == {de_session, spider_session}
    assert creates[de_session]["proxyCountry"] == "Germany"
    assert creates[de_session]["premiumProxy"] is True  # merged over the global
    assert "proxyCountry" not in creates[spider_session]
    assert creates[spider_session]["premiumProxy"] is True
    requests = {urlsplit(p["url"]).path: p for p in api_calls.sent("request.")}
    de1, de2, s1 = requests["/page/de1"], requests["/page/de2"], requests["/page/s1"]
    assert (de1["requestType"], de1["mobileProxy"], de1["retries"]) == (
        "request",
        True,
        1,
    )
    assert de2["requestType"] == "request"
    assert "mobileProxy" not in de2  # the meta dict removed it
    assert s1["requestType"] == "browser"
    assert "mobileProxy" not in s1
    assert not any("proxyCountry" in p for p in api_calls.sent("request."))


@deferred_f_from_coro_f
async def test_pool_size_and_concurrency_hold_on_the_server(
    tmp_path, make_local_server, target_site
):
    # Acceptance 3: "wide" has 2 sessions of 3 requests each, "narrow" (not
    # listed) is one session of SCRAPPEY_SESSION_CONCURRENCY = 1.
    server = await make_local_server(faults=Faults(latency={"request.get": 0.2}))
    settings = settings_for(
        server,
        tmp_path,
        CONCURRENT_REQUESTS=32,
        CONCURRENT_REQUESTS_PER_DOMAIN=32,
        SCRAPPEY_SESSION_POOLS={"wide": {"size": 2, "concurrency": 3}},
    )
    urls = [
        (target_site.url(f"/page/w{i}"), {"scrappey_session": "wide"})
        for i in range(12)
    ] + [
        (target_site.url(f"/page/n{i}"), {"scrappey_session": "narrow"})
        for i in range(4)
    ]
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 16
    sessions = defaultdict(set)
    for item in result.items:
        sessions[urlsplit(item["url"]).path[6]].add(item["session"])
    assert len(sessions["w"]) == 2
    assert len(sessions["n"]) == 1
    most = stats["max_concurrent_by_session"]
    assert max(most[s] for s in sessions["w"]) == 3
    assert all(most[s] <= 3 for s in sessions["w"])
    assert [most[s] for s in sessions["n"]] == [1]
    # spider (eager, unused) + wide (eager) + narrow (on first use)
    assert stats["sessions"]["created"] == 1 + 2 + 1
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_listed_named_pools_are_created_at_open_others_on_first_use(
    tmp_path, local_server, target_site
):
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=2,
        SCRAPPEY_SESSION_POOLS={"alice": {"size": 3}, "bob": {}},
        CONCURRENT_REQUESTS_PER_DOMAIN=16,
    )
    # "carol" is not listed: created on first use, with one session (a named
    # pool is one browser) although four requests want it at once.
    urls = [
        (target_site.url(f"/page/c{i}"), {"scrappey_session": "carol"})
        for i in range(4)
    ]
    result = await crawl(PagesSpider, settings, urls=urls)
    commands = local_server.stats()["commands"]
    assert len(result.items) == 4
    [carol] = {i["session"] for i in result.items}
    creates = [c["session"] for c in commands if c["cmd"] == "sessions.create"]
    # spider pool (2) + alice (3) + bob (1) at open, then carol's one session.
    assert len(creates) == 7
    assert creates[6] == carol
    assert [c["cmd"] for c in commands[:6]] == ["sessions.create"] * 6
    assert local_server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_a_domain_key_configures_the_domain_pool_and_is_not_a_named_pool(
    tmp_path, local_server, target_site, api_calls
):
    class TwoHosts(PagesSpider):
        allowed_domains = ["127.0.0.1"]

    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="domain",
        SCRAPPEY_SESSION_POOLS={"localhost": {"params": {"proxyCountry": "Germany"}}},
    )
    urls = [target_site.url("/page/1"), target_site.url("/page/2", host="localhost")]
    result = await crawl(TwoHosts, settings, urls=urls)
    items = {urlsplit(i["url"]).hostname: i for i in result.items}
    creates = creates_by_session(api_calls)
    assert len(creates) == 2  # no eager "name:localhost" pool
    assert creates[items["localhost"]["session"]]["proxyCountry"] == "Germany"
    assert "proxyCountry" not in creates[items["127.0.0.1"]["session"]]


@deferred_f_from_coro_f
async def test_the_spider_method_chooses_the_pool_when_meta_does_not(
    tmp_path, local_server, target_site
):
    class Chooser(PagesSpider):
        def scrappey_session_pool(self, request):
            path = urlsplit(request.url).path
            if path.startswith("/page/a"):
                return "alice"
            if path.startswith("/page/x"):
                return False
            return None

    urls = [
        target_site.url("/page/a1"),
        target_site.url("/page/a2"),
        target_site.url("/page/x1"),
        target_site.url("/page/s1"),
        (target_site.url("/page/a3"), {"scrappey_session": "bob"}),  # meta wins
    ]
    result = await crawl(Chooser, settings_for(local_server, tmp_path), urls=urls)
    items = by_path(result)
    assert len(items) == 5
    alice = items["/page/a1"]["session"]
    assert items["/page/a2"]["session"] == alice
    assert items["/page/x1"]["session"] is None
    spider, bob = items["/page/s1"]["session"], items["/page/a3"]["session"]
    assert len({alice, spider, bob}) == 3
    assert None not in {alice, spider, bob}
    assert local_server.stats()["sessions"]["created"] == 3


@deferred_f_from_coro_f
async def test_a_spider_method_returning_something_else_fails_that_request(
    tmp_path, local_server, target_site
):
    # Acceptance 5.
    class Broken(PagesSpider):
        def scrappey_session_pool(self, request):
            return 42 if request.url.endswith("/bad") else None

    urls = [target_site.url("/page/bad"), target_site.url("/page/good")]
    result = await crawl(Broken, settings_for(local_server, tmp_path), urls=urls)
    assert [i["url"] for i in result.items] == [target_site.url("/page/good")]
    [error] = result.spider.errors
    assert isinstance(error, ScrappeyConfigError)
    assert "scrappey_session_pool spider method" in str(error)
    assert "got 42" in str(error)
    assert target_site.url("/page/bad") in str(error)


@deferred_f_from_coro_f
async def test_bad_pools_setting_stops_the_crawl_naming_pool_and_key(
    tmp_path, local_server, target_site
):
    # Acceptance 5, at start-up: nothing is created, nothing is sent.
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_SESSION_POOLS={"alice": {"size": -1}}
    )
    with pytest.raises(
        ScrappeyConfigError,
        match=r"SCRAPPEY_SESSION_POOLS\['alice'\]\['size'\] must be at least 1",
    ):
        await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert local_server.stats()["requests"]["total"] == 0


@pytest.mark.parametrize("cookies", [False, True])
@deferred_f_from_coro_f
async def test_two_accounts_with_their_own_init_logins(
    cookies, tmp_path, local_server, target_site
):
    settings = settings_for(
        local_server,
        tmp_path,
        COOKIES_ENABLED=cookies,
        SCRAPPEY_SESSION_POOLS={
            "alice": {"size": 2, "init": login(target_site, "alice")},
            "bob": {"size": 1, "init": login(target_site, "bob")},
        },
    )
    urls = [
        (target_site.url(f"/members/{user}{i}"), {"scrappey_session": user})
        for i in range(6)
        for user in ("alice", "bob")
    ]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len(result.items) == 12
    sessions = defaultdict(set)
    for item in result.items:
        user = "alice" if "/members/alice" in item["url"] else "bob"
        other = "bob" if user == "alice" else "alice"
        assert f"<p id='member'>{user}</p>" in item["text"]
        assert other not in item["text"]
        sessions[user].add(item["session"])
    assert len(sessions["alice"]) == 2
    assert len(sessions["bob"]) == 1
    # The spider pool has no init: only the five account sessions logged in.
    assert result.stats["scrappey/sessions/init/ok"] == 3
    assert target_site.hits.count("/login") == 3
    # No page request on one account's session carried the other's cookie.
    for command in local_server.stats()["commands"]:
        if command["cmd"].startswith("request.") and command["session"]:
            user = "alice" if command["session"] in sessions["alice"] else "bob"
            other = "bob" if user == "alice" else "alice"
            sent = command["cookies"] or ""
            assert f"auth={other}" not in sent
            assert f"member_seen={other}" not in sent


@deferred_f_from_coro_f
async def test_stats_per_pool(tmp_path, local_server, target_site):
    settings = settings_for(
        local_server,
        tmp_path,
        CONCURRENT_REQUESTS=1,
        SCRAPPEY_STATS_PER_POOL=True,
        SCRAPPEY_SESSION_BAN_STATUSES=[500],
        SCRAPPEY_SESSION_POOLS={
            "alice": {"max_requests": 2, "init": [{"url": target_site.url("/page/i")}]}
        },
    )
    urls = [
        (target_site.url(f"/page/a{i}"), {"scrappey_session": "alice"})
        for i in range(4)
    ] + [
        target_site.url("/page/s1"),
        (target_site.url("/status/500"), {"dont_retry": True}),
    ]
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = result.stats
    assert len(result.items) == 5
    alice = {
        k.removeprefix("scrappey/pools/alice/"): v
        for k, v in stats.items()
        if k.startswith("scrappey/pools/alice/")
    }
    # 2 leases per session: the third session is the refill after the last rotation.
    assert alice["created"] == alice["destroyed"] == 3
    assert alice["rotated"] == 2
    assert alice["init/ok"] == alice["init/requests"] == 3
    assert alice["requests"] == 4 + 3  # pages + init requests
    spider = {
        k.removeprefix("scrappey/pools/spider/"): v
        for k, v in stats.items()
        if k.startswith("scrappey/pools/spider/")
    }
    assert spider["requests"] == 2
    assert spider["check_failed"] == spider["retired/check"] == 1
    assert spider["created"] == spider["destroyed"] >= 1
    # Every session stat also kept its crawl-wide total. The replacement of
    # the retired spider session may still be on its way at close: a create
    # the crawl abandoned counts in the total only.
    created = alice["created"] + spider["created"]
    assert created <= stats["scrappey/sessions/created"] <= created + 1
    assert stats["scrappey/sessions/created"] == stats["scrappey/sessions/destroyed"]
    assert stats["scrappey/requests"] == alice["requests"] + spider["requests"]
    assert stats["scrappey/sessions/check_failed"] == 1

    settings["SCRAPPEY_STATS_PER_POOL"] = False
    result = await crawl(PagesSpider, settings, urls=urls[:1])
    assert result.stats["scrappey/sessions/created"] >= 1
    assert not any(k.startswith("scrappey/pools/") for k in result.stats)


@deferred_f_from_coro_f
async def test_a_pools_max_errors_replaces_the_global_budget(
    tmp_path, make_local_server, target_site
):
    faults = Faults(error_rate=0.3, error_codes=SESSION_BOUND_CODES, seed=7)
    server = await make_local_server(faults=faults)
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_MAX_ERRORS=1,
        SCRAPPEY_SESSION_POOLS={"sturdy": {"max_errors": 3}},
        RETRY_TIMES=30,
        CONCURRENT_REQUESTS=1,
    )
    urls = [
        (target_site.url(f"/page/{i}"), {"scrappey_session": "sturdy"})
        for i in range(20)
    ]
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 20
    failed = stats["errors_by_session"]
    assert max(len(o) for o in failed.values()) == 3  # the seed makes one reach it
    retired = [sid for sid, ordinals in failed.items() if len(ordinals) == 3]
    for sid in retired:  # retired at its third error, its last request
        assert failed[sid][-1] == stats["requests_per_session"][sid]
    assert result.stats["scrappey/sessions/retired/errors"] == len(retired)


@deferred_f_from_coro_f
async def test_a_pools_idle_ttl_applies_to_that_pool_only(
    tmp_path, local_server, target_site
):
    class Pauses(PagesSpider):
        async def start(self):
            for pause in (0, 0.5):
                await asyncio.sleep(pause)
                for pool, n in (("brief", pause), ("spider", pause)):
                    meta = {"scrappey_session": pool} if pool == "brief" else {}
                    yield Request(
                        target_site.url(f"/page/{pool}-{n}"),
                        meta=meta,
                        callback=self.parse,
                        dont_filter=True,
                    )

    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_POOLS={"brief": {"idle_ttl": 0.2}},
    )
    result = await crawl(Pauses, settings, urls=[])
    sessions = defaultdict(set)
    for item in result.items:
        sessions[urlsplit(item["url"]).path.split("-")[0]].add(item["session"])
    assert len(result.items) == 4
    assert len(sessions["/page/brief"]) == 2  # replaced after 0.5 s idle
    assert len(sessions["/page/spider"]) == 1  # SCRAPPEY_SESSION_IDLE_TTL: 150 s
    assert result.stats["scrappey/sessions/expired_idle"] == 1
