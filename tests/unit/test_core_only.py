"""The core needs only the standard library: importing and using smoothapi loads no client."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Each script runs in a fresh interpreter where the optional libraries cannot be imported.
_BLOCK = textwrap.dedent(
    """
    import sys
    for name in (
        "requests", "httpx", "urllib3", "anyio", "trio", "sniffio", "redis",
        "opentelemetry", "prometheus_client",
    ):
        sys.modules[name] = None  # makes `import name` raise ImportError
    """
)


def _run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-W", "error", "-c", _BLOCK + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_smoothapi_and_alias_without_optional_libraries() -> None:
    """`import smoothapi` and the seed's `smooth_api` imports work with no client installed."""
    result = _run(
        """
        import smoothapi
        from smooth_api import resilient_api, ResilientConfig
        from smooth_api.config import BackoffConfig, CircuitBreakerConfig
        assert resilient_api is smoothapi.resilient_api
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_decorator_retries_builtin_errors_without_optional_libraries() -> None:
    """A plain function raising builtin ConnectionError is retried and then falls back."""
    result = _run(
        """
        from smoothapi import resilient_api, ResilientConfig, BackoffConfig, CircuitBreakerConfig
        from smoothapi.testing import set_testing
        calls = []
        config = ResilientConfig(
            backoff=BackoffConfig(max_retries=2),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
            fallback="cached",
        )

        @resilient_api(config)
        def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("reset")
            return "fresh"

        with set_testing():
            assert flaky() == "fresh", calls
        assert len(calls) == 3
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_async_decorator_under_asyncio_without_optional_libraries() -> None:
    """An `async def` is retried with asyncio.sleep when neither anyio nor trio is installed."""
    result = _run(
        """
        import asyncio
        from smoothapi import resilient_api, ResilientConfig, BackoffConfig
        calls = []

        @resilient_api(ResilientConfig(backoff=BackoffConfig(base_delay=0.001, max_delay=0.002)))
        async def flaky():
            calls.append(1)
            if len(calls) < 2:
                raise TimeoutError("slow")
            return "fresh"

        assert asyncio.run(flaky()) == "fresh"
        assert len(calls) == 2
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_mount_classes_are_lazy() -> None:
    """Only asking for ResilientAdapter imports requests; a missing client gives ImportError."""
    result = _run(
        """
        import smoothapi
        try:
            smoothapi.ResilientAdapter
        except ImportError:
            print("needs requests")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "needs requests"


def test_import_loads_no_client_library() -> None:
    """With the clients installed, `import smoothapi` still imports none of them."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, smoothapi, smooth_api; "
            "print(sorted(m for m in ('requests', 'httpx', 'urllib3', 'anyio', 'trio', "
            "'asyncio', 'redis') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
