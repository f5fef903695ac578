"""WaiterQueue: the one "wait your turn" primitive of sessions and the throttle."""

import asyncio

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey._waiters import WaiterQueue


class Tokens:
    """A stock of numbered tokens behind a WaiterQueue."""

    def __init__(self, count=0):
        self.free = list(range(count))
        self.taken = []
        self.given_back = []
        self.queue = WaiterQueue(self.take, self.give_back)

    def take(self):
        if not self.free:
            return None
        token = self.free.pop(0)
        self.taken.append(token)
        return token

    def give_back(self, token):
        self.given_back.append(token)
        self.add(token)

    def add(self, token):
        self.free.append(token)
        self.queue.serve()


async def _settle():
    for _ in range(3):
        await asyncio.sleep(0)


@deferred_f_from_coro_f
async def test_waiters_are_served_in_arrival_order():
    tokens = Tokens()
    got = []

    async def waiter(name):
        got.append((name, await tokens.queue.wait()))

    tasks = [asyncio.ensure_future(waiter(n)) for n in "abc"]
    await _settle()
    assert tokens.queue.waiting()
    for token in (10, 11, 12):
        tokens.add(token)
    await asyncio.gather(*tasks)
    assert got == [("a", 10), ("b", 11), ("c", 12)]
    assert not tokens.queue.waiting()


@deferred_f_from_coro_f
async def test_a_free_token_is_granted_without_suspending():
    tokens = Tokens(1)
    assert await tokens.queue.wait() == 0
    assert tokens.taken == [0]


@deferred_f_from_coro_f
async def test_granted_just_as_cancelled_gives_the_grant_back():
    tokens = Tokens()
    first = asyncio.ensure_future(tokens.queue.wait())
    second = asyncio.ensure_future(tokens.queue.wait())
    await _settle()
    tokens.free.append(7)
    tokens.queue.serve()  # granted to the first waiter...
    first.cancel()  # ...which is cancelled before it could run
    assert await asyncio.wait_for(second, 2) == 7  # handed on, not lost
    assert first.cancelled()
    assert tokens.given_back == [7]
    assert tokens.taken == [7, 7]


@deferred_f_from_coro_f
async def test_cancelled_and_timed_out_waiters_are_skipped():
    tokens = Tokens()
    cancelled = asyncio.ensure_future(tokens.queue.wait())
    timed_out = asyncio.ensure_future(tokens.queue.wait(timeout=0.05))
    last = asyncio.ensure_future(tokens.queue.wait())
    await _settle()
    cancelled.cancel()
    with pytest.raises(TimeoutError):
        await timed_out
    tokens.add(3)
    assert await last == 3
    assert tokens.taken == [3]  # nothing was taken for the waiters that left
    assert tokens.given_back == []


@deferred_f_from_coro_f
async def test_fail_all_fails_every_waiter_then_the_queue_works_again():
    tokens = Tokens()
    waiters = [asyncio.ensure_future(tokens.queue.wait()) for _ in range(3)]
    await _settle()
    tokens.queue.fail_all(RuntimeError("closing"))
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [str(r) for r in results] == ["closing"] * 3
    assert not tokens.queue.waiting()
    tokens.add(1)
    assert await tokens.queue.wait() == 1


@deferred_f_from_coro_f
async def test_a_waiter_whose_turn_raised_leaves_no_trace():
    def broken_take():
        raise RuntimeError("bug in take")

    queue = WaiterQueue(broken_take, lambda value: None)
    with pytest.raises(RuntimeError, match="bug in take"):
        await queue.wait()
    assert not queue.waiting()  # nobody left behind to be granted into the void


@deferred_f_from_coro_f
async def test_hand_over_moves_waiters_in_order_behind_the_others():
    source, target = Tokens(), Tokens()
    got = []

    async def waiter(queue, name):
        got.append((name, await queue.wait()))

    first = asyncio.ensure_future(waiter(target.queue, "t"))
    moved = [asyncio.ensure_future(waiter(source.queue, n)) for n in "abc"]
    await _settle()
    moved[1].cancel()  # "b" gives up before the move and is not moved
    await _settle()
    source.queue.hand_over(target.queue)
    assert not source.queue.waiting()
    moved[2].cancel()  # "c" gives up after it: skipped, never granted
    await _settle()
    for token in (1, 2, 3):
        target.add(token)
    await asyncio.wait_for(asyncio.gather(first, moved[0]), 2)
    assert got == [("t", 1), ("a", 2)]
    assert target.free == [3]  # nothing went to the waiters who left
    assert not target.queue.waiting()
