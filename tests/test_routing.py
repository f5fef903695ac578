import pytest
from scrapy import Request
from scrapy.http import JsonRequest

from scrapy_scrappey import Config, ScrappeyConfigError
from scrapy_scrappey.routing import Router

API = "http://127.0.0.1:9/api/v1"


def router(scope="spider", transparent=True, known=None, **params):
    config = Config(
        api_key="k",
        api_url=API,
        session_scope=scope,
        transparent=transparent,
        default_params=params,
    )
    return Router(
        config, allowed_domains=["example.com", "shop.test"], pool_of=(known or {}).get
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


def test_defaults_merge_and_slot_key():
    route = router(requestType="request").route(
        Request(
            "https://x.org/p",
            meta={"scrappey": {"premiumProxy": True}, "download_slot": "s1"},
        )
    )
    assert route.params == {"requestType": "request", "premiumProxy": True}
    assert (
        route.slot_key(Request("https://x.org/p", meta={"download_slot": "s1"})) == "s1"
    )
    assert route.slot_key(Request("https://x.org/p")) == "x.org"


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


def test_a_stale_session_id_in_meta_uses_the_scope_pool_not_a_new_named_pool():
    from scrapy_scrappey import Config
    from scrapy_scrappey.routing import Router

    router = Router(Config(api_key="k"), allowed_domains=[], pool_of={}.get)
    meta = {"scrappey_session": "scrapy-scrappey-0123456789abcdef"}
    assert router.route(Request("https://e.com", meta=meta)).pool == "spider"
