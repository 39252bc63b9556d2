"""A retry budget the whole fleet shares through a store (``RetryBudgetConfig(store=...)``).

Theory of operation.  The fleet's bucket lives in the store (for Redis, see
:mod:`smoothapi.storage._redis_budget`): one per breaker name, the same gRPC
rule as a process's bucket, applied atomically on the server.  A process
never asks the store per call:

* a retry takes a token from the process's *lease*; only when the lease is
  empty does it ask the store for ``batch`` more (one round trip per
  ``batch`` retries).  The store grants exactly what one-at-a-time spends
  would get, so leasing never spends past the floor;
* a success adds ``token_ratio`` to the process's unreported earnings (one
  float add, no lock, as in memory); they go to the store with the next
  lease, or once they reach ``batch`` tokens, from a background thread (one
  round trip per ``batch / token_ratio`` successes that no call waits for).

What a process may overspend.  Compared with one bucket that every retry and
success of the fleet reached at once, a process holds at most ``batch - 1``
leased tokens it has not spent (a lease is taken by a retry, which spends
one at once; the rest were taken from the bucket earlier and may be spent
after the bucket was refilled to ``max_tokens``), and at most ``batch``
earned tokens it has not reported (a report credits at most ``batch``
tokens and drops the rest, so earnings that waited for the reporter thread
cannot refill a bucket that ran dry).  So from any moment on a fleet of
``P`` processes retries at most ``ceil(max_tokens / 2) + (2 * batch - 1) * P``
times plus ``token_ratio`` per success from then on: less than ``2 * batch``
tokens per process more than one shared bucket would allow.  Leasing
itself never overspends: the store grants what one-at-a-time spends would.

When the store is down (the breakers' own record of it, :class:`~.outage.Health`:
one WARNING per outage, one try per ``retry_interval``), a retry whose lease
is empty asks the process's own bucket, as without a store; the process's
own bucket earns from every success all along, so it is warm when needed.
No store error reaches a call.  A forked child starts with no lease and no
earnings of its parent's; its reporter thread starts when first needed.
"""

from __future__ import annotations

import threading
from typing import Any

from .._runtime import at_fork_child
from ..budget import RetryBudget
from ..config import RetryBudgetConfig
from ..errors import ConfigError
from .outage import health_of, store_failed, store_recovered
from .protocol import BreakerStore

__all__ = ["SharedRetryBudget", "budget_operations"]


def budget_operations(store: Any) -> Any:
    """The object that runs the budget's exchange on ``store`` (ConfigError if none can)."""
    lease = getattr(store, "lease_budget", None)
    if callable(lease):  # a store of the user's own that knows the budget
        return store
    if _is_redis_store(store):
        from ._redis_budget import RedisBudget  # noqa: PLC0415

        return _RedisOperations(store, RedisBudget(store))
    raise ConfigError(
        f"RetryBudgetConfig.store: {type(store).__name__} cannot keep a shared retry budget; "
        "use smoothapi.RedisStore, or give your store lease_budget(key, max_tokens, want, "
        "earned) -> (granted, tokens) and budget_key(name)"
    )


def _is_redis_store(store: object) -> bool:
    try:
        from .redis import RedisStore  # noqa: PLC0415 - imports redis-py
    except ModuleNotFoundError:  # no redis-py: no RedisStore either
        return False
    return isinstance(store, RedisStore)


class _RedisOperations:
    __slots__ = ("budget", "store")

    def __init__(self, store: Any, budget: Any) -> None:
        self.store = store
        self.budget = budget

    def budget_key(self, name: str) -> str:
        return str(self.budget.key(self.store.prefix, name))

    def lease_budget(
        self, key: str, max_tokens: float, want: int, earned: float
    ) -> tuple[int, float]:
        granted, tokens = self.budget.lease(key, max_tokens, want, earned)
        return granted, tokens


class SharedRetryBudget(RetryBudget):
    """A retry budget whose bucket the fleet shares (see the module's docstring).

    Built by ``RetryBudget(config, name=...)`` when ``config.store`` is set.
    Its inherited bucket (``tokens``) is the process's own, used while the
    store is down.
    """

    __slots__ = (
        "_asked",
        "_earned",
        "_exchange_lock",
        "_health",
        "_key",
        "_leased",
        "_ops",
        "_reported",
        "batch",
        "name",
        "store",
    )

    def __init__(self, config: RetryBudgetConfig, name: str | None = None) -> None:
        super().__init__(config, name)
        if name is None:
            raise ConfigError("a shared retry budget needs a name (its breaker's)")
        store = config.store
        if store is None:  # RetryBudget dispatches here only with a store
            raise ConfigError("a shared retry budget needs RetryBudgetConfig.store")
        self.store: BreakerStore = store
        self.name = name
        self.batch = config.batch
        self._ops = budget_operations(store)
        self._key: str = self._ops.budget_key(name)
        self._health = health_of(store)
        self._leased = 0  # tokens leased from the store and not spent yet
        # Earnings: _earned grows lock-free with every success (a race loses an add, never
        # adds one); _reported is how much of it the store has, moved under the lock.
        self._earned = 0.0
        self._reported = 0.0
        self._asked = False  # the reporter thread has been asked to report the earnings
        self._exchange_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<SharedRetryBudget {self.name!r} leased={self._leased} "
            f"unreported={self._earned - self._reported:.2f} local={self.tokens:.2f}"
            f"/{self.max_tokens:g}>"
        )

    def deposit(self) -> None:
        """A call succeeded: earn ``token_ratio`` here and for the fleet (reported in batches)."""
        ratio = self.ratio
        tokens = self.tokens + ratio
        self.tokens = tokens if tokens < self.max_tokens else self.max_tokens
        earned = self._earned + ratio
        self._earned = earned
        if earned - self._reported >= self.batch and not self._asked:
            self._asked = True
            _ask_reporter(self)

    def try_spend(self) -> bool:
        """Take a leased token for a retry, leasing ``batch`` more when none is left."""
        with self._exchange_lock:
            if self._leased > 0:
                self._leased -= 1
                return True
            granted = self._exchange(self.batch)
            if granted is not None:
                if granted <= 0:
                    return False
                self._leased = granted - 1
                return True
        return RetryBudget.try_spend(self)  # the store is down: this process's own bucket

    def _report(self) -> None:
        """Report the earnings (the reporter thread; a lease in flight may take them first)."""
        with self._exchange_lock:
            self._asked = False
            if self._earned - self._reported >= self.batch:
                self._exchange(0)

    def _exchange(self, want: int) -> int | None:
        """One round trip (under the lock): report earnings, ask ``want``; None if down."""
        store, health = self.store, self._health
        earned = self._earned
        if not health.claim_retry(store.retry_interval):
            # Down, and not our turn to try: these earnings stay with the process's own
            # bucket, which had them too (reporting them later would overspend).
            self._reported = earned
            return None
        # At most one batch of earnings per report, the rest dropped (only stricter): what
        # a process earned while its report waited (the reporter thread's lag) could
        # otherwise refill the fleet's bucket after it ran dry, and the overspend bound
        # would depend on the scheduler.
        unreported = earned - self._reported
        credit = min(unreported, float(self.batch)) if unreported > 0 else 0.0
        try:
            granted, _tokens = self._ops.lease_budget(self._key, self.max_tokens, want, credit)
        except Exception as exc:  # no store error may reach a call
            store_failed(health, store, exc, ())
            self._reported = earned
            return None
        if unreported > 0:
            self._reported = earned
        store_recovered(health, store, ())
        return int(granted)

    def _after_fork(self) -> None:
        # The child has none of the parent's lease; the parent reports its own earnings.
        self._exchange_lock = threading.Lock()
        self._leased = 0
        self._reported = self._earned
        self._asked = False


# -- the reporter: one daemon thread per process sends the earnings, off every call's path --

_pending: set[SharedRetryBudget] = set()  # budgets whose earnings reached their batch
_pending_lock = threading.Lock()
_wake = threading.Event()
_reporter: threading.Thread | None = None


def _ask_reporter(budget: SharedRetryBudget) -> None:
    global _reporter
    with _pending_lock:
        _pending.add(budget)
        if _reporter is None or not _reporter.is_alive():
            _reporter = threading.Thread(
                target=_report_forever, name="smoothapi-budget-reporter", daemon=True
            )
            _reporter.start()
    _wake.set()


def _report_forever() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        with _pending_lock:
            budgets = list(_pending)
            _pending.clear()
        for budget in budgets:
            try:
                budget._report()
            except Exception:  # never (_exchange catches the store's): the thread lives on
                budget._asked = False
                continue


@at_fork_child
def _after_fork_in_child() -> None:
    # The child has no reporter thread (only the forking thread survives a fork), and
    # none of the parent's pending reports.
    global _pending_lock, _wake, _reporter
    _pending_lock = threading.Lock()
    _wake = threading.Event()
    _reporter = None
    _pending.clear()
