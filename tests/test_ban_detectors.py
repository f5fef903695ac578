"""Ban detectors: vendor block pages are recognised, decoys never are.

The table test reads tests/fixtures/antibot/ (a JSON/HTML pair per page:
status, headers, the vendor expected or null for a decoy). The crawls run
against the scripted API (a URL always answered with the same page) and the
local server with the target site.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse, TextResponse
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Config, ScrappeyConfigError, SessionCheckFailed
from scrapy_scrappey.bans import BUILTIN_DETECTORS, detect
from tests.crawl import PagesSpider, crawl, settings_for
from tests.fake_api import OutcomeSpider, success

FIXTURES = Path(__file__).parent / "fixtures" / "antibot"
PAGES = sorted(p.stem for p in FIXTURES.glob("*.json"))
VENDORS = list(BUILTIN_DETECTORS)


def fixture(name):
    """(response, expected vendor or None) of one fixture page."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    body = (FIXTURES / f"{name}.html").read_bytes()
    json_body = "json" in str(meta["headers"].get("Content-Type", ""))
    cls = TextResponse if json_body else HtmlResponse
    url = meta.get("url", "https://shop.example/products/1")
    response = cls(
        url,
        status=meta["status"],
        headers=meta["headers"],
        body=body,
        request=Request(url),
    )
    return response, meta["vendor"]


def test_every_vendor_has_block_pages_and_there_are_decoys_of_each():
    expected = [fixture(name)[1] for name in PAGES]
    for vendor in VENDORS:
        assert expected.count(vendor) >= 2, vendor
    decoys = [
        name for name, vendor in zip(PAGES, expected, strict=True) if vendor is None
    ]
    assert len(decoys) >= 15
    assert {fixture(name)[0].status for name in decoys} >= {200, 403, 521}
    blocks_at_200 = {
        v for n, v in zip(PAGES, expected, strict=True) if v and "_200" in n
    }
    assert {"akamai", "imperva", "f5", "cloudflare"} <= blocks_at_200


@pytest.mark.parametrize("name", PAGES)
def test_block_pages_are_detected_with_their_vendor_and_decoys_never(name):
    response, vendor = fixture(name)
    fired = {
        detector_name
        for detector_name, detector in BUILTIN_DETECTORS.items()
        if detector(response) is not None
    }
    assert fired == ({vendor} if vendor else set())
    assert detect(response) == vendor


def test_a_large_page_with_an_ordinary_status_is_not_read():
    response, vendor = fixture("cloudflare_waf_block_200")
    padded = response.replace(body=response.body + b" " * 40_000)
    assert vendor == "cloudflare"
    assert detect(padded) is None  # 200 and > 16 KiB: not read
    assert detect(padded.replace(status=403)) == "cloudflare"


def test_markers_past_the_scanned_prefix_are_not_read():
    response, _ = fixture("datadome_captcha_403")
    late = response.replace(body=b"<!--" + b"x" * 70_000 + b"-->" + response.body)
    assert detect(late.replace(headers={})) is None
    assert detect(late) == "datadome"  # x-dd-b: headers are always read


# -- SCRAPPEY_BAN_DETECTORS ------------------------------------------------------


def flag_denied(response):
    """A user detector: the target site's "Access denied" page."""
    return "testwall" if b"id='denied'" in response.body else None


def returns_garbage(response):
    return 42


def _config(**settings):
    return Config.from_settings(
        get_crawler(settings_dict={"SCRAPPEY_API_KEY": "k", **settings}).settings
    )


def test_the_setting_defaults_to_every_built_in_detector():
    assert [name for name, _ in _config().ban_detectors] == VENDORS
    assert _config(SCRAPPEY_BAN_DETECTORS=[]).ban_detectors == ()
    assert _config(SCRAPPEY_BAN_DETECTORS="").ban_detectors == ()


@pytest.mark.parametrize(
    "value",
    [
        ["akamai", "tests.test_ban_detectors.flag_denied"],
        "akamai, tests.test_ban_detectors.flag_denied",
        '["akamai", "tests.test_ban_detectors.flag_denied"]',
        ["akamai", flag_denied, "akamai"],
    ],
    ids=["list", "comma-string", "json-string", "callable"],
)
def test_the_setting_takes_names_paths_and_callables(value):
    detectors = _config(SCRAPPEY_BAN_DETECTORS=value).ban_detectors
    assert [d for _, d in detectors] == [BUILTIN_DETECTORS["akamai"], flag_denied]


def test_unknown_names_and_bad_paths_are_one_startup_error_naming_them():
    with pytest.raises(ScrappeyConfigError) as info:
        _config(
            SCRAPPEY_BAN_DETECTORS=[
                "cloudflare",
                "cloudflar",
                "recaptcha",
                "tests.test_ban_detectors.nope",
                "tests.test_ban_detectors.PAGES",
                7,
            ]
        )
    message = str(info.value)
    assert message.startswith("SCRAPPEY_BAN_DETECTORS: ")
    for culprit in ("'cloudflar'", "'recaptcha'", "nope", "PAGES", "7"):
        assert culprit in message
    assert "'cloudflare'" not in message.split(". Built-in")[0]
    with pytest.raises(ScrappeyConfigError, match="must be a list"):
        _config(SCRAPPEY_BAN_DETECTORS={"cloudflare": True})


def test_the_spider_attribute_overrides_the_setting():
    spider = type("S", (PagesSpider,), {"scrappey_ban_detectors": ["f5"]})(urls=[])
    config = _config(SCRAPPEY_BAN_DETECTORS=[]).for_spider(spider)
    assert [name for name, _ in config.ban_detectors] == ["f5"]
    bad = type("S", (PagesSpider,), {"scrappey_ban_detectors": ["f6"]})(urls=[])
    with pytest.raises(ScrappeyConfigError, match=r"scrappey_ban_detectors.*'f6'"):
        _config().for_spider(bad)


# -- crawls ----------------------------------------------------------------------

TARGET = "http://127.0.0.1:9/"  # never fetched: the scripted API answers for it


def _page_reply(url, name):
    response, _ = fixture(name)
    headers = {k.decode(): v[0].decode() for k, v in response.headers.items()}
    return success(
        url,
        statusCode=response.status,
        response=response.text,
        responseHeaders=headers,
    )


@deferred_f_from_coro_f
async def test_a_block_page_retires_its_session_and_is_retried_never_delivered(
    tmp_path, caplog, scripted_api
):
    walled, at_200 = f"{TARGET}walled", f"{TARGET}walled-200"
    decoys = {f"{TARGET}{n}": n for n in PAGES if n.startswith("decoy_")}
    scripted_api.answer(
        walled, 200, _page_reply(walled, "cloudflare_managed_challenge_403")
    )
    scripted_api.answer(at_200, 200, _page_reply(at_200, "akamai_deny_200_browser_dom"))
    for url, name in decoys.items():
        scripted_api.answer(url, 200, _page_reply(url, name))
    settings = settings_for(
        scripted_api, tmp_path, RETRY_TIMES=2, HTTPERROR_ALLOW_ALL=True
    )
    with caplog.at_level(logging.INFO, logger="scrapy_scrappey.middleware"):
        result = await crawl(OutcomeSpider, settings, urls=[walled, at_200, *decoys])
    stats = result.stats
    for url in (walled, at_200):
        error = result.spider.outcome(url)
        assert isinstance(error, SessionCheckFailed)
        assert "block page" in str(error)
    assert sorted(i["url"] for i in result.items) == sorted(decoys)
    assert stats["scrappey/bans/cloudflare"] == stats["scrappey/bans/akamai"] == 3
    assert stats["retry/reason_count/scrappey/banned/cloudflare"] == 2
    assert stats["retry/reason_count/scrappey/banned/akamai"] == 2
    assert stats["scrappey/sessions/retired/banned"] == 6
    assert stats["scrappey/sessions/check_failed"] == 6
    assert "scrappey/sessions/retired/check" not in stats
    assert not scripted_api.open_sessions
    (line,) = [m for m in caplog.messages if "API request(s)" in m]
    # The scripted API has no balance endpoint; each page costs 1 (browser).
    assert line.endswith(
        "checks failed 6; bans akamai 3, cloudflare 3; cost 25 (wasted 6), balance ? → ?"
    )


@deferred_f_from_coro_f
async def test_a_response_without_a_session_is_retried_and_counted(
    tmp_path, scripted_api
):
    walled, good = f"{TARGET}walled", f"{TARGET}good"
    scripted_api.answer(walled, 200, _page_reply(walled, "imperva_incident_200"))
    settings = settings_for(
        scripted_api, tmp_path, RETRY_TIMES=1, SCRAPPEY_SESSION_SCOPE="none"
    )
    result = await crawl(OutcomeSpider, settings, urls=[walled, good])
    assert isinstance(result.spider.outcome(walled), SessionCheckFailed)
    assert result.items == [{"url": good, "status": 200}]
    assert result.stats["scrappey/bans/imperva"] == 2
    assert result.stats["retry/reason_count/scrappey/banned/imperva"] == 1
    assert result.stats["scrappey/sessions/check_failed"] == 2
    assert scripted_api.created == 0
    assert not any(k.startswith("scrappey/sessions/retired") for k in result.stats)


@deferred_f_from_coro_f
async def test_with_detection_off_a_block_page_is_delivered(tmp_path, scripted_api):
    walled = f"{TARGET}walled"
    scripted_api.answer(walled, 200, _page_reply(walled, "f5_asm_reject_200"))
    settings = settings_for(scripted_api, tmp_path, SCRAPPEY_BAN_DETECTORS=[])
    result = await crawl(OutcomeSpider, settings, urls=[walled])
    assert result.items == [{"url": walled, "status": 200}]
    assert not any(k.startswith("scrappey/bans/") for k in result.stats)


@deferred_f_from_coro_f
async def test_a_user_detector_retires_each_banned_browser_and_pages_arrive(
    tmp_path, local_server, make_target_site
):
    site = await make_target_site(ban_after=5, ban_status=200)
    urls = [site.url(f"/page/{i}") for i in range(20)]
    settings = settings_for(
        local_server,
        tmp_path,
        COOKIES_ENABLED=False,  # the site's browser cookie stays in each session
        SCRAPPEY_BAN_DETECTORS=["tests.test_ban_detectors.flag_denied"],
    )
    result = await crawl(PagesSpider, settings, urls=urls)
    banned = len(site.banned)
    assert banned == 3  # pages 6, 11 and 16 were denied, then retried
    assert sorted(i["request_url"] for i in result.items) == sorted(urls)
    assert all("id='n'" in i["text"] for i in result.items)
    assert result.stats["scrappey/bans/testwall"] == banned
    assert result.stats["scrappey/sessions/retired/banned"] == banned
    assert result.stats["retry/reason_count/scrappey/banned/testwall"] == banned
    assert local_server.stats()["sessions"]["created"] == banned + 1
    assert local_server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_a_broken_user_detector_fails_checks_until_the_breaker_trips(
    tmp_path, caplog, local_server, target_site
):
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_BAN_DETECTORS=["tests.test_ban_detectors.returns_garbage"],
        SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES=3,
    )
    urls = [target_site.url(f"/page/{i}") for i in range(6)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert result.stats["finish_reason"] == "scrappey_session_checks_failing"
    assert result.items == []
    assert result.stats["scrappey/sessions/check_error"] == 3
    assert result.stats["scrappey/sessions/retired/check"] == 3
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("returns_garbage (ban detector) returned 42" in m for m in lines) == 1


@deferred_f_from_coro_f
async def test_an_init_page_that_is_a_block_page_fails_the_init(tmp_path, scripted_api):
    login = f"{TARGET}login"
    scripted_api.answer(login, 200, _page_reply(login, "datadome_captcha_403"))
    settings = settings_for(
        scripted_api,
        tmp_path,
        SCRAPPEY_SESSION_INIT=[{"url": login}],
        SCRAPPEY_SESSION_MAX_BAD_INITS=3,
    )
    result = await crawl(OutcomeSpider, settings, urls=[f"{TARGET}page"])
    assert result.stats["finish_reason"] == "scrappey_bad_session_inits"
    assert result.stats["scrappey/sessions/init/failed"] == 3
    assert result.stats["scrappey/bans/datadome"] == 3
    assert result.items == []
    assert not scripted_api.open_sessions


@deferred_f_from_coro_f
async def test_block_pages_in_a_row_trip_the_circuit_breaker(tmp_path, scripted_api):
    urls = [f"{TARGET}walled/{i}" for i in range(6)]
    for url in urls:
        scripted_api.answer(url, 200, _page_reply(url, "sucuri_block_403"))
    settings = settings_for(
        scripted_api,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="none",
        SCRAPPEY_MAX_CONSECUTIVE_CHECK_FAILURES=4,
    )
    result = await crawl(OutcomeSpider, settings, urls=urls)
    assert result.stats["finish_reason"] == "scrappey_session_checks_failing"
    bans = result.stats["scrappey/bans/sucuri"]
    assert bans >= 4  # requests in flight when it tripped may add theirs
    assert result.stats["scrappey/sessions/check_failed"] == bans
    assert result.items == []
