"""A real ``redis-server`` on 127.0.0.1 for the Redis tests (no fake Redis).

One implementation, shared with the scale-out runner and the benchmarks:
:mod:`example_project.processes`.
"""

from __future__ import annotations

from example_project.processes import RedisServer, find_redis_server, free_tcp_port

__all__ = ["RedisServer", "find_redis_server", "free_tcp_port"]
