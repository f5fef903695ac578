"""The example project: its spiders crawl the demo site through LocalScrappey."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from scrapy import Request, signals
from scrapy.http import HtmlResponse
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from example_project.demo import BAN_VENDORS, MULTI_BAN_AFTER
from example_project.demo_site import (
    ARTICLES,
    BAN_AFTER,
    LOGOUT_AFTER,
    MEMBER_NOTES,
    DemoSite,
)
from example_project.scrappey_example import settings as project_settings
from example_project.scrappey_example.spiders.existing import ExistingSpider
from example_project.scrappey_example.spiders.members import MembersSpider
from example_project.scrappey_example.spiders.multi import MultiSpider
from example_project.scrappey_example.spiders.quotes import QuotesSpider
from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.engine_choice import missing_browser
from tests.crawl import PagesSpider, crawl, settings_for

if TYPE_CHECKING:
    from scrapy_scrappey.local import LocalScrappey

ROOT = Path(__file__).resolve().parent.parent
KEY = "TESTKEY-example-project"
REQUEST_COMMANDS = ("request.get", "request.post")


def project_settings_for(server: LocalScrappey, tmp_path: Path) -> dict[str, Any]:
    """The project's settings module, pointed at the local server."""
    settings = {
        name: getattr(project_settings, name)
        for name in dir(project_settings)
        if name.isupper()
    }
    assert settings["DOWNLOADER_MIDDLEWARES"] == {
        "scrapy_scrappey.ScrappeyMiddleware": 950
    }
    # Imported here as example_project.scrappey_example, not scrappey_example.
    settings["SPIDER_MODULES"] = [
        f"example_project.{module}" for module in settings["SPIDER_MODULES"]
    ]
    settings.pop("NEWSPIDER_MODULE")
    settings.update(
        SCRAPPEY_API_KEY=KEY,
        SCRAPPEY_API_URL=server.url,
        SCRAPPEY_LEDGER_DIR=str(tmp_path / "ledger"),
        FEEDS={str(tmp_path / "%(name)s.jsonl"): {"format": "jsonlines"}},
    )
    return settings


async def run(
    spider_cls: type,
    server: LocalScrappey,
    site: DemoSite,
    tmp_path: Path,
    scheduled: list[Request] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Crawl the demo site; *scheduled* collects the requests the spider made."""
    crawler = get_crawler(spider_cls, project_settings_for(server, tmp_path))
    items: list[dict[str, Any]] = []

    def collect(item: dict[str, Any]) -> None:
        items.append(item)

    def schedule(request: Request) -> None:
        if scheduled is not None:
            scheduled.append(request.copy())

    crawler.signals.connect(collect, signal=signals.item_scraped, weak=False)
    crawler.signals.connect(schedule, signal=signals.request_scheduled, weak=False)
    await crawler.crawl_async(site=site.url)
    stats = crawler.stats.get_stats()
    assert stats["finish_reason"] == "finished"
    assert stats.get("log_count/ERROR", 0) == 0
    feed = (tmp_path / f"{spider_cls.name}.jsonl").read_text().splitlines()
    assert len(feed) == len(items)
    return items, stats


def request_commands(stats: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in stats["commands"] if c["cmd"] in REQUEST_COMMANDS]


@deferred_f_from_coro_f
async def test_demo_site_members_pages_need_the_login_cookie(demo_site):
    # unsafe=True: aiohttp's default jar ignores cookies of IP hosts.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.get(
            demo_site.url_for("localhost", "/members?page=2")
        ) as page:
            assert page.url.path == "/login"
            assert "Members-only" not in await page.text()
        form = {"user": "demo", "password": "wrong"}
        async with client.post(f"{demo_site.url}/login", data=form) as page:
            assert page.status == 403
        form["password"] = "demo-password"
        async with client.post(f"{demo_site.url}/login", data=form) as page:
            assert page.url.path == "/members"
            assert "Members-only note 1" in await page.text()


@deferred_f_from_coro_f
async def test_members_spider_logs_every_replacement_session_in(
    tmp_path, make_local_server, demo_site
):
    # Each session dies after its login (2 requests) and one page.
    server = await make_local_server(
        api_key=KEY, faults=Faults(expire_after_requests=3)
    )
    items, stats = await run(MembersSpider, server, demo_site, tmp_path)
    assert sorted(i["note"] for i in items) == sorted(MEMBER_NOTES)
    assert len({i["session"] for i in items}) == 3
    created = server.stats()["sessions"]["created"]
    assert stats["scrappey/sessions/init/ok"] == created >= 3
    assert all(h.logged_in for h in demo_site.hits if h.path.startswith("/members"))
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_demo_site_logs_every_other_login_out_after_logout_after_pages(
    make_demo_site,
):
    site = await make_demo_site(logout_after=2)
    form = {"user": "demo", "password": "demo-password"}
    jar = aiohttp.CookieJar(unsafe=True)
    last = []
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        for _ in range(3):  # the 2nd login is the short one
            async with client.post(f"{site.url}/login", data=form) as page:
                assert page.url.path == "/members"  # members page 1
            async with client.get(f"{site.url}/members?page=2") as page:
                assert "Members-only note 4" in await page.text()
            async with client.get(f"{site.url}/members?page=3") as page:
                assert page.status == 200
                last.append(page.url.path)
    assert last == ["/members", "/login", "/members"]  # the 2nd was logged out
    site.reset()  # forgets the logins: the next one is the 1st again
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as client:
        async with client.post(f"{site.url}/login", data=form) as page:
            assert page.url.path == "/members"
        async with client.get(f"{site.url}/members?page=3") as page:
            assert page.url.path == "/members"
    members = [h for h in site.hits if h.path.startswith("/members")]
    assert all(h.logged_in for h in members)  # the cookie was valid until then
    assert len(members) == 9 + 2


@deferred_f_from_coro_f
async def test_demo_site_denies_a_browser_that_made_ban_after_requests(
    make_demo_site,
):
    site = await make_demo_site(ban_after=3)
    texts = []
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as client:
        # Public pages are not counted; the member area is.
        for path in ("/", "/login", "/articles", "/login", "/login", "/login", "/"):
            async with client.get(f"{site.url}{path}") as page:
                assert page.status == 200
                texts.append(await page.text())
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
        other.get(f"{site.url}/articles") as page,
    ):
        assert "Access denied" not in await page.text()  # another browser
    denied = [False] * 5 + [True, False]  # the 4th member-area request, not "/"
    assert ["Access denied" in text for text in texts] == denied
    assert 'class="denied"' in texts[5]
    assert [h.denied for h in site.hits] == [*denied, False]
    first, *others = [h.browser for h in site.hits[:7]]
    assert first == ""  # a new browser: the site gave it its cookie
    assert len(set(others)) == 1
    assert others[0]


@deferred_f_from_coro_f
async def test_demo_site_tells_remote_browsers_apart_by_their_session(
    tmp_path, make_local_server, make_demo_site
):
    # Through the local Scrappey server, one session is one browser: its
    # cookie jar keeps the site's browser cookie, so the ban reaches it; a
    # request without a session is a new browser every time (Scrapy's own
    # cookie jar, off here, would send one browser cookie with every request).
    site = await make_demo_site(ban_after=BAN_AFTER)
    server = await make_local_server()
    urls = [site.url_for("127.0.0.1", f"/login?n={n}") for n in range(1, 8)]
    alone = [(url, {"scrappey_session": False}) for url in urls[:2]]
    settings = settings_for(
        server, tmp_path, CONCURRENT_REQUESTS=1, COOKIES_ENABLED=False
    )
    result = await crawl(PagesSpider, settings, urls=[*urls, *alone])
    denied = Counter(
        (i["session"] is not None, "Access denied" in i["text"]) for i in result.items
    )
    assert denied == {
        (True, False): BAN_AFTER,
        (True, True): len(urls) - BAN_AFTER,
        (False, False): len(alone),
    }
    assert len({i["session"] for i in result.items if i["session"]}) == 1


@deferred_f_from_coro_f
async def test_members_spider_logs_in_once_and_reads_every_members_page(
    tmp_path, make_local_server, demo_site
):
    server = await make_local_server(api_key=KEY)
    items, stats = await run(MembersSpider, server, demo_site, tmp_path)
    server_stats = server.stats()
    # Every note is only on members pages: the login held for all three pages.
    assert sorted(i["note"] for i in items) == sorted(MEMBER_NOTES)
    assert {i["page"] for i in items} == {1, 2, 3}
    assert {i["user"] for i in items} == {"demo"}
    sessions = {i["session"] for i in items}
    assert len(sessions) == 1
    # ... kept by the remote session, not by Scrapy (COOKIES_ENABLED is off).
    assert stats.get("downloader/request_count")
    # The session init logged in (the form, then the POST), before any page.
    assert stats["scrappey/sessions/init/ok"] == 1
    assert [(h.method, h.path) for h in demo_site.hits[:2]] == [
        ("GET", "/login"),
        ("POST", "/login"),
    ]
    logins = [h for h in demo_site.hits if h.method == "POST"]
    assert len(logins) == 1
    # The login's redirect lands on /members, then the crawl reads 3 pages.
    member_hits = [h for h in demo_site.hits if h.path.startswith("/members")]
    assert len(member_hits) == 1 + 3
    assert all(h.logged_in for h in member_hits)
    commands = request_commands(server_stats)
    assert {c["session"] for c in commands} == sessions
    assert server_stats["sessions"] == {
        "created": 1,
        "destroyed": 1,
        "expired": 0,
        "open": 0,
    }
    assert stats["scrappey/sessions/created"] == 1


@deferred_f_from_coro_f
async def test_multi_spider_uses_one_session_per_host_name(
    tmp_path, make_local_server, demo_site
):
    server = await make_local_server(api_key=KEY)
    items, _ = await run(MultiSpider, server, demo_site, tmp_path)
    server_stats = server.stats()
    titles = sorted(title for _, title, _ in ARTICLES)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_host.setdefault(item["host"], []).append(item)
    assert sorted(by_host) == ["127.0.0.1", "localhost"]
    for host_items in by_host.values():
        assert sorted(i["title"] for i in host_items) == titles
    assert {h.host for h in demo_site.hits} == {"127.0.0.1", "localhost"}
    # The server's command log: every request for a host named that host's
    # session, and the two hosts had different sessions.
    sessions_by_host: dict[str, set[str]] = {}
    for command in request_commands(server_stats):
        host = command["url"].split("//")[1].split(":")[0]
        sessions_by_host.setdefault(host, set()).add(command["session"])
    assert sorted(sessions_by_host) == ["127.0.0.1", "localhost"]
    assert all(len(ids) == 1 for ids in sessions_by_host.values())
    (a,), (b,) = sessions_by_host.values()
    assert a is not None
    assert b is not None
    assert a != b
    assert {i["session"] for i in by_host["127.0.0.1"]} == sessions_by_host["127.0.0.1"]
    assert server_stats["sessions"]["created"] == 2
    assert server_stats["sessions"]["destroyed"] == 2
    assert server_stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_existing_raw_mode_spider_gets_a_session_it_never_asked_for(
    tmp_path, make_local_server, demo_site
):
    scheduled: list[Request] = []
    server = await make_local_server(api_key=KEY)
    items, stats = await run(ExistingSpider, server, demo_site, tmp_path, scheduled)
    server_stats = server.stats()
    # The login (request.post) and the pages after it ran in one session,
    # so the members-only notes were visible.
    assert sorted(i["note"] for i in items) == sorted(MEMBER_NOTES)
    commands = request_commands(server_stats)
    assert [c["cmd"] for c in commands] == ["request.post"] + ["request.get"] * 2
    sessions = {c["session"] for c in commands}
    assert len(sessions) == 1
    (session,) = sessions
    assert session is not None
    assert {i["session"] for i in items} == {session}
    assert stats["scrappey/raw/requests"] == 3
    assert server_stats["sessions"]["created"] == 1
    assert server_stats["sessions"]["open"] == 0
    # What the spider itself sent: commands to the API URL, no key, no session.
    assert len(scheduled) == 3
    for request in scheduled:
        assert request.url == server.url
        assert "session" not in json.loads(request.body)


# Through the browser engine one challenge is solved for 6 pages, at the
# browser price (1 each); without it the demo says how to install it.
_CHALLENGE_LINES = (
    (
        "challenge     6  finished  1/1                             0       0    0     6",
        "JS challenge: 1 served for 6 pages (1 session(s), browser engine).",
    )
    if missing_browser() is None
    else ("challenge skipped: no browser engine (", "to install it: pip install")
)


def test_demo_command_runs_everything_and_prints_the_summary():
    result = subprocess.run(
        [sys.executable, "-m", "example_project.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in (
        # 4 sessions retired: 2 logged out, 2 banned by the demo site (its
        # "Access denied" page, caught by the spider's check: no vendor ban).
        # The cost column: what each crawl counted, equal to what the server
        # charged (the demo fails otherwise), at 0.2 per request-type page.
        "members       9  finished  5/5                             5       4    0   3.6",
        # 13 requests per host (robots.txt, 3 lists, 9 articles), a ban after
        # every 5: 3 sessions per host, 2 of them banned by vendor pages.
        "multi        18  finished  6/6                             0       4    4     6",
        "existing      9  finished  1/1                             0       0    0   0.6",
        *_CHALLENGE_LINES,
        "12 sessions created, 12 destroyed, 0 still open after the crawls.",
        # Vendors in turn, in ban order: cloudflare, akamai, datadome, cloudflare.
        "Bans detected: akamai 1, cloudflare 2, datadome 1 (block pages",
        "Demo OK",
    ):
        assert line in out, out
    lines = (ROOT / "example_project/output/members.jsonl").read_text().splitlines()
    assert len(lines) == 9


QUOTES_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>Quotes to Scrape</title></head>
<body><div class="container">
<div class="row"><div class="col-md-8">
<div class="quote" itemscope itemtype="http://schema.org/CreativeWork">
    <span class="text" itemprop="text">\u201cThe world as we have created it is a process of our thinking.\u201d</span>
    <span>by <small class="author" itemprop="author">Albert Einstein</small>
    <a href="/author/Albert-Einstein">(about)</a>
    </span>
    <div class="tags">
        Tags:
        <meta class="keywords" itemprop="keywords" content="change,deep-thoughts" />
        <a class="tag" href="/tag/change/page/1/">change</a>
        <a class="tag" href="/tag/deep-thoughts/page/1/">deep-thoughts</a>
    </div>
</div>
<div class="quote" itemscope itemtype="http://schema.org/CreativeWork">
    <span class="text" itemprop="text">\u201cA day without sunshine is like, you know, night.\u201d</span>
    <span>by <small class="author" itemprop="author">Steve Martin</small>
    <a href="/author/Steve-Martin">(about)</a>
    </span>
    <div class="tags">
        Tags:
        <meta class="keywords" itemprop="keywords" content="humor" />
        <a class="tag" href="/tag/humor/page/1/">humor</a>
    </div>
</div>
<nav>
    <ul class="pager">
        <li class="previous"><a href="/page/1/"><span aria-hidden="true">&larr;</span> Previous</a></li>
        <li class="next"><a href="/page/3/">Next <span aria-hidden="true">&rarr;</span></a></li>
    </ul>
</nav>
</div></div></div></body></html>
"""

AUTHOR_PAGE = """<!DOCTYPE html>
<html lang="en"><body><div class="container">
<div class="author-details">
    <h3 class="author-title">Albert Einstein
    </h3>
    <p><strong>Born:</strong> <span class="author-born-date">March 14, 1879</span> <span class="author-born-location">in Ulm, Germany</span></p>
    <strong>Description:</strong>
    <div class="author-description">
        In 1879, Albert Einstein was born in Ulm, Germany.
    </div>
</div></div></body></html>
"""


def test_quotes_spider_parses_quotes_toscrape_markup():
    spider = QuotesSpider()
    url = "https://quotes.toscrape.com/page/2/"
    response = HtmlResponse(
        url, body=QUOTES_PAGE.encode("utf-8"), encoding="utf-8", request=Request(url)
    )
    results = list(spider.parse(response))
    items = [r for r in results if isinstance(r, dict)]
    requests = [r for r in results if isinstance(r, Request)]
    assert items == [
        {
            "type": "quote",
            "text": "\u201cThe world as we have created it is a process of our thinking.\u201d",
            "author": "Albert Einstein",
            "tags": ["change", "deep-thoughts"],
        },
        {
            "type": "quote",
            "text": "\u201cA day without sunshine is like, you know, night.\u201d",
            "author": "Steve Martin",
            "tags": ["humor"],
        },
    ]
    authors = [r for r in requests if r.callback == spider.parse_author]
    assert [r.url for r in authors] == [
        "https://quotes.toscrape.com/author/Albert-Einstein",
        "https://quotes.toscrape.com/author/Steve-Martin",
    ]
    (next_page,) = [r for r in requests if r.callback == spider.parse]
    assert next_page.url == "https://quotes.toscrape.com/page/3/"

    author_url = authors[0].url
    author = HtmlResponse(
        author_url,
        body=AUTHOR_PAGE.encode("utf-8"),
        encoding="utf-8",
        request=authors[0],
    )
    (item,) = spider.parse_author(author)
    assert item == {
        "type": "author",
        "name": "Albert Einstein",
        "born": "March 14, 1879",
        "born_location": "in Ulm, Germany",
        "description": "In 1879, Albert Einstein was born in Ulm, Germany.",
        "url": author_url,
    }


def test_quotes_spider_stops_on_the_last_page():
    spider = QuotesSpider()
    url = "https://quotes.toscrape.com/page/10/"
    body = QUOTES_PAGE.replace('<li class="next"><a href="/page/3/">', "<li><a>")
    response = HtmlResponse(url, body=body.encode("utf-8"), request=Request(url))
    requests = [r for r in spider.parse(response) if isinstance(r, Request)]
    assert all(r.callback == spider.parse_author for r in requests)


@deferred_f_from_coro_f
async def test_members_spider_gets_only_member_pages_from_a_site_that_logs_out_and_bans(
    tmp_path, make_local_server, make_demo_site
):
    site = await make_demo_site(logout_after=LOGOUT_AFTER, ban_after=BAN_AFTER)
    server = await make_local_server(api_key=KEY)
    items, stats = await run(MembersSpider, server, site, tmp_path)
    assert sorted(i["note"] for i in items) == sorted(MEMBER_NOTES)
    assert any(h.denied for h in site.hits)  # a browser was banned...
    assert stats["scrappey/sessions/retired/check"] >= 2  # ...and retired
    created = server.stats()["sessions"]["created"]
    assert stats["scrappey/sessions/init/ok"] == created
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_multi_spider_survives_vendor_bans_without_spider_code(
    tmp_path, make_local_server, demo_site
):
    # The demo's faults during multi: the plugin's ban detectors alone
    # recognise the block pages (the spider has no session check).
    assert not hasattr(MultiSpider, "scrappey_session_check")
    faults = Faults(ban_after_requests=MULTI_BAN_AFTER, ban_vendors=BAN_VENDORS)
    server = await make_local_server(api_key=KEY, faults=faults)
    items, stats = await run(MultiSpider, server, demo_site, tmp_path)
    server_stats = server.stats()
    titles = sorted(title for _, title, _ in ARTICLES)
    assert sorted(i["title"] for i in items) == sorted(titles * 2)
    bans = server_stats["bans"]
    # Each host's session serves MULTI_BAN_AFTER pages, then is banned.
    served = list(server_stats["requests_per_session"].values())
    assert (
        sorted(served, reverse=True)[: bans["block_pages"]]
        == [MULTI_BAN_AFTER + 1] * bans["block_pages"]
    )
    assert bans["by_vendor"] == {"cloudflare": 2, "akamai": 1, "datadome": 1}
    assert {v: stats[f"scrappey/bans/{v}"] for v in BAN_VENDORS} == bans["by_vendor"]
    assert stats["scrappey/sessions/retired/banned"] == 4
    assert server_stats["sessions"]["created"] == 6
    assert server_stats["sessions"]["open"] == 0
