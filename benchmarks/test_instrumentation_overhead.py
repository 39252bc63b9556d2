"""The happy path with instrumentation off, with metrics on, and with per-attempt spans on.

Contenders share the process, so each one sets the process-wide switches it
needs before its batch (the global hook list and the transports' tracing
slot): a few attribute writes per batch of calls, nothing per call.

* `bare`: the inner transport / the undecorated function;
* `before instrumentation`: smoothapi as of ``BASELINE`` (the last commit
  before the observability extras), extracted with ``git archive`` and
  imported as ``smoothapi_baseline`` - the same code minus the tracing
  check, in the same run;
* `smoothapi (off)`: nothing instrumented, the default;
* `smoothapi + metrics`: `smoothapi.otel` (metrics only) and
  `smoothapi.prometheus` both instrumented - their counters hang off events,
  which a succeeding call never sends, so this should match `off`;
* `smoothapi + spans` (transports): `smoothapi.otel` with traces, an SDK
  TracerProvider without exporter - one span per attempt is real work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import BATCH, NullTransport, extract_commit, paired

import smoothapi.otel
import smoothapi.prometheus
from smoothapi import ResilientTransport, _runtime, events, resilient_api

MOCK_BATCH = 200
#: The last commit before the observability extras (async hooks, smoothapi.otel).
BASELINE = "0953fd2"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """smoothapi as of BASELINE, importable as ``smoothapi_baseline``."""
    return extract_commit(BASELINE, tmp_path_factory.mktemp("baseline"), "smoothapi_baseline")


def _modes() -> dict[str, tuple[list[Any], Any]]:
    """Each mode's global hooks and tracing slot, captured after instrumenting for it."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    modes: dict[str, tuple[list[Any], Any]] = {"off": ([], None)}
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    smoothapi.otel.instrument(meter_provider=meters, traces_enabled=False)
    smoothapi.prometheus.instrument(CollectorRegistry())
    modes["metrics"] = (list(events._global_hooks), _runtime.tracing)
    smoothapi.otel.instrument(tracer_provider=TracerProvider(), metrics_enabled=False)
    modes["spans"] = (list(events._global_hooks), _runtime.tracing)
    smoothapi.otel.uninstrument()
    smoothapi.prometheus.uninstrument()
    return modes


def _switch(mode: tuple[list[Any], Any]) -> None:
    events._global_hooks[:] = mode[0]
    _runtime.tracing = mode[1]


@pytest.fixture
def modes() -> Any:
    saved = (list(events._global_hooks), _runtime.tracing)
    yield _modes()
    _switch(saved)


@pytest.mark.benchmark(group="instrumentation-transport-null")
def test_transport_instrumentation(benchmark: Any, modes: dict[str, Any], baseline: Any) -> None:
    """ResilientTransport(null).handle_request: before, off, metrics on, spans on; bare."""
    request = httpx.Request("GET", "http://upstream.test/x")
    bare = NullTransport()
    before = baseline.ResilientTransport(transport=NullTransport())
    resilient = ResilientTransport(transport=NullTransport())

    def run(transport: httpx.BaseTransport, mode: Any) -> Callable[[], None]:
        def batch() -> None:
            _switch(mode)
            for _ in range(MOCK_BATCH):
                transport.handle_request(request)

        return batch

    contenders = {
        "bare": run(bare, modes["off"]),
        "before instrumentation": run(before, modes["off"]),
        "smoothapi (off)": run(resilient, modes["off"]),
        "smoothapi + metrics": run(resilient, modes["metrics"]),
        "smoothapi + spans": run(resilient, modes["spans"]),
    }
    paired(benchmark, contenders, batch=MOCK_BATCH, rounds=60)


@pytest.mark.benchmark(group="instrumentation-decorator")
def test_decorator_instrumentation(benchmark: Any, modes: dict[str, Any], baseline: Any) -> None:
    """@resilient_api on `def f(x): return x`: before, off, metrics on; bare for scale."""

    def f(x: int) -> int:
        return x

    before = baseline.resilient_api()(f)
    decorated = resilient_api()(f)

    def run(fn: Callable[[int], int], mode: Any) -> Callable[[], None]:
        def batch() -> None:
            _switch(mode)
            for i in range(BATCH):
                fn(i)

        return batch

    contenders = {
        "bare": run(f, modes["off"]),
        "before instrumentation": run(before, modes["off"]),
        "smoothapi (off)": run(decorated, modes["off"]),
        "smoothapi + metrics": run(decorated, modes["metrics"]),
    }
    paired(benchmark, contenders, batch=BATCH, rounds=60)
