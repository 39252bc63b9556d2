"""Type-checked only (mypy --strict), never run: what users' editors see."""

from __future__ import annotations

import httpx
import requests
from typing_extensions import assert_type

from smoothapi import (
    AsyncResilientTransport,
    BackoffConfig,
    CircuitBreaker,
    CircuitState,
    ResilientAdapter,
    ResilientConfig,
    ResilientTransport,
    resilient_api,
)
from smoothapi.testing import FakeClock, set_testing

config = ResilientConfig(backoff=BackoffConfig(max_retries=2))


@resilient_api(config)
def get_user(user_id: str, *, verbose: bool = False) -> dict[str, int]:
    return {"id": int(user_id)}


@resilient_api(config)
async def get_user_async(user_id: str) -> list[str]:
    return [user_id]


@resilient_api
def bare(x: int) -> int:
    return x


assert_type(get_user("1"), dict[str, int])
assert_type(get_user("1", verbose=True), dict[str, int])
assert_type(bare(1), int)
assert_type(get_user.breaker, CircuitBreaker)
assert_type(get_user.breaker.state, CircuitState)


async def use_async() -> None:
    assert_type(await get_user_async("1"), list[str])


shared = CircuitBreaker(config.circuit_breaker, name="users-api")


@resilient_api(config, breaker=shared)
def with_shared(url: str) -> int:
    return len(url)


session = requests.Session()
session.mount("https://", ResilientAdapter(config, breaker=shared, pool_maxsize=4))
client = httpx.Client(transport=ResilientTransport(config, breaker=shared))
aclient = httpx.AsyncClient(transport=AsyncResilientTransport(config))

clock = FakeClock()
with set_testing(clock=clock):
    clock.advance(10.0)


class Client:
    @resilient_api(config)
    def fetch(self, path: str) -> bytes:
        return path.encode()


assert_type(Client().fetch("/x"), bytes)
assert_type(Client().fetch.breaker, CircuitBreaker)
assert_type(Client.fetch.breaker, CircuitBreaker)
assert_type(get_user.with_fallback({"id": 0})("1"), dict[str, int])

# with_fallback is checked against the return type: a value of it, or a callable of the error.
assert_type(get_user.with_fallback(lambda error: {"error": 1})("1"), dict[str, int])
assert_type(get_user.with_fallback(None)("1", verbose=True), dict[str, int])
assert_type(bare.with_fallback(0)(1), int)


def default_user(error: BaseException) -> dict[str, int]:
    return {"id": -1}


async def default_names(error: BaseException) -> list[str]:
    return []


assert_type(get_user.with_fallback(default_user)("1"), dict[str, int])


async def use_async_fallbacks() -> None:
    # An async def's fallback is of the awaited type, or a callable returning it or an awaitable.
    assert_type(await get_user_async.with_fallback(["none"])("1"), list[str])
    assert_type(await get_user_async.with_fallback(lambda error: ["none"])("1"), list[str])
    assert_type(await get_user_async.with_fallback(default_names)("1"), list[str])


# A fallback of another type is an error (warn_unused_ignores: these ignores must be needed).
get_user.with_fallback("not a dict")  # type: ignore[arg-type]
bare.with_fallback(default_user)  # type: ignore[arg-type]
