"""The crawl's link to Redis (``SCRAPPEY_REDIS_URL``): account-wide session slots.

Opt-in: without ``SCRAPPEY_REDIS_URL`` nothing here runs. With it, every
worker (every crawl process) sharing the Redis and the API key counts its
sessions there, so that ``SCRAPPEY_MAX_SESSIONS`` caps the account, not one
process (the cap logic itself is in ``_cap.py``).

Data model, per account (a hash of the API key, never the key itself), both
keys in one hash slot:

* ``scrappey:{<account>}:slots`` — a hash: worker id → slots it holds.
* ``scrappey:{<account>}:alive`` — a sorted set: worker id → the Redis-clock
  time (ms) after which its slots no longer count. Each write of a worker
  moves it to now + :data:`SLOT_TTL`; its heartbeat writes every
  :data:`HEARTBEAT_INTERVAL`, so a worker killed without closing frees its
  slots within one TTL.
* ``scrappey:{<account>}:seq`` — a hash: worker id → the sequence number of
  its last write, so that a late command (timed out on the client, run by
  Redis afterwards) cannot overwrite a newer count.
* ``scrappey:{<account>}:epoch`` — a marker made when missing. A worker that
  saw one and finds another (Redis restarted empty: the others' counts are
  gone until their next heartbeat) sets ``scrappey:{<account>}:grace`` for
  one TTL, while which no claim is accepted.

Every read and write goes through one Lua script (:data:`_SLOTS_LUA`): it
drops expired workers, then either sets the caller's count unconditionally
(a *sync*) or only if the other live workers' total plus it stays within the
cap (a *claim*). Redis runs scripts atomically, so two workers never both
take the last slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import secrets
import socket
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ._settings import read_float
from .exceptions import ScrappeyConfigError, ScrappeyError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between two heartbeats of a worker (each rewrites its slot count),
#: unless ``SCRAPPEY_REDIS_HEARTBEAT`` says otherwise.
HEARTBEAT_INTERVAL = 5.0
#: Seconds a worker's slots count without a heartbeat: three missed beats.
SLOT_TTL = 15.0
#: Seconds one Redis command may take before it counts as a failure.
COMMAND_TIMEOUT = 5.0

_SCHEMES = ("redis", "rediss", "unix")
_HOST_JUNK = re.compile(r"[^a-z0-9-]+")
_PASSWORD_OPTION = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)

# KEYS: slots hash, alive zset, seq hash, epoch, grace. ARGV: worker id, count,
# cap (0: sync, -1: read only), ttl ms, the write's sequence number, the epoch
# the worker saw last ("": none). A write older than the worker's last one
# (sent before it, but run after it: a timed-out command still runs) is
# ignored. An epoch that is missing (Redis lost its state) is made anew; a
# worker that saw another one starts the grace: for one TTL no claim is
# accepted, while the live workers' heartbeats write their counts back.
# Returns {1 if written, 0 if not, -1 if refused for the grace; the others'
# total; the epoch}.
_SLOTS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = t[1] .. '.' .. t[2]
  redis.call('SET', KEYS[4], epoch)
end
redis.call('PEXPIRE', KEYS[4], 86400000)
if ARGV[6] ~= '' and ARGV[6] ~= epoch and redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('SET', KEYS[5], epoch, 'PX', ttl)
end
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('HDEL', KEYS[1], w)
  redis.call('ZREM', KEYS[2], w)
end
local me, n, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local flat = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #flat, 2 do
  if flat[i] ~= me then others = others + tonumber(flat[i + 1]) end
end
if cap > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  return {-1, others, epoch}
end
if cap < 0 or (cap > 0 and others + n > cap) then return {0, others, epoch} end
local seq = tonumber(ARGV[5])
if seq <= tonumber(redis.call('HGET', KEYS[3], me) or '0') then
  return {0, others, epoch}
end
redis.call('HSET', KEYS[3], me, seq)
redis.call('PEXPIRE', KEYS[3], 86400000)
if n > 0 then
  redis.call('HSET', KEYS[1], me, n)
  redis.call('ZADD', KEYS[2], now + ttl, me)
else
  redis.call('HDEL', KEYS[1], me)
  redis.call('ZREM', KEYS[2], me)
end
return {1, others, epoch}
"""


class RedisUnreachable(ScrappeyError):
    """``SCRAPPEY_REDIS_URL`` could not be reached when the crawl started."""


def redis_url(settings: BaseSettings) -> str | None:
    """``SCRAPPEY_REDIS_URL``, checked (``None``: unset, one process)."""
    value = settings.get("SCRAPPEY_REDIS_URL")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or _scheme(value) not in _SCHEMES:
        raise ScrappeyConfigError(
            f"SCRAPPEY_REDIS_URL must be a redis://, rediss:// or unix:// URL, "
            f"got {shown_url(str(value))!r}"
        )
    if importlib.util.find_spec("redis") is None:
        raise ScrappeyConfigError(
            "SCRAPPEY_REDIS_URL needs the redis package: "
            "pip install 'scrapy-scrappey[redis]'"
        )
    _check_parsable(value)
    return value


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:  # e.g. an unclosed [ in the host
        return ""


def _check_parsable(url: str) -> None:
    """Raise :class:`ScrappeyConfigError` when redis-py cannot read *url*.

    redis-py's own errors may quote the password (a non-numeric port), and a
    password with an unencoded ``/ # ? @`` moves the host into the path.
    """
    from redis.connection import parse_url

    userinfo = url.partition("://")[2].rpartition("@")[0]
    if _scheme(url) != "unix" and userinfo != urlsplit(url).netloc.rpartition("@")[0]:
        raise ScrappeyConfigError(
            f"SCRAPPEY_REDIS_URL {shown_url(url)}: percent-encode the / # ? @ "
            "characters of its user name and password (e.g. %2F for /)"
        )
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as ex:
        raise ScrappeyConfigError(
            f"SCRAPPEY_REDIS_URL {shown_url(url)} is not a valid Redis URL "
            f"({type(ex).__name__}; check its port and database number)"
        ) from None


def redis_heartbeat(settings: BaseSettings) -> float | None:
    """``SCRAPPEY_REDIS_HEARTBEAT`` in seconds (``None``: :data:`HEARTBEAT_INTERVAL`)."""
    if settings.get("SCRAPPEY_REDIS_HEARTBEAT") in (None, ""):
        return None
    return read_float(settings, "SCRAPPEY_REDIS_HEARTBEAT", HEARTBEAT_INTERVAL)


def shown_url(url: str) -> str:
    """*url* without its password, for logs and errors.

    Everything between ``://`` and the last ``@`` is the user info, whatever
    it holds (a password with an unencoded ``/ # ?`` hides it from urlsplit);
    only a user name before a ``:`` stays. A ``password=`` option is masked too.
    """
    scheme, sep, rest = _PASSWORD_OPTION.sub(r"\1***", url).partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{host}" if colon else f"***@{host}"
    return scheme + sep + rest


def new_worker_id() -> str:
    """A worker id for this process: host, pid and a random part (pids are reused).

    The host is cut to [a-z0-9-] and 24 characters: the id is part of every
    session id the worker creates.
    """
    host = _HOST_JUNK.sub("-", socket.gethostname().lower()).strip("-")[:24]
    return f"{host.strip('-') or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisLink:
    """One worker's connection to Redis and its share of the session slots."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        worker_id: str | None = None,
        heartbeat: float | None = None,
    ):
        self.url = url
        self.worker_id = worker_id or new_worker_id()
        self._heartbeat = heartbeat
        self._account = hashlib.sha256(api_key.encode()).hexdigest()[:16]
        names = ("slots", "alive", "seq", "epoch", "grace")
        self._keys = [self.key(name) for name in names]
        self._seq = 0
        self._epoch = ""
        #: Whether Redis refused the last claim because it lost its state and
        #: the workers' counts are being written back (wait, do not evict).
        self.rebuilding = False
        self._extra: dict[str, Any] | None = None
        self._client: Any = None
        self._script: Any = None

    async def open(self, cap: int = 0, *, extra: dict[str, Any] | None = None) -> None:
        """Connect and ping; raise :class:`RedisUnreachable` naming the setting.

        *cap* (``SCRAPPEY_MAX_SESSIONS``) is only logged: without one, the
        workers' sessions are not capped together, which is worth a warning.
        """
        self._extra = extra
        # redis is an optional extra, needed only with the setting (checked by redis_url).
        import redis.asyncio as aioredis

        _check_parsable(self.url)  # the CLI and tests build links directly
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
        )
        self._script = self._client.register_script(_SLOTS_LUA)
        try:
            await command(self._client.ping())
        except OSError as ex:
            await self.close()
            raise RedisUnreachable(
                f"SCRAPPEY_REDIS_URL {shown_url(self.url)} is unreachable: {ex}"
            ) from None
        logger.log(
            logging.INFO if cap else logging.WARNING,
            "Scrappey: worker %(worker)s shares its sessions, SCRAPPEY_MAX_SESSIONS "
            "(%(cap)s) and the budget through Redis at %(url)s%(note)s",
            {
                "worker": self.worker_id,
                "cap": cap or "unset",
                "url": shown_url(self.url),
                "note": ""
                if cap
                else ": without it the workers together may open more sessions "
                "than the account allows (CODE-0029)",
            },
            extra=extra,
        )

    def key(self, name: str) -> str:
        """The Redis key *name* of this account (every key in one hash slot)."""
        return f"scrappey:{{{self._account}}}:{name}"

    @property
    def heartbeat(self) -> float:
        """Seconds between two heartbeats (module default read each time: tests shorten it)."""
        return self._heartbeat or HEARTBEAT_INTERVAL

    @property
    def slot_ttl(self) -> float:
        """Seconds a worker's slots count without a heartbeat: three missed beats."""
        return 3 * self._heartbeat if self._heartbeat else SLOT_TTL

    @property
    def client(self) -> Any:
        """The open ``redis.asyncio.Redis`` client (``ConnectionError`` when closed)."""
        if self._client is None:
            raise ConnectionError("the Redis link is closed")
        return self._client

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` has not run."""
        return self._client is not None

    async def claim(self, count: int, cap: int) -> bool:
        """Hold *count* slots if every live worker's total stays within *cap*."""
        written, _ = await self._run(count, cap)
        return bool(written)

    async def sync(self, count: int) -> None:
        """Hold *count* slots, whatever the others hold (a drop, or a heartbeat)."""
        await self._run(count, 0)

    async def total(self) -> int:
        """Slots held by the live workers other than this one."""
        return int((await self._run(-1, -1))[1])

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(OSError):  # closed either way
                await command(client.aclose())

    async def _run(self, count: int, cap: int) -> list[int]:
        """Run the script; redis-py's errors become ``OSError`` (retried by callers)."""
        if self._client is None:
            raise ConnectionError("the Redis link is closed")
        ttl_ms = int(self.slot_ttl * 1000)
        self._seq += 1
        args = [self.worker_id, count, cap, ttl_ms, self._seq, self._epoch]
        code, others, epoch = await command(self._script(keys=self._keys, args=args))
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if self._epoch and epoch != self._epoch:
            # Whichever write first sees the new epoch (claim or heartbeat):
            # the script has just started the grace for it.
            logger.info(
                "Scrappey: Redis lost the session counts (restarted?); new sessions "
                "wait one slot TTL for every worker to write its count back",
                extra=self._extra,
            )
        self._epoch = epoch
        if cap > 0:
            self.rebuilding = int(code) == -1
        return [max(int(code), 0), int(others)]


async def command(call: Awaitable[T]) -> T:
    """Await one redis-py command: its errors become ``ConnectionError`` (an
    ``OSError``, retried by callers), and a cancellation it lost is raised.

    redis-py sends through ``asyncio.wait_for``, which before Python 3.12
    drops a cancel that arrives as the send completes (CPython gh-86296):
    a cancelled heartbeat loop would then never end, and its crawl never
    close. ``Task.cancelling()`` (3.11+) tells that a cancel was requested;
    on 3.10 it cannot be told, and the loops also stop by their own flags.
    """
    from redis.exceptions import RedisError

    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", lambda: 0)
    before = cancelling()
    try:
        return await call
    except RedisError as ex:
        raise ConnectionError(f"Redis: {ex}") from ex
    finally:
        # On both paths: a lost cancel turned into a ConnectionError would be
        # retried by the caller's loop for ever.
        if cancelling() > before:
            raise asyncio.CancelledError
