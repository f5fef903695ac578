import os
import subprocess
import sys
from pathlib import Path

import pytest
from scrapy import FormRequest, Request, Spider, version_info
from scrapy.exceptions import NotConfigured
from scrapy.settings import Settings

from scrapy_scrappey import Config, ScrappeyConfigError
from scrapy_scrappey.config import (
    DEFAULT_API_URL,
    Account,
    default_ledger_dir,
)


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
    assert c.session_wait_timeout == 0  # no bound: wait while the spider is open
    assert c.close_timeout == 30.0
    assert c.ledger_enabled is True
    assert c.ledger_dir == default_ledger_dir()
    assert c.ledger_dir.is_absolute()
    assert c.http_cache is False


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
        SCRAPPEY_LEDGER_ENABLED=False,
        HTTPCACHE_ENABLED=True,
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
    assert c.ledger_enabled is False
    assert c.ledger_dir == Path("/tmp/x")  # known even when disabled
    assert c.http_cache is True


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
        (
            "SCRAPPEY_SESSION_WAIT_TIMEOUT",
            -1,
            "SCRAPPEY_SESSION_WAIT_TIMEOUT must be 0 or more",
        ),
        (
            "SCRAPPEY_SESSION_WAIT_TIMEOUT",
            "forever",
            "SCRAPPEY_SESSION_WAIT_TIMEOUT must be a number",
        ),
        ("SCRAPPEY_API_URL", "ftp://x", "SCRAPPEY_API_URL must be an http"),
        (
            "SCRAPPEY_API_URL",
            "https://x/api/v1?key=abc",
            "must not contain the API key",
        ),
        ("SCRAPPEY_TRANSPARENT", "maybe", "SCRAPPEY_TRANSPARENT must be a boolean"),
        (
            "SCRAPPEY_LEDGER_ENABLED",
            "maybe",
            "SCRAPPEY_LEDGER_ENABLED must be a boolean",
        ),
        ("SCRAPPEY_LEDGER_DIR", 3, "SCRAPPEY_LEDGER_DIR must be a path"),
        ("SCRAPPEY_DEFAULT_PARAMS", "[1, 2]", "SCRAPPEY_DEFAULT_PARAMS must be a dict"),
        ("HTTPCACHE_ENABLED", "maybe", "HTTPCACHE_ENABLED must be a boolean"),
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


def test_disabled_plugin_is_not_configured_whatever_else_is_set():
    with pytest.raises(NotConfigured, match="SCRAPPEY_ENABLED is False"):
        Config.from_settings(Settings({"SCRAPPEY_ENABLED": False}))  # no key either
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_ENABLED must be a boolean"):
        config(SCRAPPEY_ENABLED="maybe")


def test_missing_key_advice_depends_on_the_reader():
    with pytest.raises(ScrappeyConfigError, match="SCRAPPEY_ENABLED = False"):
        Account.from_settings(Settings())
    with pytest.raises(ScrappeyConfigError, match=r"or pass --key\.$"):
        Account.from_settings(Settings(), missing_key_advice="or pass --key")


def test_account_is_what_config_reads(tmp_path):
    settings = Settings(
        {
            "SCRAPPEY_API_KEY": " k-1 ",
            "SCRAPPEY_API_URL": "http://127.0.0.1:1/api/v1/",
            "SCRAPPEY_LEDGER_DIR": str(tmp_path),
        }
    )
    account = Account.from_settings(settings)
    assert account == Account("k-1", "http://127.0.0.1:1/api/v1", tmp_path)
    c = Config.from_settings(settings)
    assert (c.api_key, c.api_url, c.ledger_dir) == (
        account.api_key,
        account.api_url,
        account.ledger_dir,
    )


def test_api_url_is_normalised_once_so_crawls_and_the_cli_share_a_ledger():
    with_slash = config(SCRAPPEY_API_URL="http://127.0.0.1:1/api/v1/").api_url
    assert with_slash == config(SCRAPPEY_API_URL="http://127.0.0.1:1/api/v1").api_url


def test_api_url_with_a_key_is_refused_without_quoting_it():
    for url in ("https://x/api/v1?key=SECRET123", "ftp://x/?key=SECRET123"):
        with pytest.raises(ScrappeyConfigError) as info:
            config(SCRAPPEY_API_URL=url)
        assert "SECRET123" not in str(info.value)


def test_default_ledger_dir_outside_and_inside_a_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCRAPY_SETTINGS_MODULE", raising=False)
    directory = tmp_path / ".scrapy" / "scrappey-sessions"
    assert config().ledger_dir == directory
    assert not (tmp_path / ".scrapy").exists()  # reading settings creates nothing
    (tmp_path / "scrapy.cfg").write_text("[settings]\ndefault = x.settings\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert config().ledger_dir == directory
    assert config(SCRAPPEY_LEDGER_DIR="rel").ledger_dir == tmp_path / "sub" / "rel"


_SELECT_REACTOR_SPIDER = """
import scrapy

class S(scrapy.Spider):
    name = "s"
    start_urls = ["http://127.0.0.1:9/"]

    def parse(self, response):
        pass
"""


def test_another_reactor_stops_the_crawl_at_startup_naming_twisted_reactor(tmp_path):
    (tmp_path / "spider.py").write_text(_SELECT_REACTOR_SPIDER)
    settings = {
        "TWISTED_REACTOR": "twisted.internet.selectreactor.SelectReactor",
        "DOWNLOADER_MIDDLEWARES": '{"scrapy_scrappey.ScrappeyMiddleware": 950}',
        "SCRAPPEY_API_KEY": "TESTKEY-reactor",
        "SCRAPPEY_API_URL": "http://127.0.0.1:9/api/v1",
        "SCRAPPEY_LEDGER_ENABLED": "False",
        "TELNETCONSOLE_ENABLED": "False",
    }
    cmd = [sys.executable, "-m", "scrapy", "runspider", "spider.py"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    env = {k: v for k, v in os.environ.items() if k != "SCRAPY_SETTINGS_MODULE"}
    result = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if version_info >= (2, 19):
        # Scrapy 2.14's runspider exits 0 after a startup error; the message
        # and "nothing crawled" below still hold there.
        assert result.returncode != 0
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("scrapy_scrappey.exceptions.ScrappeyConfigError")
    ]
    # Twisted prints an unhandled startup error and logs it too: one message.
    assert len(set(errors)) == 1, result.stderr
    assert "TWISTED_REACTOR" in errors[0]
    assert "needs the asyncio reactor" in errors[0]
    assert "no running event loop" not in result.stderr
    assert "Crawled" not in result.stderr  # it stopped before any request


def test_session_params_must_be_json():
    from scrapy.settings import Settings

    from scrapy_scrappey import Config

    with pytest.raises(
        ScrappeyConfigError, match="SCRAPPEY_SESSION_PARAMS must hold JSON"
    ):
        Config.from_settings(
            Settings({"SCRAPPEY_API_KEY": "k", "SCRAPPEY_SESSION_PARAMS": {"x": {1}}})
        )


# -- session health (init/checks)


def test_session_health_defaults():
    c = config()
    assert c.session_init == ()
    assert c.session_max_bad_inits == 8
    assert c.session_checker is None
    assert c.session_ban_statuses == frozenset()
    assert c.max_consecutive_check_failures == 20


def test_session_health_settings_are_read():
    login = FormRequest("https://a.org/login", formdata={"user": "u"})
    c = config(
        SCRAPPEY_SESSION_INIT=[{"url": "https://a.org/"}, login],
        SCRAPPEY_SESSION_MAX_BAD_INITS=3,
        SCRAPPEY_SESSION_CHECKER="myproject.checks.Checker",
        SCRAPPEY_SESSION_BAN_STATUSES="403, 429",
        SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES=5,
    )
    assert c.session_init == ({"cmd": "request.get", "url": "https://a.org/"}, login)
    assert c.session_max_bad_inits == 3
    assert c.session_checker == "myproject.checks.Checker"
    assert c.session_ban_statuses == {403, 429}
    assert c.max_consecutive_check_failures == 5
    assert config(SCRAPPEY_SESSION_BAN_STATUSES=[403]).session_ban_statuses == {403}
    from_cli = config(SCRAPPEY_SESSION_INIT='[{"url": "https://a.org/"}]')
    assert from_cli.session_init == ({"cmd": "request.get", "url": "https://a.org/"},)


# -- session health (errors)


def test_session_error_settings_defaults_and_values():
    c = config()
    assert (c.session_max_errors, c.session_over_limit_wait) == (1, 240.0)
    c = config(SCRAPPEY_SESSION_MAX_ERRORS="3", SCRAPPEY_SESSION_OVER_LIMIT_WAIT=0)
    assert (c.session_max_errors, c.session_over_limit_wait) == (3, 0.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SCRAPPEY_SESSION_INIT", {"url": "https://a.org"}, "must be a list of steps"),
        ("SCRAPPEY_SESSION_INIT", "https://a.org", "must be a list of steps"),
        (
            "SCRAPPEY_SESSION_INIT",
            "[{'url': 1}]",
            "SCRAPPEY_SESSION_INIT is not valid JSON",
        ),
        (
            "SCRAPPEY_SESSION_INIT",
            [{"cmd": "request.post"}],
            r"SCRAPPEY_SESSION_INIT\[0\] needs a 'url'",
        ),
        (
            "SCRAPPEY_SESSION_INIT",
            [
                {"url": "https://a.org"},
                {"cmd": "browser.click", "url": "https://a.org"},
            ],
            r"SCRAPPEY_SESSION_INIT\[1\] has the unknown cmd 'browser.click'",
        ),
        (
            "SCRAPPEY_SESSION_INIT",
            [{"url": "https://a.org", "session": "s"}],
            r"SCRAPPEY_SESSION_INIT\[0\] sets 'session'",
        ),
        (
            "SCRAPPEY_SESSION_INIT",
            [{"url": "https://a.org", "postData": object()}],
            "JSON values only",
        ),
        ("SCRAPPEY_SESSION_INIT", [3], r"SCRAPPEY_SESSION_INIT\[0\] must be a dict"),
        (
            "SCRAPPEY_SESSION_INIT",
            [Request("https://a.org", method="OPTIONS")],
            "no command for the OPTIONS method",
        ),
        (
            "SCRAPPEY_SESSION_MAX_BAD_INITS",
            0,
            "SCRAPPEY_SESSION_MAX_BAD_INITS must be at least 1",
        ),
        (
            "SCRAPPEY_SESSION_CHECKER",
            3,
            "SCRAPPEY_SESSION_CHECKER must be the import path",
        ),
        (
            "SCRAPPEY_SESSION_BAN_STATUSES",
            [403, 999],
            "SCRAPPEY_SESSION_BAN_STATUSES must hold",
        ),
        ("SCRAPPEY_SESSION_BAN_STATUSES", 403, "must be a list of HTTP status codes"),
        (
            "SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES",
            "many",
            "SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES must be an integer",
        ),
    ],
)
def test_invalid_session_health_settings_name_the_setting(name, value, message):
    with pytest.raises(ScrappeyConfigError, match=message):
        config(**{name: value})


def test_session_init_spider_attribute_overrides_the_setting():
    class S(Spider):
        name = "s"
        scrappey_session_init = [{"url": "https://b.org/login"}]

    c = config(SCRAPPEY_SESSION_INIT=[{"url": "https://a.org/"}]).for_spider(S())
    assert c.session_init == ({"cmd": "request.get", "url": "https://b.org/login"},)

    class WithMethod(Spider):
        name = "m"

        async def scrappey_session_init(self, session_id, pool, download):
            return True

    # The method is the middleware's business; the setting stays as it was.
    steps = [{"url": "https://a.org/"}]
    c = config(SCRAPPEY_SESSION_INIT=steps).for_spider(WithMethod())
    assert c.session_init == ({"cmd": "request.get", "url": "https://a.org/"},)
    bad = Spider(name="s")
    bad.scrappey_session_init = "login"
    with pytest.raises(
        ScrappeyConfigError, match="scrappey_session_init spider attribute"
    ):
        config().for_spider(bad)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SCRAPPEY_SESSION_MAX_ERRORS",
            0,
            "SCRAPPEY_SESSION_MAX_ERRORS must be at least 1",
        ),
        (
            "SCRAPPEY_SESSION_MAX_ERRORS",
            1.5,
            "SCRAPPEY_SESSION_MAX_ERRORS must be an integer",
        ),
        (
            "SCRAPPEY_SESSION_OVER_LIMIT_WAIT",
            -1,
            "SCRAPPEY_SESSION_OVER_LIMIT_WAIT must be 0 or more seconds",
        ),
        (
            "SCRAPPEY_SESSION_OVER_LIMIT_WAIT",
            "long",
            "SCRAPPEY_SESSION_OVER_LIMIT_WAIT must be a number",
        ),
    ],
)
def test_invalid_session_error_settings_name_the_setting(name, value, message):
    with pytest.raises(ScrappeyConfigError, match=message):
        config(**{name: value})
