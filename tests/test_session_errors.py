"""Errors that belong to a session: error budgets and the CODE-0029 wait.

Real crawls against the local server (issue #10, acceptance test 5): proxy- or
browser-bound error codes retire the session after SCRAPPEY_SESSION_MAX_ERRORS
and the request is retried on another one; transient codes leave the session
alone; CODE-0029 on ``sessions.create`` is waited out for up to
SCRAPPEY_SESSION_OVER_LIMIT_WAIT, and a close ends that wait.
"""

from __future__ import annotations

from typing import Any

import pytest
from scrapy import Request
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.http import JsonRequest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey import ScrappeyAPIError
from scrapy_scrappey.codes import SESSION_BOUND_CODES
from scrapy_scrappey.local import Faults
from tests.crawl import PagesSpider, crawl, settings_for

PAGES = 20


def _pages(target_site: Any) -> list[str]:
    return [target_site.url(f"/page/{i}") for i in range(PAGES)]


def test_session_bound_codes_are_the_proxy_and_browser_ones():
    assert {"CODE-0005", "CODE-0010", "CODE-0019", "CODE-0024", "CODE-0026"} <= set(
        SESSION_BOUND_CODES
    )
    assert "CODE-0001" not in SESSION_BOUND_CODES  # overloaded: not the session's
    assert "CODE-0029" not in SESSION_BOUND_CODES


@pytest.mark.parametrize("max_errors", [1, 2])
@deferred_f_from_coro_f
async def test_session_bound_errors_retire_the_session_after_max_errors(
    tmp_path, make_local_server, target_site, max_errors
):
    faults = Faults(error_rate=0.3, error_codes=SESSION_BOUND_CODES, seed=7)
    server = await make_local_server(faults=faults)
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_MAX_ERRORS=max_errors,
        RETRY_TIMES=20,
        CONCURRENT_REQUESTS=1,
    )
    result = await crawl(PagesSpider, settings, urls=_pages(target_site))
    stats = server.stats()
    assert sorted(i["request_url"] for i in result.items) == sorted(_pages(target_site))
    failed = stats["errors_by_session"]
    retired = [sid for sid, ordinals in failed.items() if len(ordinals) == max_errors]
    assert retired, "the seed must make some session reach its budget"
    for sid, ordinals in failed.items():
        # No session fails more often than its budget: it was retired at the
        # last error, which was its last request.
        assert len(ordinals) <= max_errors
        if len(ordinals) == max_errors:
            assert ordinals[-1] == stats["requests_per_session"][sid]
    assert result.stats["scrappey/sessions/retired/errors"] == len(retired)
    assert stats["sessions"]["created"] == 1 + len(retired)
    assert (
        sum(v for k, v in result.stats.items() if k.startswith("scrappey/errors/CODE-"))
        == stats["faults"]["errors"]
    )
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_transient_errors_do_not_count_against_the_session(
    tmp_path, make_local_server, target_site
):
    faults = Faults(error_rate=0.3, error_codes=("CODE-0001",), seed=7)
    server = await make_local_server(faults=faults)
    settings = settings_for(server, tmp_path, RETRY_TIMES=20)
    result = await crawl(PagesSpider, settings, urls=_pages(target_site))
    stats = server.stats()
    assert len(result.items) == PAGES
    assert stats["faults"]["errors"] > 0
    assert result.stats["scrappey/errors/CODE-0001"] == stats["faults"]["errors"]
    assert "scrappey/sessions/retired/errors" not in result.stats
    assert stats["sessions"]["created"] == 1
    assert stats["sessions"]["open"] == 0


def _backoff_settings(server: Any, tmp_path: Any, **extra: Any) -> dict[str, Any]:
    """Settings with short create back-offs, so that a test waits seconds, not minutes."""
    return settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_CREATE_BACKOFF=0.2,
        SCRAPPEY_SESSION_CREATE_BACKOFF_MAX=0.4,
        **extra,
    )


async def _over_limit_crawl(
    tmp_path: Any, make_local_server: Any, target_site: Any, seconds: float
) -> tuple[Any, dict[str, Any]]:
    server = await make_local_server(faults=Faults(over_limit_seconds=seconds))
    # Far fewer attempts than the wait takes: CODE-0029 is no attempt.
    settings = _backoff_settings(server, tmp_path, SCRAPPEY_SESSION_CREATE_ATTEMPTS=2)
    result = await crawl(PagesSpider, settings, urls=_pages(target_site))
    return result, server.stats()


@deferred_f_from_coro_f
async def test_session_limit_at_start_is_waited_out(
    tmp_path, make_local_server, target_site
):
    result, stats = await _over_limit_crawl(tmp_path, make_local_server, target_site, 2)
    assert result.stats["finish_reason"] == "finished"
    assert len(result.items) == PAGES
    refused = stats["faults"]["create_failures"]
    assert refused > 2  # more than SCRAPPEY_SESSION_CREATE_ATTEMPTS
    assert result.stats["scrappey/sessions/over_limit"] == refused
    assert stats["sessions"]["created"] == 1
    assert stats["sessions"]["open"] == 0


@pytest.mark.slow
@deferred_f_from_coro_f
async def test_acceptance_code_0029_for_the_first_20_seconds_is_waited_out(
    tmp_path, make_local_server, target_site
):
    result, stats = await _over_limit_crawl(
        tmp_path, make_local_server, target_site, 20
    )
    assert result.stats["finish_reason"] == "finished"
    assert len(result.items) == PAGES
    assert stats["faults"]["create_failures"] >= 40  # at least one per 0.4 s
    assert stats["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_session_limit_wait_is_bounded(tmp_path, make_local_server, target_site):
    server = await make_local_server(faults=Faults(over_limit_seconds=600))
    settings = _backoff_settings(server, tmp_path, SCRAPPEY_SESSION_OVER_LIMIT_WAIT=1)
    result = await crawl(PagesSpider, settings, urls=_pages(target_site))
    stats = server.stats()
    assert result.stats["finish_reason"] == "scrappey_sessions_unavailable"
    # Tries every 0.1-0.4 s for 1 s, then one last one at the end.
    assert 3 <= stats["requests"]["by_command"]["sessions.create"] <= 12
    assert stats["sessions"]["created"] == 0
    assert not target_site.hits


class _CloseWhileWaiting(PagesSpider):
    """One request waits for a named pool; another one closes the spider."""

    async def start(self):  # type: ignore[no-untyped-def]
        yield Request(
            self.urls[0],
            meta={"scrappey_session": "login"},
            errback=self.errback,
            dont_filter=True,
        )
        yield Request(
            self.urls[1],
            meta={"scrappey_session": False},
            callback=self.close_now,
            dont_filter=True,
        )

    def close_now(self, response):  # type: ignore[no-untyped-def]
        raise CloseSpider("enough")


@deferred_f_from_coro_f
async def test_close_ends_the_session_limit_wait_at_once(
    tmp_path, make_local_server, target_site
):
    server = await make_local_server(faults=Faults(over_limit_seconds=600))
    settings = _backoff_settings(server, tmp_path, SCRAPPEY_SESSION_SCOPE="none")
    urls = [target_site.url("/page/1"), target_site.url("/page/2")]
    result = await crawl(_CloseWhileWaiting, settings, urls=urls)
    stats = server.stats()
    assert result.stats["finish_reason"] == "enough"
    (error,) = result.spider.errors
    assert isinstance(error, IgnoreRequest)
    assert stats["sessions"]["created"] == 0
    # The create loop ended with the close: no try after the spider closed.
    creates = [c["t"] for c in stats["commands"] if c["cmd"] == "sessions.create"]
    assert creates
    assert max(creates) <= result.stats["finish_time"].timestamp()
    assert result.stats["scrappey/sessions/over_limit"] == len(creates)


class _RawSpider(PagesSpider):
    """Sends ``request.get`` commands itself (raw mode) for each of ``urls``."""

    async def start(self):  # type: ignore[no-untyped-def]
        for url in self.urls:
            yield JsonRequest(
                self.settings["SCRAPPEY_API_URL"],
                data={"cmd": "request.get", "url": url},
                callback=self.parse,
                errback=self.errback,
                dont_filter=True,
            )


@deferred_f_from_coro_f
async def test_raw_mode_retries_a_command_whose_session_an_error_retired(
    tmp_path, scripted_api
):
    blocked, good = "http://127.0.0.1:9/blocked", "http://127.0.0.1:9/good"
    scripted_api.answer(blocked, 200, {"data": "error", "error": "CODE-0010 Blocked"})
    settings = settings_for(
        scripted_api, tmp_path, RETRY_TIMES=1, CONCURRENT_REQUESTS=1
    )
    result = await crawl(_RawSpider, settings, urls=[blocked, good])
    created = scripted_api.created
    (error,) = result.spider.errors
    assert isinstance(error, ScrappeyAPIError)
    assert error.code == "CODE-0010"
    assert result.stats["retry/reason_count/scrappey/session_retired"] == 1
    assert result.stats["scrappey/sessions/retired/errors"] == 2
    assert created == 3  # the first session and one per retirement
    assert [i["status"] for i in result.items] == [200]  # the good command's JSON
