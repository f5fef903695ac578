import asyncio
import time

import pytest
from scrapy import Request
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.config import ThrottleConfig
from scrapy_scrappey.exceptions import SpiderClosing
from scrapy_scrappey.throttle import TargetThrottle
from tests.crawl import PagesSpider, crawl, max_overlap, settings_for


def throttle(**settings):
    return TargetThrottle(
        ThrottleConfig.from_settings(
            Settings(
                {"CONCURRENT_REQUESTS_PER_DOMAIN": 2, "DOWNLOAD_DELAY": 0, **settings}
            )
        )
    )


async def hold(gate, key, seconds, log):
    async with gate.slot(key):
        log.append(("start", key, time.monotonic()))
        await asyncio.sleep(seconds)
        log.append(("end", key, time.monotonic()))


@deferred_f_from_coro_f
async def test_concurrency_per_key_and_download_slots():
    gate = throttle(DOWNLOAD_SLOTS={"b": {"concurrency": 1}})
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
    assert not gate._gates  # idle gates without a pending delay are dropped


@deferred_f_from_coro_f
async def test_delay_without_jitter(monkeypatch):
    drawn = []
    monkeypatch.setattr(
        "scrapy_scrappey.throttle.random.uniform", lambda *a: drawn.append(a) or a[0]
    )
    gate = throttle(DOWNLOAD_DELAY=0.15, DOWNLOAD_DELAY_JITTER=0)
    log = []
    await asyncio.gather(*(hold(gate, "a", 0, log) for _ in range(3)))
    starts = sorted(t for event, _, t in log if event == "start")
    assert starts[1] - starts[0] >= 0.14  # 0.15, less the bookkeeping between
    assert starts[2] - starts[1] >= 0.14
    assert drawn == []  # no jitter drawn, so the delay is never shortened


@deferred_f_from_coro_f
async def test_delay_with_jitter_is_drawn_in_scrapys_range(monkeypatch):
    drawn = []
    monkeypatch.setattr(
        "scrapy_scrappey.throttle.random.uniform", lambda *a: drawn.append(a) or a[0]
    )
    gate = throttle(DOWNLOAD_DELAY=0.2)
    log = []
    await asyncio.gather(*(hold(gate, "a", 0, log) for _ in range(3)))
    starts = sorted(t for event, _, t in log if event == "start")
    assert drawn == [(0.5, 1.5)] * 3  # 0.5 x to 1.5 x DOWNLOAD_DELAY
    assert starts[1] - starts[0] >= 0.09  # the shortest draw: 0.5 x 0.2
    assert starts[2] - starts[1] >= 0.09


@deferred_f_from_coro_f
async def test_abort_releases_waiters_and_refuses_new_ones():
    gate = throttle(CONCURRENT_REQUESTS_PER_DOMAIN=1)
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


@deferred_f_from_coro_f
async def test_cancelled_waiter_does_not_leak_a_slot():
    gate = throttle(CONCURRENT_REQUESTS_PER_DOMAIN=1)
    log = []
    first = asyncio.ensure_future(hold(gate, "a", 0.1, log))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(hold(gate, "a", 0, log))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(first, waiter, return_exceptions=True)
    await asyncio.wait_for(hold(gate, "a", 0, log), timeout=1)  # the slot is free again
    assert [event for event, *_ in log] == ["start", "end", "start", "end"]


@deferred_f_from_coro_f
async def test_many_keys_are_pruned():
    gate = throttle(DOWNLOAD_DELAY=0.001, DOWNLOAD_DELAY_JITTER=0)
    log = []
    for i in range(1100):
        await hold(gate, f"k{i}", 0, log)
    await asyncio.sleep(0.01)
    await hold(gate, "last", 0, log)
    assert len(gate._gates) < 1100


@deferred_f_from_coro_f
async def test_delay_paces_starts_while_earlier_requests_still_run():
    gate = throttle(
        CONCURRENT_REQUESTS_PER_DOMAIN=3, DOWNLOAD_DELAY=0.1, DOWNLOAD_DELAY_JITTER=0
    )
    log = []

    async def hold_and_end(n):
        async with gate.slot("a"):
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

    settings = settings_for(
        local_server, tmp_path, DOWNLOAD_DELAY=0.4, DOWNLOAD_DELAY_JITTER=0
    )
    started = time.monotonic()
    result = await crawl(Chain, settings, urls=[])
    elapsed = time.monotonic() - started
    assert len(result.items) == 4
    assert elapsed >= 3 * 0.4


def test_download_slots_randomize_delay_key():
    throttle = TargetThrottle(
        ThrottleConfig.from_settings(
            Settings(
                {
                    "DOWNLOAD_SLOTS": {
                        "a": {"randomize_delay": False},
                        "b": {"jitter": 0.1},
                    }
                }
            )
        )
    )
    assert throttle._gate("a").jitter == 0.0
    assert throttle._gate("b").jitter == 0.1
    assert throttle._gate("c").jitter == 0.5
