"""The happy path's cost of each load-control stage (issue 15), in the same interleaved run.

Contenders of every group (each its own decorated function or transport):

* `bare`: the undecorated function / the inner null transport;
* `passthrough` (decorator groups): the floor for any decorator;
* `before issue 15`: smoothapi as of ``BASELINE`` (the last commit before issue
  15's stages), extracted with ``git archive`` and imported as
  ``smoothapi_before_load_control``, at its defaults;
* `no stage`: this tree at its defaults (``ResilientConfig()``): the direct happy
  path, ``policy.load is None and policy.direct``;
* `engine, no stage`: the default config with every call through the engine
  (``run_sync``/``run_async`` driving ``retry_flow``), which is where any stage
  takes a call: a stage leaves the direct happy path.  For the decorator it is
  ``with_fallback(None)`` (whose calls always go through the engine); for the
  transports the origin's policy with ``direct`` set to False, as a stage sets it;
  so a stage's own cost is its time minus this one's;
* `deadline, no stage`: ``ResilientConfig(deadline=60.0)``: no stage, but a deadline
  also takes every call through the engine, and a transport's attempts then also
  cut the request's timeouts to the time left and bound the body's reads;
* `bulkhead`, `rate_limit`, `throttle`: one stage each, configured so it never
  waits and never sheds (``STAGES``); `all three` together;
* `hedging` (async groups): ``HedgingConfig(delay=1.0)``, which never fires on an
  instant function or a ready response;
* `rate_limit, follow_server=False` (transport groups): the rate limit without
  reading each response's rate-limit headers (``rate_headers.parse_server_limit``).

Issue 15 asks for the happy-path cost of each stage when configured, and that an
unconfigured stage costs nothing (`no stage` vs `before issue 15`).  While the
groups run, a global hook counts events: a call shed, a hedge sent or a retry
would send one, and none may.  ``python benchmarks/test_load_control.py run1.json
[run2.json ...]`` prints the ranges over runs (``report.py`` prints one run's
per-call table, with the ratio to `no stage`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    BATCH,
    AsyncNullTransport,
    NullTransport,
    af,
    apassthrough,
    extract_commit,
    f,
    paired,
    passthrough,
)

from smoothapi import (
    AsyncResilientTransport,
    BulkheadConfig,
    HedgingConfig,
    RateLimitConfig,
    ResilientConfig,
    ResilientTransport,
    ThrottleConfig,
    events,
    resilient_api,
)
from smoothapi.flow import Policy

#: The last commit before issue 15 (its stages came in 6193d6e and 2c4c5c9).
BASELINE = "b69d97a"
BEFORE = "before issue 15"
NO_STAGE = "no stage"
ENGINE = "engine, no stage"
DEADLINE = "deadline, no stage"
ALL = "all three"
HEDGING = "hedging"
UNFOLLOWED = "rate_limit, follow_server=False"

#: Each stage configured for the happy path: a bulkhead that never fills (calls here
#: run one at a time), a rate limit far above any call rate here (150,000 calls a
#: group at most, under the burst), a throttle over a healthy upstream (sheds with
#: probability max(0, (requests - 2 * accepts) / (requests + 1)) = 0).
STAGES: dict[str, dict[str, Any]] = {
    "bulkhead": {"bulkhead": BulkheadConfig(max_concurrent=1_000)},
    "rate_limit": {"rate_limit": RateLimitConfig(rate=1e6, burst=1e6)},
    "throttle": {"throttle": ThrottleConfig()},
}
ROUNDS = 150
MOCK_BATCH = 200
MOCK_ROUNDS = 200
URL = "http://upstream.test/x"


@pytest.fixture(scope="module")
def before(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """smoothapi as of BASELINE, imported beside this tree."""
    return extract_commit(
        BASELINE, tmp_path_factory.mktemp("before-load-control"), "smoothapi_before_load_control"
    )


@pytest.fixture
def no_events() -> Iterator[list[events.Event]]:
    """Every event sent while the test runs; the happy path sends none."""
    seen: list[events.Event] = []
    events.add_hook(seen.append)
    try:
        yield seen
    finally:
        events.remove_hook(seen.append)
    assert seen == [], seen[:5]


def _configs(*, hedging: bool, transport: bool = False) -> dict[str, ResilientConfig]:
    """This tree's contenders: the default config, a deadline alone, each stage, all three;
    ``hedging`` (async); ``transport``: also `engine, no stage`, and the rate limit without
    reading the response's rate-limit headers (``follow_server=False``)."""
    configs = {NO_STAGE: ResilientConfig(), DEADLINE: ResilientConfig(deadline=60.0)}
    for label, options in STAGES.items():
        configs[label] = ResilientConfig(**options)
    every: dict[str, Any] = {}
    for options in STAGES.values():
        every.update(options)
    configs[ALL] = ResilientConfig(**every)
    if transport:
        configs[ENGINE] = ResilientConfig()  # taken off the direct path by _transport_policies
        configs[UNFOLLOWED] = ResilientConfig(
            rate_limit=RateLimitConfig(rate=1e6, burst=1e6, follow_server=False)
        )
    if hedging:
        configs[HEDGING] = ResilientConfig(hedging=HedgingConfig(delay=1.0))
    return configs


def _policy_of(wrapper: Callable[..., Any]) -> Policy:
    """The decorator's policy (a benchmark's look inside: the wrapper closes over it)."""
    policy = inspect.getclosurevars(wrapper).nonlocals["policy"]
    assert isinstance(policy, Policy)
    return policy


def _check_start(policies: dict[str, Policy]) -> None:
    """The default config keeps the direct happy path with no stage; anything else leaves it."""
    for label, policy in policies.items():
        if label == NO_STAGE:
            assert policy.load is None, label
            assert policy.direct, label
            continue
        if label == ENGINE:  # the decorator's with_fallback path never reads `direct`
            assert policy.load is None, label
            continue
        assert not policy.direct, label
        if label in {DEADLINE, HEDGING}:
            assert policy.load is None, label
        else:
            assert policy.load is not None, label


def _check_end(policies: dict[str, Policy]) -> None:
    """Each configured stage was passed and gave back what it took."""
    for label, policy in policies.items():
        load = policy.load
        if label == HEDGING:
            assert policy.hedger is not None, "the hedged path ran"
        if load is None:
            continue
        if load.bulkhead is not None:
            assert load.bulkhead.active == 0, (label, load.bulkhead.active)
            assert not load.bulkhead.queue, label
        if load.throttle is not None:
            requests, accepts = load.throttle.counts(load.now())
            assert requests == accepts > 0, (label, requests, accepts)
        if load.bucket is not None:
            assert load.bucket.tokens >= 1.0, (label, load.bucket.tokens)


def _decorated(before: Any, fn: Any, wrap: Any, *, hedging: bool) -> dict[str, Any]:
    chosen: dict[str, Any] = {
        "bare": fn,
        "passthrough": wrap(fn),
        BEFORE: before.resilient_api()(fn),
    }
    for label, config in _configs(hedging=hedging).items():
        chosen[label] = resilient_api(config)(fn)
    chosen[ENGINE] = resilient_api(ResilientConfig())(fn).with_fallback(None)
    return chosen


def _ours(chosen: dict[str, Any]) -> dict[str, Policy]:
    return {
        label: _policy_of(fn)
        for label, fn in chosen.items()
        if label not in {"bare", "passthrough", BEFORE}
    }


@pytest.mark.benchmark(group="load-control-decorator-sync")
@pytest.mark.usefixtures("no_events")
def test_load_control_decorator_sync(benchmark: Any, before: Any) -> None:
    """@resilient_api on `def f(x): return x` with no stage, a deadline, each stage, all."""
    chosen = _decorated(before, f, passthrough, hedging=False)
    policies = _ours(chosen)
    _check_start(policies)
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in chosen.items():

        def run(fn: Callable[[int], int] = fn) -> None:
            for i in range(BATCH):
                fn(i)

        contenders[name] = run
    paired(benchmark, contenders, batch=BATCH, rounds=ROUNDS)
    _check_end(policies)


@pytest.mark.benchmark(group="load-control-decorator-async")
@pytest.mark.usefixtures("no_events")
def test_load_control_decorator_async(benchmark: Any, before: Any) -> None:
    """The same for an `async def` awaited in one running event loop, plus hedging."""
    chosen = _decorated(before, af, apassthrough, hedging=True)
    policies = _ours(chosen)
    _check_start(policies)
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, fn in chosen.items():

        async def batch(fn: Callable[[int], Awaitable[int]] = fn) -> None:
            for i in range(BATCH):
                await fn(i)

        contenders[name] = functools.partial(_drive, loop, batch)
    try:
        paired(benchmark, contenders, batch=BATCH, rounds=ROUNDS)
    finally:
        loop.close()
    _check_end(policies)


def _drive(loop: asyncio.AbstractEventLoop, batch: Callable[[], Awaitable[None]]) -> None:
    loop.run_until_complete(batch())


def _transport_policies(transports: dict[str, Any]) -> dict[str, Policy]:
    """Each transport's policy for URL's origin; `engine, no stage`'s set off the direct path."""
    url = httpx.URL(URL)
    policies = {label: t._policy(url) for label, t in transports.items()}
    policies[ENGINE].direct = False  # what a stage or a deadline does to it
    return policies


@pytest.mark.benchmark(group="load-control-transport-null-sync")
@pytest.mark.usefixtures("no_events")
def test_load_control_transport_sync(benchmark: Any, before: Any) -> None:
    """ResilientTransport.handle_request over a null inner transport, per stage."""
    request = httpx.Request("GET", URL)
    transports: dict[str, httpx.BaseTransport] = {
        "bare": NullTransport(),
        BEFORE: before.ResilientTransport(transport=NullTransport()),
    }
    ours = {
        label: ResilientTransport(config, transport=NullTransport())
        for label, config in _configs(hedging=False, transport=True).items()
    }
    transports.update(ours)
    policies = _transport_policies(ours)
    _check_start(policies)
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in transports.items():

        def batch(t: httpx.BaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                t.handle_request(request)

        contenders[name] = batch
    paired(benchmark, contenders, batch=MOCK_BATCH, rounds=MOCK_ROUNDS)
    _check_end(policies)


@pytest.mark.benchmark(group="load-control-transport-null-async")
@pytest.mark.usefixtures("no_events")
def test_load_control_transport_async(benchmark: Any, before: Any) -> None:
    """AsyncResilientTransport.handle_async_request over a null inner transport, per stage
    and hedged (a GET may be sent twice)."""
    request = httpx.Request("GET", URL)
    transports: dict[str, httpx.AsyncBaseTransport] = {
        "bare": AsyncNullTransport(),
        BEFORE: before.AsyncResilientTransport(transport=AsyncNullTransport()),
    }
    ours = {
        label: AsyncResilientTransport(config, transport=AsyncNullTransport())
        for label, config in _configs(hedging=True, transport=True).items()
    }
    transports.update(ours)
    policies = _transport_policies(ours)
    _check_start(policies)
    loop = asyncio.new_event_loop()
    contenders: dict[str, Callable[[], object]] = {}
    for name, transport in transports.items():

        async def many(t: httpx.AsyncBaseTransport = transport) -> None:
            for _ in range(MOCK_BATCH):
                await t.handle_async_request(request)

        contenders[name] = functools.partial(_drive, loop, many)
    try:
        paired(benchmark, contenders, batch=MOCK_BATCH, rounds=MOCK_ROUNDS)
    finally:
        loop.close()
    _check_end(policies)


def test_baseline_is_before_the_stages(before: Any) -> None:
    """`before issue 15` runs its own copy of the code, which has no load control."""
    import smoothapi

    assert before.__file__ != smoothapi.__file__
    assert not hasattr(before.ResilientConfig(), "bulkhead")
    assert not ResilientConfig().load_control


GROUPS = {
    "load-control-decorator-sync": "decorator sync",
    "load-control-decorator-async": "decorator async",
    "load-control-transport-null-sync": "ResilientTransport, null transport",
    "load-control-transport-null-async": "AsyncResilientTransport, null transport",
}
COLUMNS = [BEFORE, NO_STAGE, ENGINE, DEADLINE, *STAGES, UNFOLLOWED, ALL, HEDGING]


def _span(values: list[float], spec: str) -> str:
    """``low to high`` of ``values`` formatted with ``spec`` (one figure when they agree)."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low} to {high}"


def ranges(runs: list[dict[str, Any]]) -> str:
    """Markdown: per group and contender, the range over runs of the median per call (µs),
    the time added over `no stage` (µs), the time ÷ `no stage`'s, and the time added over
    `engine, no stage` (µs: the stage's own share, beyond the engine's)."""
    medians = [
        {b["group"]: b["extra_info"]["paired"] for b in run["benchmarks"] if b["group"] in GROUPS}
        for run in runs
    ]
    lines: list[str] = []
    for group, label in GROUPS.items():
        found = [m[group] for m in medians if group in m]
        if not found:
            continue
        lines += [
            f"#### {label} ({len(found)} runs)",
            "",
            "| contender | median per call (µs) | added over no stage (µs) | time ÷ no stage's "
            "| added over engine, no stage (µs) |",
            "|---|---|---|---|---|",
        ]
        for name in ["bare", "passthrough", *COLUMNS]:
            if name not in found[0]:
                continue
            times = [m[name] for m in found]
            added = [m[name] - m[NO_STAGE] for m in found]
            ratio = [m[name] / m[NO_STAGE] for m in found]
            engine = [m[name] - m[ENGINE] for m in found]
            own = name not in {"bare", "passthrough", BEFORE, NO_STAGE}
            beyond = _span(engine, "+.3f") if own else ""
            lines.append(
                f"| {name} | {_span(times, '.3f')} | {_span(added, '+.3f')} "
                f"| {_span(ratio, '.2f')} | {beyond} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(ranges([json.loads(Path(name).read_text()) for name in sys.argv[1:]]))
