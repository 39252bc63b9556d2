"""The retry budget: a token bucket that keeps a fleet's retries from becoming a storm.

gRPC's retry throttling, per breaker (decorator) or per origin (transports):
successes earn ``token_ratio`` of a token each, retries spend one, and retries
stop while the bucket is at or below half full.  Earning is lock-free - a
success racing another success may lose a fraction of a token, which only
makes the budget stricter - so the happy path pays one float add; spending is
locked, so two retries can never both take the last token.

With ``RetryBudgetConfig(store=...)``, ``RetryBudget(config, name=...)``
builds the store's kind instead (:class:`smoothapi.storage._budget.SharedRetryBudget`,
one bucket per name for the whole fleet), found through a hook the package
sets (``_runtime.shared_budget_class``): the stores sit above this layer.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from . import _runtime
from ._runtime import at_fork_child
from .config import ResilientConfig, RetryBudgetConfig
from .errors import ConfigError

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = ["RetryBudget", "shared_budget"]


class RetryBudget:
    """A live token bucket built from a :class:`~smoothapi.config.RetryBudgetConfig`."""

    __slots__ = ("__weakref__", "_lock", "config", "floor", "max_tokens", "ratio", "tokens")

    def __new__(cls, config: RetryBudgetConfig, name: str | None = None) -> RetryBudget:
        # Dispatch here, as CircuitBreaker does for its store: every place that builds a
        # budget from a config gets the fleet's when the config names a store.
        if cls is RetryBudget and config.store is not None:
            find = _runtime.shared_budget_class
            if find is None:  # cannot happen: importing smoothapi.budget runs the package
                raise ConfigError("a retry budget store was given, but smoothapi is not set up")
            shared: type[RetryBudget] = find()
            return super().__new__(shared)
        return super().__new__(cls)

    def __init__(self, config: RetryBudgetConfig, name: str | None = None) -> None:
        """``name``: the breaker's, which names the fleet's bucket when ``config.store`` is set."""
        self.config = config
        self.max_tokens = config.max_tokens
        self.ratio = config.token_ratio
        self.floor = config.max_tokens / 2.0
        self.tokens = config.max_tokens
        self._lock = threading.Lock()
        _LIVE_BUDGETS.add(self)

    def __repr__(self) -> str:
        return f"<RetryBudget {self.tokens:.2f}/{self.max_tokens:g} tokens>"

    def deposit(self) -> None:
        """A call succeeded: earn ``token_ratio`` of a token, up to ``max_tokens``."""
        tokens = self.tokens + self.ratio
        self.tokens = tokens if tokens < self.max_tokens else self.max_tokens

    def _after_fork(self) -> None:
        """In a forked child: re-create what else the budget owns (see SharedRetryBudget)."""

    def try_spend(self) -> bool:
        """Take one token for a retry; False (take nothing) while at or below half full."""
        with self._lock:
            if self.tokens > self.floor:
                self.tokens -= 1.0
                return True
            return False


# Budgets of breakers passed with `breaker=`: every mount point sharing a breaker
# shares its budget too.  Weak on the breaker: a budget goes when its breaker does
# (and the breaker, once no mount point uses it, is not kept alive by its budget).
_shared: weakref.WeakKeyDictionary[CircuitBreaker, RetryBudget] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()
_LIVE_BUDGETS: weakref.WeakSet[RetryBudget] = weakref.WeakSet()  # for the fork hook below


@at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child (see _runtime).
    global _shared_lock
    _shared_lock = threading.Lock()
    for budget in list(_LIVE_BUDGETS):
        budget._lock = threading.Lock()
        budget._after_fork()


def shared_budget(breaker: CircuitBreaker, config: ResilientConfig) -> RetryBudget | None:
    """The budget every mount point using ``breaker`` shares (None if ``config`` has none)."""
    if config.retry_budget is None:
        return None
    with _shared_lock:
        budget = _shared.get(breaker)
        if budget is None:
            budget = RetryBudget(config.retry_budget, breaker.name)
            _shared[breaker] = budget
        return budget
