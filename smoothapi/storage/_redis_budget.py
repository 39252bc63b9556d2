"""A fleet's retry budget in Redis: one key per budget, one script round trip per exchange.

Imported only when a :class:`~smoothapi.storage.RedisStore` serves a shared
retry budget (see :mod:`smoothapi.storage._budget`), never by ``import smoothapi``.

The bucket is a plain string key ``{prefix}:budget:{<digest of the name>}``
holding the fleet's tokens (a missing key is a full bucket: the fleet starts
full, as a process does).  :data:`LEASE` is the one script: it adds what a
process earned and grants it up to ``want`` tokens under gRPC's floor rule,
atomically on the server, and refreshes the key's expiry.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import ConfigError

__all__ = ["LEASE", "RedisBudget", "budget_key"]

# A bucket no process touched for this long expires: the fleet starts full again, as a
# restarted process would.  Long enough that an outage never outlives it between retries.
TTL_MS = 3_600_000

# KEYS[1]: the bucket.  ARGV: max_tokens, want (tokens asked for), earned (tokens the
# caller's successes earned since its last report), ttl_ms.
# Grants min(want, ceil(tokens - max/2)) when tokens > max/2: exactly the retries that
# one spend at a time would get (each needs tokens > max/2 before it), so leasing in
# batches never lets the fleet spend more than the bucket holds.  A missing or
# unreadable value (tonumber gives nil; NaN is not equal to itself) is a full bucket.
LEASE = """
local max = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local tokens = tonumber(redis.call('GET', KEYS[1]))
if tokens == nil or tokens ~= tokens or tokens > max then tokens = max end
if tokens < 0 then tokens = 0 end
tokens = tokens + tonumber(ARGV[3])
if tokens > max then tokens = max end
local granted = 0
local floor = max / 2
if want > 0 and tokens > floor then
  granted = math.min(want, math.ceil(tokens - floor))
  tokens = tokens - granted
end
local text = string.format('%.17g', tokens)
redis.call('SET', KEYS[1], text, 'PX', ARGV[4])
return {granted, text}
"""


def budget_key(prefix: str, name: str) -> str:
    """``{prefix}:budget:{digest}``: the braces make the digest the cluster hash tag."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{prefix}:budget:{{{digest}}}"


class RedisBudget:
    """The budget's operations on a RedisStore's sync client.

    Sync only, also for async calls: the retry budget is asked from inside the
    retry decision, which does not await.  A round trip is bounded by the
    client's timeout (0.1 s from :meth:`RedisStore.from_url`).
    """

    __slots__ = ("client", "script")

    def __init__(self, store: Any) -> None:
        client = getattr(store, "client", None)
        if client is None:
            raise ConfigError(
                "RetryBudgetConfig.store needs a store with a sync client: a shared retry "
                "budget is asked from inside the retry decision, also on async calls; build "
                "the store with RedisStore.from_url(url) or RedisStore(redis.Redis(...))"
            )
        self.client = client
        # No I/O: redis-py hashes the script; EVALSHA re-loads it on NOSCRIPT.
        self.script = client.register_script(LEASE)

    def key(self, prefix: str, name: str) -> str:
        return budget_key(prefix, name)

    def lease(self, key: str, max_tokens: float, want: int, earned: float) -> tuple[int, float]:
        """Report ``earned`` tokens and ask for ``want``: ``(granted, tokens left)``."""
        reply = self.script(keys=[key], args=[repr(max_tokens), want, repr(earned), TTL_MS])
        granted, tokens = reply
        return int(granted), float(tokens)
