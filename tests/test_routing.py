import pytest
from scrapy import Request, Spider
from scrapy.core.downloader import Downloader
from scrapy.http import JsonRequest
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Config, ScrappeyConfigError
from scrapy_scrappey.pool_config import SessionPools, read_pools
from scrapy_scrappey.routing import Router
from tests.crawl import PagesSpider, crawl, settings_for

API = "http://127.0.0.1:9/api/v1"


def router(
    scope="spider", transparent=True, known=None, pools=None, choose=None, **params
):
    config = Config(
        api_key="k",
        api_url=API,
        session_scope=scope,
        transparent=transparent,
        default_params=params,
        session_pools=SessionPools(read_pools(pools or {}, "SCRAPPEY_SESSION_POOLS")),
    )
    return Router(
        config,
        allowed_domains=["example.com", "shop.test"],
        pool_of=(known or {}).get,
        choose_pool=choose,
    )


def test_initial_pools_per_scope():
    assert router("spider").initial_pools() == ["spider"]
    assert router("domain").initial_pools() == [
        "domain:example.com",
        "domain:shop.test",
    ]
    assert router("none").initial_pools() == []


def test_domain_scope_puts_subdomains_in_the_allowed_domain_pool():
    r = router("domain")
    assert r.route(Request("https://www.example.com/a")).pool == "domain:example.com"
    assert r.route(Request("https://EXAMPLE.com/b")).pool == "domain:example.com"
    assert r.route(Request("https://other.org/")).pool == "domain:other.org"
    assert r.route(Request("https://notexample.com/")).pool == "domain:notexample.com"


def test_domain_scope_puts_subdomains_in_a_configured_domain_pool():
    # "shop.de" is not an allowed domain: its SCRAPPEY_SESSION_POOLS entry
    # still gathers its subdomains, the most specific key first.
    r = router("domain", pools={"shop.de": {"size": 2}, "eu.shop.de": {}})
    assert r.route(Request("https://www.shop.de/a")).pool == "domain:shop.de"
    assert r.route(Request("https://shop.de/")).pool == "domain:shop.de"
    assert r.route(Request("https://x.eu.shop.de/")).pool == "domain:eu.shop.de"
    assert r.route(Request("https://notshop.de/")).pool == "domain:notshop.de"
    # The allowed domains keep their pools, except for a configured subdomain.
    assert r.route(Request("https://www.example.com/")).pool == "domain:example.com"
    r = router("domain", pools={"shop.example.com": {"size": 3}})
    assert r.route(Request("https://eu.shop.example.com/")).pool == (
        "domain:shop.example.com"
    )
    assert r.route(Request("https://example.com/")).pool == "domain:example.com"


def test_named_pools_and_known_session_ids():
    r = router(known={"scrapy-scrappey-abc": "name:login"})
    assert (
        r.route(Request("https://x.org", meta={"scrappey_session": "cart"})).pool
        == "name:cart"
    )
    assert (
        r.route(
            Request("https://x.org", meta={"scrappey_session": "scrapy-scrappey-abc"})
        ).pool
        == "name:login"
    )
    assert (
        r.route(Request("https://x.org", meta={"scrappey_session": False})).pool is None
    )
    assert (
        r.route(Request("https://x.org", meta={"scrappey": {"session": "mine"}})).pool
        is None
    )


def test_a_known_session_id_asks_for_that_session_in_its_pool():
    known = "scrapy-scrappey-abc"
    r = router(known={known: "spider"})
    by_meta = r.route(Request("https://x.org", meta={"scrappey_session": known}))
    assert (by_meta.pool, by_meta.session) == ("spider", known)
    by_dict = r.route(Request("https://x.org", meta={"scrappey": {"session": known}}))
    assert (by_dict.pool, by_dict.session) == ("spider", known)
    raw = r.route(
        JsonRequest(
            API, data={"cmd": "request.get", "url": "https://a.org", "session": known}
        )
    )
    assert (raw.pool, raw.session) == ("spider", known)
    stale = "scrapy-scrappey-0123456789abcdef"  # one this crawl does not know
    old = r.route(Request("https://x.org", meta={"scrappey_session": stale}))
    assert (old.pool, old.session) == ("spider", None)
    for meta in ({}, {"scrappey_session": "cart"}, {"scrappey": {"session": "mine"}}):
        assert r.route(Request("https://x.org", meta=meta)).session is None


def test_opt_out_opt_in_and_unroutable():
    assert router().route(Request("https://x.org", meta={"scrappey": False})) is None
    assert router(transparent=False).route(Request("https://x.org")) is None
    assert (
        router(transparent=False).route(
            Request("https://x.org", meta={"scrappey": True})
        )
        is not None
    )
    assert router().route(Request("data:,hi")) is None


def test_defaults_merge():
    route = router(requestType="request").route(
        Request("https://x.org/p", meta={"scrappey": {"premiumProxy": True}})
    )
    assert route.params == {"requestType": "request", "premiumProxy": True}


def downloader():
    return Downloader(get_crawler(Spider, {"DOWNLOAD_SLOTS": {"s1": {"delay": 1}}}))


def test_slot_key_is_the_downloaders_own():
    slot_key = downloader().get_slot_key
    request = Request("https://X.org:8080/p")
    route = router().route(request)
    assert route.slot_request(request) is request
    assert slot_key(route.slot_request(request)) == "x.org"
    pinned = Request("https://x.org/p", meta={"download_slot": "s1"})
    assert slot_key(router().route(pinned).slot_request(pinned)) == "s1"


def test_raw_mode_slot_key_is_the_target_urls():
    slot_key = downloader().get_slot_key
    raw = JsonRequest(API, data={"cmd": "request.get", "url": "https://shop.test/x"})
    assert slot_key(router().route(raw).slot_request(raw)) == "shop.test"
    pinned = raw.replace(meta={"download_slot": "s1"})
    assert slot_key(router().route(pinned).slot_request(pinned)) == "s1"
    for url in ("not a url", "https://", 42, "http://[::1"):
        odd = JsonRequest(API, data={"cmd": "request.get", "url": url})
        route = router().route(odd)
        assert route.target == API  # the API rejects the command itself
        assert slot_key(route.slot_request(odd)) == "127.0.0.1"


def test_raw_mode_detection_and_target_pool():
    r = router("domain")
    raw = r.route(
        JsonRequest(
            API + "/", data={"cmd": "request.get", "url": "https://www.shop.test/x"}
        )
    )
    assert raw.raw
    assert raw.pool == "domain:shop.test"
    assert raw.target == "https://www.shop.test/x"
    own = r.route(
        JsonRequest(
            API, data={"cmd": "request.get", "url": "https://a.org", "session": "s"}
        )
    )
    assert own.pool is None
    control = r.route(JsonRequest(API, data={"cmd": "sessions.list"}))
    assert control.raw
    assert control.pool is None
    assert not r.is_raw(Request(API))  # a GET is not a command


def test_raw_mode_rejects_a_body_without_command():
    with pytest.raises(ScrappeyConfigError, match="not a JSON object with a 'cmd'"):
        router().route(Request(API + "?key=SECRET123", method="POST", body=b"not json"))
    with pytest.raises(ScrappeyConfigError) as info:
        router().route(Request(API + "?key=SECRET123", method="POST", body=b"[]"))
    assert "SECRET123" not in str(info.value)


class _RawPages(PagesSpider):
    """Addresses the API itself (raw mode), one command per target URL."""

    def __init__(self, api_url, **kwargs):
        super().__init__(**kwargs)
        self.api_url = api_url

    async def start(self):
        for url in self.urls:
            data = {"cmd": "request.get", "url": url}
            yield JsonRequest(self.api_url, data=data, dont_filter=True)

    def parse(self, response):
        yield {"url": response.json()["solution"]["currentUrl"]}


@pytest.mark.parametrize("raw", [False, True])
@deferred_f_from_coro_f
async def test_download_slots_of_the_target_apply_in_a_crawl(
    tmp_path, raw, local_server, make_target_site
):
    # The API listens on 127.0.0.1 and the pages are fetched as "localhost":
    # only the target's slot (not the API's) allows one request at a time.
    server, site = local_server, await make_target_site(delay=0.1)
    urls = [site.url(f"/page/{i}", host="localhost") for i in range(4)]
    spider, extra = (_RawPages, {"api_url": server.url}) if raw else (PagesSpider, {})
    maxima = []
    for slots in (
        {"127.0.0.1": {"concurrency": 1}},
        {"localhost": {"concurrency": 1}},
    ):
        settings = settings_for(
            server,
            tmp_path,
            CONCURRENT_REQUESTS_PER_DOMAIN=8,
            SCRAPPEY_SESSION_POOL_SIZE=4,
            SCRAPPEY_SESSION_CONCURRENCY=4,
            DOWNLOAD_SLOTS=slots,
        )
        site.max_active = 0
        result = await crawl(spider, settings, urls=urls, **extra)
        assert len(result.items) == 4
        maxima.append(site.max_active)
    assert maxima[0] > 1
    assert maxima[1] == 1


def test_a_stale_session_id_in_meta_uses_the_scope_pool_not_a_new_named_pool():
    from scrapy_scrappey import Config
    from scrapy_scrappey.routing import Router

    router = Router(Config(api_key="k"), allowed_domains=[], pool_of={}.get)
    meta = {"scrappey_session": "scrapy-scrappey-0123456789abcdef"}
    assert router.route(Request("https://e.com", meta=meta)).pool == "spider"


def test_initial_pools_add_the_listed_named_pools():
    pools = {"alice": {}, "shop.test": {}, "bob": {"size": 2}}
    assert router("spider", pools=pools).initial_pools() == [
        "spider",
        "name:alice",
        "name:shop.test",
        "name:bob",
    ]
    # Under the domain scope "shop.test" is the allowed domain's pool.
    assert router("domain", pools=pools).initial_pools() == [
        "domain:example.com",
        "domain:shop.test",
        "name:alice",
        "name:bob",
    ]
    assert router("none", pools=pools).initial_pools() == [
        "name:alice",
        "name:shop.test",
        "name:bob",
    ]


def test_pool_request_params_sit_between_the_defaults_and_the_meta_dict():
    pools = {
        "fast": {"request_params": {"requestType": "request", "retries": 2}},
        "www.shop.test": {"request_params": {"requestType": "request"}},
    }
    r = router("domain", pools=pools, requestType="browser", retries=1)
    fast = r.route(
        Request(
            "https://x.org",
            meta={"scrappey_session": "fast", "scrappey": {"retries": None}},
        )
    )
    assert fast.params == {"requestType": "request"}
    other = r.route(Request("https://x.org", meta={"scrappey_session": "slow"}))
    assert other.params == {"requestType": "browser", "retries": 1}
    # A configured subdomain has its own pool, more specific than shop.test's.
    www = r.route(Request("https://www.shop.test/"))
    assert (www.pool, www.params["requestType"]) == ("domain:www.shop.test", "request")
    assert r.route(Request("https://shop.test/")).params["requestType"] == "browser"
    # Without a pool (own session), none of the pool's parameters apply.
    own = r.route(Request("https://x.org", meta={"scrappey": {"session": "mine"}}))
    assert own.pool is None
    assert own.params == {"requestType": "browser", "retries": 1, "session": "mine"}


def test_the_spider_method_is_asked_only_without_scrappey_session_meta():
    asked = []

    def choose(request):
        asked.append(request.url)
        return {"https://a.org/": "alice", "https://n.org/": None}.get(
            request.url, False
        )

    r = router(choose=choose)
    assert r.route(Request("https://a.org/")).pool == "name:alice"
    assert r.route(Request("https://n.org/")).pool == "spider"
    assert r.route(Request("https://f.org/")).pool is None
    meta = {"scrappey_session": "bob"}
    assert r.route(Request("https://a.org/", meta=meta)).pool == "name:bob"
    assert asked == ["https://a.org/", "https://n.org/", "https://f.org/"]


@pytest.mark.parametrize("value", [True, 3, "", ["alice"]])
def test_a_bad_spider_method_return_names_the_method_and_request(value):
    r = router(choose=lambda request: value)
    with pytest.raises(ScrappeyConfigError) as info:
        r.route(Request("https://a.org/x"))
    assert "scrappey_session_pool spider method" in str(info.value)
    assert "https://a.org/x" in str(info.value)


def test_may_name_pool_is_false_only_for_requests_that_cannot_reach_one():
    r = router()
    assert not r.may_name_pool(Request("https://x.org"))
    assert not r.may_name_pool(Request("https://x.org", meta={"scrappey": {"a": 1}}))
    assert r.may_name_pool(Request("https://x.org", meta={"scrappey_session": "a"}))
    assert r.may_name_pool(
        Request("https://x.org", meta={"scrappey": {"session": "s"}})
    )
    assert r.may_name_pool(JsonRequest(API, data={"cmd": "request.get"}))
    # A spider method may choose a named pool for any request.
    assert router(choose=lambda request: None).may_name_pool(Request("https://x.org"))
