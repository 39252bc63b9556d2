"""Every script in ``examples/`` runs as documented and prints what it promises.

Each example starts its own local flaky server (no network), so each runs as
a user would run it: ``python examples/NAME.py`` in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

#: example -> (client modules it needs, lines its output must contain)
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "decorator_requests.py": (
        ("requests",),
        (
            "blip:    {'user': 2, 'ok': True} after 3 requests",
            "outage:  {'status': 'degraded', 'data': []} after 3 requests",
            "breaker: OPEN",
            "per-call fallback: {'status': 'override'}",
            "no fallback: Circuit breaker is OPEN for: __main__.get_user_data",
            "requests during the open circuit: 0",
            "recovered: {'user': 7, 'ok': True} breaker CLOSED",
        ),
    ),
    "decorator_async_httpx.py": (
        ("httpx",),
        (
            "blip:    {'user': 2, 'ok': True} after 3 requests",
            "outage: 10 of 10 calls got the fallback,",
            "open:   10 of 10 calls got the fallback,",
            "        0 requests sent",
            "recovered: {'user': 30, 'ok': True} breaker CLOSED",
        ),
    ),
    "requests_adapter.py": (
        ("requests",),
        (
            "blip:    200 after 3 attempts",
            "outage:  503 - the last response, as is",
            "raise_for_status() still raises: 503",
            "open:    CircuitOpenConnectionError, retry in ",
            "fallback: {'status': 'degraded'}",
            "requests while open: 0",
            "recovered: 200 breaker CLOSED",
        ),
    ),
    "httpx_transport.py": (
        ("httpx",),
        (
            "blip:    200 after 3 attempts",
            "outage:  503 - the last response, as is",
            "raise_for_status() still raises: 503",
            "open:    CircuitOpenTransportError, retry in ",
            "fallback: {'status': 'degraded'}",
            "requests while open: 0",
            "recovered: 200 breaker CLOSED",
        ),
    ),
    "httpx_async_transport.py": (
        ("httpx", "anyio"),
        (
            "blip:    200 after 3 attempts",
            "outage:  503 - the last response, as is",
            "open:    10 of 10 concurrent requests rejected without I/O",
            "fallback: {'status': 'degraded'}",
            "requests while open: 0",
            "recovered: 200 breaker CLOSED",
        ),
    ),
    "aiohttp_middleware.py": (
        ("aiohttp",),
        (
            "blip:    200 after 3 attempts",
            "outage:  503 - the last response, as is",
            "raise_for_status() still raises: 503",
            "open:    10 of 10 concurrent requests rejected without I/O",
            "fallback: {'status': 'degraded'}",
            "requests while open: 0",
            "recovered: 200 breaker CLOSED",
        ),
    ),
    "observability.py": (
        ("httpx", "opentelemetry.sdk", "prometheus_client"),
        (
            "blip:    200 after 3",
            "span:    GET 503 resend_count=- url=http://127.0.0.1:",
            "span:    GET 503 resend_count=1 url=",
            "span:    GET 200 resend_count=2 url=",
            "/users/1?api_key=REDACTED",
            "log:     DEBUG http://127.0.0.1:",
            ": CLOSED -> OPEN after 3 consecutive failures",
            "hook:    CallRejected(name='http://127.0.0.1:",
            "open:    CircuitOpenTransportError",
            'metric:  smoothapi_retries_total{breaker="http://127.0.0.1:PORT",cause="503"} 4.0',
            'metric:  smoothapi_breaker_state{breaker="http://127.0.0.1:PORT",state="OPEN"} 1.0',
        ),
    ),
    "shared_breaker.py": (
        ("requests", "httpx"),
        (
            "decorator  503: HTTPError raised               breaker CLOSED, failures 1",
            "transport  503: response returned              breaker CLOSED, failures 2",
            "decorator  503: HTTPError raised               breaker OPEN, failures 3",
            "transport  rejected: CircuitOpenTransportError breaker OPEN, failures 3",
            "decorator  rejected: CircuitOpenError          breaker OPEN, failures 3",
            "requests while open: 0",
            "decorator  {'user': 4, 'ok': True}             breaker CLOSED, failures 0",
        ),
    ),
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(  # noqa: S603 - our own interpreter running our own example files
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _skip_unless_installed(*modules: str) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def test_every_example_is_covered() -> None:
    """A new example gets an entry here (and so a test) before it ships."""
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_what_it_promises(name: str) -> None:
    """`python examples/NAME.py` exits 0 and prints its key lines."""
    modules, lines = EXPECTED[name]
    _skip_unless_installed(*modules)
    proc = _run(f"examples/{name}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    for line in lines:
        assert line in proc.stdout, f"{name}: missing {line!r} in:\n{proc.stdout}"


@pytest.mark.slow
def test_async_transport_example_runs_under_trio() -> None:
    """`python examples/httpx_async_transport.py --trio` behaves the same under trio."""
    _skip_unless_installed("httpx", "anyio", "trio")
    proc = _run("examples/httpx_async_transport.py", "--trio")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "open:    10 of 10 concurrent requests rejected without I/O" in proc.stdout
    assert "recovered: 200 breaker CLOSED" in proc.stdout


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_documents_how_to_run_it(name: str) -> None:
    """Each example opens with a docstring that says what it shows and how to run it."""
    source = (EXAMPLES / name).read_text(encoding="utf-8")
    assert source.startswith('"""'), name
    docstring = source.split('"""', 2)[1]
    assert f"python examples/{name}" in docstring, name
