"""TaskGroup: background tasks of the sessions and the middleware."""

import asyncio
import logging

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_scrappey._tasks import TaskGroup


@deferred_f_from_coro_f
async def test_an_unexpected_error_is_logged_once_with_the_spider(caplog):
    group = TaskGroup(extra={"spider": "the-spider"})

    async def boom():
        raise ValueError("bug")

    task = group.spawn(boom(), name="scrappey-boom")
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "scrappey-boom" in errors[0].getMessage()
    assert errors[0].spider == "the-spider"
    assert errors[0].exc_info[1].args == ("bug",)
    assert len(group) == 0


@deferred_f_from_coro_f
async def test_cancel_by_prefix_and_close_cancels_the_rest(caplog):
    group = TaskGroup()
    ended = []

    async def sleeper(name):
        try:
            await asyncio.sleep(30)
        finally:
            ended.append(name)

    create = group.spawn(sleeper("create"), name="scrappey-create-a")
    destroy = group.spawn(sleeper("destroy"), name="scrappey-destroy")
    await asyncio.sleep(0)
    group.cancel("scrappey-create")
    await asyncio.gather(create, return_exceptions=True)
    assert ended == ["create"]
    assert not destroy.done()
    await group.close()
    assert ended == ["create", "destroy"]
    assert destroy.cancelled()
    assert len(group) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@deferred_f_from_coro_f
async def test_close_cancels_again_a_task_that_lost_its_cancellation():
    group = TaskGroup()
    lost = []

    async def stubborn():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            lost.append(True)  # as a cancellation lost inside a library
        await asyncio.sleep(30)  # the loop goes on

    task = group.spawn(stubborn(), name="scrappey-loop")
    await asyncio.sleep(0)
    # The bound only guards against a hang.
    await asyncio.wait_for(group.close(), 30)
    assert lost == [True]
    assert task.cancelled()
    assert len(group) == 0
