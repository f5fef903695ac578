"""sessions.create / sessions.destroy replies that are neither success nor error."""

from __future__ import annotations

from scrapy.utils.defer import deferred_f_from_coro_f

from tests.crawl import crawl, settings_for
from tests.fake_api import OutcomeSpider, ScriptedApi


@deferred_f_from_coro_f
async def test_a_destroy_answered_pending_is_retried_until_the_session_is_gone(
    tmp_path,
):
    async with ScriptedApi() as api:
        api.destroy_replies = [{"data": "pending"}, {"data": "pending"}]
        url = "http://127.0.0.1:9/page"
        result = await crawl(OutcomeSpider, settings_for(api, tmp_path), urls=[url])
        assert not api.open_sessions  # the third destroy succeeded
    assert result.items == [{"url": url, "status": 200}]
    assert result.stats["scrappey/sessions/destroy_failed"] == 2
    assert result.stats["scrappey/sessions/destroyed"] == 1
    assert result.stats.get("scrappey/sessions/leaked", 0) == 0


@deferred_f_from_coro_f
async def test_a_destroy_answered_with_a_browser_error_is_retried_not_taken_as_gone(
    tmp_path,
):
    async with ScriptedApi() as api:
        api.destroy_replies = [
            {"data": "error", "error": "CODE-0026 Internal browser error"}
        ]
        url = "http://127.0.0.1:9/page"
        result = await crawl(OutcomeSpider, settings_for(api, tmp_path), urls=[url])
        assert not api.open_sessions  # the second destroy succeeded
    assert result.stats["scrappey/sessions/destroy_failed"] == 1
    assert result.stats["scrappey/sessions/destroyed"] == 1
    assert "scrappey/sessions/already_gone" not in result.stats
