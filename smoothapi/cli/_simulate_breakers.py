"""What the simulator's breakers did: openings, their reasons, probes, and when they closed.

:class:`BreakerLog` is the hook every simulated breaker sends its
:class:`~smoothapi.events.StateChanged` events to, and the event loop tells
it about every probe it admits.  It keeps the figures the trip rules are
judged by: how often the breakers opened and why (a flapping consecutive
rule against a rate rule that stays closed), how many probes went out, and
how long after an outage ended the last breaker closed (one probe against
several).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final

from ..breaker import CircuitState
from ..config import CircuitBreakerConfig
from ..events import Event, StateChanged

__all__ = ["BreakerLog", "closed_after", "describe_rule", "format_reasons", "reason_kind"]

# "failure rate 0.53 over 212 calls" -> "failure rate": the words before the figures.
_FIGURES: Final = re.compile(r"\s+[\d.]+(\s+over\s+\d+\s+calls)?$")


def reason_kind(reason: str) -> str:
    """The rule a trip reason names, without its figures (``"failure rate 0.53 over 212
    calls"`` -> ``"failure rate"``), so that trips of one rule count together."""
    return _FIGURES.sub("", reason) or "unknown"


class BreakerLog:
    """A hook that counts what the breakers did; call :meth:`probe` for each probe admitted."""

    __slots__ = ("opened", "probe_calls", "probe_rounds", "reasons", "transitions")

    def __init__(self) -> None:
        self.opened = 0  # transitions to OPEN, all breakers together
        self.probe_rounds = 0  # transitions to HALF_OPEN
        self.probe_calls = 0  # calls admitted as probes (up to half_open_calls per round)
        self.reasons: Counter[str] = Counter()  # openings by the rule that tripped
        # (at, breaker, new state) of every move to or from CLOSED, for closed_after().
        self.transitions: list[tuple[float, str, CircuitState]] = []

    def __call__(self, event: Event) -> None:
        if type(event) is not StateChanged:
            return
        new = event.new
        if new is CircuitState.OPEN:
            self.opened += 1
            self.reasons[reason_kind(event.reason)] += 1
        elif new is CircuitState.HALF_OPEN:
            self.probe_rounds += 1
        if new is CircuitState.CLOSED or event.old is CircuitState.CLOSED:
            self.transitions.append((event.at, event.name, new))

    def probe(self) -> None:
        self.probe_calls += 1


def closed_after(
    transitions: Iterable[tuple[float, str, CircuitState]], start: float, end: float
) -> float | None:
    """Seconds from ``start`` until every breaker is CLOSED and stays so until ``end``.

    0.0 when none is open at ``start`` and none opens before ``end``; None when
    one is still not CLOSED at ``end``.  ``transitions`` are in time order.
    """
    not_closed: set[str] = set()
    closed_at: float | None = None
    started = False
    for at, name, new in transitions:
        if at >= end:
            break
        if at >= start and not started:
            started = True
            closed_at = None if not_closed else start
        if new is CircuitState.CLOSED:
            not_closed.discard(name)
        else:
            not_closed.add(name)
        if not started:
            continue
        if not_closed:
            closed_at = None
        elif closed_at is None:
            closed_at = at
    if not_closed:
        return None
    return 0.0 if closed_at is None else closed_at - start


def format_reasons(reasons: Mapping[str, int]) -> str:
    """``"consecutive failures 1200, probe failed 30"``, most frequent first."""
    ordered = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{kind} {count}" for kind, count in ordered)


def describe_rule(cb: CircuitBreakerConfig) -> list[str]:
    """The breaker's trip rules in words, for a config's one-line description."""
    if cb.failure_rate is None:
        parts = [f"breaker opens after {cb.failure_threshold} failures for {cb.cooldown:g} s"]
    else:
        parts = [
            f"breaker opens at a failure rate of {cb.failure_rate:.0%} over "
            f"{cb.window:g} s (at least {cb.minimum_calls} calls) for {cb.cooldown:g} s"
        ]
    if cb.slow_call_ms is not None:
        parts.append(f"a success slower than {cb.slow_call_ms:g} ms counts as a failure")
    if cb.half_open_calls != 1:
        parts.append(f"{cb.half_open_calls} probes to close")
    return parts
