from pathlib import Path

import pytest
from scrapy import Spider
from scrapy.settings import Settings

from scrapy_scrappey import Config, ScrappeyConfigError
from scrapy_scrappey.config import DEFAULT_API_URL


def config(**settings):
    return Config.from_settings(Settings({"SCRAPPEY_API_KEY": "k-123456", **settings}))


def test_defaults():
    c = config()
    assert c.api_key == "k-123456"
    assert c.api_url == DEFAULT_API_URL
    assert c.transparent is True
    assert c.default_params == {}
    assert c.session_scope == "spider"
    assert c.session_params == {}
    assert (c.pool_size, c.session_concurrency, c.session_max_requests) == (1, 1, 0)
    assert c.session_idle_ttl == 150.0
    assert c.max_sessions == 0
    assert c.session_wait_timeout == 180.0  # follows DOWNLOAD_TIMEOUT
    assert c.close_timeout == 30.0
    assert c.ledger_dir is None


def test_every_setting_is_read():
    c = config(
        SCRAPPEY_API_URL="http://127.0.0.1:1/api/v1/",
        SCRAPPEY_TRANSPARENT=False,
        SCRAPPEY_DEFAULT_PARAMS={"requestType": "request"},
        SCRAPPEY_SESSION_SCOPE="domain",
        SCRAPPEY_SESSION_PARAMS='{"proxyCountry": "Poland"}',
        SCRAPPEY_SESSION_POOL_SIZE="3",
        SCRAPPEY_SESSION_CONCURRENCY=2,
        SCRAPPEY_SESSION_MAX_REQUESTS=10,
        SCRAPPEY_SESSION_IDLE_TTL=0,
        SCRAPPEY_MAX_SESSIONS=7,
        SCRAPPEY_SESSION_WAIT_TIMEOUT=5,
        SCRAPPEY_SESSION_CREATE_ATTEMPTS=2,
        SCRAPPEY_SESSION_CREATE_BACKOFF=0.5,
        SCRAPPEY_API_CONCURRENCY=8,
        SCRAPPEY_CONTROL_TIMEOUT=3,
        SCRAPPEY_CLOSE_TIMEOUT=4,
        SCRAPPEY_LEDGER_DIR="/tmp/x",
        DOWNLOAD_TIMEOUT=60,
    )
    assert c.api_url == "http://127.0.0.1:1/api/v1"
    assert c.transparent is False
    assert c.default_params == {"requestType": "request"}
    assert c.session_scope == "domain"
    assert c.session_params == {"proxyCountry": "Poland"}
    assert (c.pool_size, c.session_concurrency, c.session_max_requests) == (3, 2, 10)
    assert c.session_idle_ttl == 0
    assert c.max_sessions == 7
    assert c.session_wait_timeout == 5
    assert (c.create_attempts, c.create_backoff, c.api_concurrency) == (2, 0.5, 8)
    assert (c.control_timeout, c.close_timeout, c.request_timeout) == (3, 4, 60)
    assert c.ledger_dir == Path("/tmp/x")


def test_key_from_environment(monkeypatch):
    monkeypatch.setenv("SCRAPPEY_API_KEY", "from-env")
    assert Config.from_settings(Settings()).api_key == "from-env"


def test_api_url_from_environment(monkeypatch):
    monkeypatch.setenv("SCRAPPEY_API_URL", "http://127.0.0.1:9/api/v1")
    assert config().api_url == "http://127.0.0.1:9/api/v1"
    assert config(SCRAPPEY_API_URL="http://127.0.0.1:8/api/v1").api_url.endswith(
        ":8/api/v1"
    )


def test_missing_key_names_the_setting():
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_API_KEY"):
        Config.from_settings(Settings())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SCRAPPEY_SESSION_SCOPE", "site", "SCRAPPEY_SESSION_SCOPE must be one of"),
        (
            "SCRAPPEY_SESSION_POOL_SIZE",
            0,
            "SCRAPPEY_SESSION_POOL_SIZE must be at least 1",
        ),
        (
            "SCRAPPEY_SESSION_POOL_SIZE",
            "two",
            "SCRAPPEY_SESSION_POOL_SIZE must be an integer",
        ),
        (
            "SCRAPPEY_SESSION_CONCURRENCY",
            1.5,
            "SCRAPPEY_SESSION_CONCURRENCY must be an integer",
        ),
        (
            "SCRAPPEY_SESSION_MAX_REQUESTS",
            -1,
            "SCRAPPEY_SESSION_MAX_REQUESTS must be at least 0",
        ),
        ("SCRAPPEY_DEFAULT_PARAMS", ["a"], "SCRAPPEY_DEFAULT_PARAMS must be a dict"),
        (
            "SCRAPPEY_SESSION_PARAMS",
            "{not json",
            "SCRAPPEY_SESSION_PARAMS must be a dict",
        ),
        ("SCRAPPEY_CLOSE_TIMEOUT", 0, "SCRAPPEY_CLOSE_TIMEOUT must be more than 0"),
        ("SCRAPPEY_CLOSE_TIMEOUT", "soon", "SCRAPPEY_CLOSE_TIMEOUT must be a number"),
        (
            "SCRAPPEY_SESSION_IDLE_TTL",
            float("nan"),
            "SCRAPPEY_SESSION_IDLE_TTL must be 0 or more",
        ),
        ("SCRAPPEY_API_URL", "ftp://x", "SCRAPPEY_API_URL must be an http"),
        (
            "SCRAPPEY_API_URL",
            "https://x/api/v1?key=abc",
            "must not contain the API key",
        ),
        ("SCRAPPEY_TRANSPARENT", "maybe", "SCRAPPEY_TRANSPARENT must be a boolean"),
    ],
)
def test_invalid_values_name_the_setting(name, value, message):
    with pytest.raises(ScrappeyConfigError, match=message):
        config(**{name: value})


def test_spider_attributes_override_settings():
    class S(Spider):
        name = "s"
        scrappey_session_scope = "domain"
        scrappey_session_params = {"browser": [{"name": "firefox"}]}

    c = config(SCRAPPEY_SESSION_PARAMS={"proxyCountry": "Poland"}).for_spider(S())
    assert c.session_scope == "domain"
    assert c.session_params == {"browser": [{"name": "firefox"}]}


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        ("scrappey_session_scope", "page", "scrappey_session_scope spider attribute"),
        (
            "scrappey_session_params",
            "x",
            "scrappey_session_params spider attribute must be a dict",
        ),
    ],
)
def test_invalid_spider_attributes(attr, value, message):
    spider = Spider(name="s")
    setattr(spider, attr, value)
    with pytest.raises(ScrappeyConfigError, match=message):
        config().for_spider(spider)


def test_session_params_must_be_json():
    from scrapy.settings import Settings

    from scrapy_scrappey import Config

    with pytest.raises(
        ScrappeyConfigError, match="SCRAPPEY_SESSION_PARAMS must hold JSON"
    ):
        Config.from_settings(
            Settings({"SCRAPPEY_API_KEY": "k", "SCRAPPEY_SESSION_PARAMS": {"x": {1}}})
        )
