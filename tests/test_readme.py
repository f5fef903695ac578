"""Every code snippet of README.md is exercised here."""

import ast
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f

import dev
from scrapy_scrappey import Addon, Config, RequestFingerprinter, SessionCheckFailed
from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.__main__ import build_parser
from tests.crawl import KEY, PagesSpider, crawl, settings_for
from tests.fake_api import OutcomeSpider, success
from tests.reliability_support import child_env

README = (Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.DOTALL)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [
    line.strip()
    for lang, code in BLOCKS
    if lang == "bash"
    for line in code.splitlines()
    if line.strip()
]


def load(code, tmp_path, name):
    """Import *code* as a module of its own."""
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def snippet(marker):
    (code,) = [c for c in PYTHON if marker in c]
    return code


def test_every_block_is_covered():
    covered = {
        "DOWNLOADER_MIDDLEWARES = ",
        "ADDONS = ",
        "SCRAPPEY_SESSION_SCOPE",
        "class LoginSpider",
        "class TwoAccountsSpider",
        'response.follow(url, meta={"scrappey_session"',
        "class ExistingSpider",
        "LocalScrappey",
        "SCRAPPEY_SESSION_INIT = [",
        "class MembersSpider",
        "class AccountsSpider",
        "class BlockPageChecker",
        "def shop_wall",
        "SCRAPPEY_MAX_COST",
    }
    for code in PYTHON:
        assert any(marker in code for marker in covered), code
    assert len(PYTHON) == 14


def snippet_settings(marker):
    """The upper-case names the snippet holding *marker* defines."""
    namespace: dict = {}
    exec(snippet(marker), namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def test_settings_snippets_are_valid():
    settings = {**snippet_settings("SCRAPPEY_SESSION_SCOPE"), "SCRAPPEY_API_KEY": KEY}
    config = Config.from_settings(Settings(settings))
    assert config.session_scope == "domain"
    assert config.pool_size == 2
    assert config.session_params == {
        "proxyCountry": "UnitedStates",
        "premiumProxy": True,
    }
    assert config.close_timeout == 20


def test_cost_snippet_is_valid():
    settings = {**snippet_settings("SCRAPPEY_MAX_COST"), "SCRAPPEY_API_KEY": KEY}
    cost = Config.from_settings(Settings(settings)).cost
    assert (cost.max_cost, cost.max_requests, cost.min_balance) == (50, 10_000, 100)
    assert cost.item_field == "scrappey"


@pytest.mark.parametrize(
    "marker", ["DOWNLOADER_MIDDLEWARES = ", "ADDONS = "], ids=["middleware", "addon"]
)
@deferred_f_from_coro_f
async def test_settings_snippets_enable_the_plugin(
    tmp_path, marker, local_server, target_site
):
    """The one settings line sends every request through Scrappey, in one session."""
    settings = settings_for(local_server, tmp_path)
    del settings["DOWNLOADER_MIDDLEWARES"]
    settings.update(snippet_settings(marker))
    urls = [target_site.url(f"/page/{i}") for i in range(3)]
    result = await crawl(PagesSpider, settings, urls=urls)
    stats = local_server.stats()
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    assert {i["cls"] for i in result.items} == {"ScrappeyHtmlResponse"}
    assert len({i["session"] for i in result.items}) == 1
    gets = [c["url"] for c in stats["commands"] if c["cmd"] == "request.get"]
    assert sorted(gets) == sorted(urls)
    assert stats["sessions"]["open"] == 0
    assert type(result.crawler.request_fingerprinter) is RequestFingerprinter


@deferred_f_from_coro_f
async def test_existing_spider_snippet(tmp_path, local_server, target_site):
    code = snippet("class ExistingSpider").replace(
        "https://example.com", target_site.url("/page/1")
    )
    code = code.replace(
        '"https://publisher.scrappey.com/api/v1"', repr(local_server.url)
    )
    module = load(code, tmp_path, "existing")
    settings = settings_for(
        local_server, tmp_path, WARN_ON_GENERATOR_RETURN_VALUE=False
    )
    result = await crawl(module.ExistingSpider, settings)
    stats = local_server.stats()
    (item,) = result.items
    assert item["session"].startswith("scrapy-scrappey-")  # raw mode got a session
    assert item["length"] > 0
    assert stats["sessions"]["open"] == 0
    assert target_site.hits == ["/page/1"]


@pytest.mark.parametrize("cookies", [True, False], ids=["cookies", "no-cookies"])
@pytest.mark.parametrize("pool_size", [1, 3], ids=["pool-1", "pool-3"])
@deferred_f_from_coro_f
async def test_login_spider_snippet(
    tmp_path, local_server, target_site, pool_size, cookies
):
    """The login flow stays on one browser and is logged in on every page."""
    namespace: dict = {}
    exec(_on_site(snippet("class LoginSpider"), target_site), namespace)
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=pool_size,
        COOKIES_ENABLED=cookies,
        WARN_ON_GENERATOR_RETURN_VALUE=False,
    )
    result = await crawl(namespace["LoginSpider"], settings)
    stats = local_server.stats()
    assert sorted(i["url"] for i in result.items) == _members(target_site, 3)
    assert {i["member"] for i in result.items} == {"me"}  # logged in everywhere
    sent = [c for c in stats["commands"] if c["cmd"].startswith("request.")]
    flow = [(c["cmd"], c["url"].split("/", 3)[3]) for c in sent[:2]]
    assert flow == [("request.get", "login"), ("request.post", "login")]
    chain = {c["session"] for c in sent if "/search" not in c["url"]}
    assert len(chain) == 1  # GET and POST /login, the three member pages
    paths = sorted(c["url"].split("/", 3)[3] for c in sent)
    # + /search (on any session); robots.txt went direct
    assert paths == ["login", "login", "members/1", "members/2", "members/3", "search"]
    assert stats["sessions"]["created"] == pool_size


@deferred_f_from_coro_f
async def test_login_spider_snippet_runs_again_from_the_http_cache(
    tmp_path, local_server, target_site
):
    """A cached page used no session: its meta key is None, and the chain the
    one-liner builds on it hits the cache again."""
    namespace: dict = {}
    exec(_on_site(snippet("class LoginSpider"), target_site), namespace)
    settings = settings_for(
        local_server,
        tmp_path,
        ADDONS={Addon: 0},
        HTTPCACHE_ENABLED=True,
        HTTPCACHE_DIR=str(tmp_path / "cache"),
        WARN_ON_GENERATOR_RETURN_VALUE=False,
    )
    first = await crawl(namespace["LoginSpider"], settings)
    sent = _page_commands(local_server)
    assert len(sent) == 6  # GET and POST /login, three members, /search
    second = await crawl(namespace["LoginSpider"], settings)
    assert _page_commands(local_server) == sent  # not one more API call
    assert sorted(map(str, second.items)) == sorted(map(str, first.items))
    assert sorted(i["url"] for i in second.items) == _members(target_site, 3)
    assert second.stats["httpcache/hit"] == 7  # robots.txt went direct, cached too
    assert not [k for k in second.stats if k.startswith("spider_exceptions")]


def _page_commands(server):
    return [c for c in server.stats()["commands"] if c["cmd"].startswith("request.")]


class ChainSpider(PagesSpider):
    """Follows /page/1 → /page/5, each request made by the README's one-liner."""

    follow = ""

    def parse(self, response):
        yield from super().parse(response)
        n = int(response.css("#n::text").get())
        if n < 5:
            url = response.urljoin(f"/page/{n + 1}")
            yield eval(self.follow, {"response": response, "url": url})


@deferred_f_from_coro_f
async def test_affinity_one_liner_keeps_a_chain_on_one_browser(
    tmp_path, local_server, target_site
):
    (line,) = [c.strip() for c in PYTHON if c.startswith("response.follow(url")]
    ChainSpider.follow = line
    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=3)
    result = await crawl(ChainSpider, settings, urls=[target_site.url("/page/1")])
    assert [i["url"] for i in result.items] == [
        target_site.url(f"/page/{n}") for n in range(1, 6)
    ]
    used = [c["session"] for c in local_server.stats()["commands"] if c["url"]]
    assert len(used) == 5
    assert set(used) == {i["session"] for i in result.items}
    assert len(set(used)) == 1  # of three sessions, the chain used one


@deferred_f_from_coro_f
async def test_two_accounts_snippet(tmp_path, local_server, target_site):
    namespace: dict = {}
    exec(_on_site(snippet("class TwoAccountsSpider"), target_site), namespace)
    settings = settings_for(
        local_server, tmp_path, ADDONS={Addon: 0}, WARN_ON_GENERATOR_RETURN_VALUE=False
    )
    settings["SCRAPPEY_SESSION_POOL_SIZE"] = 2  # the login reaches both by the jar
    result = await crawl(namespace["TwoAccountsSpider"], settings)
    assert (
        sorted((i["account"], i["member"]) for i in result.items)
        == [
            ("alice", "alice"),
        ]
        * 3
        + [("bob", "bob")] * 3
    )
    assert "dupefilter/filtered" not in result.stats


def _on_site(code, site):
    return code.replace("https://example.com", site.url("").rstrip("/"))


def _members(site, n):
    return [site.url(f"/members/{i}") for i in range(1, n + 1)]


@deferred_f_from_coro_f
async def test_session_init_settings_snippet(tmp_path, make_local_server, target_site):
    server = await make_local_server(faults=Faults(expire_after_requests=3))
    namespace: dict = {}
    exec(_on_site(snippet("SCRAPPEY_SESSION_INIT = ["), target_site), namespace)
    settings = {k: v for k, v in namespace.items() if k.isupper()}
    settings = settings_for(server, tmp_path, RETRY_TIMES=5, **settings)
    result = await crawl(PagesSpider, settings, urls=_members(target_site, 8))
    assert len(result.items) == 8
    assert all("<p id='member'>me</p>" in i["text"] for i in result.items)
    assert result.stats["scrappey/sessions/init/ok"] >= 3  # expiry replaced sessions
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_session_health_spider_snippet(
    tmp_path, make_local_server, make_target_site
):
    server = await make_local_server()
    site = await make_target_site(ban_after=4, ban_status=403)
    namespace: dict = {}
    exec(_on_site(snippet("class MembersSpider"), site), namespace)
    result = await crawl(namespace["MembersSpider"], settings_for(server, tmp_path))
    assert sorted(i["url"] for i in result.items) == sorted(_members(site, 20))
    assert {i["member"] for i in result.items} == {"me"}
    assert len(site.banned) == result.stats["scrappey/sessions/retired/check"] >= 4
    created = server.stats()["sessions"]["created"]
    assert result.stats["scrappey/sessions/init/ok"] == created == len(site.banned) + 1
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_per_pool_settings_snippet(tmp_path, local_server, target_site):
    namespace: dict = {}
    exec(_on_site(snippet("class AccountsSpider"), target_site), namespace)
    result = await crawl(
        namespace["AccountsSpider"], settings_for(local_server, tmp_path)
    )
    members = sorted(i["member"] or "-" for i in result.items)
    assert members == ["-"] * 4 + ["alice"] * 4 + ["bob"] * 4
    commands = local_server.stats()["commands"]
    logins = [c["session"] for c in commands if c["url"] and "/login" in c["url"]]
    listings = {c["session"] for c in commands if c["url"] and "/page/" in c["url"]}
    assert len(listings) == 1  # a named pool is one session by default
    assert not listings & set(logins)  # the listings pool has no init
    assert len(logins) == 3  # alice's two sessions and bob's one, nothing else
    assert result.stats["scrappey/sessions/created"] == 1 + 2 + 1 + 1  # + spider pool


@deferred_f_from_coro_f
async def test_session_checker_snippet(tmp_path, make_local_server, make_target_site):
    server = await make_local_server()
    site = await make_target_site(ban_after=5, ban_status=200)
    load(snippet("class BlockPageChecker"), tmp_path, "readme_checks")
    settings = settings_for(
        server,
        tmp_path,
        COOKIES_ENABLED=False,
        SCRAPPEY_SESSION_CHECKER="readme_checks.BlockPageChecker",
    )
    urls = [site.url(f"/page/{i}") for i in range(12)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert sorted(i["url"] for i in result.items) == sorted(urls)
    assert not any("Access denied" in i["text"] for i in result.items)
    assert result.stats["scrappey/sessions/retired/check"] == len(site.banned) == 2


@deferred_f_from_coro_f
async def test_ban_detector_snippet(tmp_path, scripted_api):
    code = snippet("def shop_wall")
    (setting,) = [
        line for line in code.splitlines() if "SCRAPPEY_BAN_DETECTORS" in line
    ]
    names = ast.literal_eval(setting.split("=", 1)[1].strip())
    load(code, tmp_path, "readme_bans")
    names = [n.replace("myproject.bans", "readme_bans") for n in names]
    wall, good = "http://127.0.0.1:9/wall", "http://127.0.0.1:9/good"
    page = '<html><body><form id="prove-human"><button>I am human</button></form>'
    scripted_api.answer(wall, 200, success(wall, response=page))
    settings = settings_for(
        scripted_api, tmp_path, RETRY_TIMES=1, SCRAPPEY_BAN_DETECTORS=names
    )
    result = await crawl(OutcomeSpider, settings, urls=[wall, good])
    assert isinstance(result.spider.outcome(wall), SessionCheckFailed)
    assert result.items == [{"url": good, "status": 200}]
    assert result.stats["scrappey/bans/shop_wall"] == 2
    assert result.stats["scrappey/sessions/retired/banned"] == 2


def test_local_server_snippet(tmp_path):
    """The README's test file passes under plain pytest, and it really crawls."""
    (tmp_path / "test_my_spider.py").write_text(snippet("LocalScrappey"))
    # As the README says to run it, plus strict warnings and live INFO logs.
    command = [sys.executable, "-m", "pytest", "--reactor=asyncio", "test_my_spider.py"]
    command += ["-p", "no:cacheprovider", "-W", "error"]
    command += ["-o", "log_cli=true", "--log-cli-level=INFO"]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 1 passed " in done.stdout
    # Scrapy's closing stats, logged by the crawl inside that test.
    assert "'item_scraped_count': 5," in done.stdout
    assert "'scrappey/requests': " in done.stdout
    assert "'retry/count': " in done.stdout


def test_shell_commands_exist():
    for line in SHELL:
        words = shlex.split(line.split("#")[0])
        if words[:2] == ["python3", "dev.py"]:
            assert words[2] in dev.COMMANDS, line
        elif (
            words[:3] == ["python", "-m", "scrapy_scrappey.local"]
            or words[0] == "scrappey-local"
        ):
            args = words[3:] if words[0] == "python" else words[1:]
            build_parser().parse_args(args)
        elif words[:3] == ["python", "-m", "scrapy_scrappey"]:
            pass  # run for real in test_cli_commands_from_readme
        else:
            assert words[0] in ("pip", "export"), line


def test_cli_commands_from_readme(tmp_path, make_server_process):
    def ledger(words):
        return ["--ledger-dir", str(tmp_path)] if "sessions" in words else []

    lines = [
        shlex.split(line)
        for line in SHELL
        if line.startswith("python -m scrapy_scrappey ")
    ]
    assert len(lines) == 4
    server = make_server_process()
    env = {
        "SCRAPPEY_API_KEY": KEY,
        "SCRAPPEY_API_URL": server.url,
        "PATH": "/usr/bin:/bin",
        # This checkout's package, not whichever copy is installed.
        "PYTHONPATH": child_env()["PYTHONPATH"],
    }
    for words in lines:
        done = subprocess.run(
            [sys.executable, *words[1:], *ledger(words)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert KEY not in done.stdout + done.stderr
