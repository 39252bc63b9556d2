"""The pieces the Lua scripts of :mod:`smoothapi.storage.lua` are built from: the clock
prologue, fresh generations, and the trip rules' helpers (the failure-rate window's ring,
the probes field, the reply's common tail).  Lua text only, no I/O; the layout of the hash
they read and write is described in :mod:`smoothapi.storage.lua`.
"""

from __future__ import annotations

__all__ = ["CALLER_NOW", "FRESH", "NOW", "READ", "RULES", "TAIL"]

# Shared prologue: `now` in whole milliseconds of server time.
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The prologue of caller_clock()'s variants: `now` is the script's last argument.
CALLER_NOW = """
local now = tonumber(ARGV[#ARGV])
"""


# A generation that no earlier one of this key can equal (see the module docstring):
# odd, from the server's clock in microseconds, above ``prev`` (the key's last one).
FRESH = """
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

# The trip rules' helpers, after `key`, `now` and `int`:
# rules_at(i): the rules block ARGV[i..i+5] = rate ('' none), window_ms, minimum_calls,
# half_open_calls, batch period, batch successes.
# The window (see the module docstring): slots() reads the ring, add() counts one bucket's
# attempts, totals() sums the window of a period.
# Probes: probes_of() reads the field (or the one probe of an older script), probes_field()
# writes it with the matching lease_until.
RULES = """
local SLOTS = {'w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7', 'w8', 'w9'}
local function rules_at(i)
  local r = {rate = tonumber(ARGV[i]), window = tonumber(ARGV[i + 1]),
             minimum = tonumber(ARGV[i + 2]) or 1, permits = tonumber(ARGV[i + 3]) or 1,
             batch_period = tonumber(ARGV[i + 4]), batch = tonumber(ARGV[i + 5]) or 0,
             window_text = ARGV[i + 1]}
  if r.window == nil or r.window <= 0 then r.rate = nil end
  return r
end
local function slots()
  local raw = redis.call('HMGET', key, unpack(SLOTS))
  local ring = {}
  for i = 1, 10 do
    local p, e, ok, f, s = string.match(raw[i] or '', '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
    if p then
      ring[i] = {tonumber(p), tonumber(e), tonumber(ok), tonumber(f), tonumber(s)}
    end
  end
  return ring
end
local function epoch_of(r)
  return math.floor(now * 10 / r.window)
end
local function add(r, ring, period, ok, failed, slow)
  local epoch = epoch_of(r)
  local i = epoch % 10 + 1
  local b = ring[i]
  if b == nil or b[1] ~= period or b[2] ~= epoch then
    b = {period, epoch, 0, 0, 0}
    ring[i] = b
  end
  b[3] = b[3] + ok
  b[4] = b[4] + failed
  b[5] = b[5] + slow
  redis.call('HSET', key, SLOTS[i],
             int(period) .. ':' .. int(epoch) .. ':' .. int(b[3]) .. ':' .. int(b[4]) .. ':'
             .. int(b[5]), 'window_ms', r.window_text)
end
local function totals(r, ring, period)
  local oldest = epoch_of(r) - 10
  local calls, failed, slow = 0, 0, 0
  for i = 1, 10 do
    local b = ring[i]
    if b ~= nil and b[1] == period and b[2] > oldest then
      calls = calls + b[3] + b[4]
      failed = failed + b[4]
      slow = slow + b[5]
    end
  end
  return calls, failed, slow
end
local function probes_of(raw, gen, lease_until)
  local list = {}
  local g, passed = string.match(raw or '', '^(%d+)/(%d+)')
  if g and tonumber(g) == gen then
    for ticket, lease in string.gmatch(raw, ',(%d+):(%d+)') do
      list[#list + 1] = {tonumber(ticket), tonumber(lease)}
    end
    return list, tonumber(passed)
  end
  -- Written by a script that knows one probe (or no probe at all).
  if lease_until > 0 then
    list[1] = {gen, lease_until}
  end
  return list, 0
end
local function probes_field(list, gen, passed, permits)
  local parts = {int(gen) .. '/' .. int(passed) .. '/' .. int(permits)}
  local lease = 0
  for _, p in ipairs(list) do
    parts[#parts + 1] = int(p[1]) .. ':' .. int(p[2])
    if p[1] == gen then lease = p[2] end
  end
  return table.concat(parts, ','), lease
end
"""

# The six elements every reply ends with (see smoothapi.storage.lua's docstring); `state`
# and `period` are the breaker's after the script, `ring` the slots read (or nil).
TAIL = """
-- Tell the fleet's watchers (smoothapi.storage._watch) that this breaker is no longer what
-- their clean tickets assumed: "<key> <state> <period>" on "<prefix>:breaker-events".
-- PUBLISH names no key, so it runs in a cluster, and reaches subscribers on every node.
-- pcall: a user whose ACL grants no channel (Redis 7's default for new users) still
-- changes the state; its processes' watchers cannot subscribe either, so they rely on
-- the sync_interval fallback.
local function notify(now_state, now_period)
  local prefix = string.match(key, '^(.-):breaker:{')
  if prefix then
    redis.pcall('PUBLISH', prefix .. ':breaker-events',
               key .. ' ' .. now_state .. ' ' .. int(now_period))
  end
end
local function tail(reply, r, ring, state, period)
  local wc, wf, ws = -1, -1, -1
  if r ~= nil and r.rate ~= nil then
    wc, wf, ws = 0, 0, 0
    if state == 'CLOSED' then
      wc, wf, ws = totals(r, ring or slots(), period)
    end
  end
  for _, v in ipairs({why, slow, calls, wc, wf, ws}) do
    reply[#reply + 1] = v
  end
  return reply
end
-- A batch of successes: counted in the current bucket if the breaker is still CLOSED in the
-- period they were admitted in; returns the ring when it was read.
local function flush(r, state, period, ttl)
  if r.rate == nil or r.batch <= 0 or state ~= 'CLOSED' or r.batch_period ~= period then
    return nil
  end
  local ring = slots()
  add(r, ring, period, r.batch, 0, 0)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
  return ring
end
"""

# HMGET fields every deciding script reads first, in this order (h[1] .. h[12]).
READ = """
local key = KEYS[1]
local h = redis.call('HMGET', key, 'state', 'failures', 'open_until', 'gen', 'lease_until',
                     'period', 'probes', 'why', 'slow', 'calls', 'growth', 'closed_at')
local state = h[1] or 'CLOSED'
local failures = tonumber(h[2]) or 0
local period = tonumber(h[6]) or 2
local why = h[8] or ''
local slow = math.min(tonumber(h[9]) or 0, failures)
local calls = tonumber(h[10]) or 0
"""
