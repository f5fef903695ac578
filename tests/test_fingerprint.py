"""RequestFingerprinter: requests told apart by pool and API parameters."""

from __future__ import annotations

import pytest
from scrapy import Request, Spider
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.request import RequestFingerprinter as ScrapyFingerprinter
from scrapy.utils.request import fingerprint as scrapy_fingerprint
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Addon, RequestFingerprinter
from tests.crawl import MIDDLEWARES, PagesSpider, crawl, settings_for

URL = "https://shop.test/item?b=2&a=1"


def fingerprint(url=URL, **meta):
    return RequestFingerprinter().fingerprint(Request(url, meta=meta))


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"scrappey": True},
        {"scrappey": False},
        {"scrappey": {}},
        {"scrappey_session": True},
        {"scrappey_session": False},
        {"scrappey_session": None},
        {"scrappey_session": ""},
        # A session id the crawl does not know goes to the scope's pool.
        {"scrappey_session": "scrapy-scrappey-0123456789abcdef"},
        {"other": "key", "download_slot": "x"},
    ],
)
def test_without_scrappey_meta_it_is_scrapys_exact_fingerprint(meta):
    for request in (
        Request(URL, meta=meta),
        Request(URL, method="POST", body=b"q=1", meta=meta),
        Request(URL + "#frag", meta={**meta, "verbatim_url": True}),
    ):
        assert RequestFingerprinter().fingerprint(request) == scrapy_fingerprint(
            request
        )


def test_pools_and_params_make_different_requests():
    prints = [
        fingerprint(),
        fingerprint(scrappey_session="account-1"),
        fingerprint(scrappey_session="account-2"),
        fingerprint(scrappey={"proxyCountry": "Germany"}),
        fingerprint(scrappey={"proxyCountry": "France"}),
        fingerprint(scrappey_session="account-1", scrappey={"proxyCountry": "France"}),
    ]
    assert len(set(prints)) == len(prints)
    assert {len(p) for p in prints} == {20}  # a SHA-1, as Scrapy's


def test_what_scrapy_treats_as_equal_stays_equal():
    same_pool = fingerprint(scrappey_session="a", scrappey={"x": 1, "y": [2]})
    assert same_pool == fingerprint(
        "https://shop.test/item?a=1&b=2",
        scrappey={"y": [2], "x": 1},
        scrappey_session="a",
    )
    assert fingerprint(scrappey_session="a") != fingerprint(
        "https://shop.test/other", scrappey_session="a"
    )


def test_unserialisable_params_do_not_break_scheduling():
    assert fingerprint(scrappey={"when": object}) != fingerprint()


def test_a_request_keeps_its_fingerprint_when_its_meta_records_the_session():
    fingerprinter = RequestFingerprinter()
    request = Request(URL, meta={"scrappey_session": "account-1"})
    before = fingerprinter.fingerprint(request)
    request.meta["scrappey_session"] = "scrapy-scrappey-0123456789abcdef"
    # What the HTTP cache stores after the download is what it looked up.
    assert fingerprinter.fingerprint(request) == before


def test_before_the_crawl_starts_every_session_id_is_unknown():
    crawler = get_crawler(Spider, {"SCRAPPEY_API_KEY": "k", "ADDONS": {Addon: 0}})
    fingerprinter = crawler.request_fingerprinter  # no engine, no middleware yet
    session_id = Request(URL, meta={"scrappey_session": "scrapy-scrappey-00ff"})
    assert fingerprinter.fingerprint(session_id) == scrapy_fingerprint(session_id)
    named = Request(URL, meta={"scrappey_session": "account-1"})
    assert fingerprinter.fingerprint(named) == fingerprint(scrappey_session="account-1")


def test_built_by_the_crawler_from_the_setting():
    crawler = get_crawler(
        Spider, {"REQUEST_FINGERPRINTER_CLASS": "scrapy_scrappey.RequestFingerprinter"}
    )
    assert isinstance(crawler.request_fingerprinter, RequestFingerprinter)


class _OwnFingerprinter(ScrapyFingerprinter):
    pass


def _fingerprinter_of(settings=None, spider_settings=None):
    class _Spider(Spider):
        name = "fp"
        custom_settings = spider_settings or {}

    settings = {"ADDONS": {Addon: 0}, "SCRAPPEY_API_KEY": "k", **(settings or {})}
    return get_crawler(_Spider, settings).request_fingerprinter


def test_addon_sets_the_fingerprinter():
    assert type(_fingerprinter_of()) is RequestFingerprinter


@pytest.mark.parametrize(
    ("settings", "spider_settings"),
    [
        ({"REQUEST_FINGERPRINTER_CLASS": _OwnFingerprinter}, None),
        (None, {"REQUEST_FINGERPRINTER_CLASS": _OwnFingerprinter}),
    ],
)
def test_addon_keeps_a_fingerprinter_the_project_chose(settings, spider_settings):
    assert type(_fingerprinter_of(settings, spider_settings)) is _OwnFingerprinter


def test_addon_keeps_scrapys_fingerprinter_when_the_project_names_it():
    own = {"REQUEST_FINGERPRINTER_CLASS": "scrapy.utils.request.RequestFingerprinter"}
    assert type(_fingerprinter_of(own)) is ScrapyFingerprinter


class SameUrlTwoPools(Spider):
    name = "same_url"

    def __init__(self, url, **kwargs):
        super().__init__(**kwargs)
        self.url = url

    async def start(self):
        for pool in ("account-1", "account-2"):
            yield Request(self.url, meta={"scrappey_session": pool})

    def parse(self, response):
        yield {"session": response.meta["scrappey_session"]}


@pytest.mark.parametrize(
    ("enable", "items", "filtered"),
    [
        ({"ADDONS": {Addon: 0}}, 2, None),
        (
            {"REQUEST_FINGERPRINTER_CLASS": "scrapy_scrappey.RequestFingerprinter"},
            2,
            None,
        ),
        ({}, 1, 1),  # Scrapy's own fingerprinter drops the second one
    ],
)
@deferred_f_from_coro_f
async def test_same_url_through_two_pools_is_two_requests(
    enable, items, filtered, tmp_path, local_server, target_site
):
    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_SCOPE="none")
    result = await crawl(
        SameUrlTwoPools, {**settings, **enable}, url=target_site.url("/page/1")
    )
    assert result.crawler.settings["DOWNLOADER_MIDDLEWARES"] == MIDDLEWARES
    assert len(result.items) == items
    assert len({i["session"] for i in result.items}) == items
    assert result.stats.get("dupefilter/filtered") == filtered
    assert target_site.hits == ["/page/1"] * items


def _cached(settings, tmp_path, **extra):
    cache = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "cache")}
    return {**settings, **cache, **extra}


def _page_calls(server):
    return sum(1 for c in server.stats()["commands"] if c["cmd"].startswith("request."))


@deferred_f_from_coro_f
async def test_http_cache_keeps_each_pools_copy_across_runs(
    tmp_path, local_server, target_site
):
    settings = _cached(
        settings_for(local_server, tmp_path, SCRAPPEY_SESSION_SCOPE="none"),
        tmp_path,
        ADDONS={Addon: 0},
    )
    url = target_site.url("/page/1")
    first = await crawl(SameUrlTwoPools, settings, url=url)
    assert _page_calls(local_server) == 2
    # Stored under the key looked up, though the meta then got the session id.
    second = await crawl(SameUrlTwoPools, settings, url=url)
    assert _page_calls(local_server) == 2
    assert second.stats["httpcache/hit"] == 2
    assert len(first.items) == len(second.items) == 2


@deferred_f_from_coro_f
async def test_http_cache_of_scrapys_fingerprinter_stays_valid(
    tmp_path, local_server, target_site
):
    settings = _cached(settings_for(local_server, tmp_path), tmp_path)
    urls = [target_site.url(f"/page/{i}") for i in range(3)]
    await crawl(PagesSpider, settings, urls=urls)
    calls = _page_calls(local_server)
    assert calls == 3
    ours = {**settings, "ADDONS": {Addon: 0}}
    again = await crawl(PagesSpider, ours, urls=urls)
    assert type(again.crawler.request_fingerprinter) is RequestFingerprinter
    assert _page_calls(local_server) == calls
    assert again.stats["httpcache/hit"] == 3


class RingSpider(Spider):
    """/page/1 → … → /page/5 → /page/1, each link followed by the README's
    affinity one-liner; the start request goes through the dupefilter too."""

    name = "ring"

    def __init__(self, site, **kwargs):
        super().__init__(**kwargs)
        self.site = site

    async def start(self):
        yield Request(self.site.url("/page/1"))

    def parse(self, response):
        n = int(response.css("#n::text").get())
        yield {"n": n, "session": response.meta["scrappey_session"]}
        url = response.urljoin(f"/page/{n % 5 + 1}")
        yield response.follow(
            url, meta={"scrappey_session": response.meta["scrappey_session"]}
        )


@deferred_f_from_coro_f
async def test_a_chain_on_rotating_sessions_fetches_each_page_once(
    tmp_path, local_server, target_site
):
    settings = settings_for(
        local_server,
        tmp_path,
        ADDONS={Addon: 0},
        SCRAPPEY_SESSION_MAX_REQUESTS=3,
        CLOSESPIDER_ITEMCOUNT=30,  # the bound of a dupefilter that would not stop it
    )
    result = await crawl(RingSpider, settings, site=target_site)
    assert [i["n"] for i in result.items] == [1, 2, 3, 4, 5]
    # Rotated after three pages: the chain went on on the replacement.
    assert len({i["session"] for i in result.items}) == 2
    assert result.stats["scrappey/sessions/affinity_lost"] == 1
    assert result.stats["dupefilter/filtered"] == 1  # /page/5 → /page/1
    assert sorted(target_site.hits) == [f"/page/{n}" for n in range(1, 6)]


class SessionIdsSpider(Spider):
    """Fetches a page on the pool ``account-1`` and one on the spider's pool,
    and fingerprints another URL with each session id it was answered on."""

    name = "session_ids"

    def __init__(self, site, **kwargs):
        super().__init__(**kwargs)
        self.site = site

    async def start(self):
        yield Request(self.site.url("/page/1"), meta={"scrappey_session": "account-1"})
        yield Request(self.site.url("/page/2"))

    def parse(self, response):
        session = response.meta["scrappey_session"]
        other = Request(self.site.url("/page/9"), meta={"scrappey_session": session})
        yield {
            "url": response.url,
            "session": session,
            "fingerprint": self.crawler.request_fingerprinter.fingerprint(other),
        }


@deferred_f_from_coro_f
async def test_a_session_id_fingerprints_as_its_named_pool_or_as_no_meta(
    tmp_path, local_server, target_site
):
    settings = settings_for(local_server, tmp_path, ADDONS={Addon: 0})
    result = await crawl(SessionIdsSpider, settings, site=target_site)
    url = target_site.url("/page/9")
    # /page/1 went to account-1, /page/2 to the spider's pool.
    named, scope = sorted(result.items, key=lambda i: i["url"])
    assert named["session"] != scope["session"]
    assert named["fingerprint"] == fingerprint(url, scrappey_session="account-1")
    assert named["fingerprint"] != fingerprint(url, scrappey_session="account-2")
    assert scope["fingerprint"] == scrapy_fingerprint(Request(url))
