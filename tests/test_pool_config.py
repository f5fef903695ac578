"""SCRAPPEY_SESSION_POOLS, the scrappey_session_pools attribute and SCRAPPEY_STATS_PER_POOL."""

import pytest
from scrapy import Spider
from scrapy.settings import Settings

from scrapy_scrappey import Config, ScrappeyConfigError
from scrapy_scrappey.pool_config import pool_label


def config(**settings):
    return Config.from_settings(Settings({"SCRAPPEY_API_KEY": "k-123456", **settings}))


def test_without_the_setting_every_pool_gets_the_global_settings():
    c = config(
        SCRAPPEY_SESSION_POOL_SIZE=3,
        SCRAPPEY_SESSION_CONCURRENCY=2,
        SCRAPPEY_SESSION_PARAMS={"premiumProxy": True},
        SCRAPPEY_SESSION_MAX_REQUESTS=7,
        SCRAPPEY_SESSION_IDLE_TTL=60,
        SCRAPPEY_SESSION_MAX_ERRORS=4,
    )
    assert c.session_pools.pools == {}
    assert c.session_pools.stats_per_pool is False
    for key in ("spider", "domain:example.com"):
        s = c.pool_settings(key)
        assert (s.size, s.concurrency, s.max_requests) == (3, 2, 7)
        assert (s.idle_ttl, s.max_errors) == (60.0, 4)
        assert dict(s.params) == {"premiumProxy": True}
        assert dict(s.request_params) == {}
        assert s.init is None  # the crawl's own init
    # A named pool is one browser unless configured (issue #15).
    named = c.pool_settings("name:account-1")
    assert (named.size, named.concurrency, named.max_requests) == (1, 2, 7)


def test_a_pool_overrides_only_what_it_sets_for_its_named_and_domain_pool():
    c = config(
        SCRAPPEY_SESSION_POOL_SIZE=3,
        SCRAPPEY_SESSION_PARAMS={"premiumProxy": True, "proxyCountry": "Poland"},
        SCRAPPEY_SESSION_POOLS={
            "de": {
                "size": 2,
                "concurrency": 4,
                "params": {"proxyCountry": "Germany"},
                "request_params": {"requestType": "request"},
                "init": [{"url": "https://example.com/login"}],
                "max_requests": 9,
                "idle_ttl": 0,
                "max_errors": 2,
            },
            "shop.test": {"params": {"browser": [{"name": "firefox"}]}},
        },
        SCRAPPEY_STATS_PER_POOL=True,
    )
    de = c.pool_settings("name:de")
    assert (de.size, de.concurrency, de.max_requests) == (2, 4, 9)
    assert (de.idle_ttl, de.max_errors) == (0.0, 2)
    assert dict(de.params) == {"premiumProxy": True, "proxyCountry": "Germany"}
    assert dict(de.request_params) == {"requestType": "request"}
    assert de.init == ({"cmd": "request.get", "url": "https://example.com/login"},)
    # The same key names the domain pool of that name.
    shop = c.pool_settings("domain:shop.test")
    assert shop.size == 3  # a domain pool keeps SCRAPPEY_SESSION_POOL_SIZE
    assert dict(shop.params) == {
        "premiumProxy": True,
        "proxyCountry": "Poland",
        "browser": [{"name": "firefox"}],
    }
    # Other pools are untouched.
    assert dict(c.pool_settings("spider").params) == {
        "premiumProxy": True,
        "proxyCountry": "Poland",
    }
    assert c.pool_settings("name:shop").size == 1
    assert c.session_pools.stats_per_pool is True


def test_an_empty_init_list_turns_the_init_off_for_that_pool():
    c = config(
        SCRAPPEY_SESSION_INIT=[{"url": "https://example.com/login"}],
        SCRAPPEY_SESSION_POOLS={"guest": {"init": []}},
    )
    assert c.pool_settings("name:guest").init == ()
    assert c.pool_settings("spider").init is None


def test_the_setting_as_json_from_the_command_line():
    c = config(SCRAPPEY_SESSION_POOLS='{"alice": {"size": 2}}')
    assert c.pool_settings("name:alice").size == 2


def test_listed_named_pools_and_domain_keys():
    c = config(SCRAPPEY_SESSION_POOLS={"alice": {}, "shop.test": {}, "localhost": {}})
    assert c.session_pools.named(domains=False) == [
        "name:alice",
        "name:shop.test",
        "name:localhost",
    ]
    # Under the domain scope a host name configures a domain pool.
    assert c.session_pools.named(domains=True) == ["name:alice"]


def test_the_spider_key_configures_the_spider_pool_and_no_named_pool():
    c = config(SCRAPPEY_SESSION_POOLS={"spider": {"size": 3}, "alice": {}})
    assert c.session_pools.named(domains=False) == ["name:alice"]
    assert c.pool_settings("spider").size == 3


def test_pool_labels():
    assert pool_label("name:alice") == "alice"
    assert pool_label("domain:shop.test") == "shop.test"
    assert pool_label("spider") == "spider"
    assert pool_label("name:a:b") == "a:b"


def test_the_spider_attribute_replaces_the_setting():
    class S(Spider):
        name = "s"
        scrappey_session_pools = {"bob": {"size": 4}}

    c = config(
        SCRAPPEY_SESSION_POOLS={"alice": {"size": 2}}, SCRAPPEY_STATS_PER_POOL=True
    )
    c = c.for_spider(S())
    assert list(c.session_pools.pools) == ["bob"]
    assert c.pool_settings("name:bob").size == 4
    assert c.pool_settings("name:alice").size == 1
    assert c.session_pools.stats_per_pool is True  # the setting still applies


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, 2]", "SCRAPPEY_SESSION_POOLS must be a dict"),
        (["alice"], "SCRAPPEY_SESSION_POOLS must be a dict"),
        ({"alice": 3}, r"SCRAPPEY_SESSION_POOLS\['alice'\] must be a dict, got 3"),
        (
            {"alice": {"sise": 2}},
            r"SCRAPPEY_SESSION_POOLS\['alice'\]\['sise'\] is not a pool setting",
        ),
        (
            {"alice": {"size": -1}},
            r"SCRAPPEY_SESSION_POOLS\['alice'\]\['size'\] must be at least 1, got -1",
        ),
        (
            {"alice": {"size": 0}},
            r"SCRAPPEY_SESSION_POOLS\['alice'\]\['size'\] must be at least 1",
        ),
        (
            {"bob": {"concurrency": "many"}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['concurrency'\] must be an integer",
        ),
        (
            {"bob": {"max_requests": -2}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['max_requests'\] must be at least 0",
        ),
        (
            {"bob": {"max_errors": True}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['max_errors'\] must be an integer",
        ),
        (
            {"bob": {"idle_ttl": -5}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['idle_ttl'\] must be 0 or more",
        ),
        (
            {"bob": {"params": "Germany"}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['params'\] must be a dict",
        ),
        (
            {"bob": {"params": {"x": {1}}}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['params'\] must hold JSON values only",
        ),
        (
            {"bob": {"request_params": {"session": "mine"}}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['request_params'\] sets 'session'",
        ),
        (
            {"bob": {"params": {"session": "mine"}}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['params'\] sets 'session'",
        ),
        (
            {"bob": {"init": {"url": "https://e.com"}}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['init'\] must be a list of steps",
        ),
        (
            {"bob": {"init": [{"url": "/login"}]}},
            r"SCRAPPEY_SESSION_POOLS\['bob'\]\['init'\]\[0\] needs a 'url'",
        ),
        ({"": {}}, "SCRAPPEY_SESSION_POOLS keys must be pool names"),
    ],
)
def test_bad_values_name_the_setting_the_pool_and_the_key(value, message):
    with pytest.raises(ScrappeyConfigError, match=message):
        config(SCRAPPEY_SESSION_POOLS=value)


def test_a_bad_spider_attribute_names_the_attribute():
    class S(Spider):
        name = "s"
        scrappey_session_pools = {"alice": {"size": "two"}}

    with pytest.raises(
        ScrappeyConfigError,
        match=r"scrappey_session_pools\['alice'\]\['size'\] must be an integer",
    ):
        config().for_spider(S())

    S.scrappey_session_pools = ["alice"]
    with pytest.raises(
        ScrappeyConfigError, match="scrappey_session_pools must be a dict"
    ):
        config().for_spider(S())


def test_a_bad_stats_per_pool_value_is_named():
    with pytest.raises(
        ScrappeyConfigError, match="SCRAPPEY_STATS_PER_POOL must be a boolean"
    ):
        config(SCRAPPEY_STATS_PER_POOL="sometimes")


def test_no_pool_is_larger_than_the_session_cap():
    c = config(
        SCRAPPEY_SESSION_POOL_SIZE=3,
        SCRAPPEY_MAX_SESSIONS=2,
        SCRAPPEY_SESSION_POOLS={"alice": {"size": 5}, "bob": {}},
    )
    assert c.pool_settings("spider").size == 2
    assert c.pool_settings("name:alice").size == 2
    assert c.pool_settings("name:bob").size == 1
