"""Session affinity: a request naming a session id gets that session, or its replacement."""

import asyncio

import pytest
from scrapy import FormRequest, Request, Spider
from scrapy.http import JsonRequest
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.exceptions import SessionsUnavailable
from scrapy_scrappey.local import Faults
from scrapy_scrappey.pool_config import SessionPools
from tests.crawl import PagesSpider, crawl, settings_for
from tests.test_middleware import TRANSIENT, close, opened, request_commands, stat
from tests.test_sessions import manager_for


def _same_browser(response):
    return {"scrappey_session": response.meta["scrappey_session"]}


class LoginChain(Spider):
    """Per user: GET /login, POST /login, then /members/1… one page at a time,
    each on the browser of the page before (the users' chains share URLs)."""

    name = "login-chain"

    def __init__(self, site, pages, users=("me",), **kwargs):
        super().__init__(**kwargs)
        self.site = site
        self.pages = pages
        self.users = users

    async def start(self):
        for user in self.users:
            url = self.site.url("/login")
            yield Request(
                url, callback=self.login, cb_kwargs={"user": user}, dont_filter=True
            )

    def login(self, response, user):
        token = response.css("input[name=csrf]::attr(value)").get()
        yield FormRequest(
            response.url,
            formdata={"csrf": token, "user": user},
            meta=_same_browser(response),
            callback=self.members,
            cb_kwargs={"user": user},
            dont_filter=True,
        )

    def members(self, response, user, n=0):
        if n:  # 0: the answer to the login
            yield {
                "user": user,
                "n": n,
                "member": response.css("#member::text").get(),
                "session": response.meta["scrappey_session"],
            }
        if n < self.pages:
            yield response.follow(
                f"/members/{n + 1}",
                meta=_same_browser(response),
                callback=self.members,
                cb_kwargs={"user": user, "n": n + 1},
                dont_filter=True,
            )


def _requests(server):
    """``(session, path)`` of every ``request.*`` the server got, in order."""
    return [
        (c["session"], c["cmd"], c["url"].split("/", 3)[3])
        for c in server.stats()["commands"]
        if c["cmd"].startswith("request.")
    ]


def _logging_in(server, tmp_path, site, **settings):
    """Crawl settings where every new session logs in as "me" in its init."""
    login = {"cmd": "request.post", "url": site.url("/login"), "postData": "user=me"}
    return settings_for(
        server,
        tmp_path,
        COOKIES_ENABLED=False,
        SCRAPPEY_SESSION_INIT=[login],
        **settings,
    )


@deferred_f_from_coro_f
async def test_a_chain_whose_session_dies_goes_on_on_its_replacement_after_init(
    tmp_path, make_local_server, target_site
):
    # Every session expires on the server after 5 requests (its init included):
    # the chain's session dies on /members/3.
    server = await make_local_server(faults=Faults(expire_after_requests=5))
    settings = _logging_in(server, tmp_path, target_site, SCRAPPEY_SESSION_POOL_SIZE=3)
    result = await crawl(LoginChain, settings, site=target_site, pages=6)
    assert [i["n"] for i in result.items] == [1, 2, 3, 4, 5, 6]
    assert {i["member"] for i in result.items} == {"me"}  # logged in on every page
    first, second = result.items[0]["session"], result.items[-1]["session"]
    assert [i["session"] for i in result.items] == [first] * 2 + [second] * 4
    sent = _requests(server)
    starters = {s for s, _, _ in sent[:3]}  # the three inits at start
    assert first in starters
    assert second not in starters  # not another session of the pool
    assert [(c, p) for s, c, p in sent if s == second] == [
        ("request.post", "login"),  # its init ran before the chain's page
        ("request.get", "members/3"),
        ("request.get", "members/4"),
        ("request.get", "members/5"),
        ("request.get", "members/6"),
    ]
    assert result.stats["scrappey/sessions/recreated"] == 1
    assert result.stats["scrappey/sessions/affinity_lost"] == 1
    assert server.stats()["sessions"]["created"] == 4


@deferred_f_from_coro_f
async def test_a_chain_follows_its_session_through_rotations(
    tmp_path, local_server, target_site
):
    settings = _logging_in(
        local_server,
        tmp_path,
        target_site,
        SCRAPPEY_SESSION_POOL_SIZE=2,
        SCRAPPEY_SESSION_MAX_REQUESTS=3,  # crawl requests: the init's do not count
    )
    result = await crawl(LoginChain, settings, site=target_site, pages=6)
    assert {i["member"] for i in result.items} == {"me"}
    used = [i["session"] for i in result.items]
    # GET, POST, /members/1 | /members/2-4 | /members/5-6: each on the successor.
    assert used == used[:1] + used[1:2] * 3 + used[4:5] * 2
    assert len(set(used)) == 3
    starters = {s for s, _, _ in _requests(local_server)[:2]}  # the two inits
    assert not starters & set(used[1:])  # never the other session of the pool
    assert result.stats["scrappey/sessions/rotated"] == 2
    assert result.stats["scrappey/sessions/affinity_lost"] == 2


@deferred_f_from_coro_f
async def test_concurrent_chains_each_keep_their_own_browser(
    tmp_path, local_server, target_site
):
    users = ("ann", "bob", "cy")
    # One session more than chains: a free one is always there to hop to.
    settings = settings_for(
        local_server, tmp_path, COOKIES_ENABLED=False, SCRAPPEY_SESSION_POOL_SIZE=4
    )
    result = await crawl(LoginChain, settings, site=target_site, pages=4, users=users)
    assert len(result.items) == 12
    # Logged in as its own user on every page: no chain used another's browser.
    assert all(i["member"] == i["user"] for i in result.items)
    by_user = {u: {i["session"] for i in result.items if i["user"] == u} for u in users}
    assert all(len(sessions) == 1 for sessions in by_user.values())
    assert local_server.stats()["sessions"]["created"] == 4


@deferred_f_from_coro_f
async def test_a_session_in_the_scrappey_dict_is_leased_and_reported(
    tmp_path, local_server, target_site, api_calls
):
    class Pinned(PagesSpider):
        def parse(self, response):
            yield from super().parse(response)
            if response.url.endswith("/page/0"):
                pinned = {"scrappey": {"session": response.meta["scrappey_session"]}}
                for n in range(1, 4):
                    yield response.follow(f"/page/{n}", meta=pinned)

    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=2)
    result = await crawl(Pinned, settings, urls=[target_site.url("/page/0")])
    sessions = {i["request_url"].rsplit("/", 1)[1]: i["session"] for i in result.items}
    assert len(sessions) == 4
    assert len(set(sessions.values())) == 1  # the reported id is the one used
    assert {s for s, _, _ in _requests(local_server)} == set(sessions.values())
    assert api_calls.max_in_flight("request.get") == 1  # leased: one at a time


class RawFollowUps(Spider):
    """Raw mode: one command, then three at once naming the reply's session."""

    name = "raw-follow-ups"

    def __init__(self, api_url, site, **kwargs):
        super().__init__(**kwargs)
        self.api_url = api_url
        self.site = site

    def command(self, n, **extra):
        url = self.site.url(f"/page/{n}")
        data = {"cmd": "request.get", "url": url, **extra}
        return JsonRequest(self.api_url, data=data, dont_filter=True)

    async def start(self):
        yield self.command(0)

    def parse(self, response):
        session = response.json()["session"]
        yield {"session": session, "meta": response.meta["scrappey_session"]}
        if response.meta["scrappey_session"] and not response.meta.get("follow_up"):
            for n in range(1, 4):
                yield self.command(n, session=session).replace(meta={"follow_up": 1})


@deferred_f_from_coro_f
async def test_a_raw_command_naming_a_session_of_the_crawl_leases_it(
    tmp_path, local_server, target_site, api_calls
):
    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=2)
    result = await crawl(
        RawFollowUps, settings, api_url=local_server.url, site=target_site
    )
    assert len(result.items) == 4
    assert len({(i["session"], i["meta"]) for i in result.items}) == 1
    assert api_calls.max_in_flight("request.get") == 1  # leased: one at a time


@deferred_f_from_coro_f
async def test_a_session_of_the_spider_s_own_is_passed_through(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(unknown_session="create")
    url = target_site.url("/page/1")
    settings = settings_for(server, tmp_path)
    result = await crawl(
        PagesSpider, settings, urls=[(url, {"scrappey": {"session": "mine"}})]
    )
    assert [i["session"] for i in result.items] == ["mine"]
    assert _requests(server) == [("mine", "request.get", "page/1")]


# -- SessionManager: leasing by id -------------------------------------------


async def _settle():
    for _ in range(3):
        await asyncio.sleep(0)


class _RecordingInit:
    """A session init (``prepare``) that notes the sessions it ran on."""

    def __init__(self):
        self.ran = []

    async def __call__(self, session):
        self.ran.append(session.id)
        await asyncio.sleep(0.05)  # long enough for a waiter to get it too early
        return True


@deferred_f_from_coro_f
async def test_a_lease_by_id_waits_in_order_for_that_session(local_server):
    async with manager_for(local_server, pool_size=2) as manager:
        first = await manager.lease("spider")
        other = await manager.lease("spider")
        manager.release(other)  # free, but not the session asked for
        waiters = [
            asyncio.ensure_future(manager.lease("spider", first.id)) for _ in range(2)
        ]
        await _settle()
        assert not any(w.done() for w in waiters)
        manager.release(first)
        await _settle()
        assert waiters[0].done()
        assert not waiters[1].done()
        assert waiters[0].result() is first
        assert first.in_flight == 1  # SCRAPPEY_SESSION_CONCURRENCY holds
        manager.release(first)
        assert await asyncio.wait_for(waiters[1], 2) is first
        manager.release(first)


@deferred_f_from_coro_f
async def test_a_freed_session_goes_to_its_own_waiters_before_the_pool_s(local_server):
    async with manager_for(local_server, session_concurrency=2) as manager:
        session = await manager.lease("spider")
        assert await manager.lease("spider", session.id) is session  # room for 2
        anyone = asyncio.ensure_future(manager.lease("spider"))
        mine = asyncio.ensure_future(manager.lease("spider", session.id))
        await _settle()
        manager.release(session)
        await _settle()
        assert mine.done()
        assert not anyone.done()
        manager.release(session)
        assert await asyncio.wait_for(anyone, 2) is session
        manager.release(session)
        manager.release(mine.result())


@deferred_f_from_coro_f
async def test_a_retired_session_s_waiters_get_its_replacement_after_its_init(
    local_server,
):
    init = _RecordingInit()
    async with manager_for(local_server, prepare=init, pool_size=2) as manager:
        first = await manager.lease("spider")
        other = await manager.lease("spider")
        manager.release(other)  # free all along
        waiter = asyncio.ensure_future(manager.lease("spider", first.id))
        await _settle()
        manager.retire(first, "check")
        manager.release(first)
        replacement = await asyncio.wait_for(waiter, 5)
        assert replacement not in (first, other)
        assert init.ran[-1] == replacement.id  # its init ran first
        assert first.successor is replacement
        manager.release(replacement)
        # Later leases for the retired id go there too, without waiting.
        assert await manager.lease("spider", first.id) is replacement
        manager.release(replacement)


@deferred_f_from_coro_f
async def test_each_dead_session_gets_its_own_replacement(local_server):
    async with manager_for(local_server, pool_size=2) as manager:
        a = await manager.lease("spider")
        b = await manager.lease("spider")
        waiters = {
            s: asyncio.ensure_future(manager.lease("spider", s.id)) for s in (a, b)
        }
        await _settle()
        for session in (a, b):
            manager.report_dead(session, "Session not found")
            manager.release(session)
        new_a = await asyncio.wait_for(waiters[a], 5)
        new_b = await asyncio.wait_for(waiters[b], 5)
        assert (a.successor, b.successor) == (new_a, new_b)
        assert len({a, b, new_a, new_b}) == 4
        manager.release(new_a)
        manager.release(new_b)


@deferred_f_from_coro_f
async def test_without_a_replacement_coming_a_lease_by_id_takes_any_session(
    local_server,
):
    async with manager_for(local_server, pool_size=2) as manager:
        first = await manager.lease("spider")
        other = await manager.lease("spider")
        waiter = asyncio.ensure_future(manager.lease("spider", first.id))
        await _settle()
        create = manager._creator.create

        async def fail_once(pool_key, params):
            manager._creator.create = create
            raise SessionsUnavailable("refused")

        manager._creator.create = fail_once  # its replacement is never made
        manager.retire(first, "check")
        manager.release(first)
        await asyncio.sleep(0.1)
        assert not waiter.done()  # waits for a session, as any lease would
        manager.release(other)
        assert await asyncio.wait_for(waiter, 2) is other
        manager.release(other)
        # A later lease for the id starts a replacement and waits for it.
        replacement = await asyncio.wait_for(manager.lease("spider", first.id), 5)
        assert first.successor is replacement
        assert replacement is not other
        manager.release(replacement)


@deferred_f_from_coro_f
async def test_an_evicted_session_s_waiters_get_its_replacement(local_server):
    async with manager_for(local_server, max_sessions=1) as manager:
        first = await manager.lease("name:a")
        waiter = asyncio.ensure_future(manager.lease("name:a", first.id))
        await _settle()
        other = asyncio.ensure_future(manager.lease("name:b"))  # evicts first
        await _settle()
        assert first.retired
        manager.release(first)
        manager.release(await asyncio.wait_for(other, 5))
        replacement = await asyncio.wait_for(waiter, 5)
        assert first.successor is replacement
        manager.release(replacement)


@deferred_f_from_coro_f
async def test_an_unknown_id_is_an_ordinary_lease(local_server):
    async with manager_for(local_server) as manager:
        session = await manager.lease("spider", "scrapy-scrappey-0000000000000000")
        assert session.pool == "spider"
        manager.release(session)


@pytest.mark.parametrize(
    "pin",
    [
        lambda sid: {"scrappey_session": sid},
        lambda sid: {"scrappey": {"session": sid}},
    ],
    ids=["meta-key", "scrappey-dict"],
)
@deferred_f_from_coro_f
async def test_a_request_that_lost_its_session_is_counted_once(
    tmp_path, local_server, target_site, pin
):
    mw = await opened(local_server, tmp_path)
    try:
        first = await mw.process_request(Request(target_site.url("/page/0")))
        gone = first.meta["scrappey_session"]
        local_server.faults = Faults(
            expire_after_requests=1
        )  # its next one is its last
        await mw.process_request(Request(target_site.url("/page/1"), meta=pin(gone)))
        retry = await mw.process_request(
            Request(target_site.url("/page/2"), meta=pin(gone))
        )  # "Session not found": retried
        assert stat(mw, "scrappey/sessions/affinity_lost") is None
        local_server.faults = Faults(error_rate=1.0, error_codes=(TRANSIENT,))
        retry = await mw.process_request(retry)  # on the replacement, which fails
        assert stat(mw, "scrappey/sessions/affinity_lost") == 1
        local_server.faults = Faults()
        response = await mw.process_request(retry)
    finally:
        await close(mw)
    assert stat(mw, "scrappey/sessions/affinity_lost") == 1
    replacement = response.meta["scrappey_session"]
    assert replacement not in (None, gone)
    assert [c["session"] for c in request_commands(local_server)] == [gone] * 3 + [
        replacement
    ] * 2


@pytest.mark.parametrize(("own", "global_", "granted"), [(1, 3, False), (3, 1, True)])
@deferred_f_from_coro_f
async def test_a_lease_by_id_keeps_its_pool_s_own_concurrency(
    local_server, own, global_, granted
):
    # The pool's own concurrency decides, not SCRAPPEY_SESSION_CONCURRENCY.
    pools = SessionPools.from_settings(
        Settings({"SCRAPPEY_SESSION_POOLS": {"acct": {"concurrency": own}}})
    )
    async with manager_for(
        local_server, session_concurrency=global_, session_pools=pools
    ) as manager:
        session = await manager.lease("name:acct")
        second = asyncio.ensure_future(manager.lease("name:acct", session.id))
        await _settle()
        assert second.done() is granted
        manager.release(session)
        assert await asyncio.wait_for(second, 2) is session
        manager.release(session)


@deferred_f_from_coro_f
async def test_a_live_session_s_id_is_never_forgotten(local_server, monkeypatch):
    monkeypatch.setattr("scrapy_scrappey._filling._ID_MEMORY", 2)
    async with manager_for(local_server) as manager:
        keep = await manager.lease("name:keep")  # the oldest id: still live
        manager.release(keep)
        retired = []
        for _ in range(4):  # each retirement brings a new session, a new id
            session = await manager.lease("spider")
            manager.retire(session, "check")
            manager.release(session)
            retired.append(session)
        manager.release(await manager.lease("spider"))
        assert manager.pool_of(keep.id) == "name:keep"
        assert manager.pool_of(retired[0].id) is None  # retired ids go first
