"""What crawls cost at browser prices: the local server's Chromium engine
answers ``solution.type`` "browser" (1.0), and "request" (0.2) for pages sent
with ``requestType: "request"``, so both prices are charged end to end."""

from __future__ import annotations

from typing import Any

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.local import Faults
from scrapy_scrappey.local.faults import FaultInjector
from tests.crawl import PagesSpider, crawl, settings_for

CHEAP = {"scrappey": {"requestType": "request"}}
REJECTED = "/page/7"  # a browser-priced page


def _mixed_pages(site: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    """Every third page asks for the cheap engine, the others for the default."""
    return [
        (site.url(f"/page/{i}"), dict(CHEAP) if i % 3 == 0 else {})
        for i in range(count)
    ]


def _errors_before(faults: Faults, successes: int) -> int:
    """The injected errors the seeded draws hold before *successes* successes:
    the order of the calls varies, their number does not."""
    injector, errors = FaultInjector(faults), 0
    while successes:
        if injector.plan_request("request.get").kind == "error":
            errors += 1
        else:
            successes -= 1
    return errors


class _RejectOnceSpider(PagesSpider):
    """Its session check rejects the first copy of one page: one session retired."""

    rejected: list[str]

    def scrappey_session_check(self, response, request):  # type: ignore[no-untyped-def]
        if request.url.endswith(REJECTED) and not self.rejected:
            self.rejected.append(request.url)
            return False
        return True

    def parse(self, response):  # type: ignore[no-untyped-def]
        yield {"url": response.url, "type": response.meta["scrappey_cost"]["type"]}


@deferred_f_from_coro_f
async def test_browser_and_request_prices_add_up_to_the_server_total(
    tmp_path, make_local_server, browser_engine, target_site
):
    faults = Faults(error_rate=0.1, seed=11)
    server = await make_local_server(engine=browser_engine, faults=faults)
    _RejectOnceSpider.rejected = []
    settings = settings_for(
        server,
        tmp_path,
        CONCURRENT_REQUESTS=4,
        SCRAPPEY_SESSION_POOL_SIZE=2,
        RETRY_TIMES=10,
        DOWNLOAD_TIMEOUT=60,  # no call given up on: none of uncertain cost
    )
    urls = _mixed_pages(target_site, 30)
    result = await crawl(_RejectOnceSpider, settings, urls=urls)
    stats, charged = result.stats, server.stats()["charged"]
    types = sorted(item["type"] for item in result.items)
    assert types == ["browser"] * 20 + ["request"] * 10
    assert len(_RejectOnceSpider.rejected) == 1
    assert stats["scrappey/sessions/retired/check"] == 1
    # 31 charged pages (the rejected one twice), and the seeded errors free.
    errors = _errors_before(faults, 31)
    assert errors >= 3
    assert server.stats()["faults"]["errors"] == errors
    assert charged["calls"] == 31
    assert stats["scrappey/cost/total"] == charged["total"] == 21 + 10 * 0.2
    assert charged["by_type"] == {"browser": 21.0, "request": 2.0}
    assert stats["scrappey/cost/by_type/browser"] == charged["by_type"]["browser"]
    assert stats["scrappey/cost/by_type/request"] == charged["by_type"]["request"]
    # The rejected browser page was paid for and thrown away; errors cost nothing.
    assert stats["scrappey/cost/wasted"] == 1.0
    assert "scrappey/cost/uncertain" not in stats
    assert stats["scrappey/balance/end"] == server.balance == 1000 - charged["total"]
    assert server.stats()["sessions"]["open"] == 0


def _capped(server: Any, tmp_path: Any, cap: float) -> dict[str, Any]:
    """SCRAPPEY_MAX_COST *cap*, with 16 requests at once on 4 sessions."""
    return settings_for(
        server,
        tmp_path,
        SCRAPPEY_MAX_COST=cap,
        CONCURRENT_REQUESTS=16,
        CONCURRENT_REQUESTS_PER_DOMAIN=16,
        SCRAPPEY_SESSION_POOL_SIZE=4,
        SCRAPPEY_SESSION_CONCURRENCY=4,
        DOWNLOAD_TIMEOUT=60,
    )


@deferred_f_from_coro_f
async def test_max_cost_holds_at_browser_prices_and_high_concurrency(
    tmp_path, make_local_server, browser_engine, make_target_site, api_calls
):
    server = await make_local_server(engine=browser_engine)
    site = await make_target_site(delay=0.2)
    settings = _capped(server, tmp_path, 5.5)
    # Session-bound pages at the default requestType (browser): each is
    # booked at 1.0, so 5 fit in 5.5 and the 6th is refused.
    urls = [site.url(f"/page/{i}") for i in range(40)]
    result = await crawl(PagesSpider, settings, urls=urls)
    stats, charged = result.stats, server.stats()["charged"]
    # Calls overlapped, and the cap, not the 16 slots, bounded them.
    assert 1 < api_calls.max_in_flight("request.get") <= 5
    assert charged["total"] == stats["scrappey/cost/total"] == 5.0
    assert charged["by_type"] == {"browser": 5.0}
    assert len(result.items) == charged["calls"] == 5
    assert stats["finish_reason"] == "scrappey_budget_exhausted"
    assert server.stats()["sessions"]["open"] == 0


@deferred_f_from_coro_f
async def test_max_cost_holds_with_mixed_prices_at_high_concurrency(
    tmp_path, make_local_server, browser_engine, make_target_site
):
    server = await make_local_server(engine=browser_engine)
    site = await make_target_site(delay=0.1)
    settings = _capped(server, tmp_path, 3.3)
    result = await crawl(PagesSpider, settings, urls=_mixed_pages(site, 40))
    stats, charged = result.stats, server.stats()["charged"]
    assert 0 < charged["total"] <= 3.3
    assert stats["scrappey/cost/total"] == charged["total"]
    for kind, amount in charged["by_type"].items():
        assert stats[f"scrappey/cost/by_type/{kind}"] == amount
    assert len(result.items) == charged["calls"] < 40
    assert stats["finish_reason"] == "scrappey_budget_exhausted"
    assert server.stats()["sessions"]["open"] == 0
