"""``@resilient_api(config)``: the engine mounted on a function (sync or ``async def``).

The wrapper's happy path is a straight line (see :mod:`._happy`): read the
breaker's ``clean_ticket``, call the function, settle, return.  Only an
exception, or a breaker that is not CLOSED-and-clean, hands the call to the
engine (:mod:`smoothapi.engine`), which owns the one retry loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

from .. import _runtime
from ..breaker import CircuitBreaker
from ..budget import shared_budget
from ..classify import classify_exception
from ..config import ResilientConfig
from ..engine import SUCCESS, Outcome, Policy, run_async, run_sync
from ..errors import ConfigError, ConfigTypeError
from ._happy import settle

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = ["BoundResilientFunction", "ResilientFunction", "resilient_api"]

P = ParamSpec("P")
R = TypeVar("R")
_P2 = ParamSpec("_P2")
_S = TypeVar("_S")
_R_co = TypeVar("_R_co", covariant=True)
_T = TypeVar("_T")


class ResilientFunction(Protocol[P, R]):
    """What ``@resilient_api`` returns: the function, same signature, plus its ``breaker``.

    At run time a call also accepts ``fallback=`` (unless the function
    declares a ``fallback`` parameter of its own): it overrides the
    configured fallback for that call and is not passed to the function.
    ``fn.with_fallback(value)(*args)`` does the same and type-checks: the
    fallback is a value of the function's return type, or a callable of the
    error returning one (for an ``async def``: the awaited type, or a
    callable returning it or an awaitable of it).
    """

    breaker: CircuitBreaker
    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    # The function with this call-time fallback (None: none), the typed per-call form.
    @overload
    def with_fallback(
        self, fallback: R | Callable[[BaseException], R] | None, /
    ) -> Callable[P, R]: ...
    @overload
    def with_fallback(
        self: ResilientFunction[P, Coroutine[Any, Any, _T]],
        fallback: _T | Callable[[BaseException], _T | Awaitable[_T]] | None,
        /,
    ) -> Callable[P, Coroutine[Any, Any, _T]]: ...

    # A function is a descriptor: looked up on an instance, a method binds `self`.
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: ResilientFunction[Concatenate[_S, _P2], R],
        instance: _S,
        owner: type[Any] | None = None,
    ) -> BoundResilientFunction[_P2, R]: ...


class BoundResilientFunction(Protocol[P, _R_co]):
    """A decorated method looked up on an instance: ``self`` is bound."""

    breaker: CircuitBreaker

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> _R_co: ...


class _Decorator(Protocol):
    def __call__(self, fn: Callable[P, R], /) -> ResilientFunction[P, R]: ...


def _success(value: object) -> Outcome:
    return Outcome(SUCCESS, value)


def fallback_function(fallback: object) -> Callable[[BaseException], Any] | None:
    """Turn a configured fallback (None, a value, or a callable of the error) into a callable."""
    if fallback is None:
        return None
    if callable(fallback):
        return cast(Callable[[BaseException], Any], fallback)
    return lambda _error: fallback


def _declares_fallback(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get("fallback")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _refuse_generators(fn: Callable[..., Any]) -> None:
    """A generator function returns at once: nothing it does could be retried or counted."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if inspect.isasyncgenfunction(fn):
        raise ConfigTypeError(
            f"@resilient_api cannot protect the async generator function {name}: calling it "
            "only creates the generator, so its requests would run after the call returned, "
            "unretried and uncounted by the breaker. Decorate an async def that consumes it "
            "and returns the result (e.g. `return [item async for item in gen()]`), or "
            "decorate the function that fetches each item"
        )
    if inspect.isgeneratorfunction(fn):
        raise ConfigTypeError(
            f"@resilient_api cannot protect the generator function {name}: calling it only "
            "creates the generator, so its requests would run after the call returned, "
            "unretried and uncounted by the breaker. Decorate a function that consumes it "
            "and returns the result (e.g. `return list(gen())`), or decorate the function "
            "that fetches each item"
        )


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with `async def __call__`
    )


@overload
def resilient_api(config: Callable[P, R], /) -> ResilientFunction[P, R]: ...
@overload
def resilient_api(
    config: ResilientConfig | None = None,
    /,
    *,
    breaker: CircuitBreaker | None = None,
    name: str | None = None,
) -> _Decorator: ...
def resilient_api(
    config: ResilientConfig | Callable[..., Any] | None = None,
    /,
    *,
    breaker: CircuitBreaker | None = None,
    name: str | None = None,
) -> Any:
    """Retry, break and fall back around a function; ``config`` defaults to ``ResilientConfig()``.

    * ``breaker=`` - use this breaker instead of a private one; pass the same
      breaker to a transport to share one failure count between them.
    * ``name=`` - the private breaker's name (default ``module.qualname``).

    Also usable bare: ``@resilient_api``.
    """
    if config is not None and not isinstance(config, ResilientConfig):
        if callable(config):
            return _decorate(config, ResilientConfig(), breaker, name)
        raise ConfigTypeError(
            f"resilient_api() takes a ResilientConfig, got {config!r} ({type(config).__name__})"
        )
    cfg = config if config is not None else ResilientConfig()
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise ConfigTypeError(f"resilient_api(breaker=...) needs a CircuitBreaker, got {breaker!r}")

    def decorate(fn: Callable[P, R], /) -> ResilientFunction[P, R]:
        return _decorate(fn, cfg, breaker, name)

    return decorate


def _decorate(  # noqa: PLR0915 - one factory for the sync and async wrappers
    fn: Callable[P, R],
    config: ResilientConfig,
    breaker: CircuitBreaker | None,
    name: str | None,
) -> ResilientFunction[P, R]:
    if not callable(fn):
        raise ConfigTypeError(f"@resilient_api decorates a callable, got {fn!r}")
    _refuse_generators(fn)
    shared = breaker is not None
    if breaker is None:
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        breaker = CircuitBreaker(
            config.circuit_breaker,
            name=name or f"{getattr(fn, '__module__', None)}.{qualname}",
            hooks=config.hooks,
        )
    br = breaker
    retry_on = frozenset(config.retry_on)

    def classify_error(exc: BaseException) -> Outcome:
        return classify_exception(exc, retry_on)

    policy = Policy(
        config,
        br,
        classify_error=classify_error,
        classify_value=_success,
        budget=shared_budget(br, config) if shared else None,
    )
    # Settle every happy-path success when a budget earns from it or the breaker counts or
    # times it; a timed breaker's attempt starts on its clock.
    settles = policy.budget is not None or policy.settles
    # Without a budget that is the breaker's own settle, called straight from the wrapper
    # (one call fewer on the failure-rate rule's happy path).
    counts = br.settle if policy.settles and policy.budget is None else None
    timed = policy.timed
    now = br.now
    # With a deadline every call goes through the engine, which starts the clock
    # before the first attempt; without one, the happy path stays a straight line.
    fast = policy.direct
    configured = fallback_function(config.fallback)
    owns_keyword = not _declares_fallback(fn)

    is_async = _is_async(fn)
    if config.hedging is not None and not is_async:
        raise ConfigError(
            f"ResilientConfig.hedging needs an async def: {getattr(fn, '__qualname__', fn)!r} "
            "is a plain function, and a thread running it cannot be cancelled once a hedge "
            "answers first. Decorate an async def, or leave hedging=None"
        )
    original = fn
    afn = cast(Callable[..., Coroutine[Any, Any, Any]], fn)

    def chosen_fallback(kwargs: dict[str, Any]) -> Callable[[BaseException], Any] | None:
        # A function with its own `fallback` parameter gets the keyword; otherwise it is ours.
        if owns_keyword and "fallback" in kwargs:
            return fallback_function(kwargs.pop("fallback"))
        return configured

    # The happy path (see ``_happy``), with the attempt mark inlined: while the first
    # attempt runs, mount points called inside it see ``mark`` (a transport given our
    # breaker leaves the books to us, any other makes one attempt when we retry).  The
    # cell is ended rather than reset: an ended cell reads as its live parent (see
    # ``_runtime.enter``), so the happy path saves the reset.  The two wrappers differ
    # only in ``await``.
    scope = _runtime.scope
    mark = policy.mark
    if is_async:

        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            fallback = chosen_fallback(kwargs) if kwargs else configured
            first = None
            ticket = br.clean_ticket if fast else 0
            began = now() if timed and ticket else None
            if ticket:
                outer = scope.get()
                while outer is not None and outer[0] is None:  # skip attempts that ended
                    outer = outer[1]
                cell = [mark, outer]
                scope.set(cell)
                try:
                    result = await afn(*args, **kwargs)
                except BaseException as exc:
                    first = classify_error(exc)
                else:
                    if settles or br.clean_ticket != ticket:  # else nothing to settle
                        if counts is not None:
                            counts(ticket, began)
                        else:
                            settle(policy, ticket, began)
                    return result
                finally:
                    cell[0] = None  # ended, also for tasks and threads that inherited it
            call = functools.partial(afn, *args, **kwargs)
            return await run_async(
                policy, call, fallback, first, first_ticket=ticket, started=began
            )

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(original)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            fallback = chosen_fallback(kwargs) if kwargs else configured
            first = None
            ticket = br.clean_ticket if fast else 0
            began = now() if timed and ticket else None
            if ticket:
                outer = scope.get()
                while outer is not None and outer[0] is None:  # skip attempts that ended
                    outer = outer[1]
                cell = [mark, outer]
                scope.set(cell)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    first = classify_error(exc)
                else:
                    if settles or br.clean_ticket != ticket:  # else nothing to settle
                        if counts is not None:
                            counts(ticket, began)
                        else:
                            settle(policy, ticket, began)
                    return result
                finally:
                    cell[0] = None  # ended, also for tasks and threads that inherited it
            call = functools.partial(fn, *args, **kwargs)
            return run_sync(policy, call, fallback, first, first_ticket=ticket, started=began)

        wrapper = sync_wrapper

    def with_fallback(fallback: object) -> Callable[..., Any]:
        chosen = fallback_function(fallback)
        if is_async:

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                return await run_async(policy, functools.partial(afn, *args, **kwargs), chosen)

            return functools.wraps(original)(call_async)

        def call(*args: Any, **kwargs: Any) -> Any:
            return run_sync(policy, functools.partial(fn, *args, **kwargs), chosen)

        return functools.wraps(original)(call)

    if shared:
        # A shared breaker reports to every config using it - while the decorated
        # function lives: one that goes away leaves no hook behind.
        for hook in config.hooks:
            br.add_hook(hook, owner=wrapper)
    wrapper.breaker = br
    wrapper.with_fallback = with_fallback
    return cast(ResilientFunction[P, R], wrapper)
