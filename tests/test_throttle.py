import asyncio
import time

import pytest
from scrapy import Request
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey.sessions import SpiderClosing
from scrapy_scrappey.throttle import TargetThrottle
from tests.crawl import PagesSpider, crawl, settings_for


def throttle(**settings):
    return TargetThrottle(
        Settings({"CONCURRENT_REQUESTS_PER_DOMAIN": 2, "DOWNLOAD_DELAY": 0, **settings})
    )


async def hold(gate, key, seconds, log):
    async with gate.slot(key):
        log.append(("start", key, time.monotonic()))
        await asyncio.sleep(seconds)


@deferred_f_from_coro_f
async def test_concurrency_per_key_and_download_slots():
    gate = throttle(DOWNLOAD_SLOTS={"b": {"concurrency": 1}})
    log = []
    started = time.monotonic()
    await asyncio.gather(
        *(hold(gate, "a", 0.2, log) for _ in range(4)),
        *(hold(gate, "b", 0.2, log) for _ in range(2)),
    )
    elapsed = time.monotonic() - started
    a_starts = sorted(t - started for _, key, t in log if key == "a")
    b_starts = sorted(t - started for _, key, t in log if key == "b")
    assert a_starts[1] < 0.1  # two at a time
    assert a_starts[2] >= 0.19
    assert b_starts[1] >= 0.19  # one at a time
    assert elapsed < 0.6
    assert not gate._gates  # idle gates without a pending delay are dropped


@deferred_f_from_coro_f
async def test_delay_without_jitter():
    gate = throttle(DOWNLOAD_DELAY=0.15, DOWNLOAD_DELAY_JITTER=0)
    log = []
    await asyncio.gather(*(hold(gate, "a", 0, log) for _ in range(3)))
    starts = sorted(t for *_, t in log)
    assert starts[1] - starts[0] >= 0.14
    assert starts[2] - starts[1] >= 0.14
    assert TargetThrottle(Settings({"RANDOMIZE_DOWNLOAD_DELAY": False}))._jitter in (
        0.0,
        0.5,
    )


@pytest.mark.parametrize(
    ("settings", "jitter"),
    [
        ({}, 0.5),
        ({"RANDOMIZE_DOWNLOAD_DELAY": False}, 0.0),
        ({"DOWNLOAD_DELAY_JITTER": 0.2}, 0.2),
    ],
)
def test_jitter_follows_scrapy(settings, jitter):
    assert TargetThrottle(Settings(settings))._jitter == jitter


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
    assert [key for _, key, _ in log] == ["a"]


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
    assert len(log) == 2


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
    from scrapy.settings import Settings

    from scrapy_scrappey.throttle import TargetThrottle

    throttle = TargetThrottle(
        Settings(
            {"DOWNLOAD_SLOTS": {"a": {"randomize_delay": False}, "b": {"jitter": 0.1}}}
        )
    )
    assert throttle._gate("a").jitter == 0.0
    assert throttle._gate("b").jitter == 0.1
    assert throttle._gate("c").jitter == 0.5
