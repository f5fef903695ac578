"""What the session settings mean for speed: the start-up line, the slow-lease hint."""

import logging

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import _speed
from tests.crawl import PagesSpider, crawl, settings_for


def _messages(caplog, logger):
    return [r.getMessage() for r in caplog.records if r.name == logger]


@deferred_f_from_coro_f
async def test_the_start_up_line_states_the_pool_capacity(
    caplog, local_server, target_site, tmp_path
):
    caplog.set_level(logging.INFO)
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=3,
        SCRAPPEY_SESSION_CONCURRENCY=2,
    )
    await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    first = _messages(caplog, "scrapy_scrappey.middleware")[0]
    assert first.startswith("Scrappey: routing all requests through")
    assert first.endswith(
        "session scope 'spider', 3 session(s) per pool \u00d7 2 request(s) each"
    )


@pytest.mark.parametrize(("pool_size", "hints"), [(1, 1), (4, 0)])
@deferred_f_from_coro_f
async def test_a_long_wait_for_a_session_says_once_which_setting_to_raise(
    caplog, monkeypatch, local_server, make_target_site, tmp_path, pool_size, hints
):
    monkeypatch.setattr(_speed, "SLOW_LEASE_WAIT", 0.3)
    site = await make_target_site(delay=1.0)
    caplog.set_level(logging.INFO)
    settings = settings_for(
        local_server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=pool_size
    )
    urls = [site.url(f"/page/{i}") for i in range(4)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len(result.items) == 4
    said = _messages(caplog, "scrapy_scrappey._speed")
    assert len(said) == hints  # 3 requests waited with one session: said once
    for message in said:
        assert "for a free Scrappey session of pool 'spider'" in message
        assert "(1 session(s) per pool \u00d7 1 request(s) each)" in message
        assert "raise SCRAPPEY_SESSION_POOL_SIZE" in message
        assert "SCRAPPEY_SESSION_CONCURRENCY" in message


@deferred_f_from_coro_f
async def test_a_named_pool_is_told_to_get_its_own_size(
    caplog, monkeypatch, local_server, make_target_site, tmp_path
):
    monkeypatch.setattr(_speed, "SLOW_LEASE_WAIT", 0.3)
    site = await make_target_site(delay=1.0)
    caplog.set_level(logging.INFO)
    # The global size does not reach a named pool: the hint names its entry.
    settings = settings_for(local_server, tmp_path, SCRAPPEY_SESSION_POOL_SIZE=4)
    urls = [(site.url(f"/page/{i}"), {"scrappey_session": "acct"}) for i in range(3)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len(result.items) == 3
    (said,) = _messages(caplog, "scrapy_scrappey._speed")
    assert "of pool 'acct' (1 session(s) per pool \u00d7 1 request(s) each)" in said
    assert (
        "give it a 'size' (and 'concurrency') in SCRAPPEY_SESSION_POOLS['acct']" in said
    )


@deferred_f_from_coro_f
async def test_the_start_up_line_states_each_configured_pool(
    caplog, local_server, target_site, tmp_path
):
    caplog.set_level(logging.INFO)
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="domain",
        SCRAPPEY_SESSION_POOLS={
            "alice": {"size": 2},
            "shop.test": {"size": 4, "concurrency": 2},
        },
    )
    await crawl(PagesSpider, settings, urls=[target_site.url("/page/1")])
    first = _messages(caplog, "scrapy_scrappey.middleware")[0]
    assert first.endswith(
        "session scope 'domain', 1 session(s) per pool \u00d7 1 request(s) each; "
        "pool 'alice' 2 \u00d7 1, pool 'shop.test' 4 \u00d7 2"
    )
