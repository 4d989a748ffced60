"""Lua scripts of the Redis limit store.

One script call per reserve and one per settle: Redis runs a script to completion before any other command,
so checking every scope and then committing every scope cannot interleave with another replica. Scripts take
``now`` from the caller (not Redis ``TIME``) so tests drive them with the same controllable clock as the
memory store; replicas therefore need NTP-synced clocks (skew shifts window edges by the skew).

Per scope the keys are (all share the ``{scope}`` hash tag so they live in one cluster slot):

- ``log``   sorted set: admitted ticket id -> reserved_at, the sliding 60 s window
- ``lease`` sorted set: ticket id -> lease expiry, the in-flight requests
- ``h``     hash: ``tokens`` (sum over the window), ``reserved`` (nano-USD held by live leases),
            ``t:<ticket>`` tokens counted for a ticket, ``c:<ticket>`` nano-USD a lease holds
- ``spend`` string: settled nano-USD in one calendar period (its start is part of the key name)

Numbers passed back into ``redis.call`` are formatted explicitly: Lua's default ``%.14g`` would round
timestamps to 0.1 ms and turn large integers into exponent notation that ``INCRBY`` rejects, and ``int`` never
writes ``-0`` (what ``%.0f`` makes of ``-0``, e.g. releasing a lease that held 0 nano-USD on a free model), which
``HINCRBY``/``INCRBY`` reject as "not an integer". Python clamps every amount it passes (see
:func:`tenantgate.limits.algorithms.usd_to_nano`), and a period's spend saturates instead of overflowing.
"""

from __future__ import annotations

_PRELUDE = """
local function num(x) return string.format('%.17g', x) end
local function int(x)
  if x == 0 then return '0' end  -- also -0, which INCRBY rejects
  return string.format('%.0f', x)
end
local BATCH = 256

-- Remove members with score <= cutoff, subtracting their per-ticket amounts from a total in the hash.
local function expire(zkey, h, cutoff, prefix, total)
  while true do
    local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', num(cutoff), 'LIMIT', 0, BATCH)
    if #gone == 0 then return end
    local fields = {}
    for j = 1, #gone do fields[j] = prefix .. gone[j] end
    local amounts = redis.call('HMGET', h, unpack(fields))
    local sum = 0
    for j = 1, #amounts do sum = sum + (tonumber(amounts[j]) or 0) end
    if sum ~= 0 then redis.call('HINCRBY', h, total, int(-sum)) end
    redis.call('HDEL', h, unpack(fields))
    redis.call('ZREM', zkey, unpack(gone))
    if #gone < BATCH then return end
  end
end

-- {requests, tokens, oldest reserved_at ('' if none), in_flight, reserved, spent} after expiry.
local function read_state(log, lease, h, spend, now)
  expire(log, h, now - 60, 't:', 'tokens')
  expire(lease, h, now, 'c:', 'reserved')
  local totals = redis.call('HMGET', h, 'tokens', 'reserved')
  local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  return {
    redis.call('ZCARD', log), tonumber(totals[1]) or 0, first[2] or '',
    redis.call('ZCARD', lease), tonumber(totals[2]) or 0, tonumber(redis.call('GET', spend)) or 0,
  }
end

-- The three per-scope keys always expire together, so their totals never disagree with their entries.
local function touch(log, lease, h, idle_ms)
  redis.call('PEXPIRE', log, idle_ms)
  redis.call('PEXPIRE', lease, idle_ms)
  redis.call('PEXPIRE', h, idle_ms)
end
"""

RESERVE = (
    _PRELUDE
    + """
-- KEYS: 4 per scope: log, lease, h, spend (current period)
-- ARGV: now, ticket, tokens, cost_nano, lease_seconds, idle_ms, then 4 per scope:
--       rpm, tpm, max_concurrency, budget_nano (-1 = unlimited)
local now, ticket = tonumber(ARGV[1]), ARGV[2]
local tokens, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease_s, idle_ms = tonumber(ARGV[5]), ARGV[6]
local n = #KEYS / 4
local reply = {0}
local ok = true
for i = 0, n - 1 do
  local b = 4 * i
  local st = read_state(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], now)
  local rpm, tpm = tonumber(ARGV[7 + b]), tonumber(ARGV[8 + b])
  local conc, budget = tonumber(ARGV[9 + b]), tonumber(ARGV[10 + b])
  -- Same rule as algorithms.admits; keep the two in step.
  if rpm >= 0 and st[1] + 1 > rpm then ok = false end
  if tpm >= 0 and st[2] + tokens > tpm then ok = false end
  if conc >= 0 and st[4] + 1 > conc then ok = false end
  if budget >= 0 and st[6] + st[5] + cost > budget then ok = false end
  for j = 1, 6 do reply[#reply + 1] = st[j] end
end
if ok then
  reply[1] = 1
  local expires = num(now + lease_s)
  for i = 0, n - 1 do
    local log, lease, h = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3]
    redis.call('ZADD', log, ARGV[1], ticket)
    redis.call('ZADD', lease, expires, ticket)
    redis.call('HSET', h, 't:' .. ticket, ARGV[3], 'c:' .. ticket, ARGV[4])
    redis.call('HINCRBY', h, 'tokens', ARGV[3])
    redis.call('HINCRBY', h, 'reserved', ARGV[4])
    touch(log, lease, h, idle_ms)
  end
end
return reply
"""
)

SETTLE = (
    _PRELUDE
    + """
-- KEYS: 4 per scope: log, lease, h, spend (of the period the ticket was reserved in); last: the settled marker
-- ARGV: ticket, tokens, cost_nano, marker_ttl_ms, then 1 per scope: spend_ttl_ms (0 = no expiry), last: spend cap
-- The marker makes a retried settle (after a timeout whose script did run) a no-op instead of a double charge.
local ticket, tokens, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cap = tonumber(ARGV[#ARGV])
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[4]) then return 0 end
for i = 0, (#KEYS - 1) / 4 - 1 do
  local log, lease, h, spend = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local counted = redis.call('HGET', h, 't:' .. ticket)
  if counted then
    redis.call('HSET', h, 't:' .. ticket, ARGV[2])
    redis.call('HINCRBY', h, 'tokens', int(tokens - tonumber(counted)))
  end
  if redis.call('ZREM', lease, ticket) == 1 then
    local held = tonumber(redis.call('HGET', h, 'c:' .. ticket)) or 0
    redis.call('HDEL', h, 'c:' .. ticket)
    redis.call('HINCRBY', h, 'reserved', int(-held))
  end
  if cost > 0 then
    -- Saturate like algorithms.add_spend instead of letting INCRBY overflow (an error would abort the script).
    if (tonumber(redis.call('GET', spend)) or 0) + cost >= cap then
      redis.call('SET', spend, ARGV[#ARGV])
    else
      redis.call('INCRBY', spend, ARGV[3])
    end
    local ttl = tonumber(ARGV[5 + i])
    if ttl > 0 then redis.call('PEXPIRE', spend, ttl) end
  end
  -- No touch: settle only edits keys that exist, so their shared expiry from the last reserve still holds.
end
return 1
"""
)

SNAPSHOT = (
    _PRELUDE
    + """
-- KEYS: log, lease, h, spend (current period); ARGV: now
return read_state(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]))
"""
)
