"""Each named pool on its own Scrapy cookie jar: two accounts side by side."""

from __future__ import annotations

import pickle
from collections import defaultdict

import pytest
from scrapy import FormRequest, Request, Spider, signals
from scrapy.downloadermiddlewares.cookies import CookiesMiddleware
from scrapy.http import Response
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.request import request_from_dict
from scrapy.utils.test import get_crawler

from scrapy_scrappey import ScrappeyMiddleware
from scrapy_scrappey.cookiejars import PoolJar
from tests.crawl import KEY, crawl, settings_for

ACCOUNTS = ("alice", "bob")
PAGES = 4


class TwoAccounts(Spider):
    """Logs alice and bob in, each on its own pool, then reads member pages
    through each pool: the same URLs in both."""

    name = "two_accounts"

    def __init__(self, site, meta=None, **kwargs):
        super().__init__(**kwargs)
        self.site = site
        self.extra_meta = meta or {}

    async def start(self):
        for user in ACCOUNTS:
            yield FormRequest(
                self.site.url("/login"),
                formdata={"user": user},
                meta={"scrappey_session": user},
                callback=self.logged_in,
                cb_kwargs={"user": user},
            )

    def logged_in(self, response, user):
        for n in range(PAGES):
            yield Request(
                self.site.url(f"/members/{n}"),
                meta={"scrappey_session": user, **self.extra_meta},
                callback=self.member,
                cb_kwargs={"user": user},
            )

    def member(self, response, user):
        yield {
            "pool": user,
            "member": response.css("#member::text").get(),
            "n": response.css("#n::text").get(),
            "session": response.meta["scrappey_session"],
            "jar": response.meta.get("cookiejar"),
        }


def accounts_settings(server, tmp_path, **extra):
    return settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="none",
        REQUEST_FINGERPRINTER_CLASS="scrapy_scrappey.RequestFingerprinter",
        **extra,
    )


def cookies_by_session(stats):
    """``(cmd, cookies string)`` of the page requests the server got, per session."""
    sent = defaultdict(list)
    for command in stats["commands"]:
        if command["cmd"].startswith("request."):
            sent[command["session"]].append((command["cmd"], command["cookies"]))
    return sent


def assert_each_pool_sees_its_own_account(result):
    assert len(result.items) == 2 * PAGES
    assert "dupefilter/filtered" not in result.stats
    for user in ACCOUNTS:
        pages = [i for i in result.items if i["pool"] == user]
        assert sorted(i["n"] for i in pages) == [str(n) for n in range(PAGES)]
        assert {i["member"] for i in pages} == {user}


@pytest.mark.parametrize("size", [1, 2])
@deferred_f_from_coro_f
async def test_cookies_on_each_pool_has_its_own_jar(
    size, tmp_path, local_server, target_site
):
    result = await crawl(
        TwoAccounts,
        accounts_settings(
            local_server,
            tmp_path,
            SCRAPPEY_SESSION_POOLS={user: {"size": size} for user in ACCOUNTS},
        ),
        site=target_site,
    )
    assert_each_pool_sees_its_own_account(result)
    stats = local_server.stats()
    sessions = {
        u: {i["session"] for i in result.items if i["pool"] == u} for u in ACCOUNTS
    }
    assert sessions["alice"].isdisjoint(sessions["bob"])
    assert {len(s) for s in sessions.values()} == {size}
    sent = cookies_by_session(stats)
    for user, other in (("alice", "bob"), ("bob", "alice")):
        for session in sessions[user]:
            cookies = [c or "" for cmd, c in sent[session] if cmd == "request.get"]
            # The pool's jar reached every session of the pool: the one that
            # logged in and (size 2) the other one.
            assert cookies
            assert all(f"auth={user}" in c for c in cookies)
            assert not any(f"auth={other}" in c for c in cookies)
    logins = [c for s in sent.values() for cmd, c in s if cmd == "request.post"]
    assert logins == [None, None]  # neither login carried the other's cookie
    assert {i["jar"] for i in result.items} == {
        PoolJar("name:alice"),
        PoolJar("name:bob"),
    }


@deferred_f_from_coro_f
async def test_cookies_off_each_session_keeps_its_own_login(
    tmp_path, local_server, target_site
):
    result = await crawl(
        TwoAccounts,
        accounts_settings(local_server, tmp_path, COOKIES_ENABLED=False),
        site=target_site,
    )
    assert_each_pool_sees_its_own_account(result)
    assert {i["jar"] for i in result.items} == {None}
    stats = local_server.stats()
    assert all(
        c["cookies"] is None
        for c in stats["commands"]
        if c["cmd"].startswith("request.")
    )


class PoolFromAccount:
    """A downloader middleware after CookiesMiddleware that picks the pool:
    the request's first pass through the cookie jar used the default jar."""

    def process_request(self, request, spider=None):
        if "account" in request.meta:
            request.meta["scrappey_session"] = request.meta["account"]


class AfterDirectLogin(TwoAccounts):
    """mallory logs in directly first (into the default jar); alice and bob
    are given their pool by :class:`PoolFromAccount`."""

    async def start(self):
        yield FormRequest(
            self.site.url("/login"),
            formdata={"user": "mallory"},
            meta={"scrappey": False},
            callback=self.accounts,
        )

    async def accounts(self, response):
        async for request in super().start():
            meta = request.meta
            meta["account"] = meta.pop("scrappey_session")
            yield request

    def logged_in(self, response, user):
        for request in super().logged_in(response, user):
            meta = request.meta
            meta["account"] = meta.pop("scrappey_session")
            # The dupefilter saw no pool when they were scheduled.
            yield request.replace(dont_filter=True)


@deferred_f_from_coro_f
async def test_pool_chosen_after_the_cookie_middleware_gets_its_jar(
    tmp_path, local_server, target_site
):
    result = await crawl(
        AfterDirectLogin,
        accounts_settings(
            local_server,
            tmp_path,
            SCRAPPEY_SESSION_POOLS={user: {"size": 2} for user in ACCOUNTS},
            DOWNLOADER_MIDDLEWARES={
                "scrapy_scrappey.ScrappeyMiddleware": 950,
                PoolFromAccount: 800,
            },
        ),
        site=target_site,
    )
    assert_each_pool_sees_its_own_account(result)
    sent = cookies_by_session(local_server.stats())
    cookies = [c or "" for s in sent.values() for _, c in s]
    assert len(cookies) == 2 + 2 * PAGES
    # The default jar's Cookie header (mallory's login) was replaced by the
    # pool's on every request, the logins included.
    assert not any("mallory" in c for c in cookies)
    assert sum("auth=alice" in c for c in cookies) == PAGES
    assert sum("auth=bob" in c for c in cookies) == PAGES


# -- units: PoolCookieJars with Scrapy's own CookiesMiddleware ---------------

URL = "https://shop.test/account"


class _Spider(Spider):
    name = "jars"


def jars_and_cookies(**settings):
    """The middleware's PoolCookieJars and the engine's CookiesMiddleware."""
    crawler = get_crawler(_Spider, {"SCRAPPEY_API_KEY": KEY, **settings})
    crawler.spider = crawler._create_spider()
    crawler.engine = crawler._create_engine()
    middleware = build_from_crawler(ScrappeyMiddleware, crawler)
    found = crawler.engine.downloader.middleware.middlewares
    cookies = next((m for m in found if isinstance(m, CookiesMiddleware)), None)
    return crawler, middleware._jars, cookies


def collect(cookies, jar_key, cookie):
    """*cookie* stored in the jar *jar_key* as from a page's Set-Cookie."""
    request = Request(URL, meta={} if jar_key is _DEFAULT else {"cookiejar": jar_key})
    cookies.process_response(request, Response(URL, headers={"Set-Cookie": cookie}))


_DEFAULT = object()


def scheduled(crawler, request):
    crawler.signals.send_catch_log(
        signals.request_scheduled, request=request, spider=crawler.spider
    )


def test_cookie_header_from_the_default_jar_is_replaced_by_the_pools():
    _, jars, cookies = jars_and_cookies()
    collect(cookies, _DEFAULT, "auth=mallory")
    collect(cookies, PoolJar("name:alice"), "auth=alice")
    request = Request(URL, meta={"scrappey_session": "alice"})
    cookies.process_request(request)  # not scheduled: the default jar's header
    assert request.headers.getlist("Cookie") == [b"auth=mallory"]
    jars.assign(request, "name:alice")
    assert request.meta["cookiejar"] == PoolJar("name:alice")
    assert request.headers.getlist("Cookie") == [b"auth=alice"]
    jars.assign(request, "name:alice")  # a second pass changes nothing
    assert request.headers.getlist("Cookie") == [b"auth=alice"]


def test_scheduled_request_uses_the_pool_jar_on_its_first_pass():
    crawler, jars, cookies = jars_and_cookies()
    collect(cookies, _DEFAULT, "auth=mallory")
    request = Request(URL, cookies={"note": "mine"}, meta={"scrappey_session": "alice"})
    scheduled(crawler, request)
    assert request.meta["cookiejar"] == PoolJar("name:alice")
    cookies.process_request(request)
    jars.assign(request, "name:alice")  # already on the right jar
    assert request.headers.getlist("Cookie") == [b"note=mine"]
    # The request's own cookie went into the pool's jar, not the default one.
    plain = Request(URL)
    cookies.process_request(plain)
    assert plain.headers.getlist("Cookie") == [b"auth=mallory"]
    again = Request(URL, meta={"scrappey_session": "alice"})
    scheduled(crawler, again)
    cookies.process_request(again)
    assert again.headers.getlist("Cookie") == [b"note=mine"]


def test_request_cookies_are_kept_when_the_jar_is_corrected():
    _, jars, cookies = jars_and_cookies()
    collect(cookies, PoolJar("name:alice"), "auth=alice")
    request = Request(URL, cookies={"note": "mine"}, meta={"scrappey_session": "a"})
    cookies.process_request(request)
    jars.assign(request, "name:alice")
    assert sorted(request.headers.get("Cookie").split(b"; ")) == [
        b"auth=alice",
        b"note=mine",
    ]


@pytest.mark.parametrize("key", [None, 0, "shared", ("name:alice",)])
def test_a_cookiejar_the_user_set_wins(key):
    crawler, jars, cookies = jars_and_cookies()
    collect(cookies, key, "auth=user-jar")
    collect(cookies, PoolJar("name:alice"), "auth=alice")
    request = Request(URL, meta={"scrappey_session": "alice", "cookiejar": key})
    scheduled(crawler, request)
    cookies.process_request(request)
    jars.assign(request, "name:alice")
    assert request.meta["cookiejar"] == key
    assert type(request.meta["cookiejar"]) is type(key)
    assert request.headers.getlist("Cookie") == [b"auth=user-jar"]


def test_copied_pool_jar_follows_the_pool_the_request_is_routed_to():
    _, jars, cookies = jars_and_cookies()
    collect(cookies, _DEFAULT, "auth=mallory")
    collect(cookies, PoolJar("name:alice"), "auth=alice")
    collect(cookies, PoolJar("name:bob"), "auth=bob")
    to_bob = Request(URL, meta={"cookiejar": PoolJar("name:alice")})
    cookies.process_request(to_bob)
    jars.assign(to_bob, "name:bob")
    assert to_bob.headers.getlist("Cookie") == [b"auth=bob"]
    to_scope = Request(URL, meta={"cookiejar": PoolJar("name:alice")})
    cookies.process_request(to_scope)
    jars.assign(to_scope, "spider")  # scope pools share the default jar
    assert "cookiejar" not in to_scope.meta
    assert to_scope.headers.getlist("Cookie") == [b"auth=mallory"]


@pytest.mark.parametrize("pool", [None, "spider", "domain:shop.test"])
def test_scope_pools_and_no_session_keep_the_default_jar(pool):
    crawler, jars, cookies = jars_and_cookies()
    collect(cookies, _DEFAULT, "auth=mallory")
    request = Request(URL)
    scheduled(crawler, request)
    cookies.process_request(request)
    jars.assign(request, pool)
    assert "cookiejar" not in request.meta
    assert request.headers.getlist("Cookie") == [b"auth=mallory"]


def test_nothing_is_set_with_cookies_disabled():
    crawler, jars, cookies = jars_and_cookies(COOKIES_ENABLED=False)
    assert cookies is None
    request = Request(URL, meta={"scrappey_session": "alice"})
    scheduled(crawler, request)
    jars.assign(request, "name:alice")
    assert "cookiejar" not in request.meta


def test_bad_meta_at_scheduling_is_left_to_the_middleware():
    crawler, _, _ = jars_and_cookies()
    request = Request(URL, meta={"scrappey_session": 3})
    scheduled(crawler, request)  # no error logged by the signal
    assert "cookiejar" not in request.meta


def test_pool_jar_key_survives_a_disk_queue():
    request = Request(URL, meta={"cookiejar": PoolJar("name:alice")})
    stored = pickle.loads(pickle.dumps(request.to_dict(), protocol=4))
    assert request_from_dict(stored).meta["cookiejar"] == PoolJar("name:alice")
