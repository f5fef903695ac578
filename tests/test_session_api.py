"""sessions.create / sessions.destroy replies that are neither success nor error."""

from __future__ import annotations

import asyncio

from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey import Config
from scrapy_scrappey.session_api import SessionAPI
from tests.crawl import crawl, settings_for
from tests.fake_api import OutcomeSpider


@deferred_f_from_coro_f
async def test_a_destroy_answered_pending_is_retried_until_the_session_is_gone(
    tmp_path, scripted_api
):
    scripted_api.destroy_replies = [{"data": "pending"}, {"data": "pending"}]
    url = "http://127.0.0.1:9/page"
    result = await crawl(
        OutcomeSpider, settings_for(scripted_api, tmp_path), urls=[url]
    )
    assert not scripted_api.open_sessions  # the third destroy succeeded
    assert result.items == [{"url": url, "status": 200}]
    assert result.stats["scrappey/sessions/destroy_failed"] == 2
    assert result.stats["scrappey/sessions/destroyed"] == 1
    assert result.stats.get("scrappey/sessions/leaked", 0) == 0


@deferred_f_from_coro_f
async def test_a_create_answered_pending_is_destroyed_not_forgotten(
    tmp_path, scripted_api
):
    # "pending" is neither yes nor no: the API may have made the session.
    scripted_api.create_replies = [{"data": "pending"}]
    url = "http://127.0.0.1:9/page"
    result = await crawl(
        OutcomeSpider, settings_for(scripted_api, tmp_path), urls=[url]
    )
    assert scripted_api.created == 2  # the pending one, then a retry
    assert not scripted_api.open_sessions  # both destroyed
    assert result.items == [{"url": url, "status": 200}]
    assert result.stats["scrappey/sessions/destroyed"] == 2
    assert result.stats.get("scrappey/sessions/leaked", 0) == 0


class _HangingClient:
    """Never answers: every call waits until it is cancelled."""

    async def call(self, payload, *, timeout):
        await asyncio.Event().wait()


@deferred_f_from_coro_f
async def test_a_cancelled_destroy_of_uncertain_sessions_keeps_them_uncertain():
    api = SessionAPI(
        Config(api_key="k"),
        _HangingClient(),
        MemoryStatsCollector(get_crawler()),
        ledger=None,
        extra={},
    )
    api._uncertain.add("maybe-created")
    task = asyncio.ensure_future(api.destroy_uncertain())
    await asyncio.sleep(0)
    task.cancel()  # the close cancels background tasks
    await asyncio.gather(task, return_exceptions=True)
    # Still known: close settles it again, or counts it as leaked.
    assert api.unsettled_ids() == ["maybe-created"]


@deferred_f_from_coro_f
async def test_a_destroy_answered_with_a_browser_error_is_retried_not_taken_as_gone(
    tmp_path, scripted_api
):
    scripted_api.destroy_replies = [
        {"data": "error", "error": "CODE-0026 Internal browser error"}
    ]
    url = "http://127.0.0.1:9/page"
    result = await crawl(
        OutcomeSpider, settings_for(scripted_api, tmp_path), urls=[url]
    )
    assert not scripted_api.open_sessions  # the second destroy succeeded
    assert result.stats["scrappey/sessions/destroy_failed"] == 1
    assert result.stats["scrappey/sessions/destroyed"] == 1
    assert "scrappey/sessions/already_gone" not in result.stats
