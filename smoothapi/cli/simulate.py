"""What your configuration does in an outage, before you deploy it: a fleet simulator.

``python -m smoothapi simulate`` runs the *real* engine - :func:`retry_flow`
with a :class:`~smoothapi.engine.Policy` and a :class:`CircuitBreaker` per
client, built from the same :class:`ResilientConfig` you would deploy - on a
virtual clock.  Nothing sleeps and nothing touches a socket: it is a
discrete-event simulation, a heap of ``(time, seq, call, value)`` events.

* **Traffic**: ``clients`` clients each start calls at ``rate`` calls per
  second - Poisson arrivals (from a seeded :class:`random.Random`) or a fixed
  interval (client ``i`` of ``n`` starting at ``i / (n * rate)``).  A client
  may have several calls in flight.  Each client process has its own breaker,
  or all share one (``shared_breaker``, as with the Redis store).
* **Upstream**: one server that every client calls, following a scripted
  timeline of phases: ``healthy`` (every request succeeds after ``latency``),
  ``down`` (every request fails: a 503 after ``error_latency``, or a timeout
  after ``timeout``), ``degraded`` (each request fails with a given
  probability) and ``slow`` (every request succeeds, after a given latency:
  what only a breaker's ``slow_call_ms`` sees).  Optionally it serves at
  most ``capacity`` times the healthy load in each second of virtual time and
  answers the excess with a quick 503.  A phase may also have a slow tail
  (``tail=0.05:tail_ms=2000``: 5% of the successful answers take 2 s) and a
  quota (``quota=800``: from the 801st request in a second, a quick 429 with
  ``Retry-After: 1``; every answer carries a ``RateLimit`` header saying
  how many requests are left, which a rate limit that follows the server reads).
* **Calls**: each call is a :func:`retry_flow` generator, driven like
  :func:`~smoothapi.engine.run_sync` drives it: ``ACQUIRE`` asks the client's
  breaker, ``ATTEMPT`` sends a request to the upstream and resumes the call
  when the answer comes back, ``Record`` reports to the breaker, ``Emit``
  sends an event to the hooks, ``Sleep`` resumes the call that much later,
  ``Finish`` ends it; an attempt under a deadline (``Within``) is cut short
  by a timeout of the time left, as the transports do.  Outcomes are built
  the way ``@resilient_api`` classifies them.  Whatever the engine and the
  config do - today's options and any added later - the simulation does too.
* **Load control** (:mod:`smoothapi.cli._simulate_load`): ``Gate`` passes the
  config's throttle, rate limit and bulkhead with their pure parts on the
  virtual clock - a wait for a token resumes the call later, the bulkhead is
  a virtual FIFO queue with a timeout event per waiter - and sends back an
  ``Admission`` or the ``LoadShedError``; ``Leave`` gives the permit back and
  lets ``LoadControl.leave`` count for the throttle and follow the server.
  With ``hedging``, an attempt is a race as in the async driver: one more
  request after the hedge delay while the breaker is clean, the budget and
  the stages allow it; the first good answer wins, the losers' requests
  still load the upstream.

Figures per phase: the upstream's load (requests reaching it per second,
divided by the calls made per second: its load when healthy and nobody
retries), the callers' success rate (a fallback is not a success), latency
percentiles (nearest rank, over every call started in the phase, rejected
ones included), fallbacks served, and - for a healthy phase after a bad one -
the *time to recover*: from the moment the upstream is back until the success
rate of the calls started in the last second stays at or above 99% for the
rest of the phase, and the time until every breaker is closed.  Per config:
the breakers' openings counted by the rule that tripped them
(``StateChanged.reason``), and the probes they admitted.  Only where they
apply: the calls a stage shed (by stage), the hedges sent (and won), and for
a timeline with a quota the most requests reaching the upstream in one second
and the 429s.  Calls are attributed to the phase they started in, requests
(hedges and 429s too) to the phase they were sent in.

Every random draw comes from generators seeded with ``seed``, and arrivals
from one of their own, so a run is reproducible and every config compared
side by side sees exactly the same traffic.  While a simulation runs, the
library clock (what breakers and the engine read by default) is the virtual
clock; it is put back afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import math
import random
import re
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from ..breaker import REJECTED, CircuitBreaker, CircuitState
from ..classify import classify_exception
from ..config import ResilientConfig
from ..config_sources import config_from_sources, read_config_file
from ..engine import (
    ACQUIRE,
    ANSWERED,
    ATTEMPT,
    FAILURE,
    SUCCESS,
    Emit,
    Finish,
    Gate,
    Leave,
    Outcome,
    Policy,
    Record,
    Sleep,
    Within,
    retry_flow,
)
from ..errors import ConfigError, ConfigTypeError
from ..events import Hook, emit
from ..mounts.decorator import fallback_function
from ..testing import set_testing
from ._simulate_breakers import BreakerLog, closed_after, describe_rule, format_reasons
from ._simulate_load import (
    PARKED,
    STAGES,
    Events,
    SimResponse,
    Step,
    VirtualLoad,
    describe_stages,
)

__all__ = [
    "DEFAULT_TIMELINE",
    "NO_BREAKER_THRESHOLD",
    "Phase",
    "PhaseStats",
    "Scenario",
    "SimulationResult",
    "UpstreamError",
    "build_config",
    "builtin_configs",
    "compare",
    "configs_from_args",
    "default_timeline",
    "describe_config",
    "format_report",
    "load_config_file",
    "parse_timeline",
    "plot",
    "run_cli",
    "scenario_from_args",
    "simulate",
]

#: The timeline when none is given: healthy, down, healthy - a third of the duration each.
DEFAULT_TIMELINE: Final = ("healthy", "down", "healthy")
#: A failure threshold no outage reaches: "no breaker" in the built-in comparisons.
NO_BREAKER_THRESHOLD: Final = 1_000_000_000
#: Success rate over the last second at or above which a caller sees the upstream recovered.
RECOVERED_RATE: Final = 0.99

_PHASE_KINDS: Final = ("healthy", "down", "degraded", "slow")
_PHASE_FORMS: Final = {
    "degraded": "degraded:SECONDS:FAILURE_RATE",
    "slow": "slow:SECONDS:LATENCY_MS",
}
_OK_VALUE: Final = "ok"
_FALLBACK_VALUE: Final = "fallback"

# What a finished call got.
_SUCCESS: Final = 0
_FALLBACK: Final = 1
_ERROR: Final = 2


class UpstreamError(Exception):
    """What a simulated request raises when the upstream answers with an error status.

    ``response``, when the answer carries headers (a ``Retry-After``, a
    ``RateLimit``): what a rate limit that follows the server reads.
    """

    def __init__(self, status: int, response: SimResponse | None = None) -> None:
        self.status = status
        self.response = response
        super().__init__(f"simulated upstream answered {status}")


# -- the scenario ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """Seconds ``[start, end)`` of the timeline; each request fails with ``failure_rate``.

    ``latency`` (seconds), for a ``slow`` phase: every answer takes that long
    instead of the scenario's latency.  ``tail``: the share of successful
    answers that take ``tail_latency`` seconds instead (a slow tail).
    ``quota``: the upstream answers the requests beyond that many in a
    second (of the virtual clock, from a whole second) with a 429.
    """

    kind: str
    start: float
    end: float
    failure_rate: float
    latency: float | None = None
    tail: float = 0.0
    tail_latency: float | None = None
    quota: int | None = None

    @property
    def healthy(self) -> bool:
        return self.failure_rate == 0.0 and self.latency is None

    @property
    def label(self) -> str:
        if self.kind == "degraded":
            label = f"degraded {self.failure_rate:.0%}"
        elif self.latency is not None:
            label = f"{self.kind} {_ms(self.latency)}"
        else:
            label = self.kind
        extras = []
        if self.tail:
            extras.append(f"{self.tail:.0%} in {_ms(self.tail_latency)}")
        if self.quota is not None:
            extras.append(f"quota {self.quota}/s")
        return f"{label} ({', '.join(extras)})" if extras else label

    @property
    def span(self) -> str:
        return f"{_seconds(self.start)}-{_seconds(self.end)} s"


def _seconds(value: float) -> str:
    """``20``, ``1.67``: at most two decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def parse_timeline(spec: str, duration: float | None = None) -> tuple[Phase, ...]:
    """Parse ``"healthy:20,down:20,healthy:20"`` (seconds) into phases.

    A phase is ``healthy:SECONDS``, ``down:SECONDS``,
    ``degraded:SECONDS:FAILURE_RATE`` (a probability, ``0.3`` or ``30%``) or
    ``slow:SECONDS:LATENCY_MS`` (every request succeeds after that many
    milliseconds, exactly: no spread), followed by any of the options
    ``:tail=SHARE:tail_ms=MS`` (that share of the successful answers takes
    ``MS`` milliseconds) and ``:quota=N`` (at most ``N`` requests a second;
    the rest get a 429 with ``Retry-After``, and every answer tells what is
    left, as a ``RateLimit`` header).
    ``duration``, if given, cuts the timeline short or stretches its last phase.
    """
    phases: list[Phase] = []
    start = 0.0
    for raw in spec.split(","):
        item = raw.strip()
        parts = [p.strip() for p in item.split(":")]
        options = _phase_options(item, [p for p in parts if "=" in p])
        parts = [p for p in parts if "=" not in p]
        kind = parts[0].lower()
        if kind not in _PHASE_KINDS:
            raise ConfigError(
                f"timeline phase {item!r}: the kind must be one of {', '.join(_PHASE_KINDS)}"
            )
        form = _PHASE_FORMS.get(kind, f"{kind}:SECONDS")
        if len(parts) != form.count(":") + 1:
            raise ConfigError(f"timeline phase {item!r} must read {form}")
        seconds = _positive(f"timeline phase {item!r}: the duration", parts[1])
        latency: float | None = None
        rate = {"healthy": 0.0, "down": 1.0, "slow": 0.0}.get(kind)
        if rate is None:
            rate = _probability(f"timeline phase {item!r}: the failure rate", parts[2])
        elif kind == "slow":
            latency = _latency_ms(f"timeline phase {item!r}: the latency", parts[2]) / 1000
        phases.append(Phase(kind, start, start + seconds, rate, latency, **options))
        start += seconds
    if duration is not None:
        duration = _positive("the duration", duration)
        phases = [p for p in phases if p.start < duration]
        last = phases[-1]
        phases[-1] = dataclasses.replace(last, end=duration)
    return tuple(phases)


_PHASE_OPTIONS: Final = ("tail", "tail_ms", "quota")


def _phase_options(item: str, given: list[str]) -> dict[str, Any]:
    """The ``KEY=VALUE`` options of a timeline phase, as :class:`Phase` fields."""
    options: dict[str, Any] = {}
    values: dict[str, str] = {}
    for option in given:
        key, _, value = option.partition("=")
        key = key.strip().lower()
        if key not in _PHASE_OPTIONS:
            raise ConfigError(
                f"timeline phase {item!r}: unknown option {key!r}; the options are "
                "tail=SHARE:tail_ms=MS and quota=N"
            )
        if key in values:
            raise ConfigError(f"timeline phase {item!r}: option {key!r} given twice")
        values[key] = value.strip()
    if ("tail" in values) != ("tail_ms" in values):
        raise ConfigError(
            f"timeline phase {item!r}: a slow tail needs both tail=SHARE and tail_ms=MS"
        )
    if "tail" in values:
        options["tail"] = _probability(f"timeline phase {item!r}: the tail", values["tail"])
        options["tail_latency"] = (
            _latency_ms(f"timeline phase {item!r}: the tail's latency", values["tail_ms"]) / 1000
        )
    if "quota" in values:
        text = values["quota"]
        if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 1:
            raise ConfigError(
                f"timeline phase {item!r}: the quota must be a whole number of requests "
                f"per second >= 1, got {text!r}"
            )
        options["quota"] = int(text)
    return options


def default_timeline(duration: float) -> tuple[Phase, ...]:
    """Healthy, down, healthy: a third of ``duration`` each."""
    third = _positive("the duration", duration) / 3
    # The last phase ends exactly at the duration, whatever the rounding of a third.
    return parse_timeline(",".join(f"{kind}:{third!r}" for kind in DEFAULT_TIMELINE), duration)


def _positive(what: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{what} must be a positive number of seconds, got {value!r}")
    return number


def _latency_ms(what: str, text: str) -> float:
    try:
        ms = float(text)
    except ValueError:
        ms = math.nan
    if not math.isfinite(ms) or ms <= 0:
        raise ConfigError(f"{what} must be a positive number of milliseconds, got {text!r}")
    return ms


def _probability(what: str, text: str) -> float:
    scale = 1.0
    if text.endswith("%"):
        text, scale = text[:-1], 100.0
    try:
        rate = float(text) / scale
    except ValueError:
        raise ConfigError(
            f"{what} must be a probability such as 0.3 or 30%, got {text!r}"
        ) from None
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{what} must be between 0 and 1 (or 0% and 100%), got {text!r}")
    return rate


@dataclass(frozen=True, slots=True)
class Scenario:
    """The traffic and the upstream: everything but the config under test.

    Times are in seconds.  ``latency_spread`` spreads each answer's latency
    uniformly over ``latency * (1 +- spread)`` (0: exactly ``latency``);
    ``failure`` is ``"503"`` or ``"timeout"``; ``retry_after`` puts a
    ``Retry-After`` on every 503; ``capacity`` (a multiple of the healthy
    load, or None for unlimited) caps the requests served per second.
    """

    timeline: tuple[Phase, ...] = ()
    clients: int = 1000
    rate: float = 1.0
    arrivals: str = "poisson"
    shared_breaker: bool = False
    latency: float = 0.05
    latency_spread: float = 0.5
    error_latency: float = 0.005
    failure: str = "503"
    timeout: float = 1.0
    retry_after: float | None = None
    capacity: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.timeline:
            object.__setattr__(self, "timeline", default_timeline(60.0))
        if isinstance(self.clients, bool) or not isinstance(self.clients, int) or self.clients < 1:
            raise ConfigError(f"clients must be a positive int, got {self.clients!r}")
        _positive("rate (calls per second per client)", self.rate)
        if self.arrivals not in ("poisson", "fixed"):
            raise ConfigError(f"arrivals must be 'poisson' or 'fixed', got {self.arrivals!r}")
        if self.failure not in ("503", "timeout"):
            raise ConfigError(f"failure must be '503' or 'timeout', got {self.failure!r}")
        for name in ("latency", "error_latency", "timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if not 0.0 <= self.latency_spread <= 1.0:
            raise ConfigError(
                f"latency_spread must be between 0 and 1, got {self.latency_spread!r}"
            )
        if self.retry_after is not None:
            _positive("retry_after", self.retry_after)
        if self.capacity is not None:
            _positive("capacity", self.capacity)

    @property
    def duration(self) -> float:
        return self.timeline[-1].end

    @property
    def offered(self) -> float:
        """Calls started per second by the whole fleet: the upstream's healthy load."""
        return self.clients * self.rate

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["timeline"] = [_phase_dict(p) for p in self.timeline]
        data["duration"] = self.duration
        return data

    def describe(self) -> list[str]:
        per_client = "its own breaker" if not self.shared_breaker else "one breaker shared by all"
        how = "Poisson arrivals" if self.arrivals == "poisson" else "a fixed interval"
        spread = f" (+-{self.latency_spread:.0%})" if self.latency_spread else ""
        if self.failure == "503":
            failing = f"fails with a 503 in {_ms(self.error_latency)}"
            if self.retry_after is not None:
                failing += f" (Retry-After: {self.retry_after:g})"
        else:
            failing = f"fails by timing out after {_ms(self.timeout)}"
        lines = [
            f"{self.clients} client{'s' if self.clients != 1 else ''} x {self.rate:g} call/s "
            f"each ({how}), each client with "
            f"{per_client}; {self.duration:g} s of virtual time, seed {self.seed}",
            "upstream: " + " | ".join(f"{p.label} {p.span}" for p in self.timeline),
            f"  answers in {_ms(self.latency)}{spread}, {failing}",
        ]
        if self.capacity is not None:
            lines.append(
                f"  serves at most {self.capacity:g}x the healthy load per second "
                f"({self.capacity * self.offered:g}/s); the excess gets a 503 in "
                f"{_ms(self.error_latency)}"
            )
        if self.quotas:
            lines.append(
                "  with a quota: the requests beyond it in a second get a 429 in "
                f"{_ms(self.error_latency)} (Retry-After: 1); every answer says what is left "
                "(RateLimit: r=LEFT;t=1)"
            )
        return lines

    @property
    def quotas(self) -> bool:
        """True when a phase of the timeline has a quota."""
        return any(p.quota is not None for p in self.timeline)


def _phase_dict(phase: Phase) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": phase.kind,
        "start": phase.start,
        "end": phase.end,
        "failure_rate": phase.failure_rate,
        "latency": phase.latency,
    }
    # The options only when given, so that a timeline without them reads as before.
    if phase.tail:
        data["tail"] = phase.tail
        data["tail_latency"] = phase.tail_latency
    if phase.quota is not None:
        data["quota"] = phase.quota
    return data


# -- configs ----------------------------------------------------------------------------------


def build_config(spec: Mapping[str, Any], where: str = "config") -> ResilientConfig:
    """A :class:`ResilientConfig` from nested settings, as read from TOML or JSON.

    ``{"backoff": {"max_retries": 2}, "circuit_breaker": {"cooldown_ms": 5000},
    "fallback": true}``: a table builds the dataclass its field holds, so any
    option the config gains is settable without changes here.  ``fallback =
    true`` serves the string ``"fallback"``; ``false`` means none.  Errors
    start with ``where`` and the setting's path.
    """
    return _config([(where, spec)])


def _config(sources: Sequence[tuple[str, Mapping[str, Any]]]) -> ResilientConfig:
    """The config that ``(where, settings)`` pairs give, each over those before it.

    Built by the library's loader (:func:`smoothapi.config_sources.config_from_sources`),
    so a setting is read and its errors worded as ``load_config`` does; the
    simulator reads no environment variable, so that a run is reproducible.
    ``fallback`` is the simulator's own: ``true`` serves ``"fallback"``,
    ``false`` none, any other value is served as it is.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    code: dict[str, Any] = {}
    for where, spec in sources:
        settings = dict(spec)
        if "fallback" in settings:
            value = settings.pop("fallback")
            if isinstance(value, bool):
                value = _FALLBACK_VALUE if value else None
            code["fallback"] = value
        layers.append((where, settings))
    return config_from_sources(layers, code=code)


def load_config_file(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(name, settings)`` from a ``.toml`` or ``.json`` file (the loader's reader).

    The name is the file's ``name`` setting, else its stem.
    """
    data = read_config_file(path)
    name = data.pop("name", Path(path).stem)
    return str(name), data


def builtin_configs(config: ResilientConfig) -> list[tuple[str, ResilientConfig]]:
    """The comparisons ``--compare`` adds: the same config without its breaker, and bare calls.

    "retries without breaker" keeps every setting but a failure threshold no
    outage reaches; "no retries" is one attempt per call, no breaker either -
    what a plain client does.
    """
    # Every trip rule off: the consecutive one out of reach, the rate and slow-call rules unset.
    no_breaker = dataclasses.replace(
        config.circuit_breaker,
        failure_threshold=NO_BREAKER_THRESHOLD,
        failure_rate=None,
        slow_call_ms=None,
    )
    return [
        ("retries without breaker", dataclasses.replace(config, circuit_breaker=no_breaker)),
        (
            "no retries",
            dataclasses.replace(
                config,
                circuit_breaker=no_breaker,
                backoff=dataclasses.replace(config.backoff, max_retries=0),
            ),
        ),
    ]


def describe_config(config: ResilientConfig) -> str:
    """One line: retries, breaker, fallback, and any other setting that is not the default."""
    backoff = config.backoff
    cb = config.circuit_breaker
    if backoff.max_retries == 0:
        parts = ["no retries"]
    else:
        delays = f"{backoff.base_delay:g}-{backoff.max_delay:g} s"
        jitter = "no" if backoff.jitter == "none" else backoff.jitter
        parts = [f"{backoff.max_retries} retries (backoff {delays}, {jitter} jitter)"]
    if cb.failure_threshold >= NO_BREAKER_THRESHOLD and cb.failure_rate is None:
        parts.append("no breaker")
    else:
        parts += describe_rule(cb)
    parts.append("no fallback" if config.fallback is None else "fallback")
    known = {"base_delay", "max_delay", "max_retries", "jitter", "failure_threshold", "cooldown_ms"}
    known |= {"failure_rate", "window_ms", "minimum_calls", "slow_call_ms", "half_open_calls"}
    for section in (backoff, cb):
        parts += _non_defaults(section, known)
    skip = {"backoff", "circuit_breaker", "fallback", "hooks"}
    parts += _non_defaults(config, skip | {"bulkhead", "rate_limit", "hedging", "throttle"})
    parts += describe_stages(config)
    return ", ".join(parts)


def _non_defaults(obj: Any, skip: set[str]) -> list[str]:
    try:
        default = type(obj)()
    except Exception:
        return []
    return [
        f"{f.name}={getattr(obj, f.name)!r}"
        for f in dataclasses.fields(obj)
        if f.name not in skip and f.compare and getattr(obj, f.name) != getattr(default, f.name)
    ]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Hooks are code, not settings (and their reprs hold addresses).
        return {
            f.name: _jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "hooks"
        }
    if isinstance(value, (str, int, float, bool)) or value is None:
        if isinstance(value, str) and hasattr(value, "value"):  # a str Enum
            return value.value
        return value
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


# -- the simulation -----------------------------------------------------------------------------


class _VirtualClock:
    """The clock every breaker reads: the time of the event being processed."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Call:
    __slots__ = ("breaker", "flow", "index", "stages", "start")

    def __init__(
        self,
        flow: Any,
        breaker: CircuitBreaker,
        index: int,
        start: float,
        stages: VirtualLoad | None = None,
    ) -> None:
        self.flow = flow
        self.breaker = breaker
        self.index = index
        self.start = start
        self.stages = stages  # its policy's load control on the virtual clock, if any


class _Upstream:
    """The shared server: decides each request's outcome and when its answer comes back.

    ``limited`` collects the sending time of every request it answered with a
    429 (over a phase's quota).
    """

    def __init__(self, scenario: Scenario, config: ResilientConfig) -> None:
        self._phases = scenario.timeline
        self._index = 0
        self._end = self._phases[0].end
        self._fail_rate = self._phases[0].failure_rate
        self._slow = self._phases[0].latency
        self._tail = self._phases[0].tail
        self._tail_latency = self._phases[0].tail_latency
        self._quota = self._phases[0].quota
        self._rng = random.Random(f"{scenario.seed}/upstream")
        self._latency = scenario.latency
        self._spread = scenario.latency_spread
        retry_on = frozenset(config.retry_on)
        response = None
        if scenario.retry_after is not None:
            # What a rate limit that follows the server reads (Retry-After on a 503).
            wait = f"{scenario.retry_after:.6f}".rstrip("0").rstrip(".")
            response = SimResponse(503, {"Retry-After": wait})
        status503 = Outcome(
            FAILURE if 503 in retry_on else ANSWERED,
            error=UpstreamError(503, response),
            status=503,
            retry_after=scenario.retry_after,
        )
        self._ok = Outcome(SUCCESS, _OK_VALUE)
        # An attempt cut short by the call's deadline: a timeout, as the decorator classifies it.
        self.cut_short = classify_exception(TimeoutError("deadline reached"), retry_on)
        self._overloaded = status503
        if scenario.failure == "timeout":
            # Classified by the decorator's own table: a timeout is a transport failure.
            self._failed = classify_exception(TimeoutError("simulated upstream timeout"), retry_on)
            self._fail_latency = scenario.timeout
            self._fail_spread = 0.0
        else:
            self._failed = status503
            self._fail_latency = scenario.error_latency
            self._fail_spread = scenario.latency_spread
        self._error_latency = scenario.error_latency
        self._capacity = None if scenario.capacity is None else scenario.capacity * scenario.offered
        self._second = -1
        self._served = 0
        # Over the quota: a 429 that says when to come back, as a rate-limiting server does.
        self._limited = Outcome(
            FAILURE if 429 in retry_on else ANSWERED,
            error=UpstreamError(
                429, SimResponse(429, {"Retry-After": "1", "RateLimit": '"default";r=0;t=1'})
            ),
            status=429,
            retry_after=1.0,
        )
        self._quota_second = -1
        self._admitted = 0  # requests within the quota in the current second
        self.limited: list[float] = []

    def request(self, now: float) -> tuple[Outcome, float]:
        """One request sent at ``now``: its outcome and its latency."""
        while now >= self._end and self._index + 1 < len(self._phases):
            self._index += 1
            phase = self._phases[self._index]
            self._end = phase.end
            self._fail_rate = phase.failure_rate
            self._slow = phase.latency
            self._tail = phase.tail
            self._tail_latency = phase.tail_latency
            self._quota = phase.quota
        if self._quota is not None or self._tail:
            return self._request_more(now)
        return self._answer(now)

    def _answer(self, now: float) -> tuple[Outcome, float]:
        """The capacity, then the phase: the answer to a request that reached the server."""
        rng = self._rng
        if self._capacity is not None:
            second = int(now)
            if second != self._second:
                self._second = second
                self._served = 0
            self._served += 1
            if self._served > self._capacity:
                return self._overloaded, self._error_latency
        if self._slow is not None:  # a slow phase: every answer a success, late
            return self._ok, self._slow
        rate = self._fail_rate
        if rate == 0.0 or (rate < 1.0 and rng.random() >= rate):
            spread = self._spread
            if spread:
                return self._ok, self._latency * (1.0 + spread * (2.0 * rng.random() - 1.0))
            return self._ok, self._latency
        spread = self._fail_spread
        if spread:
            return self._failed, self._fail_latency * (1.0 + spread * (2.0 * rng.random() - 1.0))
        return self._failed, self._fail_latency

    def _request_more(self, now: float) -> tuple[Outcome, float]:
        """:meth:`request` in a phase with a quota or a slow tail (the same draws, then the tail's).

        The quota is checked first, as a rate-limiting front does: a request
        over it gets its 429 without reaching the capacity.
        """
        quota = self._quota
        if quota is not None:
            second = int(now)
            if second != self._quota_second:
                self._quota_second = second
                self._admitted = 0
            if self._admitted >= quota:
                self.limited.append(now)
                return self._limited, self._error_latency
            self._admitted += 1
        outcome, latency = self._answer(now)
        if outcome is not self._ok:
            return outcome, latency
        if self._tail and self._rng.random() < self._tail:
            assert self._tail_latency is not None
            latency = self._tail_latency
        if quota is not None:
            left = quota - self._admitted
            headers = {"RateLimit": f'"default";r={left};t=1'}
            outcome = Outcome(SUCCESS, SimResponse(200, headers))
        return outcome, latency


def _arrivals(scenario: Scenario) -> list[tuple[float, int]]:
    """Every call's start time and client, sorted: the same for every config compared."""
    duration = scenario.duration
    rate = scenario.rate
    clients = scenario.clients
    pairs: list[tuple[float, int]] = []
    append = pairs.append
    if scenario.arrivals == "fixed":
        interval = 1.0 / rate
        for client in range(clients):
            offset = interval * client / clients
            k = 0
            while (t := offset + k * interval) < duration:
                append((t, client))
                k += 1
    else:
        expovariate = random.Random(f"{scenario.seed}/arrivals").expovariate
        for client in range(clients):
            t = expovariate(rate)
            while t < duration:
                append((t, client))
                t += expovariate(rate)
    pairs.sort()
    return pairs


def _classify_error(exc: BaseException) -> Outcome:  # pragma: no cover - drivers only
    return Outcome(FAILURE, error=exc)


def _classify_value(value: object) -> Outcome:  # pragma: no cover - drivers only
    return Outcome(SUCCESS, value)


def _make_policy(
    config: ResilientConfig, breaker: CircuitBreaker, rand: Callable[[], float]
) -> Policy:
    """The policy ``@resilient_api`` builds for a breaker of its own (the seeded jitter aside).

    Like the decorator's, it has a retry budget of its own when the config asks for one, so
    each client's breaker has one budget, and a shared breaker (one policy) shares it.
    """
    return Policy(
        config,
        breaker,
        classify_error=_classify_error,
        classify_value=_classify_value,
        rand=rand,
    )


def simulate(  # noqa: PLR0915 - the event loop reads best in one place
    config: ResilientConfig,
    scenario: Scenario | None = None,
    *,
    name: str = "config",
) -> SimulationResult:
    """Run ``config`` through ``scenario`` on a virtual clock; every call is driven to its end.

    Arrivals stop at the end of the timeline; calls still in flight then run
    on (the upstream stays in its last phase) so that every call has a result.
    """
    if scenario is None:
        scenario = Scenario()
    if not isinstance(config, ResilientConfig):
        raise ConfigTypeError(f"simulate() needs a ResilientConfig, got {config!r}")
    wall = time.perf_counter()
    clock = _VirtualClock()
    arrivals = _arrivals(scenario)
    upstream = _Upstream(scenario, config)
    rand = random.Random(f"{scenario.seed}/jitter").random
    breaker_rand = random.Random(f"{scenario.seed}/breaker").random
    fallback = fallback_function(config.fallback)
    log = BreakerLog()
    hooks: tuple[Hook, ...] = (*config.hooks, log)
    n_breakers = 1 if scenario.shared_breaker else scenario.clients
    policies = [
        _make_policy(
            config,
            CircuitBreaker(
                config.circuit_breaker,
                name=f"client-{i}",
                clock=clock,
                hooks=hooks,
                rand=breaker_rand,  # the adaptive open time's jitter
            ),
            rand,
        )
        for i in range(n_breakers)
    ]

    n_calls = len(arrivals)
    latencies = [0.0] * n_calls
    kinds = bytearray(n_calls)
    attempted = bytearray(n_calls)  # 1 when the call reached the upstream at least once
    attempt_times: list[float] = []
    add_attempt = attempt_times.append
    request = upstream.request
    heap: list[tuple[float, int, _Call, Any]] = []
    push = heapq.heappush
    pop = heapq.heappop
    # One sequence for every event, the stages' included: ties keep their order of scheduling.
    counter = itertools.count(1)
    next_arrival = 0
    next_time = arrivals[0][0] if arrivals else math.inf
    shared = scenario.shared_breaker

    def send_request(now: float, bound: float | None) -> tuple[Outcome, float]:
        # One request of a hedged attempt, bounded as Within's (below) when there is a deadline.
        outcome, latency = request(now)
        add_attempt(now)
        if bound is not None and latency > bound:
            return upstream.cut_short, bound
        return outcome, latency

    events = Events(heap, counter, send_request, n_calls)
    # The load-control stages and hedging, on the virtual clock: one per policy.
    stages = [VirtualLoad(p, events) for p in policies] if config.load_control else None
    racing = config.hedging is not None

    with set_testing(False, clock=clock):
        while True:
            call: _Call
            value: Any
            if heap and heap[0][0] <= next_time:
                now, _, call, value = pop(heap)
                if isinstance(value, Step):  # a stage's event: a reply, or the call waits on
                    clock.now = now
                    value = value.run(now)
                    if value is PARKED:
                        continue
            elif next_arrival < n_calls:
                now, client = arrivals[next_arrival]
                k = 0 if shared else client
                policy = policies[k]
                call = _Call(
                    retry_flow(policy, fallback),
                    policy.breaker,
                    next_arrival,
                    now,
                    None if stages is None else stages[k],
                )
                value = None
                next_arrival += 1
                next_time = arrivals[next_arrival][0] if next_arrival < n_calls else math.inf
            else:
                break
            clock.now = now
            send = call.flow.send
            breaker = call.breaker
            decision = send(value)
            while True:
                if decision is ACQUIRE:
                    reply = breaker.admit()
                    if reply[0] & 1 and reply[0] != REJECTED:  # odd: admitted as a probe
                        log.probe()
                    decision = send(reply)
                elif isinstance(decision, Emit):
                    emit(decision.event, decision.hooks)
                    decision = send(None)
                elif decision is ATTEMPT:
                    if racing:  # hedged: the race sends the outcome when it ends
                        call.stages.race(call, None, now)  # type: ignore[union-attr]
                        break
                    outcome, latency = request(now)
                    add_attempt(now)
                    push(heap, (now + latency, next(counter), call, outcome))
                    break
                elif isinstance(decision, Record):
                    report = getattr(breaker, decision.method)
                    options = decision.options
                    decision = send(
                        report(decision.ticket, **options) if options else report(decision.ticket)
                    )
                elif isinstance(decision, Within):
                    if racing:
                        call.stages.race(call, decision.seconds, now)  # type: ignore[union-attr]
                        break
                    # An attempt with a deadline: bounded the way the transports bound it, by
                    # a timeout of the time left.
                    outcome, latency = request(now)
                    add_attempt(now)
                    if latency > decision.seconds:
                        outcome, latency = upstream.cut_short, decision.seconds
                    push(heap, (now + latency, next(counter), call, outcome))
                    break
                elif isinstance(decision, Sleep):
                    push(heap, (now + decision.seconds, next(counter), call, None))
                    break
                elif isinstance(decision, Finish):
                    index = call.index
                    latencies[index] = now - call.start
                    if decision.fallback:
                        kinds[index] = _FALLBACK
                    elif decision.error is not None:
                        kinds[index] = _ERROR
                    if decision.attempts:
                        attempted[index] = 1
                    call.flow.close()
                    break
                elif isinstance(decision, Gate):
                    # The stages, as LoadControl.enter_sync passes them, with virtual waits.
                    reply = call.stages.gate(call, decision.left, now)  # type: ignore[union-attr]
                    if reply is PARKED:
                        break
                    decision = send(reply)
                elif isinstance(decision, Leave):
                    call.stages.leave(decision)  # type: ignore[union-attr]
                    decision = send(None)
                else:
                    raise RuntimeError(
                        f"smoothapi.cli.simulate does not know the engine decision {decision!r}"
                    )

    shed = events.shed
    return SimulationResult(
        name=name,
        config=config,
        scenario=scenario,
        starts=[t for t, _ in arrivals],
        latencies=latencies,
        kinds=bytes(kinds),
        attempted=bytes(attempted),
        attempt_times=attempt_times,
        total_attempts=len(attempt_times),
        phase_attempts=_per_phase(attempt_times, scenario.timeline),
        breaker_opened=log.opened,
        probes=log.probe_rounds,
        probe_calls=log.probe_calls,
        trip_reasons=dict(log.reasons),
        transitions=log.transitions,
        wall_seconds=time.perf_counter() - wall,
        shed=bytes(shed),
        shed_by_stage={stage: shed.count(code) for code, stage in enumerate(STAGES, 1)},
        hedge_times=events.hedge_times,
        hedges_won=events.hedges_won,
        limited_times=upstream.limited,
    )


def compare(
    configs: Sequence[tuple[str, ResilientConfig]], scenario: Scenario | None = None
) -> list[SimulationResult]:
    """:func:`simulate` each named config on the same traffic."""
    return [simulate(config, scenario, name=name) for name, config in configs]


def _per_phase(times: Sequence[float], phases: Sequence[Phase]) -> list[int]:
    # `times` is in sending order, hence sorted.
    return [bisect_left(times, p.end) - bisect_left(times, p.start) for p in phases]


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """The figures of one phase for one config.  Latencies are in seconds."""

    phase: Phase
    calls: int
    attempts: int
    load: float
    successes: int
    fallbacks: int
    errors: int
    rejected: int
    p50: float | None
    p95: float | None
    p99: float | None
    #: True for a healthy phase that follows a failing one: the upstream has just come back.
    after_outage: bool
    #: Seconds from the phase's start until callers see the upstream recovered; None when
    #: they do not within the phase (or ``after_outage`` is False).
    time_to_recover: float | None
    #: Seconds from the phase's start until every breaker is CLOSED for the rest of the
    #: phase; None when one is not by its end (or ``after_outage`` is False).
    breakers_closed: float | None = None
    #: Calls a load-control stage shed (None: the config has no such stage).
    shed: int | None = None
    #: Hedges sent in the phase (None: the config does not hedge).
    hedges: int | None = None
    #: Requests answered with a 429, over a quota (None: no phase has a quota).
    rate_limited: int | None = None
    #: The most requests reaching the upstream in one second of the phase (None: as above).
    peak: int | None = None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.calls if self.calls else None

    def to_dict(self) -> dict[str, Any]:
        p = self.phase
        return {
            "phase": p.label,
            "kind": p.kind,
            "start": p.start,
            "end": p.end,
            "failure_rate": p.failure_rate,
            "calls": self.calls,
            "attempts": self.attempts,
            "load": _round(self.load),
            "successes": self.successes,
            "success_rate": _round(self.success_rate),
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "rejected": self.rejected,
            "latency": {"p50": _round(self.p50), "p95": _round(self.p95), "p99": _round(self.p99)},
            "after_outage": self.after_outage,
            "time_to_recover": _round(self.time_to_recover),
            "breakers_closed": _round(self.breakers_closed),
        } | {
            # Only what applies, so that a run without stages or quotas reads as before.
            key: value
            for key, value in (
                ("shed", self.shed),
                ("hedges", self.hedges),
                ("rate_limited", self.rate_limited),
                ("peak_per_second", self.peak),
            )
            if value is not None
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """One config's run: raw per-call data and the figures derived from it."""

    name: str
    config: ResilientConfig
    scenario: Scenario
    starts: list[float]  # every call's start, sorted
    latencies: list[float]  # by call, in start order
    kinds: bytes  # 0 success, 1 fallback, 2 error
    attempted: bytes  # 1 when the call sent at least one request
    attempt_times: list[float]  # every request's sending time, sorted
    total_attempts: int
    phase_attempts: list[int]
    breaker_opened: int  # transitions to OPEN, all breakers together
    probes: int  # transitions to HALF_OPEN
    probe_calls: int  # calls admitted as probes (up to half_open_calls per HALF_OPEN)
    trip_reasons: dict[str, int]  # openings by the rule that tripped (StateChanged.reason)
    transitions: list[tuple[float, str, CircuitState]]  # moves to and from CLOSED
    wall_seconds: float
    shed: bytes = b""  # by call: 0, or the code of the stage that shed it (STAGES' index + 1)
    shed_by_stage: dict[str, int] = dataclasses.field(default_factory=dict)
    hedge_times: list[float] = dataclasses.field(default_factory=list)  # each hedge's sending
    hedges_won: int = 0  # hedged attempts whose winner was a hedge
    limited_times: list[float] = dataclasses.field(default_factory=list)  # each 429's request

    @property
    def calls(self) -> int:
        return len(self.starts)

    def phases(self) -> list[PhaseStats]:
        scenario = self.scenario
        offered = scenario.offered
        stats: list[PhaseStats] = []
        previous_healthy = True
        config = self.config
        gated = _gated(config)
        hedging = config.hedging is not None
        quotas = scenario.quotas
        for phase, attempts in zip(scenario.timeline, self.phase_attempts, strict=True):
            lo = bisect_left(self.starts, phase.start)
            hi = bisect_left(self.starts, phase.end)
            kinds = self.kinds[lo:hi]
            lat = sorted(self.latencies[lo:hi])
            after_outage = phase.healthy and not previous_healthy
            recover: float | None = None
            closed: float | None = None
            if after_outage:
                recover_at = _recovered_at(self.starts[lo:hi], kinds, phase.start, phase.end)
                recover = None if recover_at is None else recover_at - phase.start
                closed = closed_after(self.transitions, phase.start, phase.end)
            previous_healthy = phase.healthy
            calls = hi - lo
            extra: dict[str, int] = {}
            if gated:
                extra["shed"] = calls - self.shed[lo:hi].count(0)
            if hedging:
                extra["hedges"] = _count_within(self.hedge_times, phase)
            if quotas:
                extra["rate_limited"] = _count_within(self.limited_times, phase)
                extra["peak"] = _peak(self.attempt_times, phase)
            stats.append(
                PhaseStats(
                    phase=phase,
                    calls=calls,
                    attempts=attempts,
                    load=attempts / (phase.end - phase.start) / offered,
                    successes=kinds.count(_SUCCESS),
                    fallbacks=kinds.count(_FALLBACK),
                    errors=kinds.count(_ERROR),
                    rejected=calls - self.attempted[lo:hi].count(1),
                    p50=_percentile(lat, 50),
                    p95=_percentile(lat, 95),
                    p99=_percentile(lat, 99),
                    after_outage=after_outage,
                    time_to_recover=recover,
                    breakers_closed=closed,
                    **extra,
                )
            )
        return stats

    def series(self, width: float) -> tuple[list[float], list[float], list[float | None]]:
        """``(bin starts, load, success rate)`` over the timeline in bins of ``width`` seconds."""
        duration = self.scenario.duration
        n = max(1, math.ceil(duration / width - 1e-9))
        requests = [0] * n
        calls = [0] * n
        ok = [0] * n
        for t in self.attempt_times:
            b = int(t / width)
            if b < n:
                requests[b] += 1
        for t, kind in zip(self.starts, self.kinds, strict=True):
            b = min(int(t / width), n - 1)
            calls[b] += 1
            if kind == _SUCCESS:
                ok[b] += 1
        offered = self.scenario.offered
        times = [i * width for i in range(n)]
        spans = [min(width, duration - i * width) for i in range(n)]
        load = [r / s / offered for r, s in zip(requests, spans, strict=True)]
        rate = [o / c if c else None for o, c in zip(ok, calls, strict=True)]
        return times, load, rate

    def to_dict(self) -> dict[str, Any]:
        times, load, rate = self.series(1.0)
        data = {
            "name": self.name,
            "description": describe_config(self.config),
            "config": _jsonable(self.config),
            "calls": self.calls,
            "attempts": self.total_attempts,
            "breaker_opened": self.breaker_opened,
            "trip_reasons": self.trip_reasons,
            "probes": self.probes,
            "probe_calls": self.probe_calls,
            "phases": [p.to_dict() for p in self.phases()],
            "per_second": {
                "start": times,
                "load": [_round(v) for v in load],
                "success_rate": [_round(v) for v in rate],
            },
        }
        # Only what applies, so that a config without stages reads as before.
        if _gated(self.config):
            data["shed"] = {
                stage: self.shed_by_stage.get(stage, 0)
                for stage in STAGES
                if getattr(self.config, stage) is not None
            }
        if self.config.hedging is not None:
            data["hedges"] = {"sent": len(self.hedge_times), "won": self.hedges_won}
        if self.scenario.quotas:
            data["rate_limited"] = len(self.limited_times)
        return data


def _gated(config: ResilientConfig) -> bool:
    """True when a call passes a load-control stage before its attempts (and may be shed)."""
    return not (config.throttle is None and config.rate_limit is None and config.bulkhead is None)


def _count_within(times: Sequence[float], phase: Phase) -> int:
    """How many of ``times`` (sorted) fall in the phase."""
    return bisect_left(times, phase.end) - bisect_left(times, phase.start)


def _peak(times: Sequence[float], phase: Phase) -> int:
    """The most of ``times`` (sorted) in one second ``[n, n + 1)`` of the phase."""
    lo, hi = bisect_left(times, phase.start), bisect_left(times, phase.end)
    seconds = Counter(int(t) for t in times[lo:hi])
    return max(seconds.values(), default=0)


def _percentile(ordered: Sequence[float], pct: float) -> float | None:
    """Nearest rank: the smallest value with at least ``pct``% of the values at or below it."""
    if not ordered:
        return None
    rank = math.ceil(pct / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


def _recovered_at(
    starts: Sequence[float], kinds: bytes, phase_start: float, phase_end: float
) -> float | None:
    """The first moment from which every trailing 1 s window's success rate stays >= 99%.

    The window at ``t`` holds the calls started in ``(t - 1, t]`` (and in this
    phase); an empty window is fine.  The rate only changes when a call enters
    (at its start) or leaves (a second later), so those are the moments to check.
    Returns None when the rate is still below 99% at the end of the phase.
    """
    changes: list[tuple[float, int, int]] = []
    for t, kind in zip(starts, kinds, strict=True):
        ok = 1 if kind == _SUCCESS else 0
        changes.append((t, 1, ok))
        if t + 1.0 < phase_end:
            changes.append((t + 1.0, -1, -ok))
    changes.sort()
    recovered: float | None = phase_start
    total = good = 0
    i = 0
    while i < len(changes):
        moment = changes[i][0]
        while i < len(changes) and changes[i][0] == moment:
            total += changes[i][1]
            good += changes[i][2]
            i += 1
        if total and good < RECOVERED_RATE * total - 1e-9:
            recovered = None
        elif recovered is None:
            recovered = moment
    return recovered


# -- the report ----------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def format_report(results: Sequence[SimulationResult], *, wall: bool = True) -> str:
    """The per-phase table (one row per phase and config) with its legend."""
    if not results:
        return ""
    scenario = results[0].scenario
    lines = [f"smoothapi simulate: {scenario.describe()[0]}", *scenario.describe()[1:]]
    lines.append(
        f"load = requests reaching the upstream per second / {scenario.offered:g} per second "
        "(the calls made: its load when healthy)"
    )
    lines.append("")
    per_result = [r.phases() for r in results]
    # The load-control figures only where they apply: without stages or quotas, the table
    # is what it always was.
    shown = {
        name: any(getattr(p, name) is not None for phases in per_result for p in phases)
        for name in ("peak", "rate_limited", "shed", "hedges")
    }
    header = ["phase", "config", "calls", "load"]
    header += ["max/s", "429s"] if shown["peak"] else []
    header += ["success", "fallbacks"]
    header += ["shed"] if shown["shed"] else []
    header += ["hedges"] if shown["hedges"] else []
    header += ["p50", "p95", "p99", "recovered"]
    rows: list[list[str]] = []
    for i, phase in enumerate(scenario.timeline):
        for j, result in enumerate(results):
            stats = per_result[j][i]
            recover = stats.time_to_recover
            if not stats.after_outage:
                recovered = "-"
            elif recover is None:
                recovered = "not yet"
            else:
                recovered = f"after {recover:.2f} s"
            row = [
                f"{phase.label} {phase.span}" if j == 0 else "",
                result.name,
                str(stats.calls),
                f"{stats.load:.2f}x",
            ]
            if shown["peak"]:
                row += [_count(stats.peak), _count(stats.rate_limited)]
            row += [_pct(stats.success_rate), str(stats.fallbacks)]
            if shown["shed"]:
                row.append(_count(stats.shed))
            if shown["hedges"]:
                row.append(_count(stats.hedges))
            row += [_ms(stats.p50), _ms(stats.p95), _ms(stats.p99), recovered]
            rows.append(row)
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    left = {0, 1, len(header) - 1}

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(widths[k]) if k in left else c.rjust(widths[k]) for k, c in enumerate(cells)
        ).rstrip()

    lines.append(fmt(header))
    lines.append(fmt(["-" * w for w in widths]))
    for k, row in enumerate(rows):
        if k and row[0] and len(results) > 1:
            lines.append("")
        lines.append(fmt(row))
    lines.append("")
    lines.append(
        "recovered: time from the upstream's return until the success rate of the calls "
        "started in the last second stays >= 99%"
    )
    lines += [_LEGEND[name] for name, on in shown.items() if on and name in _LEGEND]
    lines.append("configs:")
    for result, phases in zip(results, per_result, strict=True):
        closed = [
            "not yet"
            if p.breakers_closed is None
            else f"{p.breakers_closed:.2f} s after its return"
            for p in phases
            if p.after_outage
        ]
        lines.append(
            f"  {result.name}: {describe_config(result.config)}; "
            f"{result.total_attempts} requests for {result.calls} calls, "
            f"breakers opened {result.breaker_opened} times"
            + (f" ({format_reasons(result.trip_reasons)})" if result.trip_reasons else "")
            + f", {result.probe_calls} probes"
            + (f"; every breaker closed: {' / '.join(closed)}" if closed else "")
            + _load_figures(result)
        )
    if wall:
        total = sum(r.wall_seconds for r in results)
        lines.append(f"simulated in {total:.2f} s of wall time")
    return "\n".join(lines)


_LEGEND: Final = {
    "peak": "max/s: the most requests reaching the upstream in one second of the phase; "
    "429s: requests it answered over its quota",
    "shed": "shed: calls a load-control stage refused before sending a request (by stage below)",
    "hedges": "hedges: requests sent beside an attempt that had no answer yet",
}


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _load_figures(result: SimulationResult) -> str:
    """``"; shed by throttle 12, rate limit 0, bulkhead 3; 40 hedges sent, 31 won"``, or ""."""
    config = result.config
    text = ""
    if _gated(config):
        stages = ", ".join(
            f"{stage.replace('_', ' ')} {result.shed_by_stage.get(stage, 0)}"
            for stage in STAGES
            if getattr(config, stage) is not None
        )
        text += f"; shed by {stages}"
    if config.hedging is not None:
        text += f"; {len(result.hedge_times)} hedges sent, {result.hedges_won} won"
    return text


def plot(results: Sequence[SimulationResult], path: str | Path) -> None:
    """Draw load and success rate over time, one line per config, outage phases shaded."""
    try:
        # An optional extra (the ignore is for a type check run without it installed).
        from matplotlib.figure import Figure  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    scenario = results[0].scenario
    # Bins of about 200 calls, so that a rate is not mostly noise.
    width = min(2.0, max(0.1, round(200.0 / scenario.offered, 1)))
    figure = Figure(figsize=(10, 6.5), layout="constrained")
    load_ax, success_ax = figure.subplots(2, 1, sharex=True)
    for k, result in enumerate(results):
        times, load, rate = result.series(width)
        middles = [t + width / 2 for t in times]
        # The first config (yours) on top where the lines coincide.
        style = {"label": result.name, "linewidth": 1.4, "zorder": 3 + len(results) - k}
        load_ax.plot(middles, load, **style)
        success_ax.plot(middles, [math.nan if r is None else 100.0 * r for r in rate], **style)
    for ax in (load_ax, success_ax):
        for phase in scenario.timeline:
            if not phase.healthy:
                ax.axvspan(phase.start, phase.end, color="tab:red", alpha=0.08, linewidth=0)
        ax.grid(visible=True, alpha=0.3)
    load_ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    load_ax.set_ylabel("upstream load (x healthy)")
    load_ax.set_ylim(bottom=0)
    load_ax.legend(loc="upper right")
    load_ax.set_title(
        f"{scenario.clients} clients x {scenario.rate:g} call/s; "
        + ", ".join(f"{p.label} {p.span}" for p in scenario.timeline),
        fontsize=10,
    )
    success_ax.set_ylabel("callers' success rate (%)")
    success_ax.set_ylim(-2, 102)
    success_ax.set_xlabel(f"virtual time (s), {width:g} s bins")
    success_ax.set_xlim(0, scenario.duration)
    figure.savefig(str(path), dpi=110)


# -- the command line ---------------------------------------------------------------------------

# argparse destination -> (table, setting) in the config's settings.
_FLAGS: Final = {
    "base_delay": ("backoff", "base_delay"),
    "max_delay": ("backoff", "max_delay"),
    "max_retries": ("backoff", "max_retries"),
    "jitter": ("backoff", "jitter"),
    "threshold": ("circuit_breaker", "failure_threshold"),
    "cooldown_ms": ("circuit_breaker", "cooldown_ms"),
    "failure_rate": ("circuit_breaker", "failure_rate"),
    "window_ms": ("circuit_breaker", "window_ms"),
    "minimum_calls": ("circuit_breaker", "minimum_calls"),
    "slow_call_ms": ("circuit_breaker", "slow_call_ms"),
    "half_open_calls": ("circuit_breaker", "half_open_calls"),
    "fallback": ("", "fallback"),
}


def _nest(path: str, value: Any) -> dict[str, Any]:
    """``{"backoff": {"max_retries": value}}`` from ``"backoff.max_retries"``."""
    *tables, key = path.split(".")
    spec: dict[str, Any] = {key: value}
    for table in reversed(tables):
        spec = {table: spec}
    return spec


def _parse_set(item: str) -> tuple[str, Any]:
    path, sep, raw = item.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"--set takes KEY=VALUE (e.g. backoff.max_retries=2), got {item!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path.strip(), value


def configs_from_args(args: argparse.Namespace) -> list[tuple[str, ResilientConfig]]:
    """The configs the command line names: ``--config`` files (or the defaults) plus the flags.

    Each flag and ``--set`` goes over the file, field by field; an error names
    the file or the flag the bad setting came from.
    """
    overrides: list[tuple[str, Mapping[str, Any]]] = []
    for dest, (table, key) in _FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            flag = "--" + dest.replace("_", "-")
            overrides.append((flag, _nest(f"{table}.{key}" if table else key, value)))
    for item in args.set or ():
        path, value = _parse_set(item)
        overrides.append((f"--set {item}", _nest(path, value)))
    named: list[tuple[str, list[tuple[str, Mapping[str, Any]]]]] = []
    if args.config:
        for path in args.config:
            name, spec = load_config_file(path)
            named.append((name, [(str(path), spec)]))
    else:
        named.append(("default" if not overrides else "custom", []))
    configs = [(name, _config(sources + overrides)) for name, sources in named]
    if args.compare:
        configs += builtin_configs(configs[0][1])
    return configs


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    duration = args.duration
    if args.timeline is None:
        timeline = default_timeline(60.0 if duration is None else duration)
    else:
        timeline = parse_timeline(args.timeline, duration)
    return Scenario(
        timeline=timeline,
        clients=args.clients,
        rate=args.rate,
        arrivals=args.arrivals,
        shared_breaker=args.shared_breaker,
        latency=args.latency,
        latency_spread=args.latency_spread,
        error_latency=args.error_latency,
        failure=args.failure,
        timeout=args.timeout,
        retry_after=args.retry_after,
        capacity=args.capacity,
        seed=args.seed,
    )


def run_cli(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """``smoothapi simulate``: returns the exit status (2 for a bad setting)."""
    try:
        scenario = scenario_from_args(args)
        configs = configs_from_args(args)
    except (ConfigError, ValueError, TypeError) as exc:
        err.write(f"smoothapi simulate: error: {exc}\n")
        return 2
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401, PLC0415 - checked before simulating for minutes
        except ImportError:
            err.write(
                "smoothapi simulate: error: --plot needs matplotlib, which is not installed "
                "(pip install matplotlib)\n"
            )
            return 2
    results = compare(configs, scenario)
    if args.json:
        document = {
            "scenario": scenario.to_dict(),
            "results": [r.to_dict() for r in results],
        }
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write(format_report(results) + "\n")
    if args.plot is not None:
        plot(results, args.plot)
        if not args.json:
            out.write(f"plot written to {args.plot}\n")
    return 0
