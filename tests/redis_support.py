"""A real ``redis-server`` on 127.0.0.1 for the Redis tests (no fake Redis).

One implementation, shared with the scale-out runner and the benchmarks:
:mod:`example_project.processes`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from example_project.processes import RedisServer, find_redis_server, free_tcp_port

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RedisServer", "find_redis_server", "free_tcp_port", "until"]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for *condition*: a safeguard against a hang, not a timing assertion."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")
