"""The happy path every mount point takes, and the one rule that closes it.

Theory of operation.  A call whose breaker is CLOSED with no failure counted
never starts the engine:

1. the mount point reads the breaker's ``clean_ticket`` (one attribute read,
   no lock: the CLOSED period's ticket, or 0 when the breaker is anything but
   CLOSED-and-clean; for a shared breaker, non-zero only while its store's
   watcher vouches for it) - and takes 0 itself when
   the call has a deadline, since the engine starts the clock before the
   first attempt;
2. with a non-zero ticket it makes the first attempt at once, under the
   attempt mark (``_runtime.enter``/``leave``, inlined by the decorator), so
   the mount points called inside it know who keeps the books;
3. an attempt that succeeds is closed by :func:`settle`; one that fails goes
   to the engine as its first outcome, with the ticket it ran under
   (``first_ticket``), and the engine books it.

No generator, no lock, no allocation of our own on that line
(``tests/unit/test_hot_path.py`` holds it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine import Policy

__all__ = ["settle"]


def settle(policy: Policy, ticket: int, began: float | None = None) -> None:
    """Close a first attempt made under ``ticket`` that succeeded, without the engine.

    If the breaker's clean ticket moved meanwhile (someone failed, or the
    period ended), the success is reported with the ticket it ran under: it
    resets a CLOSED period's count, and a stale ticket is ignored.  A
    failure-rate breaker counts every success, and a slow-call breaker checks
    its duration (``began``: when the attempt started, read from the
    breaker's clock when ``policy.timed``), both in one call of
    :meth:`~smoothapi.CircuitBreaker.settle`, without a lock unless something
    changes.  Otherwise there is nothing to report.  A retry budget earns its
    deposit either way.
    """
    breaker = policy.breaker
    if policy.settles:
        breaker.settle(ticket, began)
    elif breaker.clean_ticket != ticket:
        breaker.record_success(ticket)
    budget = policy.budget
    if budget is not None:
        budget.deposit()
