"""``--redis`` of the command line: the workers' shared ledger, blocking.

The same script as the workers' reaper (:data:`~scrapy_scrappey._ledger_script.TICK_LUA`)
takes the sessions of dead workers, so a cleanup and a live worker never both
destroy one session.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.settings import Settings

from ._ledger_script import (
    TICK_LUA,
    ledger_keys,
    owner_of,
    parse_tick,
    text,
    tick_args,
)
from .exceptions import ScrappeyConfigError
from .redis_link import RedisLink, new_worker_id, redis_url, shown_url
from .session_api import SESSION_ID_PREFIX

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Collection, Iterator

    from ._cli_args import Parsers

#: Milliseconds the command line counts as alive while it cleans up.
_CLI_LIVENESS_MS = 300_000
#: Tries of the last write (it releases the ids taken).
_LEAVE_TRIES = 3


class RedisFailed(Exception):
    """Redis (``--redis``) failed: the command ends with this message."""

    def __init__(self, link: RedisLink, error: Exception) -> None:
        super().__init__(
            f"cannot use Redis at {shown_url(link.url)} (--redis): {error}"
        )


def check_redis(parsers: Parsers, args: argparse.Namespace) -> None:
    """Exit with usage help unless ``--redis`` is a usable URL."""
    if args.redis:
        try:
            redis_url(Settings({"SCRAPPEY_REDIS_URL": args.redis}))
        except ScrappeyConfigError as exc:
            message = str(exc).replace("SCRAPPEY_REDIS_URL", "--redis")
            parsers.actions[args.action].error(message)


def redis_link(args: argparse.Namespace, api_key: str) -> RedisLink | None:
    """The workers' Redis of this key (never opened: only its keys are used)."""
    return RedisLink(args.redis, api_key) if args.redis else None


@dataclass(frozen=True)
class Workers:
    """Who owns each session: its id, or the shared ledger (with ``--redis``)."""

    owners: dict[str, str]
    alive: set[str] | None  # None: Redis not asked

    @classmethod
    def read(cls, link: RedisLink | None) -> Workers:
        """The owners recorded in Redis and the live workers (none without *link*)."""
        if link is None:
            return cls({}, None)
        with _blocking_client(link) as client:
            seconds, micros = client.time()
            now = seconds * 1000 + micros // 1000
            owners = client.hgetall(link.key("owners"))
            alive = client.zrangebyscore(link.key("workers"), now, "+inf")
        return cls(
            {text(k): text(v) for k, v in owners.items()}, {text(w) for w in alive}
        )

    def of(self, session_id: str) -> str:
        """The owner of *session_id*, and whether it is alive when Redis tells."""
        owner = self.owners.get(session_id) or owner_of(session_id, SESSION_ID_PREFIX)
        if owner is None or self.alive is None:
            return owner or "-"
        return f"{owner} ({'alive' if owner in self.alive else 'dead'})"


def reap_dead_workers(
    link: RedisLink, destroy: Callable[[list[str]], Collection[str]]
) -> dict[str, str]:
    """Take and destroy the sessions of dead workers (``sessions cleanup --redis``).

    *destroy* gets the ids taken (maybe none) and returns those gone; the
    others stay recorded, for the next cleanup or a live worker, their dead
    owners' cap slots pinned one slot TTL more (released once all its
    sessions are gone). Returns {taken id: its dead owner}.
    """
    me = "cli-" + new_worker_id()
    pin_ms = round(link.slot_ttl * 1000)
    with _blocking_client(link) as client:
        script = client.register_script(TICK_LUA)
        args = tick_args(me, _CLI_LIVENESS_MS, reap=True, pin_ms=pin_ms)
        _, taken, _ = parse_tick(script(keys=ledger_keys(link), args=args))
    gone: Collection[str] = ()
    try:
        gone = destroy(sorted(taken))
    finally:
        _leave(link, me, taken, gone, pin_ms)
    return taken


def _leave(
    link: RedisLink, me: str, taken: dict[str, str], gone: Collection[str], pin: int
) -> None:
    """The last write (forget, release, pin, leave), tried again on a new
    connection: until it runs, the ids taken stay this command's, held for
    :data:`_CLI_LIVENESS_MS`."""
    left = Counter(w for i, w in taken.items() if i not in gone)
    freed = sorted(set(taken.values()) - set(left))
    args = tick_args(me, 0, forget=sorted(gone), release=freed, pin=left, pin_ms=pin)
    # Each try opens a new connection: a reset one is the usual failure.
    for _ in range(_LEAVE_TRIES - 1):
        if _written(link, args):
            return
    with _blocking_client(link) as client:
        client.register_script(TICK_LUA)(keys=ledger_keys(link), args=args)


def _written(link: RedisLink, args: list[str | int]) -> bool:
    with contextlib.suppress(RedisFailed), _blocking_client(link) as client:
        client.register_script(TICK_LUA)(keys=ledger_keys(link), args=args)
        return True
    return False


@contextlib.contextmanager
def _blocking_client(link: RedisLink) -> Iterator[Any]:
    """A blocking client; its failures become :class:`RedisFailed`."""
    import redis

    client = redis.Redis.from_url(
        link.url, socket_timeout=10, socket_connect_timeout=10
    )
    try:
        yield client
    except redis.RedisError as ex:
        raise RedisFailed(link, ex) from None
    finally:
        client.close()
