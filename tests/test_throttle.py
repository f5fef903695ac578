import asyncio
import logging
import time
from itertools import pairwise

import pytest
from scrapy import Request, Spider
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_scrappey.exceptions import SpiderClosing
from scrapy_scrappey.local import Faults
from scrapy_scrappey.throttle import TargetThrottle
from tests.crawl import NO_JITTER, PagesSpider, crawl, max_overlap, settings_for


class _Spider(Spider):
    name = "throttled"


@pytest.fixture
def make_throttle():
    """``make_throttle(**settings)``: a throttle on the slots of a crawler's own
    downloader (with ``CONCURRENT_REQUESTS_PER_DOMAIN`` 2 and no delay unless set)."""
    downloaders = []

    def make(spider_cls=_Spider, **settings):
        crawler = get_crawler(
            spider_cls,
            {"CONCURRENT_REQUESTS_PER_DOMAIN": 2, "DOWNLOAD_DELAY": 0, **settings},
        )
        crawler.spider = crawler._create_spider()
        crawler.engine = crawler._create_engine()
        downloaders.append(crawler.engine.downloader)
        return TargetThrottle(crawler)

    yield make
    for downloader in downloaders:
        downloader.close()  # stops its slot garbage collector


def slots(gate):
    return gate._crawler.engine.downloader.slots


async def hold(gate, key, seconds, log):
    request = Request(f"http://{key}/")
    async with gate.slot(request, request):
        log.append(("start", key, time.monotonic()))
        await asyncio.sleep(seconds)
        log.append(("end", key, time.monotonic()))


def start_gaps(log):
    starts = sorted(t for event, _, t in log if event == "start")
    return [b - a for a, b in pairwise(starts)]


@deferred_f_from_coro_f
async def test_concurrency_per_key_and_download_slots(make_throttle):
    gate = make_throttle(DOWNLOAD_SLOTS={"b": {"concurrency": 1}})
    log = []
    await asyncio.gather(
        *(hold(gate, "a", 0.05, log) for _ in range(4)),
        *(hold(gate, "b", 0.05, log) for _ in range(2)),
    )
    assert [event for event, *_ in log].count("start") == 6
    assert max_overlap(log, "a") == 2  # CONCURRENT_REQUESTS_PER_DOMAIN
    assert max_overlap(log, "b") == 1  # its DOWNLOAD_SLOTS concurrency
    # The keys do not wait for each other: both started before either ended.
    first_end = next(i for i, (event, *_) in enumerate(log) if event == "end")
    assert {key for event, key, _ in log[:first_end]} == {"a", "b"}
    assert not gate._gates  # idle gates are dropped
    assert {key: slot.active for key, slot in slots(gate).items()} == {
        "a": set(),
        "b": set(),
    }


@deferred_f_from_coro_f
async def test_delay_without_jitter(make_throttle, monkeypatch):
    drawn = []
    monkeypatch.setattr(
        "scrapy.core.downloader.random.uniform", lambda *a: drawn.append(a) or a[0]
    )
    gate = make_throttle(DOWNLOAD_DELAY=0.15, **NO_JITTER)
    log = []
    await asyncio.gather(*(hold(gate, "a", 0, log) for _ in range(3)))
    # 0.15, less the bookkeeping between
    assert [gap >= 0.14 for gap in start_gaps(log)] == [True, True]
    assert drawn == []  # no jitter drawn, so the delay is never shortened


@deferred_f_from_coro_f
async def test_delay_with_jitter_is_scrapys_draw(make_throttle, monkeypatch):
    drawn = []
    monkeypatch.setattr(
        "scrapy.core.downloader.random.uniform", lambda *a: drawn.append(a) or a[0]
    )
    gate = make_throttle(DOWNLOAD_DELAY=0.2)
    log = []
    await asyncio.gather(*(hold(gate, "a", 0, log) for _ in range(3)))
    assert drawn  # the slot's own jitter (±50 % by default)
    # The lowest draw, 0.5 x DOWNLOAD_DELAY, still spaces the starts.
    assert [gap >= 0.09 for gap in start_gaps(log)] == [True, True]


@deferred_f_from_coro_f
async def test_a_delay_set_on_scrapys_slot_paces_the_next_start(make_throttle):
    gate = make_throttle(**NO_JITTER)
    log = []
    await hold(gate, "a", 0, log)
    assert not gate._gates  # forgotten; the pacing lives on in Scrapy's slot
    slots(gate)["a"].delay = 0.3  # as AutoThrottle does after a response
    await hold(gate, "a", 0, log)
    assert start_gaps(log)[0] >= 0.29


class _SlowSpider(_Spider):
    download_delay = 0.25  # deprecated in Scrapy 2.19, still honoured


@pytest.mark.filterwarnings("ignore:The 'download_delay' spider attribute")
@deferred_f_from_coro_f
async def test_spider_download_delay_applies(make_throttle):
    gate = make_throttle(_SlowSpider, DOWNLOAD_DELAY=1, **NO_JITTER)
    log = []
    await asyncio.gather(*(hold(gate, "a", 0, log) for _ in range(2)))
    assert slots(gate)["a"].delay == 0.25
    assert start_gaps(log)[0] >= 0.24


@deferred_f_from_coro_f
async def test_download_slot_is_recorded_and_keys_the_gate(make_throttle):
    gate = make_throttle(DOWNLOAD_SLOTS={"pinned": {"concurrency": 1}})
    request = Request("http://a.test/", meta={"download_slot": "pinned"})
    page = Request("https://b.test/")  # raw mode: the page inside the command
    async with gate.slot(page, page):
        pass
    assert page.meta["download_slot"] == "b.test"
    async with gate.slot(request, request):
        assert slots(gate)["pinned"].active == {request}
    assert request.meta["download_slot"] == "pinned"


@deferred_f_from_coro_f
async def test_abort_releases_waiters_and_refuses_new_ones(make_throttle):
    gate = make_throttle(CONCURRENT_REQUESTS_PER_DOMAIN=1)
    log = []
    first = asyncio.ensure_future(hold(gate, "a", 0.3, log))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(hold(gate, "a", 0, log))
    await asyncio.sleep(0.01)
    gate.abort()
    with pytest.raises(SpiderClosing):
        await waiter
    with pytest.raises(SpiderClosing):
        await hold(gate, "b", 0, log)
    await first
    assert [(event, key) for event, key, _ in log] == [("start", "a"), ("end", "a")]
    assert slots(gate)["a"].active == set()


@deferred_f_from_coro_f
async def test_cancelled_waiter_does_not_leak_a_slot(make_throttle):
    gate = make_throttle(CONCURRENT_REQUESTS_PER_DOMAIN=1)
    log = []
    first = asyncio.ensure_future(hold(gate, "a", 0.1, log))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(hold(gate, "a", 0, log))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(first, waiter, return_exceptions=True)
    await asyncio.wait_for(hold(gate, "a", 0, log), timeout=1)  # the slot is free again
    assert [event for event, *_ in log] == ["start", "end", "start", "end"]
    assert slots(gate)["a"].active == set()


@deferred_f_from_coro_f
async def test_a_gate_left_with_only_a_timer_is_forgotten(make_throttle):
    gate = make_throttle(DOWNLOAD_DELAY=0.1, **NO_JITTER)
    log = []
    await hold(gate, "a", 0, log)
    waiter = asyncio.ensure_future(hold(gate, "a", 0, log))
    await asyncio.sleep(0.01)
    assert gate._gates["a"].timer is not None  # waiting out the delay
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.sleep(0.15)
    assert not gate._gates


@deferred_f_from_coro_f
async def test_delay_paces_starts_while_earlier_requests_still_run(make_throttle):
    gate = make_throttle(
        CONCURRENT_REQUESTS_PER_DOMAIN=3, DOWNLOAD_DELAY=0.1, **NO_JITTER
    )
    log = []

    async def hold_and_end(n):
        request = Request("http://a/")
        async with gate.slot(request, request):
            log.append(("start", n))
            await asyncio.sleep(0.6)
        log.append(("end", n))

    await asyncio.gather(*(hold_and_end(n) for n in range(3)))
    # Each start waits for the delay, not for an earlier request to end.
    assert [entry[0] for entry in log] == ["start"] * 3 + ["end"] * 3


@deferred_f_from_coro_f
async def test_download_delay_applies_to_sequential_requests(
    tmp_path, local_server, target_site
):

    class Chain(PagesSpider):
        async def start(self):
            yield Request(target_site.url("/page/0"), callback=self.next_page)

        def next_page(self, response):
            n = int(response.url.rsplit("/", 1)[1])
            yield from self.parse(response)
            if n < 3:
                yield Request(
                    target_site.url(f"/page/{n + 1}"), callback=self.next_page
                )

    settings = settings_for(local_server, tmp_path, DOWNLOAD_DELAY=0.4, **NO_JITTER)
    started = time.monotonic()
    result = await crawl(Chain, settings, urls=[])
    elapsed = time.monotonic() - started
    assert len(result.items) == 4
    assert elapsed >= 3 * 0.4


class _DelaySpider(PagesSpider):
    """Records, per page, the latency seen and its slot's delay after it."""

    def parse(self, response):
        slots = self.crawler.engine.downloader.slots
        yield {
            "latency": response.meta["download_latency"],
            "delay": slots[response.meta["download_slot"]].delay,
        }


@deferred_f_from_coro_f
async def test_autothrottle_adapts_a_routed_slot_as_a_direct_one(
    tmp_path, local_server, make_target_site, caplog
):
    site = await make_target_site(delay=0.5)
    urls = [site.url(f"/page/{i}") for i in range(4)]
    autothrottle = {
        "AUTOTHROTTLE_ENABLED": True,
        "AUTOTHROTTLE_START_DELAY": 1.0,
        "AUTOTHROTTLE_TARGET_CONCURRENCY": 1.0,
        "AUTOTHROTTLE_DEBUG": True,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
        **NO_JITTER,
    }
    routed_settings = settings_for(local_server, tmp_path, **autothrottle)
    direct_settings = {**routed_settings, "SCRAPPEY_ENABLED": False}
    caplog.set_level(logging.INFO, logger="scrapy.extensions.throttle")
    results = {}
    for name, settings in (("direct", direct_settings), ("routed", routed_settings)):
        caplog.clear()
        result = await crawl(_DelaySpider, settings, urls=urls)
        debug = [r for r in caplog.records if r.name == "scrapy.extensions.throttle"]
        assert len(debug) == 4, name  # AutoThrottle saw every response
        results[name] = result.items
    assert local_server.stats()["commands"]  # the routed crawl used the API
    for direct, routed in zip(results["direct"], results["routed"], strict=True):
        assert routed["latency"] >= 0.5
        assert routed["latency"] == pytest.approx(direct["latency"], abs=0.15)
        assert routed["delay"] == pytest.approx(direct["delay"], abs=0.15)
    # From the 1 s start delay towards the 0.5 s latency, halving the gap
    # each time: 0.75, 0.62, 0.56, 0.53.
    delays = [item["delay"] for item in results["routed"]]
    assert delays == sorted(delays, reverse=True)
    assert 0.5 <= delays[-1] < 0.65


def request_gaps(server):
    """Seconds between the ``request.*`` commands the API received, in order."""
    times = sorted(
        c["t"] for c in server.stats()["commands"] if c["cmd"].startswith("request.")
    )
    return [b - a for a, b in pairwise(times)]


@deferred_f_from_coro_f
async def test_a_pool_waiting_for_its_session_leaves_the_target_to_another(
    tmp_path, local_server, make_target_site
):
    site = await make_target_site(delay=0.3)
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_POOLS={"alice": {}, "bob": {}},  # one session each
        CONCURRENT_REQUESTS_PER_DOMAIN=4,
    )
    urls = [
        (site.url(f"/page/{pool}-{i}"), {"scrappey_session": pool})
        for pool in ("alice", "bob")
        for i in range(6)
    ]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len(result.items) == 12
    # Requests parked on alice's one session no longer fill the target's four
    # starts: bob's session works from the first moment, beside alice's.
    first_two = {hit.split("/")[-1].split("-")[0] for hit in site.hits[:2]}
    assert first_two == {"alice", "bob"}
    assert site.max_active == 2


@deferred_f_from_coro_f
async def test_download_delay_spaces_the_sends_of_requests_that_waited_for_sessions(
    tmp_path, make_local_server, target_site
):
    # Sessions slower to create than the delay: the requests wait for them
    # beyond several delays, then must still go out one delay apart.
    server = await make_local_server(faults=Faults(latency={"sessions.create": 1.2}))
    settings = settings_for(
        server,
        tmp_path,
        SCRAPPEY_SESSION_SCOPE="domain",  # the pool is created on first use
        SCRAPPEY_SESSION_POOL_SIZE=3,
        DOWNLOAD_DELAY=0.4,
        **NO_JITTER,
    )
    urls = [target_site.url(f"/page/{i}") for i in range(4)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len({item["session"] for item in result.items}) == 3
    gaps = request_gaps(server)
    assert len(gaps) == 3
    assert min(gaps) >= 0.4 - 0.15  # the send's own scheduling noise


@deferred_f_from_coro_f
async def test_session_init_requests_take_the_target_slot(
    tmp_path, local_server, target_site
):
    settings = settings_for(
        local_server,
        tmp_path,
        SCRAPPEY_SESSION_POOL_SIZE=3,
        SCRAPPEY_SESSION_INIT=[{"url": target_site.url("/page/init")}],
        DOWNLOAD_DELAY=0.4,
        **NO_JITTER,
    )
    urls = [target_site.url(f"/page/{i}") for i in range(3)]
    result = await crawl(PagesSpider, settings, urls=urls)
    assert len(result.items) == 3
    assert site_hits(target_site, "/page/init") == 3
    gaps = request_gaps(local_server)
    assert len(gaps) == 5  # three inits, three pages, one delay apart
    assert min(gaps) >= 0.4 - 0.15


def site_hits(site, path):
    return sum(hit == path for hit in site.hits)
