"""The bottom layers import only downwards, and `import smoothapi` loads only what it needs.

import-linter (`lint-imports`, contracts in pyproject.toml) holds the whole graph; these
tests hold what a user sees of it: what a fresh interpreter has loaded after an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from smoothapi import _validate
from smoothapi.errors import ConfigError, ConfigTypeError


def _loaded_after(statement: str) -> set[str]:
    """The smoothapi modules a fresh interpreter holds after running ``statement``."""
    script = textwrap.dedent(
        f"""
        import json, sys
        {statement}
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "smoothapi")))
        """
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def _new_modules(statement: str) -> set[str]:
    """Every module a fresh interpreter loads while running ``statement``."""
    script = textwrap.dedent(
        f"""
        import json, sys
        before = set(sys.modules)
        {statement}
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_import_smoothapi_loads_only_the_package_and_its_switches() -> None:
    """Every public name loads with its module on first use (PEP 562): the import is ~1 ms."""
    new = _new_modules("import smoothapi")
    assert {m for m in new if m.startswith("smoothapi")} == {"smoothapi", "smoothapi._runtime"}
    # The costly parts of a full load (benchmarks/test_import_time.py has the figures).
    assert not new & {"typing", "re", "dataclasses", "inspect", "enum", "threading", "logging"}


def test_the_decorator_loads_the_core_and_no_mount_store_or_backend() -> None:
    loaded = _loaded_after("from smoothapi import resilient_api, ResilientConfig, CircuitBreaker")
    assert {"smoothapi.mounts.decorator", "smoothapi.engine", "smoothapi.config"} <= loaded
    assert not {m for m in loaded if m.startswith(("smoothapi.storage", "smoothapi.telemetry"))}
    transports = {"smoothapi.mounts.requests_adapter", "smoothapi.mounts.httpx_transport"}
    assert not loaded & transports


def test_every_public_name_resolves_and_is_listed() -> None:
    """`from smoothapi import X` and dir() see every name of __all__, loaded or not."""
    import smooth_api  # noqa: PLC0415
    import smoothapi  # noqa: PLC0415

    assert set(smoothapi.__all__) <= set(dir(smoothapi))
    assert set(smoothapi.__all__) <= set(dir(smooth_api))
    for name in smoothapi.__all__:
        assert getattr(smooth_api, name) is getattr(smoothapi, name)
    assert smoothapi.CircuitState is smoothapi.breaker.CircuitState
    with pytest.raises(AttributeError, match="module 'smoothapi' has no attribute 'nothing'"):
        smoothapi.nothing  # noqa: B018


def test_the_submodules_an_eager_import_loaded_are_still_attributes() -> None:
    """`import smoothapi` then `smoothapi.backoff.next_delay` works as before the lazy names."""
    loaded = _loaded_after(
        "import smoothapi; "
        "assert smoothapi.backoff.next_delay and smoothapi.events.StateChanged; "
        "assert smoothapi.mounts.decorator.resilient_api is smoothapi.resilient_api"
    )
    assert {"smoothapi.backoff", "smoothapi.events", "smoothapi.mounts.decorator"} <= loaded


def test_the_prometheus_setup_is_registered_without_loading_the_events() -> None:
    """The package registers its first-event setup in _runtime: the events read that list."""
    loaded = _loaded_after(
        "import smoothapi, smoothapi._runtime as r; "
        "assert any('prometheus' in f.__name__ for f in r.first_event_setups)"
    )
    assert "smoothapi.events" not in loaded
    from smoothapi import _runtime, events  # noqa: PLC0415

    assert events._first_event_setups is _runtime.first_event_setups


def test_backoff_sits_below_config() -> None:
    """backoff is pure maths: importing it loads no config (config imports backoff)."""
    assert "smoothapi.config" not in _loaded_after("import smoothapi.backoff")
    assert "smoothapi.backoff" in _loaded_after("import smoothapi.config")


def test_jitter_is_one_class_seen_from_config_and_backoff() -> None:
    from smoothapi import Jitter, backoff, config  # noqa: PLC0415

    assert config.Jitter is backoff.Jitter is Jitter


def test_the_stores_validate_with_the_bottom_layers_checks() -> None:
    """RedisStore's checks are the configs' own (smoothapi._validate), not a private of config."""
    redis = pytest.importorskip("redis")
    from smoothapi import RedisStore  # noqa: PLC0415

    client = redis.Redis()  # never connected: the arguments fail first
    with pytest.raises(ConfigError, match=r"RedisStore\.retry_interval must be >= 0, got -1"):
        RedisStore(client, retry_interval=-1)
    with pytest.raises(ConfigTypeError, match=r"RedisStore\.lease_ms must be a number"):
        RedisStore(client, lease_ms="500")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"RedisStore\.retry_interval must be finite"):
        RedisStore(client, retry_interval=float("nan"))
    client.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, r"O\.f must be a number of seconds, got True \(bool\)"),
        ("1", r"O\.f must be a number of seconds, got '1' \(str\)"),
        (float("inf"), r"O\.f must be finite, got inf"),
        (10**400, r"O\.f must be finite"),
        (-0.5, r"O\.f must be >= 0, got -0.5"),
        (86_401, r"O\.f must be at most 86400 seconds \(one day\), got 86401"),
    ],
)
def test_number_names_the_owner_the_field_and_the_value(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _validate.number("O", "f", value)


def test_number_accepts_any_real_and_returns_a_float() -> None:
    from fractions import Fraction  # noqa: PLC0415

    assert _validate.number("O", "f", Fraction(1, 4)) == 0.25
    assert type(_validate.number("O", "f", 3)) is float
    assert _validate.number("O", "f", 10**6, one_day=False) == 1e6


def test_integer_and_flag_refuse_bools_and_strings() -> None:
    with pytest.raises(ConfigTypeError, match=r"O\.n must be an int, got True \(bool\)"):
        _validate.integer("O", "n", True, minimum=0)
    with pytest.raises(ConfigError, match=r"O\.n must be >= 1, got 0"):
        _validate.integer("O", "n", 0, minimum=1)
    with pytest.raises(ConfigTypeError, match=r"O\.b must be True or False, got 1"):
        _validate.flag("O", "b", 1)
    assert _validate.flag("O", "b", False) is False


def test_the_pytest_plugin_loads_the_breakers_only_for_a_test_that_asks() -> None:
    """pytest loads the plugin in every run of a project with smoothapi installed."""
    loaded = _loaded_after("import smoothapi.pytest_plugin")
    assert not loaded & {"smoothapi.breaker", "smoothapi.config", "smoothapi.testing"}
