"""The shared session ledger in Redis (``SCRAPPEY_REDIS_URL``): who owns which session.

Every worker records its sessions in Redis under its worker id and keeps a
heartbeat there; the sessions of a worker whose heartbeat stopped (``kill -9``,
a lost machine) are destroyed by a live worker, or by
``python -m scrapy_scrappey sessions cleanup --redis URL``.

Keys, per account, in the hash slot of ``redis_link.py``:

* ``owners`` — a hash: session id → worker id.
* ``workers`` — a sorted set: worker id → the Redis-clock time (ms) until
  which it counts as alive: each write of a worker moves it to now +
  :data:`LIVENESS` heartbeats. A worker missing from it, or past its time,
  is dead (a deadline rather than the last beat, so that the command line
  need not know the workers' heartbeat).
* ``reaped`` — a hash: worker id → when it was judged dead, so that a worker
  that was only cut off learns it on its next write.

Invariants:

* Every id in ``_held`` may exist at the API (its create is about to be sent,
  or was; its destroy was not confirmed). Redis holds ``owners[id] = me`` for
  each of them, except those in ``_unwritten`` (Redis failed or the id came
  without an await), which the next write carries; every tick rewrites them
  all, which also repairs a Redis that restarted empty.
* An id is recorded before its create is sent and leaves ``_held`` only once
  its destroy is confirmed; its owner entry is then deleted by a later write
  (``_forgotten``), and only if this worker still owns it.
* The writes of one worker hold ``_lock``: a record cannot overtake the
  delete that followed it. (A write that timed out here may still run there
  late and leave a stale entry: it is destroyed, "not found", once this
  worker is gone.)
* Only the tick script changes an owner, atomically taking every id of the
  dead workers for the caller, so one worker at a time destroys a session;
  if it dies meanwhile, the ids are its own and the next live worker takes
  them. A worker reaps only after :data:`_STEADY_TICKS` successful ticks in a
  row: after an outage, its peers get one liveness period to beat again (their
  retries are at most one heartbeat apart).
* At close the worker writes its last state and leaves ``workers``: what its
  close could not destroy is at once a dead worker's, for a peer or the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .redis_link import command

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from scrapy.statscollectors import StatsCollector

    from ._tasks import TaskGroup
    from .redis_link import RedisLink

logger = logging.getLogger(__name__)

#: Heartbeats a worker stays alive after its last write.
LIVENESS = 1.5
#: Ticks (beat, then reap) per heartbeat.
TICKS_PER_BEAT = 2
#: Successful ticks in a row before a worker reaps: one liveness period.
_STEADY_TICKS = round(LIVENESS * TICKS_PER_BEAT)
_KEY_NAMES = ("owners", "workers", "reaped", "slots", "alive")

# KEYS: owners, workers, reaped, the cap's slots and alive (redis_link.py).
# ARGV: me, liveness ms (0: leave), reap (1/0), #records, #forgets, then the
# ids to record, the ids to forget, the dead workers whose slots to release.
# Returns {judged dead since the last write (1/0), {id, owner, ...} taken,
# {dead worker, ...}}.
TICK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, live = ARGV[1], tonumber(ARGV[2])
local nrec, nfor = tonumber(ARGV[4]), tonumber(ARGV[5])
if live > 0 then
  redis.call('ZADD', KEYS[2], now + live, me)
else
  redis.call('ZREM', KEYS[2], me)
end
local judged = redis.call('HDEL', KEYS[3], me)
for i = 6, 5 + nrec do redis.call('HSET', KEYS[1], ARGV[i], me) end
for i = 6 + nrec, 5 + nrec + nfor do
  if redis.call('HGET', KEYS[1], ARGV[i]) == me then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
for i = 6 + nrec + nfor, #ARGV do
  redis.call('HDEL', KEYS[4], ARGV[i])
  redis.call('ZREM', KEYS[5], ARGV[i])
end
local taken, dead = {}, {}
if ARGV[3] == '1' then
  local gone = {}
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)) do
    redis.call('ZREM', KEYS[2], w)
    gone[w] = true
  end
  local flat = redis.call('HGETALL', KEYS[1])
  for i = 1, #flat, 2 do
    local w = flat[i + 1]
    if w ~= me then
      if gone[w] == nil then gone[w] = not redis.call('ZSCORE', KEYS[2], w) end
      if gone[w] then
        redis.call('HSET', KEYS[1], flat[i], me)
        table.insert(taken, flat[i])
        table.insert(taken, w)
      end
    end
  end
  for w, d in pairs(gone) do
    if d then
      table.insert(dead, w)
      redis.call('HSET', KEYS[3], w, now)
    end
  end
  redis.call('PEXPIRE', KEYS[3], 86400000)
end
return {judged, taken, dead}
"""


def tick_args(
    me: str,
    live_ms: int,
    *,
    reap: bool = False,
    record: Sequence[str] = (),
    forget: Sequence[str] = (),
    release: Sequence[str] = (),
) -> list[str | int]:
    """The ARGV of :data:`TICK_LUA`."""
    head: list[str | int] = [me, live_ms, int(reap), len(record), len(forget)]
    return [*head, *record, *forget, *release]


def parse_tick(reply: Any) -> tuple[bool, dict[str, str], list[str]]:
    """(judged dead, {taken id: its dead owner}, dead workers) from :data:`TICK_LUA`."""
    judged, flat, dead = reply
    words = [text(x) for x in flat]
    return (
        bool(int(judged)),
        dict(zip(words[::2], words[1::2], strict=True)),
        [text(w) for w in dead],
    )


def text(value: bytes | str) -> str:
    """A Redis reply's string (redis-py answers bytes unless told otherwise)."""
    return value.decode() if isinstance(value, bytes) else value


def owner_of(session_id: str, prefix: str) -> str | None:
    """The worker id a session id names (``None``: not one of ours, or older)."""
    if not session_id.startswith(prefix):
        return None
    worker, sep, _ = session_id[len(prefix) :].rpartition("-")
    return worker if sep and worker else None


def ledger_keys(link: RedisLink) -> list[str]:
    """The KEYS of :data:`TICK_LUA` for *link*'s account."""
    return [link.key(name) for name in _KEY_NAMES]


class SharedLedger:
    """This worker's sessions in Redis, and the reaper of dead workers' sessions."""

    def __init__(
        self, link: RedisLink, stats: StatsCollector, *, extra: dict[str, Any]
    ) -> None:
        self._link = link
        self._stats = stats
        self._extra = extra
        self._held: set[str] = set()
        self._unwritten: set[str] = set()
        self._forgotten: set[str] = set()
        self._leftover: set[str] = set()  # taken, their destroy failed
        self._release: set[str] = set()  # dead workers whose slots to free
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._failures = 0
        self._steady = 0
        self._warned = False
        self._reaping = 0
        self._retry_tick = 0  # leftovers are retried from this tick on
        self._retry_gap = 1
        self._script: Any = None
        self._destroy: Callable[[list[str]], Awaitable[list[str]]] | None = None
        self._tasks: TaskGroup | None = None
        #: Ticks so far (:data:`TICKS_PER_BEAT` per heartbeat), for tests and logs.
        self.ticks = 0

    @property
    def worker_id(self) -> str:
        return self._link.worker_id

    def start(
        self, tasks: TaskGroup, destroy: Callable[[list[str]], Awaitable[list[str]]]
    ) -> None:
        """Beat and reap in the background; *destroy* destroys ids, returns those gone."""
        self._tasks, self._destroy = tasks, destroy
        tasks.spawn(self._ticking(), name="scrappey-redis-ledger")

    def hold(self, session_id: str) -> None:
        """Hold *session_id* (written by the next :meth:`flush` or tick)."""
        self._held.add(session_id)
        self._unwritten.add(session_id)
        self._forgotten.discard(session_id)

    def forget(self, session_id: str) -> None:
        """Drop *session_id*, destroyed or known gone (deleted by the next write)."""
        self._held.discard(session_id)
        self._unwritten.discard(session_id)
        self._leftover.discard(session_id)
        self._forgotten.add(session_id)

    async def flush(self) -> None:
        """Write the held ids not yet in Redis; while Redis fails, leave them to the tick."""
        if not self._unwritten or self._failures or not self._link.is_open:
            return
        async with self._lock:
            if self._unwritten and not self._failures:
                await self._write(sorted(self._unwritten))

    async def close(self) -> None:
        """Write the last state and leave: what is still held is a dead worker's now."""
        if not self._link.is_open:
            return
        async with self._lock:
            await self._write(sorted(self._held), live=False)
        if self._held:
            logger.info(
                "Scrappey: %(n)d session(s) stay recorded in Redis for a live worker "
                "or `sessions cleanup --redis` to destroy",
                {"n": len(self._held)},
                extra=self._extra,
            )

    def stop(self) -> None:
        """End the ticks (the crawl closes), even if a cancellation got lost."""
        self._stop.set()

    async def _ticking(self) -> None:
        # A cancellation can get lost in redis-py's timeouts (asyncio.wait_for
        # before Python 3.12; seen in tests, Redis cut off): the stop event
        # still ends the loop.
        while not self._stop.is_set():
            await self._tick()
            beat = self._link.heartbeat
            delay = beat / TICKS_PER_BEAT
            if self._failures:
                delay = min(delay * 2 ** (self._failures - 1), beat)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _tick(self) -> None:
        self.ticks += 1
        reap = self._steady >= _STEADY_TICKS
        async with self._lock:
            reply = await self._write(sorted(self._held), reap=reap)
        if reply is None:
            return
        self._steady += 1
        _, taken, dead = reply
        # Their slots count until their sessions are destroyed: no peer may
        # create in their room before that (CODE-0029).
        self._release.update(w for w in dead if w not in taken.values())
        due = not self._reaping and self.ticks >= self._retry_tick
        retry = sorted(self._leftover) if due else []
        if taken or retry:
            self._held.update(taken)
            self._reaping += 1
            assert self._tasks is not None
            self._tasks.spawn(self._reap(taken, retry), name="scrappey-redis-reap")

    async def _reap(self, taken: dict[str, str], retry: list[str]) -> None:
        assert self._destroy is not None
        _log_taken(taken, self._extra)
        ids = [*sorted(taken), *retry]
        try:
            gone = set(await self._destroy(ids))
        finally:
            self._reaping -= 1
        self._stats.inc_value("scrappey/redis/reaped", len(gone & set(ids)))
        self._leftover.update(i for i in ids if i not in gone and i in self._held)
        self._release.update(taken.values())
        # A destroy that keeps failing is retried ever less often (warned each time).
        self._retry_gap = min(self._retry_gap * 2, 64) if self._leftover else 1
        self._retry_tick = self.ticks + self._retry_gap

    async def _write(
        self, record: list[str], *, reap: bool = False, live: bool = True
    ) -> tuple[bool, dict[str, str], list[str]] | None:
        """One run of the tick script; ``None`` when Redis failed (retried later)."""
        forget, release = sorted(self._forgotten), sorted(self._release)
        live_ms = round(LIVENESS * self._link.heartbeat * 1000) if live else 0
        args = tick_args(
            self.worker_id,
            live_ms,
            reap=reap,
            record=record,
            forget=forget,
            release=release,
        )
        try:
            if self._script is None:
                self._script = self._link.client.register_script(TICK_LUA)
            reply = parse_tick(
                await command(self._script(keys=ledger_keys(self._link), args=args))
            )
        except OSError as ex:
            self._failed(ex, record)
            return None
        self._forgotten.difference_update(forget)
        self._release.difference_update(release)
        self._unwritten.difference_update(record)
        self._failures = 0
        if reply[0]:
            self._judged_dead()
        return reply

    def _failed(self, error: Exception, record: list[str]) -> None:
        self._unwritten.update(i for i in record if i in self._held)
        self._steady = 0
        if not self._failures:
            logger.info(
                "Redis failed for the shared session ledger (%(error)s): new sessions "
                "are written there once it is back",
                {"error": error},
                extra=self._extra,
            )
        self._failures += 1

    def _judged_dead(self) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "Scrappey: another worker judged this one (%(worker)s) dead: no write to "
            "Redis for %(s)gs (Redis unreachable, or the event loop blocked); it may "
            "have destroyed this worker's sessions. Recording them again.",
            {"worker": self.worker_id, "s": LIVENESS * self._link.heartbeat},
            extra=self._extra,
        )


def _log_taken(taken: dict[str, str], extra: dict[str, Any]) -> None:
    by_worker: dict[str, list[str]] = {}
    for session_id, worker in taken.items():
        by_worker.setdefault(worker, []).append(session_id)
    for worker, ids in sorted(by_worker.items()):
        logger.info(
            "Scrappey: worker %(worker)s stopped beating; destroying its %(n)d "
            "session(s): %(ids)s",
            {"worker": worker, "n": len(ids), "ids": ", ".join(sorted(ids)[:10])},
            extra=extra,
        )
