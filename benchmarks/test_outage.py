"""An outage: a local server answers 503 to everything; 50 sequential calls each.

Not a timing benchmark: it records how many requests reached the server
(`extra_info["upstream_requests"]`) for smoothapi's defaults and each peer's
usual configuration (3 retries, i.e. 4 attempts; breakers at their
defaults). Every library's sleeps are made instant so the run is quick;
sleeping does not change the counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from smoothapi import ResilientAdapter, ResilientConfig, ResilientTransport, resilient_api
from smoothapi.cli.demo_server import FlakyServer
from smoothapi.testing import set_testing

CALLS = 50
RETRY_ON = [429, 500, 502, 503, 504]


def _get(url: str) -> int:
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    return response.status_code


def _swallow(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:  # every contender fails in its own way during an outage
        return


def _contenders(url: str, closers: list[Callable[[], object]]) -> dict[str, Callable[[], object]]:
    decorated = resilient_api(ResilientConfig())(_get)
    session = requests.Session()
    session.mount("http://", ResilientAdapter())
    client = httpx.Client(transport=ResilientTransport())
    urllib3_session = requests.Session()
    closers += [session.close, client.close, urllib3_session.close]
    urllib3_session.mount(
        "http://",
        HTTPAdapter(max_retries=Retry(total=3, backoff_factor=0, status_forcelist=RETRY_ON)),
    )
    contenders: dict[str, Callable[[], object]] = {
        "smoothapi @resilient_api": lambda: decorated(url),
        "smoothapi ResilientAdapter": lambda: session.get(url, timeout=5),
        "smoothapi ResilientTransport": lambda: client.get(url),
        "urllib3 Retry(total=3)": lambda: urllib3_session.get(url, timeout=5),
    }
    try:
        import tenacity

        contenders["tenacity (4 attempts)"] = tenacity.retry(
            stop=tenacity.stop_after_attempt(4), wait=tenacity.wait_none()
        )(lambda: _get(url))
    except ImportError:
        pass
    try:
        import stamina

        stamina.set_testing(True, attempts=4)
        contenders["stamina (4 attempts)"] = stamina.retry(on=requests.HTTPError, attempts=4)(
            lambda: _get(url)
        )
    except ImportError:
        pass
    try:
        import backoff

        contenders["backoff (4 tries)"] = backoff.on_exception(
            backoff.constant, requests.HTTPError, max_tries=4, interval=0, jitter=None
        )(lambda: _get(url))
    except ImportError:
        pass
    try:
        import pybreaker

        contenders["pybreaker (defaults, no retry)"] = pybreaker.CircuitBreaker()(lambda: _get(url))
    except ImportError:
        pass
    try:
        import circuitbreaker

        contenders["circuitbreaker (defaults, no retry)"] = circuitbreaker.CircuitBreaker()(
            lambda: _get(url)
        )
    except ImportError:
        pass
    try:
        from httpx_retries import Retry as HXRetry
        from httpx_retries import RetryTransport

        hx = httpx.Client(transport=RetryTransport(retry=HXRetry(total=3, backoff_factor=0)))
        closers.append(hx.close)
        contenders["httpx-retries (total=3)"] = lambda: hx.get(url)
    except ImportError:
        pass
    return contenders


_probe: list[Callable[[], object]] = []
NAMES = list(_contenders("http://127.0.0.1:9/", _probe))
for _close in _probe:
    _close()


@pytest.mark.benchmark(group="outage-upstream-requests")
@pytest.mark.parametrize("name", NAMES)
def test_outage_requests_reaching_server(
    benchmark: Any, name: str, outage_server: FlakyServer
) -> None:
    """50 sequential calls against a dead upstream: how many requests did it receive?"""
    closers: list[Callable[[], object]] = []
    call = _contenders(outage_server.url + "/users/1", closers)[name]

    def run() -> None:
        with set_testing():
            for _ in range(CALLS):
                _swallow(call)

    before = outage_server.total
    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        for close in closers:
            close()
    received = outage_server.total - before
    benchmark.extra_info["upstream_requests"] = received
    benchmark.extra_info["calls"] = CALLS
    print(f"\n{name}: {received} requests reached the server for {CALLS} calls")
