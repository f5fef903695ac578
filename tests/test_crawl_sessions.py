"""Session pools, leases, scopes and replacement, proven on the server side."""

from collections import Counter

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.client import ScrappeyClient
from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for


def sessions_by_host(stats):
    seen = {}
    for command in stats["commands"]:
        if command["cmd"].startswith("request."):
            host = command["url"].split("/")[2].split(":")[0]
            seen.setdefault(host, set()).add(command["session"])
    return seen


@deferred_f_from_coro_f
async def test_domain_scope_one_session_per_domain_created_at_open(
    tmp_path, local_server, target_site
):

    class TwoHosts(PagesSpider):
        allowed_domains = ["127.0.0.1", "localhost"]

    urls = [
        target_site.url(f"/page/{i}", host=h)
        for i in range(3)
        for h in ("127.0.0.1", "localhost")
    ]
    result = await crawl(
        TwoHosts,
        settings_for(local_server, tmp_path, SCRAPPEY_SESSION_SCOPE="domain"),
        urls=urls,
    )
    stats = local_server.stats()
    assert len(result.items) == 6
    by_host = sessions_by_host(stats)
    assert set(by_host) == {"127.0.0.1", "localhost"}
    assert all(len(ids) == 1 for ids in by_host.values())
    assert by_host["127.0.0.1"] != by_host["localhost"]
    # both pools were created before any page was requested
    first_get = next(
        i for i, c in enumerate(stats["commands"]) if c["cmd"] == "request.get"
    )
    assert [c["cmd"] for c in stats["commands"][:first_get]] == ["sessions.create"] * 2
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_domain_scope_from_spider_attribute_creates_other_domains_on_first_use(
    tmp_path,
    local_server,
    target_site,
):

    class Attr(PagesSpider):
        allowed_domains = ["127.0.0.1"]
        scrappey_session_scope = "domain"

    urls = [target_site.url("/page/1"), target_site.url("/page/2", host="localhost")]
    result = await crawl(Attr, settings_for(local_server, tmp_path), urls=urls)
    stats = local_server.stats()
    assert len(result.items) == 2
    assert stats["sessions"]["created"] == 2
    assert set(sessions_by_host(stats)) == {"127.0.0.1", "localhost"}
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_named_pool_false_and_direct_requests(
    tmp_path, local_server, target_site
):
    urls = [
        (target_site.url("/page/1"), {"scrappey_session": "login"}),
        (target_site.url("/page/2"), {"scrappey_session": "login"}),
        (target_site.url("/page/3"), {"scrappey_session": False}),
        (target_site.url("/page/4"), {"scrappey": False}),
        target_site.url("/page/5"),
    ]
    result = await crawl(PagesSpider, settings_for(local_server, tmp_path), urls=urls)
    stats = local_server.stats()
    items = {i["url"].rsplit("/", 1)[1]: i for i in result.items}
    assert len(items) == 5
    assert items["1"]["session"] == items["2"]["session"] != items["5"]["session"]
    assert items["3"]["session"] is None  # went without a session
    assert items["4"]["flags"] == []
    assert items["4"]["session"] is None
    gets = {
        c["url"].rsplit("/", 1)[1]: c
        for c in stats["commands"]
        if c["cmd"] == "request.get"
    }
    assert set(gets) == {"1", "2", "3", "5"}
    assert gets["3"]["session"] is None
    assert stats["sessions"]["created"] == 2  # spider pool + the "login" pool
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_copied_meta_keeps_the_pool(tmp_path, local_server, target_site):

    class Follow(PagesSpider):
        async def start(self):
            yield self.request(
                target_site.url("/page/1"), {"scrappey_session": "chain"}
            )

        def request(self, url, meta):
            from scrapy import Request

            return Request(url, meta=meta, callback=self.next_page, dont_filter=True)

        def next_page(self, response):
            yield from self.parse(response)
            if response.url.endswith("/1"):
                yield self.request(target_site.url("/page/2"), dict(response.meta))

    result = await crawl(Follow, settings_for(local_server, tmp_path), urls=[])
    stats = local_server.stats()
    assert len(result.items) == 2
    assert result.items[0]["session"] == result.items[1]["session"]
    assert stats["sessions"]["created"] == 2  # spider pool + "chain", nothing more


@deferred_f_from_coro_f
async def test_lease_limit_is_observed_server_side_and_pool_is_used_fairly(
    tmp_path, make_local_server, target_site
):
    faults = Faults(latency={"request.get": 0.1})
    server = await make_local_server(faults=faults)
    urls = [target_site.url(f"/page/{i}") for i in range(16)]
    settings = settings_for(
        server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=3, CONCURRENT_REQUESTS=16
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert len(result.items) == 16
    assert stats["max_concurrent_per_session"] == 1
    per_session = Counter(i["session"] for i in result.items)
    assert len(per_session) == 3
    assert min(per_session.values()) >= 4  # no session idled while requests waited
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_session_concurrency_setting_allows_more_in_flight(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(latency={"request.get": 0.2}))
    urls = [target_site.url(f"/page/{i}") for i in range(6)]
    settings = settings_for(server, tmp_path, SCRAPPEY_SESSION_CONCURRENCY=3)
    await crawl(PagesSpider, settings, urls=urls)
    stats = server.stats()
    assert stats["max_concurrent_per_session"] == 3
    assert stats["sessions"]["created"] == 1


@deferred_f_from_coro_f
async def test_expired_sessions_are_replaced_and_every_page_arrives(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(expire_after_requests=3))
    urls = [target_site.url(f"/page/{i}") for i in range(10)]
    result = await crawl(
        PagesSpider, settings_for(server, tmp_path, RETRY_TIMES=5), urls=urls
    )
    stats = server.stats()
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    assert result.stats["scrappey/sessions/recreated"] >= 2
    assert result.stats["retry/count"] >= 2
    assert stats["sessions"]["expired"] >= 2
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_rotation_after_max_requests(tmp_path, local_server, target_site):
    urls = [target_site.url(f"/page/{i}") for i in range(6)]
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_SESSION_MAX_REQUESTS=2, CONCURRENT_REQUESTS=1
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = local_server.stats()
    assert len(result.items) == 6
    assert all(n == 2 for n in Counter(i["session"] for i in result.items).values())
    assert result.stats["scrappey/sessions/rotated"] == 3
    assert stats["sessions"]["open"] == 0
    assert stats["sessions"]["created"] == stats["sessions"]["destroyed"]


@deferred_f_from_coro_f
async def test_idle_ttl_replaces_a_stale_session_before_use(
    tmp_path, local_server, target_site
):

    class Slow(PagesSpider):
        async def start(self):
            from asyncio import sleep

            yield self.make(target_site.url("/page/1"))
            await sleep(0.5)
            yield self.make(target_site.url("/page/2"))

        def make(self, url):
            from scrapy import Request

            return Request(url, callback=self.parse, dont_filter=True)

    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_IDLE_TTL=0.2)
    result = await crawl(Slow, settings, urls=[])
    stats = local_server.stats()
    assert len(result.items) == 2
    assert result.items[0]["session"] != result.items[1]["session"]
    assert result.stats["scrappey/sessions/expired_idle"] == 1
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_session_cap_evicts_least_recently_used_idle_session(
    tmp_path, local_server, target_site
):
    urls = [
        (target_site.url(f"/page/{i}"), {"scrappey_session": f"p{i}"}) for i in range(4)
    ]
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_MAX_SESSIONS=2, CONCURRENT_REQUESTS=1
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = local_server.stats()
    assert len(result.items) == 4
    assert result.stats["scrappey/sessions/evicted"] >= 3
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_create_limit_backs_off_then_crawl_completes(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(fail_creates=3))
    urls = [target_site.url(f"/page/{i}") for i in range(3)]
    result = await crawl(PagesSpider, settings_for(server, tmp_path), urls=urls)
    stats = server.stats()
    assert len(result.items) == 3
    assert result.stats["scrappey/sessions/over_limit"] == 3
    assert result.stats["scrappey/sessions/create_failed"] == 3
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_none_scope_sends_no_session(tmp_path, local_server, target_site):
    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_SCOPE="none")
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    stats = local_server.stats()
    assert len(result.items) == 1
    assert stats["sessions"]["created"] == 0
    assert [c["session"] for c in stats["commands"]] == [None]


@deferred_f_from_coro_f
async def test_session_params_go_into_every_sessions_create(
    tmp_path, monkeypatch, make_local_server, target_site
):
    sent = []
    call = ScrappeyClient.call

    async def recorded(self, payload, **kwargs):
        sent.append(dict(payload))
        return await call(self, payload, **kwargs)

    monkeypatch.setattr(ScrappeyClient, "call", recorded)
    server = await make_local_server(faults=Faults(expire_after_requests=2))
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_PARAMS={"proxyCountry": "Poland"},
        CONCURRENT_REQUESTS=1,
    )
    urls = [target_site.url(f"/page/{i}") for i in range(4)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len(result.items) == 4
    creates = [p for p in sent if p["cmd"] == "sessions.create"]
    assert len(creates) >= 2  # the first session and its replacements
    assert all(p["proxyCountry"] == "Poland" for p in creates)
    # Only the session's own command carries them.
    assert not any("proxyCountry" in p for p in sent if p["cmd"] == "request.get")


@deferred_f_from_coro_f
async def test_no_ledger_is_written_when_it_is_disabled(
    tmp_path, local_server, target_site
):
    settings = settings_for(local_server, tmp_path, SCRAPPEY_LEDGER_ENABLED=False)
    result = await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    assert len(result.items) == 1
    assert result.stats["scrappey/sessions/created"] == 1
    assert not (tmp_path / "ledger").exists()  # SCRAPPEY_LEDGER_DIR of settings_for
    # The same crawl with the ledger on writes there.
    settings["SCRAPPEY_LEDGER_ENABLED"] = True
    await crawl(PagesSpider, settings, urls=[target_site.url("/page/2")])
    assert (tmp_path / "ledger").is_dir()
