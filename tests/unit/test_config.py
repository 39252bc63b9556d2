"""Configuration: frozen dataclasses, seed defaults, every bad value rejected at construction.

DESIGN.md: "Bad values fail at construction with ValueError/TypeError that
names the field and the value: negative or non-finite delays,
max_retries < 0, failure_threshold < 1, cooldown_ms < 0, status codes
outside 100-599, bool where a number is wanted, unknown jitter names."
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import smoothapi
import smoothapi.config
from smoothapi import (
    BackoffConfig,
    CircuitBreakerConfig,
    ConfigError,
    ConfigTypeError,
    Jitter,
    ResilientConfig,
)

NAN = float("nan")
INF = float("inf")


def _assert_names(exc: BaseException, field: str, value: object) -> None:
    message = str(exc)
    assert field in message, f"message {message!r} does not name the field {field!r}"
    assert repr(value) in message, f"message {message!r} does not show the value {value!r}"


# -- errors are the documented types -----------------------------------------------------------


def test_config_error_is_a_value_error_and_config_type_error_a_type_error() -> None:
    """ConfigError is a ValueError; ConfigTypeError is a TypeError (and a ConfigError)."""
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigTypeError, TypeError)
    assert issubclass(ConfigTypeError, ConfigError)
    assert not issubclass(ConfigError, TypeError)


# -- out-of-range values: ConfigError (ValueError) naming field and value ----------------------

BAD_VALUES: list[tuple[str, type[Any], dict[str, Any], str, object]] = [
    # (id, config class, kwargs, field named in the message, value shown in the message)
    ("base_delay negative", BackoffConfig, {"base_delay": -0.5}, "base_delay", -0.5),
    ("base_delay negative int", BackoffConfig, {"base_delay": -1}, "base_delay", -1),
    ("base_delay nan", BackoffConfig, {"base_delay": NAN}, "base_delay", NAN),
    ("base_delay inf", BackoffConfig, {"base_delay": INF}, "base_delay", INF),
    ("base_delay -inf", BackoffConfig, {"base_delay": -INF}, "base_delay", -INF),
    ("max_delay negative", BackoffConfig, {"max_delay": -1.0}, "max_delay", -1.0),
    ("max_delay nan", BackoffConfig, {"max_delay": NAN}, "max_delay", NAN),
    ("max_delay inf", BackoffConfig, {"max_delay": INF}, "max_delay", INF),
    ("max_retries negative", BackoffConfig, {"max_retries": -1}, "max_retries", -1),
    ("failure_threshold 0", CircuitBreakerConfig, {"failure_threshold": 0}, "failure_threshold", 0),
    (
        "failure_threshold negative",
        CircuitBreakerConfig,
        {"failure_threshold": -3},
        "failure_threshold",
        -3,
    ),
    ("cooldown_ms negative", CircuitBreakerConfig, {"cooldown_ms": -1}, "cooldown_ms", -1),
    ("cooldown_ms nan", CircuitBreakerConfig, {"cooldown_ms": NAN}, "cooldown_ms", NAN),
    ("cooldown_ms inf", CircuitBreakerConfig, {"cooldown_ms": INF}, "cooldown_ms", INF),
    ("retry_on 99", ResilientConfig, {"retry_on": [500, 99]}, "retry_on", 99),
    ("retry_on 600", ResilientConfig, {"retry_on": [600]}, "retry_on", 600),
    ("retry_on 0", ResilientConfig, {"retry_on": [0]}, "retry_on", 0),
    ("retry_on negative", ResilientConfig, {"retry_on": [-503]}, "retry_on", -503),
    ("jitter unknown", BackoffConfig, {"jitter": "gaussian"}, "jitter", "gaussian"),
    ("jitter typo", BackoffConfig, {"jitter": "fulll"}, "jitter", "fulll"),
    ("jitter empty", BackoffConfig, {"jitter": ""}, "jitter", ""),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "value"),
    [row[1:] for row in BAD_VALUES],
    ids=[row[0] for row in BAD_VALUES],
)
def test_out_of_range_value_fails_at_construction_with_config_error_naming_field_and_value(
    cls: type[Any], kwargs: dict[str, Any], field: str, value: object
) -> None:
    """An out-of-range value raises ConfigError (a ValueError) naming the field and the value."""
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert isinstance(info.value, ConfigError)
    _assert_names(info.value, field, value)


@pytest.mark.parametrize(
    ("base", "cap"),
    [(5.0, 1.0), (0.2, 0.1), (30.0001, 30.0), (5, 0.3), (100_000.0, 30.0)],
)
def test_base_delay_above_max_delay_is_accepted_as_in_the_seed(base: float, cap: float) -> None:
    """base_delay > max_delay is seed-valid (min(max_delay, base_delay * 2**n) caps every
    delay): accepted, stored as given (see tests/unit/test_hardening_config.py for the delays)."""
    cfg = BackoffConfig(base_delay=base, max_delay=cap)
    assert (cfg.base_delay, cfg.max_delay) == (base, cap)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_delay": 10**400}, "base_delay"),
        ({"max_delay": 10**400}, "max_delay"),
    ],
    ids=["base_delay", "max_delay"],
)
def test_int_too_large_for_a_float_delay_fails_with_config_error_not_overflow_error(
    kwargs: dict[str, Any], field: str
) -> None:
    """A delay given as an int beyond float range is non-finite: ConfigError, not OverflowError."""
    with pytest.raises(ConfigError) as info:
        BackoffConfig(**kwargs)
    assert field in str(info.value)


def test_int_too_large_for_a_float_cooldown_fails_with_config_error_not_overflow_error() -> None:
    """cooldown_ms given as an int beyond float range raises ConfigError, not OverflowError."""
    with pytest.raises(ConfigError) as info:
        CircuitBreakerConfig(cooldown_ms=10**400)
    assert "cooldown_ms" in str(info.value)


# -- wrong types: ConfigTypeError (TypeError) naming field and value ---------------------------

BAD_TYPES: list[tuple[str, type[Any], dict[str, Any], str, object]] = [
    ("max_retries=True", BackoffConfig, {"max_retries": True}, "max_retries", True),
    ("max_retries=False", BackoffConfig, {"max_retries": False}, "max_retries", False),
    ("max_retries float", BackoffConfig, {"max_retries": 3.0}, "max_retries", 3.0),
    ("max_retries str", BackoffConfig, {"max_retries": "3"}, "max_retries", "3"),
    ("base_delay=False", BackoffConfig, {"base_delay": False}, "base_delay", False),
    ("base_delay=True", BackoffConfig, {"base_delay": True}, "base_delay", True),
    ("base_delay str", BackoffConfig, {"base_delay": "0.1"}, "base_delay", "0.1"),
    ("base_delay None", BackoffConfig, {"base_delay": None}, "base_delay", None),
    ("max_delay=True", BackoffConfig, {"max_delay": True}, "max_delay", True),
    (
        "failure_threshold=True",
        CircuitBreakerConfig,
        {"failure_threshold": True},
        "failure_threshold",
        True,
    ),
    (
        "failure_threshold float",
        CircuitBreakerConfig,
        {"failure_threshold": 2.5},
        "failure_threshold",
        2.5,
    ),
    ("cooldown_ms=True", CircuitBreakerConfig, {"cooldown_ms": True}, "cooldown_ms", True),
    ("cooldown_ms str", CircuitBreakerConfig, {"cooldown_ms": "100"}, "cooldown_ms", "100"),
    ("retry_on with True", ResilientConfig, {"retry_on": [500, True]}, "retry_on", True),
    ("retry_on with False", ResilientConfig, {"retry_on": [False]}, "retry_on", False),
    ("retry_on str", ResilientConfig, {"retry_on": "500"}, "retry_on", "500"),
    ("retry_on holds str", ResilientConfig, {"retry_on": ["503"]}, "retry_on", "503"),
    ("retry_on holds float", ResilientConfig, {"retry_on": [503.0]}, "retry_on", 503.0),
    ("retry_on int", ResilientConfig, {"retry_on": 503}, "retry_on", 503),
    ("jitter int", BackoffConfig, {"jitter": 1}, "jitter", 1),
    ("jitter None", BackoffConfig, {"jitter": None}, "jitter", None),
    (
        "backoff dict",
        ResilientConfig,
        {"backoff": {"base_delay": 1.0}},
        "backoff",
        {"base_delay": 1.0},
    ),
    (
        "backoff is a breaker config",
        ResilientConfig,
        {"backoff": CircuitBreakerConfig()},
        "backoff",
        CircuitBreakerConfig(),
    ),
    (
        "circuit_breaker is a backoff config",
        ResilientConfig,
        {"circuit_breaker": BackoffConfig()},
        "circuit_breaker",
        BackoffConfig(),
    ),
    ("hooks holds an int", ResilientConfig, {"hooks": (print, 5)}, "hooks", 5),
    ("hooks holds a str", ResilientConfig, {"hooks": ["log"]}, "hooks", "log"),
    ("hooks is an int", ResilientConfig, {"hooks": 5}, "hooks", 5),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "value"),
    [row[1:] for row in BAD_TYPES],
    ids=[row[0] for row in BAD_TYPES],
)
def test_wrong_type_fails_at_construction_with_config_type_error_naming_field_and_value(
    cls: type[Any], kwargs: dict[str, Any], field: str, value: object
) -> None:
    """A wrong type (a bool for a number, a str for codes...) raises ConfigTypeError naming both."""
    with pytest.raises(TypeError) as info:
        cls(**kwargs)
    assert isinstance(info.value, ConfigTypeError)
    _assert_names(info.value, field, value)


# -- accepted values ---------------------------------------------------------------------------


def test_seed_defaults() -> None:
    """Defaults are the seed's: 0.1 s / 30 s / 3 retries, threshold 3, 10 s, no fallback."""
    backoff = BackoffConfig()
    assert (backoff.base_delay, backoff.max_delay, backoff.max_retries) == (0.1, 30.0, 3)
    assert backoff.jitter is Jitter.FULL
    breaker = CircuitBreakerConfig()
    assert (breaker.failure_threshold, breaker.cooldown_ms) == (3, 10_000)
    assert breaker.cooldown == 10.0
    config = ResilientConfig()
    assert config.fallback is None
    assert set(config.retry_on) == {429, 500, 502, 503, 504}
    assert config.backoff == BackoffConfig()
    assert config.circuit_breaker == CircuitBreakerConfig()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"base_delay": 0, "max_delay": 0}, (0.0, 0.0, 3)),
        ({"base_delay": 1, "max_delay": 1, "max_retries": 0}, (1.0, 1.0, 0)),
        ({"base_delay": 0.25, "max_delay": 60, "max_retries": 10}, (0.25, 60.0, 10)),
    ],
)
def test_boundary_values_are_accepted_and_delays_become_floats(
    kwargs: dict[str, Any], expected: tuple[float, float, int]
) -> None:
    """Zero delays, base == max and max_retries == 0 are valid; int delays are stored as float."""
    cfg = BackoffConfig(**kwargs)
    assert (cfg.base_delay, cfg.max_delay, cfg.max_retries) == expected
    assert type(cfg.base_delay) is float
    assert type(cfg.max_delay) is float


@pytest.mark.parametrize(
    ("threshold", "cooldown_ms"),
    [(1, 0), (1, 0.5), (1000, 60_000), (3, 10_000.0)],
)
def test_breaker_boundary_values_are_accepted(threshold: int, cooldown_ms: float) -> None:
    """failure_threshold >= 1 and cooldown_ms >= 0 (int or float) are valid."""
    cfg = CircuitBreakerConfig(failure_threshold=threshold, cooldown_ms=cooldown_ms)
    assert cfg.failure_threshold == threshold
    assert cfg.cooldown == pytest.approx(cooldown_ms / 1000)


@pytest.mark.parametrize("codes", [[100], [599], (429, 503), {500}, range(500, 505)])
def test_retry_on_accepts_any_iterable_of_codes_in_100_to_599(codes: Any) -> None:
    """retry_on takes any collection of ints in 100-599, stored as a frozenset."""
    cfg = ResilientConfig(retry_on=codes)
    assert isinstance(cfg.retry_on, frozenset)
    assert cfg.retry_on == frozenset(codes)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("full", Jitter.FULL),
        ("FULL", Jitter.FULL),
        ("Full", Jitter.FULL),
        ("equal", Jitter.EQUAL),
        ("EQUAL", Jitter.EQUAL),
        ("decorrelated", Jitter.DECORRELATED),
        ("DeCorrelated", Jitter.DECORRELATED),
        ("none", Jitter.NONE),
        ("NONE", Jitter.NONE),
        (Jitter.EQUAL, Jitter.EQUAL),
    ],
)
def test_jitter_names_are_case_insensitive_and_normalised_to_the_enum(
    given: str, expected: Jitter
) -> None:
    """A jitter name in any case is accepted and stored as the Jitter enum member itself."""
    cfg = BackoffConfig(jitter=given)
    assert cfg.jitter is expected
    assert type(cfg.jitter) is Jitter


@pytest.mark.parametrize(
    ("instance", "field", "value"),
    [
        (BackoffConfig(), "base_delay", 1.0),
        (BackoffConfig(), "max_retries", 10),
        (BackoffConfig(), "jitter", Jitter.NONE),
        (CircuitBreakerConfig(), "failure_threshold", 10),
        (CircuitBreakerConfig(), "cooldown_ms", 1),
        (ResilientConfig(), "fallback", "x"),
        (ResilientConfig(), "retry_on", frozenset({500})),
    ],
)
def test_configs_are_frozen(instance: object, field: str, value: object) -> None:
    """Assigning to a config field raises dataclasses.FrozenInstanceError and changes nothing."""
    before = getattr(instance, field)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, field, value)
    assert getattr(instance, field) == before


def test_dataclasses_replace_revalidates() -> None:
    """dataclasses.replace() goes through validation too: a bad replacement is rejected."""
    cfg = BackoffConfig()
    assert dataclasses.replace(cfg, max_retries=5).max_retries == 5
    with pytest.raises(ConfigError, match="max_retries"):
        dataclasses.replace(cfg, max_retries=-1)


def test_hooks_accept_one_callable_or_a_collection_of_callables() -> None:
    """hooks= takes callables (one, or a list/tuple) and stores them as a tuple."""

    def hook(_event: object) -> None:
        return None

    assert ResilientConfig(hooks=hook).hooks == (hook,)  # type: ignore[arg-type]
    assert ResilientConfig(hooks=[hook, print]).hooks == (hook, print)  # type: ignore[arg-type]


# -- the smooth_api alias ----------------------------------------------------------------------


def test_smooth_api_alias_exports_the_very_same_objects() -> None:
    """`smooth_api` is an alias: its names are the same objects as smoothapi's (not copies)."""
    import smooth_api  # noqa: PLC0415
    import smooth_api.config  # noqa: PLC0415
    from smooth_api import ResilientConfig as AliasConfig  # noqa: PLC0415
    from smooth_api import resilient_api as alias_decorator  # noqa: PLC0415
    from smooth_api.config import (  # noqa: PLC0415
        BackoffConfig as AliasBackoff,
    )
    from smooth_api.config import (  # noqa: PLC0415
        CircuitBreakerConfig as AliasBreakerConfig,
    )

    assert smooth_api.config.BackoffConfig is smoothapi.config.BackoffConfig
    assert AliasBackoff is BackoffConfig
    assert AliasBreakerConfig is CircuitBreakerConfig
    assert AliasConfig is ResilientConfig
    assert alias_decorator is smoothapi.resilient_api
    assert smooth_api.CircuitOpenError is smoothapi.CircuitOpenError
    assert smooth_api.CircuitState is smoothapi.CircuitState


def test_config_built_through_the_alias_is_accepted_by_smoothapi() -> None:
    """A config built via smooth_api is a smoothapi config (isinstance holds both ways)."""
    from smooth_api.config import BackoffConfig as AliasBackoff  # noqa: PLC0415

    cfg = ResilientConfig(backoff=AliasBackoff(max_retries=1))
    assert isinstance(cfg.backoff, BackoffConfig)
    assert cfg.backoff.max_retries == 1


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: BackoffConfig(base_delay=1e10, max_delay=1e10), "BackoffConfig.base_delay"),
        (lambda: BackoffConfig(base_delay=1e10, max_delay=1e10), "BackoffConfig.max_delay"),
        (
            lambda: BackoffConfig(base_delay=60, max_delay=86_401, max_retries=20),
            "BackoffConfig.max_delay",
        ),
        (lambda: ResilientConfig(retry_after_cap=1e9), "ResilientConfig.retry_after_cap"),
    ],
)
def test_a_wait_longer_than_a_day_is_rejected_at_construction(build: Any, field: str) -> None:
    """A wait the schedule can ask for that the OS sleep would overflow on (or a unit
    mistake) fails when the config is built, naming the field - not later, mid-retry, as an
    OverflowError.  A large max_delay the schedule never reaches is accepted (hardening
    tests)."""
    with pytest.raises(ConfigError, match=field):
        build()
