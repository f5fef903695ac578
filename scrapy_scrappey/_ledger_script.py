"""The tick script of the shared session ledger (``shared_ledger.py``), and its helpers.

One Lua script does every write of a worker, and of the command line's
``sessions cleanup --redis``: Redis runs it atomically, so one worker at a
time takes (and destroys) a dead worker's sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .redis_link import RedisLink

_KEY_NAMES = ("owners", "workers", "reaped", "slots", "alive")

# KEYS: owners, workers, reaped, the cap's slots and alive (redis_link.py).
# ARGV: me, liveness ms (0: leave), reap (1/0), #records, #forgets, #releases,
# pin ms, then the ids to record, the ids to forget, the dead workers whose
# slots to release, then (dead worker, its ids still taken) pairs whose slots
# to pin. A pin keeps the worker's slots counting until pin ms from now, and
# at least as many as its taken ids (they were lost if Redis restarted
# empty); a release spares a worker alive again. Returns {judged dead
# since the last write (1/0), {id, owner, ...} taken, {dead worker, ...}}.
TICK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, live = ARGV[1], tonumber(ARGV[2])
local nrec, nfor, nrel = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local pin = now + tonumber(ARGV[7])
local function keep(w, n)
  local s = redis.call('ZSCORE', KEYS[5], w)
  if not s or tonumber(s) < pin then redis.call('ZADD', KEYS[5], pin, w) end
  if tonumber(redis.call('HGET', KEYS[4], w) or '0') < n then
    redis.call('HSET', KEYS[4], w, n)
  end
end
if live > 0 then
  redis.call('ZADD', KEYS[2], now + live, me)
else
  redis.call('ZREM', KEYS[2], me)
end
local judged = redis.call('HDEL', KEYS[3], me)
local f, l = 8 + nrec, 8 + nrec + nfor
for i = 8, f - 1 do
  local o = redis.call('HGET', KEYS[1], ARGV[i])
  if not o or o == me then redis.call('HSET', KEYS[1], ARGV[i], me) end
end
for i = f, l - 1 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == me then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
for i = l, l + nrel - 1 do
  local back = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if not back or tonumber(back) < now then
    redis.call('HDEL', KEYS[4], ARGV[i])
    redis.call('ZREM', KEYS[5], ARGV[i])
  end
end
for i = l + nrel, #ARGV, 2 do keep(ARGV[i], tonumber(ARGV[i + 1])) end
local taken, dead = {}, {}
if ARGV[3] == '1' then
  local gone = {}
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)) do
    redis.call('ZREM', KEYS[2], w)
    gone[w] = true
  end
  local flat = redis.call('HGETALL', KEYS[1])
  local count = {}
  for i = 1, #flat, 2 do
    local w = flat[i + 1]
    if w ~= me then
      if gone[w] == nil then gone[w] = not redis.call('ZSCORE', KEYS[2], w) end
      if gone[w] then
        redis.call('HSET', KEYS[1], flat[i], me)
        table.insert(taken, flat[i])
        table.insert(taken, w)
        count[w] = (count[w] or 0) + 1
      end
    end
  end
  for w, n in pairs(count) do keep(w, n) end
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
    pin: Mapping[str, int] | None = None,
    pin_ms: int = 0,
) -> list[str | int]:
    """The ARGV of :data:`TICK_LUA` (*pin*: dead worker → its ids still taken;
    *pin_ms*: how long their slots, and those of the workers whose ids are
    taken, keep counting)."""
    pairs = [x for w, n in sorted((pin or {}).items()) for x in (w, n)]
    head: list[str | int] = [
        me,
        live_ms,
        int(reap),
        len(record),
        len(forget),
        len(release),
        pin_ms,
    ]
    return [*head, *record, *forget, *release, *pairs]


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
