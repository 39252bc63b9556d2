"""Prometheus metrics for smoothapi through ``prometheus_client``
(``pip install "smoothapi-py[prometheus]"``).

::

    import smoothapi.prometheus

    smoothapi.prometheus.instrument()  # the default registry; or instrument(registry=...)

The same measures as :mod:`smoothapi.otel`, named the Prometheus way:

* counters ``smoothapi_retries_total{breaker,cause}``,
  ``smoothapi_gave_up_total{breaker,reason}``, ``smoothapi_rejected_total{breaker}``,
  ``smoothapi_fallbacks_total{breaker}``, ``smoothapi_retry_budget_exhausted_total{breaker}``,
  ``smoothapi_breaker_transitions_total{breaker,from_state,to_state}``,
  ``smoothapi_breaker_openings_total{breaker,reason}`` (``reason``: the kind of rule that
  opened it, ``consecutive``, ``slow``, ``rate``, ``slow_rate``, ``probe`` or ``forced``;
  never the words with their numbers, which would make a series per value),
  ``smoothapi_store_outages_total{store}``, ``smoothapi_shed_total{breaker,stage}`` (calls
  a load-control stage refused without I/O; ``stage``: ``bulkhead``, ``rate_limit`` or
  ``throttle``), ``smoothapi_hedges_total{breaker}`` (hedged attempts sent);
* gauges, read from every live breaker at each scrape:
  ``smoothapi_breaker_state{breaker,state}`` (1 for its state, 0 for the others),
  ``smoothapi_breaker_failures{breaker}``, ``smoothapi_breaker_open_remaining_seconds{breaker}``,
  and for a failure-rate breaker its window now: ``smoothapi_breaker_window_calls{breaker}``,
  ``smoothapi_breaker_window_failures{breaker}`` (slow calls included) and
  ``smoothapi_breaker_window_slow_calls{breaker}``.  The breakers are the live ones (held
  weakly: a breaker its owner dropped is no longer read, and its series go).

With prometheus_client installed, smoothapi registers these with the global
registry by itself at the first event of the process (a retry, a breaker
move...): a process whose calls all succeed never imports prometheus_client.
Call :func:`instrument` at startup to register at once or with your own
registry, :func:`uninstrument` (or set ``SMOOTHAPI_PROMETHEUS=0``) to opt
out.  In ``prometheus_client``'s multiprocess mode (gunicorn workers) the counters
add up across workers, but the breaker gauges are not exported: a scrape there reads
only the shared files, and the gauges are read live from one process's breakers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import _runtime
from . import _base as _telemetry
from ._base import Counter, Gauge, Subscription

__all__ = ["instrument", "uninstrument"]

_lock = threading.Lock()
_active: _Instrumentation | None = None


@_runtime.at_fork_child
def _after_fork_in_child() -> None:
    # Another thread may have held the lock when the process forked (see _runtime).
    global _lock
    _lock = threading.Lock()


# True once the application called instrument() or uninstrument(): from then on
# its choice holds, and the automatic registration at the first event stands aside.
_decided = False


def instrument(registry: CollectorRegistry | None = None) -> None:
    """Register smoothapi's counters and breaker gauges with ``registry`` (default: the
    global one).  Calling it again replaces the previous registration."""
    global _active
    with _lock:
        _stop()
        _active = _Instrumentation(REGISTRY if registry is None else registry)


def uninstrument() -> None:
    """Unregister smoothapi's metrics (counters start again from 0 on the next instrument());
    this also keeps the automatic registration from happening later."""
    with _lock:
        _stop()


def _stop() -> None:
    # Under _lock: the application has chosen, so the automatic registration stands aside.
    global _active, _decided
    _decided = True
    if _active is not None:
        _active.close()
        _active = None


def auto_instrument() -> None:
    """Register with the global registry unless the application already chose.

    Called by smoothapi itself at the first event of the process when
    prometheus_client is installed and ``SMOOTHAPI_PROMETHEUS`` is not ``0``.
    """
    global _active
    with _lock:
        if not _decided and _active is None:
            _active = _Instrumentation(REGISTRY)


def metric_name(measure: Counter | Gauge) -> str:
    """``smoothapi.breaker.open_remaining`` -> ``smoothapi_breaker_open_remaining_seconds``."""
    name = measure.name.replace(".", "_")
    return f"{name}_seconds" if measure.unit == "s" else name


class _Instrumentation:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.counters: dict[Counter, PromCounter] = {}
        try:
            for counter in _telemetry.COUNTERS:
                self.counters[counter] = PromCounter(
                    metric_name(counter), counter.description, counter.labels, registry=registry
                )
            self.collector = _BreakerGauges()
            registry.register(self.collector)
        except ValueError as exc:  # a name already taken in this registry
            for registered in self.counters.values():
                registry.unregister(registered)
            raise ValueError(
                f"smoothapi's Prometheus metrics clash with metrics already in {registry!r}: "
                f"{exc}; pass instrument(registry=...) another registry"
            ) from exc
        self.subscription = Subscription(self._count)

    def _count(self, counter: Counter, values: tuple[str, ...]) -> None:
        self.counters[counter].labels(*values).inc()

    def close(self) -> None:
        self.subscription.close()
        self.registry.unregister(self.collector)
        for counter in self.counters.values():
            self.registry.unregister(counter)


class _BreakerGauges(Collector):
    """Reads every live breaker once per scrape."""

    def describe(self) -> list[Metric]:
        # Names only: registering must not read breakers (a shared one is a round trip).
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for reading in _telemetry.readings():
            for gauge, values, value in _telemetry.gauge_values(reading):
                families[gauge].add_metric(list(values), value)
        yield from families.values()

    @staticmethod
    def _families() -> dict[Gauge, Any]:
        return {
            gauge: GaugeMetricFamily(metric_name(gauge), gauge.description, labels=gauge.labels)
            for gauge in _telemetry.GAUGES
        }
