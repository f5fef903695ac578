"""Each named pool on its own Scrapy cookie jar: two accounts side by side."""

from __future__ import annotations

from collections import defaultdict

import pytest
from scrapy import FormRequest, Request, Spider
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.cookiejars import PoolJar
from tests.crawl import crawl, settings_for

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
        accounts_settings(local_server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=size),
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
            SCRAPPEY_SESSION_POOL_SIZE=2,
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
