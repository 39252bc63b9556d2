"""The Lua scripts that move a shared breaker, one atomic round trip each.

State lives in one Redis HASH per breaker (``KEYS[1]``); a missing key or
field reads as a fresh CLOSED breaker, so nothing has to be created up
front; the first ACQUIRE or RECORD on a key without a ``period`` writes a
fresh one (``FOUND``).  Fields (times are milliseconds on the *server's* clock):

* ``state`` ("CLOSED", "OPEN", "HALF_OPEN"), ``failures`` (consecutive
  failed attempts while CLOSED, or those that tripped it), ``slow`` (of
  ``failures``, the slow calls), ``open_until``, ``growth`` (failed probes in
  a row: the adaptive open time's level), ``closed_at`` (when probes last
  closed it), ``name`` (the readable breaker name, for humans; the key
  itself is a digest).
* ``gen`` - the latest probe generation (a probe's ticket, odd); ``period``
  - the CLOSED period (an ordinary call's ticket, even).
* ``why`` ("consecutive", "rate", "probe", "forced" or "") and ``calls``
  (the window's size at a rate trip): the last opening, which
  :func:`smoothapi.machine.reason` words.
* ``probes`` - HALF_OPEN's probes: ``"<gen>/<passed>/<n>,<ticket>:<lease_until>,..."``,
  the generation it was written under, how many probes of the round
  succeeded, the permits (``half_open_calls``), then each live probe's
  ticket and lease end.  ``lease_until`` - the lease of the latest probe
  (``gen``) while it runs, else 0: what a script that knows one probe
  (smoothapi before the trip rules) reads.
* ``w0`` .. ``w9`` - the failure-rate window, a ring of ten buckets (``BUCKETS``
  in :mod:`smoothapi.machine`), each ``"<period>:<epoch>:<ok>:<failed>:<slow>"``;
  bucket ``epoch = floor(now_ms * 10 / window_ms)`` lives in slot
  ``epoch % 10``.  The window is the current bucket and the nine before it,
  of the current CLOSED period only: a slot written under another period
  (before the breaker last opened, was reset or forced open) reads as empty,
  which is how the window is cleared on leaving or re-entering CLOSED
  without touching ten fields.  ``window_ms`` is kept beside them for
  ``smoothapi status``, which has no config.  The key's PEXPIRE bounds them
  all: one key, so every decision stays atomic and cluster-safe.

Older versions.  A fleet being upgraded runs both versions' scripts on the
same hash.  A script of an older smoothapi knows one probe (``gen`` and
``lease_until``) and ignores every other new field.  These scripts read
``probes`` only if its ``<gen>`` is the hash's ``gen``; otherwise (an older
script claimed the probe since, or the field is missing) they read
``gen``/``lease_until`` as one probe, as the older scripts do.  They always
keep ``lease_until`` as the older scripts expect, so with
``half_open_calls=1`` (the only setting older versions have) both versions
admit one probe fleet-wide and honour each other's leases.  With more
permits, an older process may admit one probe more than ``n`` while an
earlier probe of the round runs after the latest one ended; the failure-rate
rule and slow calls exist only in this version (an older process counts
consecutive failures in ``failures``, as before).

Tickets never repeat for a key, even when the key is lost (FLUSHALL, a
failover that lost writes, an expiry): a new generation is the server's
clock in microseconds, times two plus one (and more than the last one the
key holds, should the clock step back), so a probe admitted before the key
was lost cannot report under a later probe's generation.  A period is the
generation that opened it plus one - a key's first period too, so a call
admitted, or a batch of successes counted, before the key was lost does not
count after it.  Both stay below 2**53, so Lua's
doubles hold them exactly; they are written with ``%.0f`` so that no
exponent notation ever reaches the hash.

Time is always ``redis.call('TIME')``: callers never send their clock, so
hosts whose clocks disagree still agree on when a cooldown ends and which
bucket an attempt falls in.  Redis runs a script atomically, so a
read-decide-write never interleaves with another process's (the race that
separate GET/INCR/SET commands have).

Batched successes.  With the failure-rate rule, ACQUIRE, RECORD and
SNAPSHOT take a *batch*: the successes a process counted locally since its
last script call, with the period they were admitted in.  They are added to
the current bucket (at this script's time) before anything else, and only if
the breaker is still CLOSED in that period.

Push.  Every script that makes a clean breaker (CLOSED, no failure counted) anything
else, or starts a new period, also PUBLISHes ``"<key> <state> <period>"`` on
``<prefix>:breaker-events``: a trip, a probe claim (OPEN -> HALF_OPEN), a close, a reset,
``force_open``, and a failure counted by the consecutive rule (the failure-rate rule keeps
its clean ticket while the window counts failures, as in memory: only its trip is
published).  Each process's watcher (:mod:`smoothapi.storage._watch`) then stops taking the
happy path for that breaker.  PUBLISH names no key (so it may run in a cluster's script)
and reaches the subscribers of every node.

Every script that writes sets a generous PEXPIRE (``ttl_ms``, chosen by the
store), so a breaker nobody uses any more disappears by itself.

Replies are flat arrays of integers and strings, decoded by
:mod:`smoothapi.storage._redis_replies`; every one of ACQUIRE, RECORD,
RESET, FORCE_OPEN and SNAPSHOT ends with the same six elements (``TAIL``):
``why``, ``slow``, ``calls`` and the window's ``calls, failed, slow`` now
(-1, -1, -1 without the rate rule) - but for ACQUIRE's happy path without
the rate rule (CLOSED), which answers as before the trip rules.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "FORCE_OPEN", "READ_BREAKER", "RECORD", "RESET", "SNAPSHOT"]

from ._lua_parts import CALLER_NOW, FRESH, NOW, READ, RULES, TAIL

# Re-exported for caller_clock (and the tests that read them).
_NOW, _CALLER_NOW = NOW, CALLER_NOW


def caller_clock(source: str) -> str:
    """``source`` with ``now`` taken from the caller (its last ARGV) instead of TIME.

    For tests only (``tests/storage/test_differential.py`` moves the clock of
    the scripts it compares with :mod:`smoothapi.machine`): the rest of the
    script is the very text shipped, so the rules tested are the rules that
    run.  New generations still come from TIME (they only need to be fresh).
    A RedisStore built by a user never runs these variants.
    """
    return source.replace(_NOW, _CALLER_NOW)


#: A CLOSED key without a period - never written, or lost (FLUSHALL, a restart without
#: persistence, a failover that lost writes, expiry) - gets a fresh period, above every
#: earlier one, so that no ticket or batch of successes from before the loss counts in it.
#: Needs ``ttl`` set; runs before anything reads ``period``.
FOUND = """
if state == 'CLOSED' and not h[6] then
  local g = fresh(h[4])
  period = g + 1
  redis.call('HSET', key, 'gen', int(g), 'period', int(period))
  redis.call('PEXPIRE', key, ttl)
end
"""


def _script(body: str) -> str:
    return READ + NOW + FRESH + RULES + TAIL + body


#: ARGV: threshold, cooldown_ms, lease_ms, ttl_ms, then (absent for the seed's rule) the
#: rules block: rate ('' none), window_ms, minimum_calls, half_open_calls, batch period,
#: batch successes
#: -> {ticket, retry_after_ms, failures, state, changed, <tail>}; without the rate rule, a
#: CLOSED breaker answers without the tail (the happy path).
#: ticket: even = an ordinary call (the CLOSED period it was admitted in), -1 = rejected,
#: odd = a probe (its generation).  CLOSED writes nothing but a batch.  ``changed`` is 1
#: when this call moved OPEN -> HALF_OPEN, so exactly one process reports that transition.
#: HALF_OPEN admits up to half_open_calls probes, each with its own generation and lease;
#: a lease that ran out (its prober crashed, hung or was killed) frees its permit.
ACQUIRE = (
    # The happy path of the consecutive rule: CLOSED, no window to count in - the reply
    # before the trip rules (no tail), from one small HMGET, before the clock and the
    # helpers: as cheap as it was.
    """
local f = redis.call('HMGET', KEYS[1], 'state', 'failures', 'period')
if f[3] and (f[1] or 'CLOSED') == 'CLOSED' and (ARGV[5] or '') == '' then
  return {tonumber(f[3]), 0, tonumber(f[2]) or 0, 'CLOSED', 0}
end
"""
    + READ
    + NOW
    + FRESH
    + RULES
    + TAIL
    + """
local r = rules_at(5)
local lease = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
"""
    + FOUND
    + """local ring = flush(r, state, period, ttl)
if state == 'CLOSED' then
  return tail({period, 0, failures, state, 0}, r, ring, state, period)
end
local gen
if state == 'OPEN' then
  local open_until = tonumber(h[3]) or 0
  if now < open_until then
    return tail({-1, open_until - now, failures, state, 0}, r, nil, state, period)
  end
  gen = fresh(h[4])
  local field, lease_until = probes_field({{gen, now + lease}}, gen, 0, r.permits)
  redis.call('HSET', key, 'state', 'HALF_OPEN', 'gen', int(gen), 'lease_until', lease_until,
             'probes', field)
  redis.call('PEXPIRE', key, ttl)
  notify('HALF_OPEN', period)
  return tail({gen, 0, failures, 'HALF_OPEN', 1}, r, nil, 'HALF_OPEN', period)
end
-- HALF_OPEN: every live lease is a probe in flight somewhere in the fleet.
local last = tonumber(h[4]) or 0
local list, passed = probes_of(h[7], last, tonumber(h[5]) or 0)
local live = {}
for _, p in ipairs(list) do
  if now < p[2] then live[#live + 1] = p end
end
if #live + passed >= r.permits then
  if #live ~= #list then  -- forget the leases that ran out
    local field, lease_until = probes_field(live, last, passed, r.permits)
    redis.call('HSET', key, 'probes', field, 'lease_until', lease_until)
  end
  return tail({-1, 0, failures, state, 0}, r, nil, state, period)
end
-- A permit is free: this caller probes, under a new generation, so a probe whose
-- lease ran out reports nothing any more.
gen = fresh(h[4])
live[#live + 1] = {gen, now + lease}
local field, lease_until = probes_field(live, gen, passed, r.permits)
redis.call('HSET', key, 'gen', int(gen), 'lease_until', lease_until, 'probes', field)
redis.call('PEXPIRE', key, ttl)
return tail({gen, 0, failures, state, 0}, r, nil, state, period)
"""
)

#: ARGV: op ("success" | "failure" | "slow" | "release"), ticket, threshold, cooldown_ms,
#: ttl_ms, name; for the open time: multiplier, max_cooldown_ms, reset_ms, rand (0..1),
#: retry_after_ms (-1: none) - '' or absent: the plain cooldown_ms; then the rules block
#: (as ACQUIRE's, from ARGV[12]).  -> {state, old_state, failures, <tail>}
#: "slow" is a success that took too long: a failure for the breaker, counted as slow.
#: The open time is the memory breaker's: after ``growth`` failed probes in a row,
#: cooldown + rand * (min(max_cooldown, cooldown * multiplier^growth) - cooldown), and at
#: least the server's Retry-After (capped at max_cooldown); a trip after reset_ms CLOSED
#: since the last close starts again from growth 0.  It is kept in whole milliseconds,
#: rounded up (the machine's float seconds would allow a probe up to 1 ms sooner).
#: An ordinary ticket (even) counts only in CLOSED and only in the period it was admitted
#: in (a call admitted before the breaker last opened must not flip or reset a state it
#: knows nothing about); ticket 0 reads as the current period.  With the rate rule it is
#: counted in the window, and the breaker opens once the window holds minimum_calls and
#: the failed share reaches the rate; else consecutive failures count up to threshold.
#: A probe ticket (odd) counts only while it is one of HALF_OPEN's live probes (not given
#: back with ``release``): half_open_calls successes close, any failure re-opens.
#: Anything else is ignored and changes nothing.
RECORD = _script(
    """
local op = ARGV[1]
local ticket = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
"""
    + FOUND
    + """
local r = rules_at(12)
local growth = tonumber(h[11]) or 0
local ring = flush(r, state, period, ttl)
local slowed = op == 'slow' and 1 or 0
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
local function trip(old)
  redis.call('HSET', key, 'state', 'OPEN', 'failures', failures, 'slow', slow,
             'open_until', now + open_for(growth), 'lease_until', 0, 'probes', '',
             'growth', growth, 'why', why, 'calls', calls, 'name', ARGV[6])
  redis.call('PEXPIRE', key, ttl)
  notify('OPEN', period)
  return tail({'OPEN', old, failures}, r, nil, 'OPEN', period)
end
if ticket % 2 == 0 then
  if state ~= 'CLOSED' or op == 'release' or (ticket ~= 0 and ticket ~= period) then
    return tail({state, state, failures}, r, ring, state, period)
  end
  if r.rate ~= nil then
    ring = ring or slots()
    if op == 'success' then
      add(r, ring, period, 1, 0, 0)
      redis.call('PEXPIRE', key, ttl)
      return tail({state, state, failures}, r, ring, state, period)
    end
    add(r, ring, period, 0, 1, slowed)
    local n, failed, slowest = totals(r, ring, period)
    if n < r.minimum or failed / n < r.rate then
      redis.call('HSET', key, 'name', ARGV[6])
      redis.call('PEXPIRE', key, ttl)
      return tail({state, state, failures}, r, ring, state, period)
    end
    failures, slow, calls, why = failed, slowest, n, 'rate'
  elseif op == 'success' then
    if failures ~= 0 then
      redis.call('HSET', key, 'failures', 0, 'slow', 0)
      redis.call('PEXPIRE', key, ttl)
    end
    failures, slow = 0, 0
    return tail({state, state, 0}, r, ring, state, period)
  else
    failures = failures + 1
    slow = slow + slowed
    if failures < threshold then
      redis.call('HSET', key, 'state', 'CLOSED', 'failures', failures, 'slow', slow,
                 'name', ARGV[6])
      redis.call('PEXPIRE', key, ttl)
      notify('CLOSED', period)  -- no longer clean: a failure is counted
      return tail({state, state, failures}, r, ring, state, period)
    end
    calls, why = 0, 'consecutive'
  end
  local closed_at = tonumber(h[12])
  if closed_at == nil or now - closed_at >= (tonumber(ARGV[9]) or 0) then
    growth = 0  -- a healthy period (or none on record): start from the cooldown
  end
  return trip(state)
end
if state ~= 'HALF_OPEN' then
  return tail({state, state, failures}, r, ring, state, period)
end
local last = tonumber(h[4]) or 0
local list, passed = probes_of(h[7], last, tonumber(h[5]) or 0)
local at = nil
for i, p in ipairs(list) do
  if p[1] == ticket then at = i end
end
-- Not a live probe: an earlier round's, one taken over, or one that gave its permit back.
if at == nil then
  return tail({state, state, failures}, r, ring, state, period)
end
table.remove(list, at)
if op == 'success' and passed + 1 >= r.permits then
  failures, slow, why, calls = 0, 0, '', 0
  period = ticket + 1
  redis.call('HSET', key, 'state', 'CLOSED', 'failures', 0, 'slow', 0, 'lease_until', 0,
             'probes', '', 'closed_at', now, 'period', int(period), 'why', '', 'calls', 0)
  redis.call('PEXPIRE', key, ttl)
  notify('CLOSED', period)
  return tail({'CLOSED', state, 0}, r, nil, 'CLOSED', period)
end
if op == 'success' or op == 'release' then
  -- A success uses its permit up; a release gives it back to the next caller.
  if op == 'success' then passed = passed + 1 end
  local field, lease_until = probes_field(list, last, passed, r.permits)
  redis.call('HSET', key, 'probes', field, 'lease_until', lease_until)
  redis.call('PEXPIRE', key, ttl)
  return tail({state, state, failures}, r, ring, state, period)
end
failures = failures + 1
slow = slow + slowed
growth = growth + 1
calls, why = 0, 'probe'
return trip(state)
"""
)

#: ARGV: ttl_ms, name -> {state, old_state, failures, <tail>}
#: A new generation invalidates any probe in flight, a new period any call admitted
#: before (and empties the window); the grown open time and the last opening are forgotten.
RESET = _script(
    """
local gen = fresh(h[4])
failures, slow, calls, why = 0, 0, 0, ''
redis.call('HSET', key, 'state', 'CLOSED', 'failures', 0, 'slow', 0, 'open_until', 0,
           'lease_until', 0, 'probes', '', 'why', '', 'calls', 0, 'growth', 0,
           'name', ARGV[2], 'gen', int(gen), 'period', int(gen + 1))
redis.call('HDEL', key, 'closed_at')
redis.call('PEXPIRE', key, tonumber(ARGV[1]))
notify('CLOSED', gen + 1)  -- a new period: the clean tickets of the old one are stale
return tail({'CLOSED', state, 0}, nil, nil, 'CLOSED', gen + 1)
"""
)

#: ARGV: cooldown_ms, ttl_ms, name -> {state, old_state, failures, <tail>}
FORCE_OPEN = _script(
    """
why = 'forced'
redis.call('HSET', key, 'state', 'OPEN', 'open_until', now + tonumber(ARGV[1]), 'lease_until', 0,
           'probes', '', 'why', why, 'name', ARGV[3], 'gen', int(fresh(h[4])))
redis.call('PEXPIRE', key, tonumber(ARGV[2]))
notify('OPEN', period)
return tail({'OPEN', state, failures}, nil, nil, 'OPEN', period)
"""
)

#: ARGV: the rules block (as ACQUIRE's), ttl_ms -> {now_ms, state, failures, open_until,
#: <tail>}: a read on the server's clock (one key, so it runs in a cluster, where a
#: pipelined TIME has no node to go to) that writes nothing but a batch.
#: A key that holds no hash raises WRONGTYPE, as the other scripts do.
SNAPSHOT = _script(
    """
local r = rules_at(1)
local ring = flush(r, state, period, tonumber(ARGV[7]) or 0)
return tail({now, state, failures, h[3] or '0'}, r, ring, state, period)
"""
)


#: KEYS: one breaker -> {} when the key is gone or is not a hash, else
#: {now_ms, state, failures, open_until, lease_until, has_name, name, why, slow, calls,
#: live probes, passed, permits, window calls, window failed, window slow}, with the
#: defaults ACQUIRE applies to missing fields (has_name 0 and name '' when there is none:
#: a Lua nil would end the array, and RESP3 would turn false into a boolean; the window
#: -1, -1, -1 when no rate breaker wrote ``window_ms``).  Read-only, one key (so
#: cluster-safe).  For ``RedisStore.survey()``.
READ_BREAKER = (
    """
local key = KEYS[1]
if redis.call('TYPE', key).ok ~= 'hash' then
  return {}
end
"""
    + NOW
    + FRESH
    + RULES
    + """
local h = redis.call('HMGET', key, 'state', 'failures', 'open_until', 'lease_until', 'name',
                     'gen', 'probes', 'why', 'slow', 'calls', 'period', 'window_ms')
local state = h[1] or 'CLOSED'
local live, passed, permits = 0, 0, 1
if state == 'HALF_OPEN' then
  local list
  list, passed = probes_of(h[7], tonumber(h[6]) or 0, tonumber(h[4]) or 0)
  for _, p in ipairs(list) do
    if now < p[2] then live = live + 1 end
  end
  local g, n = string.match(h[7] or '', '^(%d+)/%d+/(%d+)')
  if g and tonumber(g) == (tonumber(h[6]) or 0) then permits = tonumber(n) end
end
local wc, wf, ws = -1, -1, -1
local window = tonumber(h[12])
if window ~= nil and window > 0 then
  local r = {window = window}
  wc, wf, ws = 0, 0, 0
  if state == 'CLOSED' then
    wc, wf, ws = totals(r, slots(), tonumber(h[11]) or 2)
  end
end
return {now, state, h[2] or '0', h[3] or '0', h[4] or '0', h[5] and 1 or 0, h[5] or '',
        h[8] or '', h[9] or '0', h[10] or '0', live, passed, permits, wc, wf, ws}
"""
)
