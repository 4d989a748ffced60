"""Lua scripts of the Redis idempotency store.

Each write is one script, and Redis runs a script to completion before any other command, so checking a
record and changing it cannot interleave with another replica. ``BEGIN`` mirrors
:func:`tenantgate.idempotency.model.decide` line by line; keep the two in step.

Per scope there are two keys sharing the ``{scope}`` hash tag (one cluster slot):

- ``r`` hash: ``state`` (running|done), ``fp``, ``owner``, ``lease`` and ``exp`` (epoch seconds from the
  caller's clock), ``stream`` (1|0), ``tenant``, ``created``, ``resp`` (1 if a response is stored), ``status``,
  ``headers`` (JSON), ``body``
- ``e`` list: the SSE events in relay order

Times are compared against the caller's ``now`` (not Redis ``TIME``), so tests drive expiry with a fake clock;
the keys also get a relative ``PEXPIRE`` so Redis drops them on its own. Both keys always carry the same TTL.
"""

from __future__ import annotations

BEGIN = """
-- KEYS: record, events. ARGV: now, fingerprint, owner, lease_until, expires_at, stream, tenant, keep_ms
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'state', 'fp', 'owner', 'lease', 'exp', 'stream')
if cur[1] and tonumber(cur[5]) > now then
  if cur[2] ~= ARGV[2] then return {'mismatch', cur[6]} end
  if cur[1] == 'done' then
    local r = redis.call('HMGET', KEYS[1], 'resp', 'status', 'headers', 'body')
    return {'replay', cur[6], r[1], r[2], r[3], r[4], redis.call('LRANGE', KEYS[2], 0, -1)}
  end
  if tonumber(cur[4]) > now then return {'in_progress', cur[6], cur[3]} end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[2], 'owner', ARGV[3], 'lease', ARGV[4],
  'exp', ARGV[5], 'stream', ARGV[6], 'tenant', ARGV[7], 'created', ARGV[1], 'resp', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return {'new', ARGV[6]}
"""

_OWNED = """
local function owned(record, owner)
  local cur = redis.call('HMGET', record, 'state', 'owner')
  return cur[1] == 'running' and cur[2] == owner
end
"""

APPEND = (
    _OWNED
    + """
-- KEYS: record, events. ARGV: owner, event. Returns the event's index, or -1 if the lease is lost.
if not owned(KEYS[1], ARGV[1]) then return -1 end
local n = redis.call('RPUSH', KEYS[2], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return n - 1
"""
)

FINISH = (
    _OWNED
    + """
-- KEYS: record, events. ARGV: owner, expires_at, keep_ms, resp (1|0), status, headers, body.
if not owned(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'exp', ARGV[2], 'resp', ARGV[4])
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'status', ARGV[5], 'headers', ARGV[6], 'body', ARGV[7]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

RENEW = (
    _OWNED
    + """
-- KEYS: record, events. ARGV: owner, lease_until, expires_at, keep_ms.
if not owned(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'lease', ARGV[2], 'exp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
)

ABANDON = (
    _OWNED
    + """
-- KEYS: record, events. ARGV: owner.
if not owned(KEYS[1], ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1], KEYS[2])
"""
)
