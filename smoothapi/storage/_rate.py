"""A rate limit the whole fleet shares through Redis (``RateLimitConfig(store=...)``).

Theory of operation.  The fleet's token bucket is one Redis hash per key,
``{prefix}:rate:{<digest of the key>}`` (fields ``tokens``, ``stamp`` and
``pause``, times in milliseconds of the *server's* clock): :data:`RATE` is
its one script.  Every attempt reserves its token with one round trip
(``take``): the bucket is refilled by the time passed, one token is taken
even if that leaves it negative - the call then waits the time the deficit
takes to refill, so the fleet's callers are served in the order they asked -
unless the wait would be longer than the caller accepts, in which case
nothing is taken.  A server's "no request left until t" (``Retry-After``, a
``RateLimit`` remaining of 0) sets ``pause`` for the fleet (``pause``); a
token reserved by a call that never used it is given back (``refund``).

What stays per process: a server's "n requests remain" with n > 0 is kept
by each process (as without a store), so a fleet of P processes may send up
to P * n before its next answer tells it 0; that answer pauses every process.

When Redis is down (the store's :class:`~.outage.Health`: one WARNING per
outage, one try per ``retry_interval``), the calls use the process's own
bucket (the inherited :class:`~smoothapi.load.TokenBucket`), as without a
store; no Redis error reaches a call.  The round trip uses the store's sync
client, also on async calls (a reservation is taken inside the stages' gate,
which does not await), bounded by the client's timeout; no lock is held
across it (the bucket locks only its local state).
"""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Any

from ..config import RateLimitConfig
from ..errors import ConfigError
from ..load import TokenBucket
from .outage import health_of, store_failed, store_recovered

__all__ = ["RATE", "SharedTokenBucket", "rate_key"]

# KEYS[1]: the bucket.  ARGV: op ('take' | 'refund' | 'pause'), rate (tokens a second),
# burst, max_wait_ms (take), ttl_ms, pause_ms (pause).
# -> {taken (1, 0 for refund/pause, -1 refused), wait_ms}.  A missing or unreadable
# field (tonumber gives nil; NaN is not equal to itself) is a full bucket, as a
# process's own bucket starts.
RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'tokens', 'stamp', 'pause')
local rate = tonumber(ARGV[2]) / 1000
local burst = tonumber(ARGV[3])
local tokens = tonumber(h[1])
local stamp = tonumber(h[2])
if tokens == nil or tokens ~= tokens or stamp == nil or stamp ~= stamp then
  tokens = burst
  stamp = now
end
if tokens > burst then tokens = burst end
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate)
  stamp = now
end
local pause = tonumber(h[3]) or 0
if pause ~= pause then pause = 0 end
local op = ARGV[1]
local taken = 0
local wait = 0
if op == 'take' then
  if tokens < 1 then wait = (1 - tokens) / rate end
  if pause > now then wait = math.max(wait, pause - now) end
  if wait > tonumber(ARGV[4]) then
    return {-1, math.ceil(wait)}
  end
  tokens = tokens - 1
  taken = 1
elseif op == 'refund' then
  tokens = math.min(burst, tokens + 1)
elseif op == 'pause' then
  pause = math.max(pause, now + tonumber(ARGV[6]))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp',
           string.format('%.0f', stamp), 'pause', string.format('%.0f', pause))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {taken, math.ceil(wait)}
"""


def rate_key(prefix: str, name: str) -> str:
    """``{prefix}:rate:{digest}``: the braces make the digest the cluster hash tag."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{prefix}:rate:{{{digest}}}"


def _is_redis_store(store: object) -> bool:
    try:
        from .redis import RedisStore  # noqa: PLC0415 - imports redis-py
    except ModuleNotFoundError:  # no redis-py: no RedisStore either
        return False
    return isinstance(store, RedisStore)


class SharedTokenBucket(TokenBucket):
    """A token bucket the fleet shares (see the module's docstring).

    Built by ``TokenBucket.of(config, name, now)`` when ``config.store`` is
    set.  Its inherited state is the process's own bucket, used while the
    store is down (and kept in step with the calls it serves then).
    """

    __slots__ = ("_health", "_key", "_lock", "_script", "_ttl_ms", "store")

    # Its calls make a round trip: it locks its local state itself, never across the I/O,
    # so one slow Redis reply does not hold up the process's other callers' local work.
    locks_itself = True

    def __init__(self, config: RateLimitConfig, name: str, now: float) -> None:
        assert config.burst is not None  # filled in by RateLimitConfig
        super().__init__(config.rate, config.burst, now)
        store: Any = config.store
        if store is None or not _is_redis_store(store):
            raise ConfigError(
                f"RateLimitConfig.store: {type(store).__name__} cannot keep a shared rate "
                "limit; use smoothapi.RedisStore"
            )
        client = getattr(store, "client", None)
        if client is None:
            raise ConfigError(
                "RateLimitConfig.store needs a store with a sync client: a token is "
                "reserved inside the stages' gate, also on async calls; build the store with "
                "RedisStore.from_url(url) or RedisStore(redis.Redis(...))"
            )
        self.store = store
        self._key = rate_key(store.prefix, config.key or name)
        # No I/O: redis-py hashes the script; EVALSHA re-loads it on NOSCRIPT.
        self._script = client.register_script(RATE)
        self._health = health_of(store)
        # A bucket nobody used for this long is full again anyway: let it expire.
        self._ttl_ms = max(60_000, math.ceil(config.burst / config.rate * 2000))
        self._lock = threading.Lock()  # the local state: the allowance, the fallback bucket

    def __repr__(self) -> str:
        return f"<SharedTokenBucket {self._key} rate={self.rate:g}/s burst={self.burst:g}>"

    def _run(self, op: str, max_wait_ms: int = 0, pause_ms: int = 0) -> tuple[int, int] | None:
        """One script round trip; None when the store is down (or not our turn to try it)."""
        store, health = self.store, self._health
        if not health.claim_retry(store.retry_interval):
            return None
        try:
            reply = self._script(
                keys=[self._key],
                args=[op, repr(self.rate), repr(self.burst), max_wait_ms, self._ttl_ms, pause_ms],
            )
            taken, wait_ms = int(reply[0]), int(reply[1])
        except Exception as exc:  # no store error may reach a call
            store_failed(health, store, exc, ())
            return None
        store_recovered(health, store, ())
        return taken, wait_ms

    def reserve(self, now: float, max_wait: float) -> float | None:
        """Reserve the fleet's next token: the wait before using it, or None (none taken)."""
        # The process's own allowance (what the server said to it) applies first.
        with self._lock:
            local = self._allowance_wait(now)
        if local is not None and local > max_wait:
            return None
        reply = self._run("take", max_wait_ms=math.floor(max_wait * 1000))
        with self._lock:
            if reply is None:  # the store is down: this process's own bucket
                return TokenBucket.reserve(self, now, max_wait)
            taken, wait_ms = reply
            if taken < 0:
                return None
            wait = wait_ms / 1000.0
            if self._allowance_wait(now) is not None:
                wait = max(wait, local or 0.0)
                # As TokenBucket.reserve: every reservation before the reset takes one, also
                # one that waits for it, so a refund never opens more than the server said.
                self.allow -= 1
            return wait

    def _allowance_wait(self, now: float) -> float | None:
        """The wait the server's last word to this process asks for, or None (lock held)."""
        until = self.allow_until
        if until is None:
            return None
        if now >= until:
            self.allow_until = None
            return None
        return until - now if self.allow <= 0 else 0.0

    def refund(self, now: float) -> None:
        """Give a reserved token back to the fleet's bucket (and the process's allowance)."""
        with self._lock:
            if self.allow_until is not None and now < self.allow_until:
                self.allow = min(self.allowed, self.allow + 1)
        if self._run("refund") is None:  # down: back to this process's bucket only
            with self._lock:
                self._refill(now)
                self.tokens = min(self.burst, self.tokens + 1.0)

    def next_token(self, now: float) -> float:
        """Seconds until a token: asked of the fleet's bucket without taking one."""
        with self._lock:
            local = self._allowance_wait(now) or 0.0
        reply = self._run("take", max_wait_ms=-1)  # refused by design: nothing is taken
        if reply is None:
            with self._lock:
                return TokenBucket.next_token(self, now)
        return max(local, reply[1] / 1000.0)

    def follow(self, now: float, limit: Any) -> None:
        """The server's word: kept by this process; "none left" pauses the whole fleet."""
        with self._lock:
            TokenBucket.follow(self, now, limit)
        if limit.remaining <= 0 and limit.reset > 0:
            self._run("pause", pause_ms=math.ceil(limit.reset * 1000))
