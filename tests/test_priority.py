"""The start-up warnings: a ScrappeyMiddleware placed before the built-ins,
named pools without the plugin's fingerprinter."""

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import RequestFingerprinter
from tests.crawl import PagesSpider, crawl, settings_for

LOGGER = "scrapy_scrappey._priority"
OURS = "scrapy_scrappey.ScrappeyMiddleware"


@pytest.fixture
def warnings_of(caplog, local_server, target_site, tmp_path):
    """``await warnings_of(middlewares, cache=…, **settings)``: the warnings of a crawl."""

    async def run(middlewares, *, cache=False, spider=PagesSpider, **settings):
        if cache:
            settings.update(HTTPCACHE_ENABLED=True, HTTPCACHE_DIR=str(tmp_path / "c"))
        settings["DOWNLOADER_MIDDLEWARES"] = middlewares
        result = await crawl(
            spider,
            settings_for(local_server, tmp_path, **settings),
            urls=[target_site.url("/page/1")],
        )
        assert len(result.items) == 1  # the crawl "works" either way
        return [r.getMessage() for r in caplog.records if r.name == LOGGER]

    return run


@deferred_f_from_coro_f
async def test_a_priority_below_the_builtins_is_warned_about_once_naming_them(
    warnings_of,
):
    (warning,) = await warnings_of({OURS: 100}, cache=True)
    named = [
        "HttpCacheMiddleware (the HTTP cache stores pages but never serves them)",
        "DownloaderStats (downloader/request_count",
        "CookiesMiddleware (Scrapy's cookies are not forwarded)",
        "UserAgentMiddleware (USER_AGENT is not forwarded)",
        "DefaultHeadersMiddleware (DEFAULT_REQUEST_HEADERS are not forwarded)",
        "HttpAuthMiddleware (",
    ]
    assert [warning.index(name) for name in named] == sorted(
        warning.index(name) for name in named
    )
    # Before it (Offsite, 50) or disabled (RobotsTxt: ROBOTSTXT_OBEY = False).
    assert "OffsiteMiddleware" not in warning
    assert "RobotsTxtMiddleware" not in warning
    assert "950" in warning


@deferred_f_from_coro_f
async def test_disabled_builtins_are_not_named(warnings_of):
    stats = "scrapy.downloadermiddlewares.stats.DownloaderStats"
    (warning,) = await warnings_of({OURS: 450, stats: None}, COOKIES_ENABLED=False)
    # Cache off (HTTPCACHE_ENABLED), stats set to None, cookies off
    # (COOKIES_ENABLED), DefaultHeadersMiddleware (400) before it.
    assert "USER_AGENT" in warning
    for name in ("HttpCache", "DownloaderStats", "Cookies", "DefaultHeaders"):
        assert name not in warning


@pytest.mark.parametrize("priority", [950, 901])
@deferred_f_from_coro_f
async def test_no_warning_after_every_builtin(warnings_of, priority):
    assert await warnings_of({OURS: priority}, cache=True) == []


class _OwnFingerprinter(RequestFingerprinter):
    pass


class _PoolsSpider(PagesSpider):
    scrappey_session_pools = {"bob": {}}


@pytest.mark.parametrize(
    ("settings", "spider", "source", "pools"),
    [
        (
            {"SCRAPPEY_SESSION_POOLS": {"alice": {}, "bob": {}}},
            PagesSpider,
            "SCRAPPEY_SESSION_POOLS",
            "'alice', 'bob'",
        ),
        ({}, _PoolsSpider, "The scrappey_session_pools spider attribute", "'bob'"),
        # Under the domain scope, a host name keys a domain pool: not named.
        (
            {
                "SCRAPPEY_SESSION_SCOPE": "domain",
                "SCRAPPEY_SESSION_POOLS": {"alice": {}, "shop.test": {}},
            },
            PagesSpider,
            "SCRAPPEY_SESSION_POOLS",
            "'alice', but",
        ),
    ],
    ids=["setting", "spider-attribute", "domain-scope"],
)
@deferred_f_from_coro_f
async def test_named_pools_without_the_fingerprinter_are_warned_about_once(
    warnings_of, settings, spider, source, pools
):
    (warning,) = await warnings_of({OURS: 950}, spider=spider, **settings)
    assert warning.startswith(f"{source} lists the named session pools {pools}")
    assert "is scrapy.utils.request.RequestFingerprinter:" in warning
    assert "the same URL in two pools is one request for the dupefilter" in warning
    assert (
        'REQUEST_FINGERPRINTER_CLASS = "scrapy_scrappey.RequestFingerprinter"'
        in warning
    )


@pytest.mark.parametrize(
    "settings",
    [
        {
            "SCRAPPEY_SESSION_POOLS": {"alice": {}},
            "REQUEST_FINGERPRINTER_CLASS": "scrapy_scrappey.RequestFingerprinter",
        },
        {
            "SCRAPPEY_SESSION_POOLS": {"alice": {}},
            "REQUEST_FINGERPRINTER_CLASS": _OwnFingerprinter,
        },
        # Only domain pools listed; named pools used ad hoc are not known at start.
        {
            "SCRAPPEY_SESSION_SCOPE": "domain",
            "SCRAPPEY_SESSION_POOLS": {"shop.test": {}},
        },
        {},
    ],
    ids=["ours", "a-subclass", "domain-pools-only", "no-pools"],
)
@deferred_f_from_coro_f
async def test_no_fingerprinter_warning_when_it_is_set_or_no_named_pool_is_listed(
    warnings_of, settings
):
    assert await warnings_of({OURS: 950}, **settings) == []
