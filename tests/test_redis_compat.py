"""The example project's scrapy-redis compatibility layer, against a real Redis.

``example_project/scrappey_example/redis_compat.py``: the outage-proof
scheduler and the draining spider (the whole workers run in
tests/test_scale_out.py).
"""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from scrapy import Request
from scrapy.core.engine import ExecutionEngine
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.test import get_crawler

pytest.importorskip("scrapy_redis", reason="scrapy-redis is not installed")

from example_project.scrappey_example.redis_compat import (
    REDIS_WORKER_SETTINGS,
    DrainingRedisSpider,
    Scheduler,
)


class _Spider(DrainingRedisSpider):
    name = "compat"


@pytest.fixture(autouse=True)
def _engine_heartbeat(monkeypatch):
    # REDIS_ENGINE_HEARTBEAT sets it class-wide (a worker runs one crawl): put
    # it back for the other tests of this process.
    monkeypatch.setattr(ExecutionEngine, "_SLOT_HEARTBEAT_INTERVAL", 5.0)


def _open(redis_server, **settings):
    # The example's own components load only from example_project/.
    worker = {
        k: v
        for k, v in REDIS_WORKER_SETTINGS.items()
        if "scrappey_example" not in str(v)
    }
    crawler = get_crawler(
        _Spider, {**worker, "REDIS_URL": redis_server.url, **settings}
    )
    crawler.spider = spider = _Spider.from_crawler(crawler)
    scheduler = Scheduler.from_crawler(crawler)
    scheduler.open(spider)
    return crawler, spider, scheduler


def _urls(scheduler):
    urls = []
    while (request := scheduler.next_request()) is not None:
        urls.append(request.url)
    return urls


def test_requests_found_while_redis_is_down_are_queued_once_it_is_back(
    redis_server,
):
    crawler, _, scheduler = _open(redis_server)
    assert scheduler.enqueue_request(Request("http://a.test/1"))
    redis_server.stop()
    for n in (2, 3, 3):  # the duplicate is filtered once Redis answers
        assert scheduler.enqueue_request(Request(f"http://a.test/{n}"))
    assert scheduler.next_request() is None  # no crash, nothing lost
    assert scheduler.has_pending_requests()  # unknown: the worker waits
    redis_server.start()  # empty: the first request and its fingerprint are gone
    assert sorted(_urls(scheduler)) == ["http://a.test/2", "http://a.test/3"]
    assert not scheduler.enqueue_request(Request("http://a.test/2"))  # seen
    assert crawler.stats.get_value("scheduler/redis/held") == 3
    assert not scheduler.has_pending_requests()


def _reply_lost(script):
    """*script*, run by Redis, whose reply is lost as Redis goes away."""

    def run(**kw):
        script(**kw)
        raise RedisConnectionError("Connection closed by server.")

    return run


def test_an_enqueue_whose_reply_was_lost_is_queued_once(redis_server, monkeypatch):
    _, _, scheduler = _open(redis_server)
    script = scheduler._enqueue_script
    monkeypatch.setattr(scheduler, "_enqueue_script", _reply_lost(script))
    assert scheduler.enqueue_request(Request("http://a.test/1"))  # held
    monkeypatch.setattr(scheduler, "_enqueue_script", script)
    assert _urls(scheduler) == ["http://a.test/1"]  # Redis had it: once


def test_a_pop_whose_reply_was_lost_is_recovered(redis_server, monkeypatch):
    _, _, scheduler = _open(redis_server)
    for n in (1, 2):
        scheduler.enqueue_request(Request(f"http://a.test/{n}"))
    assert scheduler.next_request().url == "http://a.test/1"
    script = scheduler._pop_script
    monkeypatch.setattr(scheduler, "_pop_script", _reply_lost(script))
    assert scheduler.next_request() is None  # Redis popped it, the reply is lost
    assert scheduler.has_pending_requests()
    monkeypatch.setattr(scheduler, "_pop_script", script)
    assert _urls(scheduler) == ["http://a.test/2"]  # from the receipt
    assert not scheduler.has_pending_requests()


def test_only_the_priority_queue_is_supported(redis_server):
    with pytest.raises(TypeError, match=r"SCHEDULER_QUEUE_CLASS.*FifoQueue"):
        _open(redis_server, SCHEDULER_QUEUE_CLASS="scrapy_redis.queue.FifoQueue")


def test_seeds_are_filtered_requests_and_bad_ones_are_named(redis_server, caplog):
    _, spider, _ = _open(redis_server)
    seed = spider.make_request_from_data(b'{"url": "http://a.test/", "meta": {"k": 1}}')
    assert (seed.url, seed.meta["k"], seed.dont_filter) == ("http://a.test/", 1, False)
    assert spider.make_request_from_data(b"http://a.test/plain").url == (
        "http://a.test/plain"
    )
    with caplog.at_level(logging.ERROR):
        for bad in (
            b'{"url": 3}',
            b"{not json",
            b'{"url": "http://a.test/", "meta": []}',
        ):
            assert spider.make_request_from_data(bad) is None
    assert len(caplog.records) == 3
    assert all("compat:start_urls" in r.getMessage() for r in caplog.records)


def test_a_worker_closes_only_after_the_drain_grace(redis_server, monkeypatch):
    _, spider, _ = _open(redis_server, REDIS_DRAIN_GRACE=2.0)
    monkeypatch.setattr(spider, "schedule_next_requests", lambda: None)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 1.0)
    with pytest.raises(DontCloseSpider):
        spider.spider_idle()
    monkeypatch.setattr(time, "monotonic", lambda: now + 3.0)
    spider.spider_idle()  # idle past the grace: it may close
    spider.server.lpush(spider.redis_key, b'{"url": "http://a.test/"}')
    with pytest.raises(DontCloseSpider):  # seeds waiting: busy again
        spider.spider_idle()
    redis_server.stop()
    monkeypatch.setattr(time, "monotonic", lambda: now + 10.0)
    with pytest.raises(DontCloseSpider):  # Redis down: not drained, unknown
        spider.spider_idle()


def test_idle_workers_poll_the_queue_every_redis_engine_heartbeat(redis_server):
    _open(redis_server, REDIS_ENGINE_HEARTBEAT=0.5)
    assert ExecutionEngine._SLOT_HEARTBEAT_INTERVAL == 0.5


def test_bad_drain_settings_are_named(redis_server):
    with pytest.raises(ValueError, match="REDIS_DRAIN_GRACE"):
        _open(redis_server, REDIS_DRAIN_GRACE="soon")
