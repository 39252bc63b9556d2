"""The Lua scripts that move a shared breaker, one atomic round trip each.

State lives in one Redis HASH per breaker (``KEYS[1]``) with the fields
``state`` ("CLOSED", "OPEN", "HALF_OPEN"), ``failures``, ``open_until`` and
``lease_until`` (milliseconds on the *server's* clock), ``gen`` (the probe
generation: a probe's ticket, odd), ``period`` (the CLOSED period: an
ordinary call's ticket, even), ``growth`` (failed probes in a row: the
adaptive open time's level), ``closed_at`` (when a probe last closed it) and
``name`` (the readable breaker name, for
humans; the key itself is a digest).  A missing key or field reads as a
fresh CLOSED breaker (period 2), so nothing has to be created up front.

Tickets never repeat for a key, even when the key is lost (FLUSHALL, a
failover that lost writes, an expiry): a new generation is the server's
clock in microseconds, times two plus one (and more than the last one the
key holds, should the clock step back), so a probe admitted before the key
was lost cannot report under a later probe's generation.  A period is the
generation that opened it plus one.  Both stay below 2**53, so Lua's
doubles hold them exactly; they are written with ``%.0f`` so that no
exponent notation ever reaches the hash.

Time is always ``redis.call('TIME')``: callers never send their clock, so
hosts whose clocks disagree still agree on when a cooldown ends.  Redis runs
a script atomically, so a read-decide-write never interleaves with another
process's (the race that separate GET/INCR/SET commands have).

Every script that writes sets a generous PEXPIRE (``ttl_ms``, chosen by the
store), so a breaker nobody uses any more disappears by itself.

Replies are flat arrays of integers and state names, decoded by
:mod:`smoothapi.storage._redis_replies`.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "FORCE_OPEN", "READ_BREAKER", "RECORD", "RESET", "SNAPSHOT"]

# Shared prologue: `now` in whole milliseconds of server time.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The prologue of caller_clock()'s variants: `now` is the script's last argument.
_CALLER_NOW = """
local now = tonumber(ARGV[#ARGV])
"""


def caller_clock(source: str) -> str:
    """``source`` with ``now`` taken from the caller (its last ARGV) instead of TIME.

    For tests only (``tests/storage/test_differential.py`` moves the clock of
    the scripts it compares with :mod:`smoothapi.machine`): the rest of the
    script is the very text shipped, so the rules tested are the rules that
    run.  New generations still come from TIME (they only need to be fresh).
    A RedisStore built by a user never runs these variants.
    """
    return source.replace(_NOW, _CALLER_NOW)


# A generation that no earlier one of this key can equal (see the module docstring):
# odd, from the server's clock in microseconds, above ``prev`` (the key's last one).
_FRESH = """
local function fresh(prev)
  local c = redis.call('TIME')
  local n = (tonumber(c[1]) * 1000000 + tonumber(c[2])) * 2 + 1
  prev = tonumber(prev) or 0
  if n <= prev then
    n = prev + 1
    if n % 2 == 0 then n = n + 1 end
  end
  return n
end
local function int(n)
  return string.format('%.0f', n)
end
"""

#: ARGV: threshold, cooldown_ms, lease_ms, ttl_ms
#: -> {ticket, retry_after_ms, failures, state, changed}
#: ticket: even = an ordinary call (the CLOSED period it was admitted in), -1 = rejected,
#: odd = the probe (its generation).  CLOSED is read-only (the happy path writes nothing).
#: ``changed`` is 1 when this call moved OPEN -> HALF_OPEN, so exactly one process
#: reports that transition.
ACQUIRE = (
    """
local key = KEYS[1]
local h = redis.call('HMGET', key, 'state', 'failures', 'open_until', 'gen', 'lease_until',
                     'period')
local state = h[1] or 'CLOSED'
local failures = tonumber(h[2]) or 0
if state == 'CLOSED' then
  return {tonumber(h[6]) or 2, 0, failures, state, 0}
end
"""
    + _NOW
    + _FRESH
    + """
local lease = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local gen
if state == 'OPEN' then
  local open_until = tonumber(h[3]) or 0
  if now < open_until then
    return {-1, open_until - now, failures, state, 0}
  end
  gen = fresh(h[4])
  redis.call('HSET', key, 'state', 'HALF_OPEN', 'gen', int(gen), 'lease_until', now + lease)
  redis.call('PEXPIRE', key, ttl)
  return {gen, 0, failures, 'HALF_OPEN', 1}
end
-- HALF_OPEN: a live lease means a probe is in flight somewhere in the fleet.
if (tonumber(h[5]) or 0) > now then
  return {-1, 0, failures, state, 0}
end
-- The lease ran out (its prober crashed, hung or was killed) or was released:
-- this caller is the new probe, under a new generation so the old one's late
-- report is ignored.
gen = fresh(h[4])
redis.call('HSET', key, 'gen', int(gen), 'lease_until', now + lease)
redis.call('PEXPIRE', key, ttl)
return {gen, 0, failures, state, 0}
"""
)

#: ARGV: op ("success" | "failure" | "release"), ticket, threshold, cooldown_ms, ttl_ms, name,
#: and for the open time: multiplier, max_cooldown_ms, reset_ms, rand (0..1), retry_after_ms
#: (-1: none) - absent, the breaker opens for the plain cooldown_ms.
#: -> {state, old_state, failures}
#: The open time is the memory breaker's: after ``growth`` failed probes in a row,
#: cooldown + rand * (min(max_cooldown, cooldown * multiplier^growth) - cooldown), and at
#: least the server's Retry-After (capped at max_cooldown); a trip after reset_ms CLOSED
#: since the last close starts again from growth 0.  It is kept in whole milliseconds,
#: rounded up (the machine's float seconds would allow a probe up to 1 ms sooner).
#: An ordinary ticket (even) counts only in CLOSED and only in the period it was admitted
#: in (a call admitted before the breaker last opened must not flip or reset a state it
#: knows nothing about); ticket 0 reads as the current period.  A probe ticket (odd)
#: counts only while it is the current generation in HALF_OPEN and has not given its
#: lease back (``release``).  Anything else is ignored and changes nothing.
RECORD = (
    """
local key = KEYS[1]
local op = ARGV[1]
local ticket = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local h = redis.call('HMGET', key, 'state', 'failures', 'gen', 'growth', 'closed_at', 'period',
                     'lease_until')
local state = h[1] or 'CLOSED'
local failures = tonumber(h[2]) or 0
local gen = tonumber(h[3]) or 0
local growth = tonumber(h[4]) or 0
local period = tonumber(h[6]) or 2
local function open_for(level)
  local open = cooldown
  local cap = tonumber(ARGV[8]) or cooldown
  local multiplier = tonumber(ARGV[7]) or 1
  if level > 0 and multiplier > 1 then
    local grown = math.min(cap, cooldown * multiplier ^ level)
    if grown > cooldown then
      local share = math.min(1, math.max(0, tonumber(ARGV[10]) or 0))
      open = cooldown + share * (grown - cooldown)
    end
  end
  local wanted = tonumber(ARGV[11]) or -1
  if wanted > open then
    open = math.max(open, math.min(wanted, cap))
  end
  -- Whole milliseconds, rounded up: never a probe before the machine's rule allows one.
  return math.ceil(open)
end
if ticket % 2 == 0 then
  if state ~= 'CLOSED' or op == 'release' or (ticket ~= 0 and ticket ~= period) then
    return {state, state, failures}
  end
  if op == 'success' then
    if failures ~= 0 then
      redis.call('HSET', key, 'failures', 0)
      redis.call('PEXPIRE', key, ttl)
    end
    return {state, state, 0}
  end
  failures = failures + 1
  if failures < threshold then
    redis.call('HSET', key, 'state', 'CLOSED', 'failures', failures, 'name', ARGV[6])
    redis.call('PEXPIRE', key, ttl)
    return {state, state, failures}
  end
"""
    + _NOW
    + """
  local closed_at = tonumber(h[5])
  if closed_at == nil or now - closed_at >= (tonumber(ARGV[9]) or 0) then
    growth = 0  -- a healthy period (or none on record): start from the cooldown
  end
  redis.call('HSET', key, 'state', 'OPEN', 'failures', failures,
             'open_until', now + open_for(growth), 'lease_until', 0, 'growth', growth,
             'name', ARGV[6])
  redis.call('PEXPIRE', key, ttl)
  return {'OPEN', state, failures}
end
-- A probe that gave its lease back (lease_until 0) reports nothing any more.
if state ~= 'HALF_OPEN' or ticket ~= gen or (tonumber(h[7]) or 0) == 0 then
  return {state, state, failures}
end
if op == 'success' then
"""
    + _NOW
    + """
  redis.call('HSET', key, 'state', 'CLOSED', 'failures', 0, 'lease_until', 0, 'closed_at', now,
             'period', string.format('%.0f', gen + 1))
  redis.call('PEXPIRE', key, ttl)
  return {'CLOSED', state, 0}
end
if op == 'release' then
  -- The next caller probes at once rather than after the lease.
  redis.call('HSET', key, 'lease_until', 0)
  return {state, state, failures}
end
"""
    + _NOW
    + """
failures = failures + 1
growth = growth + 1
redis.call('HSET', key, 'state', 'OPEN', 'failures', failures, 'open_until', now + open_for(growth),
           'lease_until', 0, 'growth', growth, 'name', ARGV[6])
redis.call('PEXPIRE', key, ttl)
return {'OPEN', state, failures}
"""
)

#: ARGV: ttl_ms, name -> {state, old_state, failures}
#: A new generation invalidates any probe in flight, a new period any call admitted
#: before; the grown open time is forgotten.
RESET = (
    """
local key = KEYS[1]
local h = redis.call('HMGET', key, 'state', 'gen')
local old = h[1] or 'CLOSED'
"""
    + _FRESH
    + """
local gen = fresh(h[2])
redis.call('HSET', key, 'state', 'CLOSED', 'failures', 0, 'open_until', 0, 'lease_until', 0,
           'growth', 0, 'name', ARGV[2], 'gen', int(gen), 'period', int(gen + 1))
redis.call('HDEL', key, 'closed_at')
redis.call('PEXPIRE', key, tonumber(ARGV[1]))
return {'CLOSED', old, 0}
"""
)

#: ARGV: cooldown_ms, ttl_ms, name -> {state, old_state, failures}
FORCE_OPEN = (
    """
local key = KEYS[1]
local h = redis.call('HMGET', key, 'state', 'failures', 'gen')
local old = h[1] or 'CLOSED'
local failures = tonumber(h[2]) or 0
"""
    + _NOW
    + _FRESH
    + """
redis.call('HSET', key, 'state', 'OPEN', 'open_until', now + tonumber(ARGV[1]), 'lease_until', 0,
           'name', ARGV[3], 'gen', int(fresh(h[3])))
redis.call('PEXPIRE', key, tonumber(ARGV[2]))
return {'OPEN', old, failures}
"""
)

#: -> {now_ms, state, failures, open_until}: a side-effect-free read on the server's clock
#: (one key, so it runs in a cluster, where a pipelined TIME has no node to go to).
#: A key that holds no hash raises WRONGTYPE, as the other scripts do.
SNAPSHOT = (
    """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'open_until')
"""
    + _NOW
    + """
return {now, h[1] or 'CLOSED', h[2] or '0', h[3] or '0'}
"""
)


#: KEYS: one breaker -> {} when the key is gone or is not a hash, else
#: {now_ms, state, failures, open_until, lease_until, has_name, name}, with the defaults
#: ACQUIRE applies to missing fields (has_name 0 and name '' when there is none: a Lua nil
#: would end the array, and RESP3 would turn false into a boolean).  Read-only, one key
#: (so cluster-safe).  For ``RedisStore.survey()``.
READ_BREAKER = (
    """
local key = KEYS[1]
if redis.call('TYPE', key).ok ~= 'hash' then
  return {}
end
"""
    + _NOW
    + """
local h = redis.call('HMGET', key, 'state', 'failures', 'open_until', 'lease_until', 'name')
return {now, h[1] or 'CLOSED', h[2] or '0', h[3] or '0', h[4] or '0',
        h[5] and 1 or 0, h[5] or ''}
"""
)
