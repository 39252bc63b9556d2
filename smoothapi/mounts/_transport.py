"""What the requests adapter and the httpx transports share, with no client import.

Per-origin breakers in a bounded registry, the per-origin engine
:class:`~smoothapi.engine.Policy`, which requests may be resent, a response's
outcome, and the ``Retry-After`` parser (:class:`MountPoint` gathers them for
the mount classes).  The mount modules add only the I/O: making one attempt,
draining a response.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

from .._runtime import at_fork_child
from ..breaker import CircuitBreaker, CircuitState
from ..budget import shared_budget
from ..config import ResilientConfig, Upstreams
from ..engine import FAILURE, SUCCESS, Outcome, Policy, Resend
from ..errors import ConfigError, ConfigTypeError
from ..events import StateChanged
from ..retry_after import parse_retry_after

_A = TypeVar("_A")

__all__ = [
    "ATTEMPTS",
    "DEFAULT_PORTS",
    "DRAIN_LIMIT",
    "DRAIN_TIME",
    "LEFT",
    "Left",
    "MountPoint",
    "TransportCore",
    "attempts",
    "deadline_left",
    "drain_plan",
    "drain_time",
    "parse_retry_after",
]

#: Where the mount points record a response's attempt count: the attribute of a
#: requests ``Response``, the key of an httpx ``Response.extensions``.
ATTEMPTS = "smoothapi_attempts"

#: A retried response's body is read (to keep the connection) only up to this size...
DRAIN_LIMIT = 64 * 1024
#: ... and only for this many seconds (less if the call's deadline is nearer): a body
#: that trickles in slower is dropped with its connection rather than waited for.
DRAIN_TIME = 0.5
#: The attribute a mount point sets on an attempt's response when the call has a
#: deadline: a callable returning the seconds left of it.
LEFT = "_smoothapi_left"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def attempts(response: object) -> int:
    """How many attempts a smoothapi mount point made for ``response``.

    Works for a ``requests.Response`` from :class:`~smoothapi.ResilientAdapter`,
    an ``httpx.Response`` from :class:`~smoothapi.ResilientTransport` or
    :class:`~smoothapi.AsyncResilientTransport` and an ``aiohttp.ClientResponse``
    from :class:`~smoothapi.ResilientMiddleware` alike: ``1`` when the first
    attempt answered, ``3`` after two retries, ``0`` for a fallback response
    served while the breaker rejected the request; a hedge is a request sent
    and counts too (``2`` for one hedged attempt).  Raises ``ValueError`` for
    a response that did not come through a smoothapi mount point.
    """
    extensions = getattr(response, "extensions", None)
    count = extensions.get(ATTEMPTS) if isinstance(extensions, Mapping) else None
    if count is None:
        count = getattr(response, ATTEMPTS, None)
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    raise ValueError(
        f"{type(response).__name__} did not come through a smoothapi transport: no attempt "
        "count recorded (mount ResilientAdapter, ResilientTransport, AsyncResilientTransport "
        "or ResilientMiddleware to get one)"
    )


def drain_plan(content_length: str | None, final: bool) -> str:
    """How to let go of a retried response, without ever losing or over-reading it.

    ``"read"``: the body is small and of known length: read it into memory (the
    response stays readable, the connection goes back to the pool).
    ``"keep"``: not yet - before the backoff sleep a large or unknown-length body
    is left untouched, since the response is returned whole if the breaker
    opens meanwhile.  ``"close"``: final, and larger than :data:`DRAIN_LIMIT`:
    drop the connection rather than read it.  ``"bounded"``: final, unknown
    length: read up to the limit (keep-alive kept), else close.
    """
    length = (content_length or "").strip()
    if length.isdigit() and length.isascii():
        if int(length) <= DRAIN_LIMIT:
            return "read"
        return "close" if final else "keep"
    return "bounded" if final else "keep"


def _tracker(core: TransportCore) -> Callable[[Any], None]:
    """The hook that tells ``core`` its per-origin breakers' transitions.

    Weak on the core: a breaker that outlives its mount point (a caller kept
    it) does not keep the mount point and all its other breakers alive.
    """
    ref = weakref.ref(core)

    def track(event: Any) -> None:
        if type(event) is StateChanged:
            core = ref()
            if core is not None:
                core._moved(event.name)

    return track


class Left:
    """Seconds left of one call's deadline (on its breaker's clock), when called.

    ``started`` is when the call began: the engine counts the deadline from it.
    """

    __slots__ = ("at", "now", "started")

    def __init__(self, breaker: CircuitBreaker, deadline: float) -> None:
        self.now = breaker.now
        self.started = breaker.now()
        self.at = self.started + deadline

    def __call__(self) -> float:
        return self.at - self.now()


def deadline_left(policy: Policy) -> Left | None:
    """A new call's :class:`Left`, or None when the policy has no deadline."""
    return None if policy.deadline is None else Left(policy.breaker, policy.deadline)


def drain_time(response: object) -> float:
    """Seconds the drain of ``response`` may take: :data:`DRAIN_TIME`, or less."""
    left = getattr(response, LEFT, None)
    if left is None:
        return DRAIN_TIME
    return max(0.0, min(DRAIN_TIME, float(left())))


def origin_name(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host:port`` - never userinfo, path or query."""
    scheme = scheme.lower()
    if port is None:
        port = DEFAULT_PORTS.get(scheme, 0)
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


_LIVE_CORES: weakref.WeakSet[TransportCore] = weakref.WeakSet()  # for the fork hook below


@at_fork_child
def _after_fork_in_child() -> None:
    # A lock another thread held at the fork stays held in the child (see _runtime).
    for core in list(_LIVE_CORES):
        core._lock = threading.Lock()


class TransportCore:
    """One mount point's per-origin policies (or one shared breaker), bounded in number.

    ``max_breakers`` bounds the registry; when it is full, the oldest CLOSED
    breaker is evicted.  A breaker that is HALF_OPEN, or OPEN within its
    cooldown, is never evicted (forgetting it would let traffic through to a
    dead origin), so the registry may exceed the bound while more origins than
    that are failing.  OPEN breakers whose cooldown has elapsed are forgotten
    once more than ``4 * max_breakers`` are parked (oldest transition first):
    such an origin's next call would only have been a probe, and now starts
    CLOSED instead - so origins that fail once and are never called again do
    not grow the registry without bound.

    Eviction costs O(1) amortised whatever the states: the origins whose
    breaker may be CLOSED wait in :attr:`_evictable` (oldest first), those
    found OPEN or HALF_OPEN are parked in :attr:`_held` and come back only
    when their breaker reports a transition (a hook on each in-memory
    per-origin breaker), so no failing origin is looked at twice per failure.
    """

    def __init__(
        self,
        config: ResilientConfig | Upstreams | None,
        *,
        breaker: CircuitBreaker | None,
        max_breakers: int,
        classify_error: Callable[[BaseException], Outcome],
        status_of: Callable[[Any], tuple[int, str | None]],
        discard: Callable[[Any, bool], None] | None = None,
        async_discard: Callable[[Any, bool], Awaitable[None]] | None = None,
        abandon: Callable[[Any], Awaitable[None] | None] | None = None,
        open_error: Callable[[str, float], BaseException],
    ) -> None:
        upstreams: Upstreams | None = None
        if config is None:
            config = ResilientConfig()
        elif isinstance(config, Upstreams):
            if breaker is not None:
                raise ConfigError(
                    "breaker= makes every origin share one breaker, so it cannot be combined "
                    "with Upstreams (a config per origin): pass one ResilientConfig with "
                    "breaker=, or drop breaker="
                )
            upstreams, config = config, config.default
        elif not isinstance(config, ResilientConfig):
            raise ConfigTypeError(
                f"expected a ResilientConfig or Upstreams (one config per origin), got {config!r}"
            )
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ConfigTypeError(f"breaker= needs a CircuitBreaker, got {breaker!r}")
        if isinstance(max_breakers, bool) or not isinstance(max_breakers, int):
            raise ConfigTypeError(f"max_breakers must be an int, got {max_breakers!r}")
        if max_breakers < 1:
            raise ConfigError(f"max_breakers must be >= 1, got {max_breakers!r}")
        self.config = config
        self.upstreams = upstreams
        self.max_breakers = max_breakers
        self._status_of = status_of
        self._kwargs: dict[str, Any] = {
            "classify_error": classify_error,
            "discard": discard,
            "abandon": abandon,
            "open_error": open_error,
            # DESIGN.md: if the breaker opens mid-request, the last response is returned.
            "fallback_midway": False,
        }
        self._async_discard = async_discard
        self._lock = threading.Lock()
        _LIVE_CORES.add(self)
        self._policies: dict[str, Policy] = {}  # by normalised origin
        # Every origin of _policies is in exactly one of these two (see the class doc).
        self._evictable: OrderedDict[str, None] = OrderedDict()
        # In the order of their last transition, for :meth:`_trim_held`.
        self._held: OrderedDict[str, None] = OrderedDict()
        self._track = _tracker(self)
        # By the mount point's cheap per-request key; read without the lock.
        self.aliases: dict[Hashable, Policy] = {}
        self._shared: Policy | None = None
        self._shared_given = breaker is not None
        if breaker is not None:
            # A shared breaker reports to every config using it - while that config's
            # mount point lives: a transport that goes away leaves no hook behind.
            for hook in config.hooks:
                breaker.add_hook(hook, owner=self)
            self._shared = self._make_policy(breaker, config)

    def _make_policy(self, breaker: CircuitBreaker, config: ResilientConfig) -> Policy:
        # A breaker passed with breaker= may serve other mount points: share its budget.
        budget = shared_budget(breaker, config) if self._shared_given else None
        retry_on = frozenset(config.retry_on)
        status_of = self._status_of

        def classify_value(response: Any) -> Outcome:
            status, retry_after = status_of(response)
            return classify_status(response, status, retry_after, retry_on)

        return Policy(
            config,
            breaker,
            async_discard=self._async_discard,
            budget=budget,
            classify_value=classify_value,
            **self._kwargs,
        )

    def config_for(self, origin: str) -> ResilientConfig:
        """The config of ``origin`` (``scheme://host:port``): its upstream's, else the default."""
        upstreams = self.upstreams
        return self.config if upstreams is None else upstreams.for_origin(origin)

    def policy(self, alias: Hashable, name: Callable[[_A], str], arg: _A) -> Policy:
        """The policy (and so the breaker) for one origin.

        ``alias`` is whatever the mount point can compute cheaply per request
        (a URL prefix, a tuple); ``name()`` returns the normalised origin
        ``scheme://host:port``, which is what breakers are registered under, so
        every spelling of an origin (userinfo, an explicit default port) shares
        one breaker.  ``name(arg)`` runs only the first time an alias is seen.
        Mount points look in :attr:`aliases` first, without a call.
        """
        policy = self.aliases.get(alias)
        if policy is not None:
            return policy
        with self._lock:
            if self._shared is not None:
                self._remember(alias, self._shared)
                return self._shared
            origin = name(arg)
            policy = self._policies.get(origin)
            if policy is None:
                config = self.config_for(origin)
                breaker = CircuitBreaker(config.circuit_breaker, name=origin, hooks=config.hooks)
                if type(breaker) is CircuitBreaker:  # its state lives here: watch it
                    breaker.add_hook(self._track)
                policy = self._make_policy(breaker, config)
                self._evict()
                self._trim_held()
                self._policies[origin] = policy
                self._evictable[origin] = None
            self._remember(alias, policy)
            return policy

    def _remember(self, alias: Hashable, policy: Policy) -> None:
        aliases = self.aliases
        if len(aliases) >= 4 * self.max_breakers:
            aliases.clear()
        aliases[alias] = policy

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker this mount point holds, by name."""
        if self._shared is not None:
            return {self._shared.breaker.name: self._shared.breaker}
        with self._lock:
            return {p.breaker.name: p.breaker for p in self._policies.values()}

    def _evict(self) -> None:
        """Make room for one more origin (called with the lock held)."""
        excess = len(self._policies) + 1 - self.max_breakers
        evictable = self._evictable
        while excess > 0 and evictable:
            origin, _ = evictable.popitem(last=False)
            breaker = self._policies[origin].breaker
            # A shared breaker's state lives in its store: forgetting the local object
            # loses nothing (and reading its state here would be a round trip under
            # our lock).  An in-process breaker is forgotten only while CLOSED.
            if type(breaker) is CircuitBreaker and breaker.state is not CircuitState.CLOSED:
                self._held[origin] = None  # back in _evictable when it reports a transition
                continue
            del self._policies[origin]
            self.aliases.clear()  # no alias may keep a forgotten breaker alive
            excess -= 1

    def _trim_held(self) -> None:
        """Forget parked breakers whose cooldown has elapsed, past a bound (lock held).

        Looks at no more than two parked breakers per new origin, oldest
        transition first: O(1) whatever the states.  One still cooling down,
        or HALF_OPEN (its probe is live), goes to the back instead.
        """
        held = self._held
        for _ in range(2):
            if len(held) <= 4 * self.max_breakers:
                return
            origin = next(iter(held))
            breaker = self._policies[origin].breaker
            if breaker.retry_after <= 0 and breaker.state is CircuitState.OPEN:
                del held[origin]
                del self._policies[origin]
                self.aliases.clear()  # no alias may keep a forgotten breaker alive
            else:
                held.move_to_end(origin)

    def _moved(self, origin: str) -> None:
        """``origin``'s breaker changed state: file it where its state says."""
        with self._lock:
            policy = self._policies.get(origin)
            if policy is None:  # evicted meanwhile (an in-flight call still reports)
                return
            held = self._held
            if policy.breaker.state is CircuitState.CLOSED:
                if origin in held:
                    del held[origin]
                    self._evictable[origin] = None
            else:
                if origin in self._evictable:
                    del self._evictable[origin]
                held[origin] = None
                held.move_to_end(origin)  # parked in the order of their last transition

    @staticmethod
    def resend(policy: Policy, method: str, headers: Mapping[str, str], replayable: bool) -> Resend:
        """Which failed attempts of this request (to ``policy``'s origin) may be sent again."""
        if not replayable:
            return Resend.NEVER
        config = policy.config
        if (
            method.upper() in config.idempotent_methods
            or config.retry_non_idempotent
            or "idempotency-key" in headers
        ):
            return Resend.ALWAYS
        return Resend.IF_NOT_SENT


def classify_status(
    response: object, status: int, retry_after: str | None, retry_on: frozenset[int]
) -> Outcome:
    """A response's outcome: FAILURE (with the parsed Retry-After) if its status is retried."""
    if status in retry_on:
        return Outcome(FAILURE, response, status=status, retry_after=parse_retry_after(retry_after))
    return Outcome(SUCCESS, response, status=status)


class MountPoint:
    """The part of a transport mount point that is not its client's.

    What :class:`~smoothapi.ResilientAdapter` and the httpx transports share:
    their :class:`TransportCore`, a response's outcome (its ``status_code`` and
    ``Retry-After`` header, as both clients spell them), the fallback given to
    the engine, and the breakers they hold.
    """

    _core: TransportCore
    #: Why this mount point cannot hedge (when it cannot).
    _no_hedging = (
        "a blocking request cannot be cancelled once another answers first, so each hedge "
        "would hold a thread and a connection until its server answers."
    )

    def _mount(  # noqa: PLR0917 - what the core is built from
        self,
        config: ResilientConfig | Upstreams | None,
        breaker: CircuitBreaker | None,
        max_breakers: int,
        fallback: Callable[[Any, BaseException], Any] | None,
        classify_error: Callable[[BaseException], Outcome],
        open_error: Callable[..., BaseException],
        discard: Callable[[Any, bool], None] | None,
        async_discard: Callable[[Any, bool], Awaitable[None]] | None = None,
        abandon: Callable[[Any], Awaitable[None] | None] | None = None,
        *,
        hedges: bool = False,
    ) -> None:
        """Build the core with the client's side: how to read its errors, drain its responses.

        ``hedges``: the mount point is async and can race attempts (``hedging``).
        """
        configs = (
            (config.default, *config.configs.values())
            if isinstance(config, Upstreams)
            else (config,)
        )
        hedged = any(getattr(one, "hedging", None) is not None for one in configs)
        if hedged and not hedges:
            raise ConfigError(
                f"{type(self).__name__} cannot hedge requests (ResilientConfig.hedging): "
                f"{self._no_hedging} Use httpx's AsyncResilientTransport (asyncio or trio), "
                "or leave hedging=None"
            )
        if fallback is not None and not callable(fallback):
            raise ConfigError(
                f"{type(self).__name__}(fallback=...) takes a callable (request, error) -> "
                f"the response to serve, got {fallback!r}"
            )
        core = TransportCore(
            config,
            breaker=breaker,
            max_breakers=max_breakers,
            classify_error=classify_error,
            status_of=self._status,
            discard=discard,
            async_discard=async_discard,
            abandon=abandon,
            open_error=open_error,
        )
        self._core = core
        #: The config of every origin (the default one when given Upstreams).
        self.config = core.config
        #: The per-origin configs given, or None.
        self.upstreams = core.upstreams
        # Read on every request's happy path: one attribute each, not two.
        self._aliases = core.aliases
        self._shared = breaker
        self._fallback = fallback

    @staticmethod
    def _status(response: Any) -> tuple[int, str | None]:
        """A response's status and ``Retry-After`` header (requests' and httpx's spelling)."""
        return response.status_code, response.headers.get("Retry-After")

    def _fallback_for(self, request: Any) -> Callable[[BaseException], Any] | None:
        """The engine's fallback for one request: ``fallback(request, error)``, or None."""
        fallback = self._fallback
        if fallback is None:
            return None
        return lambda error: fallback(request, error)

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker this mount point holds, by origin."""
        return self._core.breakers()
