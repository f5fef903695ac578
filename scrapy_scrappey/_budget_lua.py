"""The Lua script of the shared budget (``shared_budget.py`` has its invariants)."""

# KEYS: the budget hash, the members zset. ARGV: worker id, mode ("join",
# "claim", "write", "leave"), seq, micros, requests, max micros (0: none), max
# requests (0: none), ttl ms, the refusal reason of the cost cap (for a
# "write": this worker's own exhaustion, or ""), of the requests cap.
# Returns {code, the others' micros, the others' requests, !exhausted or ""};
# code 1: written, 0: stale (a newer write ran), -1: refused, -2: wait.
BUDGET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, mode, seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl = tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if mode == 'join' and redis.call('ZCARD', KEYS[2]) == 0 then
  local at = tonumber(redis.call('HGET', KEYS[1], '!at') or '0')
  if redis.call('HEXISTS', KEYS[1], '!ended') == 1 or at + 4 * ttl < now then
    redis.call('DEL', KEYS[1])
  end
end
local mine = redis.call('HGET', KEYS[1], me)
local wait = tonumber(redis.call('HGET', KEYS[1], '!wait') or '0')
if mode ~= 'join' and not mine and wait < now + ttl then
  wait = now + ttl
  redis.call('HSET', KEYS[1], '!wait', wait)
end
local om, orq = 0, 0
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if flat[i] ~= me and string.sub(flat[i], 1, 1) ~= '!' then
    local _, m, r = string.match(flat[i + 1], '^(%d+) (%d+) (%d+)$')
    om, orq = om + tonumber(m), orq + tonumber(r)
  end
end
local spent = redis.call('HGET', KEYS[1], '!exhausted') or ''
if mine and seq <= tonumber(string.match(mine, '^(%d+)')) then
  return {0, om, orq, spent}
end
local m, r = tonumber(ARGV[4]), tonumber(ARGV[5])
if mode == 'claim' then
  if spent ~= '' then return {-1, om, orq, spent} end
  if now < wait then return {-2, om, orq, spent} end
  local maxm, maxr = tonumber(ARGV[6]), tonumber(ARGV[7])
  if maxm > 0 and om + m > maxm then spent = ARGV[9]
  elseif maxr > 0 and orq + r > maxr then spent = ARGV[10] end
  if spent ~= '' then
    redis.call('HSET', KEYS[1], '!exhausted', spent)
    return {-1, om, orq, spent}
  end
elseif mode == 'write' and ARGV[9] ~= '' and spent == '' then
  spent = ARGV[9]
  redis.call('HSET', KEYS[1], '!exhausted', spent)
end
redis.call('HSET', KEYS[1], me, ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
redis.call('HSET', KEYS[1], '!at', now)
if mode == 'leave' then
  redis.call('ZREM', KEYS[2], me)
  if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('HSET', KEYS[1], '!ended', 1) end
else
  redis.call('ZADD', KEYS[2], now + ttl, me)
  redis.call('HDEL', KEYS[1], '!ended')
end
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
return {1, om, orq, spent}
"""
