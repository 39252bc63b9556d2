"""The config loader: every field from every source, precedence, and errors that say where.

Sources: a mapping (config_from_mapping), a TOML file, a JSON file, SMOOTHAPI_*
environment variables, and keyword arguments in code (explicit).  Precedence,
field by field: explicit > environment > file > defaults; per upstream,
explicit > environment > its table > the file's top level > defaults.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import smoothapi
from smoothapi import config_sources
from smoothapi.config import (
    BackoffConfig,
    BulkheadConfig,
    CircuitBreakerConfig,
    HedgingConfig,
    Jitter,
    RateLimitConfig,
    ResilientConfig,
    RetryBudgetConfig,
    ThrottleConfig,
    Upstreams,
)
from smoothapi.config_sources import (
    ENV_ELSEWHERE,
    config_from_mapping,
    env_variables,
    load_config,
    load_upstreams,
)
from smoothapi.errors import ConfigError, ConfigTypeError

ROOT = Path(__file__).resolve().parents[2]

# The part of ResilientConfig each config class is (ResilientConfig itself: the top level).
PARTS: dict[type, str] = {
    BackoffConfig: "backoff",
    CircuitBreakerConfig: "circuit_breaker",
    RetryBudgetConfig: "retry_budget",
    BulkheadConfig: "bulkhead",
    RateLimitConfig: "rate_limit",
    HedgingConfig: "hedging",
    ThrottleConfig: "throttle",
}
CLASSES = (ResilientConfig, *PARTS)

# Fields that hold objects: given in code only.
OBJECTS = {
    (ResilientConfig, "fallback"),
    (ResilientConfig, "hooks"),
    (CircuitBreakerConfig, "store"),
    (RetryBudgetConfig, "store"),
    (RateLimitConfig, "store"),
}

STORES = {key for key in OBJECTS if key[1] == "store"}

# A valid value, not the default, for every field a file or the environment can set.  A new
# field makes test_every_field_is_covered fail until it is given one here (and, if its type is
# new, until the loader can read it).
SAMPLES: dict[tuple[type, str], Any] = {
    (ResilientConfig, "retry_on"): [503, 429],
    (ResilientConfig, "retry_after_cap"): 7.5,
    (ResilientConfig, "idempotent_methods"): ["GET", "QUERY"],
    (ResilientConfig, "retry_non_idempotent"): True,
    (ResilientConfig, "deadline"): 9.5,
    (BackoffConfig, "base_delay"): 0.25,
    (BackoffConfig, "max_delay"): 12.5,
    (BackoffConfig, "max_retries"): 5,
    (BackoffConfig, "jitter"): "equal",
    (CircuitBreakerConfig, "failure_threshold"): 7,
    (CircuitBreakerConfig, "cooldown_ms"): 2500,
    (CircuitBreakerConfig, "cooldown_multiplier"): 2.0,
    (CircuitBreakerConfig, "max_cooldown_ms"): 60000.0,
    (CircuitBreakerConfig, "cooldown_reset_ms"): 30000.0,
    (CircuitBreakerConfig, "failure_rate"): 0.5,
    (CircuitBreakerConfig, "window_ms"): 20000,
    (CircuitBreakerConfig, "minimum_calls"): 11,
    (CircuitBreakerConfig, "slow_call_ms"): 1500.0,
    (CircuitBreakerConfig, "half_open_calls"): 4,
    (RetryBudgetConfig, "max_tokens"): 20.0,
    (RetryBudgetConfig, "token_ratio"): 0.2,
    (RetryBudgetConfig, "batch"): 4,
    (BulkheadConfig, "max_concurrent"): 10,
    (BulkheadConfig, "max_queue"): 5,
    (BulkheadConfig, "max_wait"): 0.5,
    (RateLimitConfig, "rate"): 50.0,
    (RateLimitConfig, "burst"): 7.0,
    (RateLimitConfig, "max_wait"): 0.25,
    (RateLimitConfig, "follow_server"): False,
    (RateLimitConfig, "key"): "fleet-key",
    (HedgingConfig, "delay"): 0.2,
    (HedgingConfig, "max_hedges"): 2,
    (HedgingConfig, "percentile"): 95.0,
    (HedgingConfig, "min_delay"): 0.01,
    (ThrottleConfig, "k"): 3.0,
    (ThrottleConfig, "window_ms"): 5000.0,
}

# A value each field refuses, expressible in every source.
BAD: dict[tuple[type, str], Any] = {
    key: -5 for key, value in SAMPLES.items() if type(value) in (int, float)
} | {
    (ResilientConfig, "retry_on"): [99],
    (ResilientConfig, "idempotent_methods"): ["GE T"],
    (ResilientConfig, "retry_non_idempotent"): "maybe",
    (BackoffConfig, "jitter"): "wobbly",
    (RateLimitConfig, "follow_server"): "maybe",
    (RateLimitConfig, "key"): "k" * 1001,
}

SETTABLE = sorted(SAMPLES, key=lambda k: (k[0].__name__, k[1]))
SOURCES = ("mapping", "toml", "json", "env")


def path_of(cls: type, name: str) -> tuple[str, ...]:
    return (name,) if cls is ResilientConfig else (PARTS[cls], name)


def nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {path[-1]: value}
    for table in reversed(path[:-1]):
        tree = {table: tree}
    return tree


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise AssertionError(value)


def toml_text(tree: Mapping[str, Any], table: str = "") -> str:
    """A TOML document of a nested dict (tables after the values, as TOML wants)."""
    lines = [f"[{table}]"] if table else []
    lines += [f"{k} = {toml_value(v)}" for k, v in tree.items() if not isinstance(v, Mapping)]
    for k, v in tree.items():
        if isinstance(v, Mapping):
            inner = f'{table}."{k}"' if table.startswith("upstreams") else k
            lines.append(toml_text(v, f"{table}.{inner}" if table else k))
    return "\n".join(lines) + "\n"


def env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def env_name(path: tuple[str, ...], prefix: str = "SMOOTHAPI_") -> str:
    return prefix + "__".join(p.upper() for p in path)


def load_from(source: str, tree: dict[str, Any], tmp_path: Path) -> ResilientConfig:
    """``tree`` (one setting, nested) through ``source``."""
    if source == "mapping":
        return config_from_mapping(tree)
    if source == "env":
        ((top, inner),) = tree.items()
        if isinstance(inner, dict):
            ((name, value),) = inner.items()
            return load_config(env={env_name((top, name)): env_value(value)})
        return load_config(env={env_name((top,)): env_value(inner)})
    path = tmp_path / f"smoothapi.{source}"
    path.write_text(toml_text(tree) if source == "toml" else json.dumps(tree))
    return load_config(path, env={})


def where_of(source: str, path: tuple[str, ...], tmp_path: Path) -> str:
    """What an error about ``path`` from ``source`` starts with."""
    if source == "mapping":
        return f"mapping: {'.'.join(path)}: "
    if source == "env":
        return f"environment variable {env_name(path)}="
    return f"{tmp_path / f'smoothapi.{source}'}: {'.'.join(path)}: "


def dig(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


class FakeStore:
    """Every BreakerStore method by name: enough for the configs' check."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


# -- every field, every source ------------------------------------------------------------------


def test_every_field_is_covered() -> None:
    """Each init field of each config class is a part, an object, or has a sample and bad value."""
    for cls in CLASSES:
        for f in dataclasses.fields(cls):
            key = (cls, f.name)
            if cls is ResilientConfig and f.name in PARTS.values():
                continue
            assert key in SAMPLES or key in OBJECTS, f"give {cls.__name__}.{f.name} a sample"
            if key in SAMPLES:
                assert key in BAD, f"give {cls.__name__}.{f.name} a bad value"
        # The loader reads every field's type (a new type raises TypeError here).
        assert set(config_sources._fields(cls)) == {f.name for f in dataclasses.fields(cls)}
    # ResilientConfig's parts are exactly the classes of PARTS.
    parts = {
        name: field.part
        for name, field in config_sources._fields(ResilientConfig).items()
        if field.kind == "part"
    }
    assert parts == {name: cls for cls, name in PARTS.items()}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("cls", "name"), SETTABLE, ids=lambda v: getattr(v, "__name__", v))
def test_every_field_from_every_source(cls: type, name: str, source: str, tmp_path: Path) -> None:
    """A setting of each field from each source lands in that field, converted as the class does."""
    sample = SAMPLES[cls, name]
    expected = getattr(cls(**{name: sample}), name)
    assert expected != getattr(cls(), name), "the sample must differ from the default"
    path = path_of(cls, name)
    config = load_from(source, nest(path, sample), tmp_path)
    assert dig(config, path) == expected
    # and nothing else changed
    assert dataclasses.replace(config, **{path[0]: getattr(ResilientConfig(), path[0])}) == (
        ResilientConfig()
    )


@pytest.mark.parametrize(("cls", "name"), SETTABLE, ids=lambda v: getattr(v, "__name__", v))
def test_every_field_of_a_part_from_a_mapping_of_its_own(cls: type, name: str) -> None:
    """config_from_mapping(data, cls) builds any config class."""
    config = config_from_mapping({name: SAMPLES[cls, name]}, cls)
    assert isinstance(config, cls)
    assert config == cls(**{name: SAMPLES[cls, name]})


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("cls", "name"), SETTABLE, ids=lambda v: getattr(v, "__name__", v))
def test_a_bad_value_names_the_field_and_the_source(
    cls: type, name: str, source: str, tmp_path: Path
) -> None:
    """The class's own message, prefixed by the file and path, or the variable and its value."""
    path = path_of(cls, name)
    with pytest.raises(ConfigError) as info:
        load_from(source, nest(path, BAD[cls, name]), tmp_path)
    message = str(info.value)
    assert message.startswith(where_of(source, path, tmp_path)), message
    assert name in message.split(": ", 1)[1]
    assert isinstance(info.value.__cause__, (ConfigError, type(None)))


def test_the_messages_read_as_documented(tmp_path: Path) -> None:
    """The examples of the docs, word for word."""
    toml = tmp_path / "smoothapi.toml"
    toml.write_text("[backoff]\nmax_retries = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(toml, env={})
    assert str(info.value) == (
        f"{toml}: backoff.max_retries: BackoffConfig.max_retries must be >= 0, got -1"
    )
    with pytest.raises(ConfigTypeError) as info:
        load_config(env={"SMOOTHAPI_BACKOFF__MAX_RETRIES": "five"})
    assert str(info.value) == (
        "environment variable SMOOTHAPI_BACKOFF__MAX_RETRIES='five': expected an int for "
        "BackoffConfig.max_retries"
    )
    with pytest.raises(ConfigError) as info:
        load_config(env={}, backoff={"max_retries": -1})
    assert str(info.value).startswith("load_config(backoff=...): backoff.max_retries: ")
    with pytest.raises(ConfigError) as info:
        load_config(env={}, deadline=-1)
    assert str(info.value).startswith("load_config(deadline=...): ResilientConfig.deadline")


def test_a_rule_across_fields_names_every_source_involved(tmp_path: Path) -> None:
    """max_cooldown_ms from the environment under cooldown_ms from the file: both named."""
    toml = tmp_path / "s.toml"
    toml.write_text("[circuit_breaker]\ncooldown_ms = 100\n")
    with pytest.raises(ConfigError) as info:
        load_config(toml, env={"SMOOTHAPI_CIRCUIT_BREAKER__MAX_COOLDOWN_MS": "5"})
    message = str(info.value)
    assert message.startswith(
        f"{toml}: circuit_breaker.cooldown_ms and environment variable "
        "SMOOTHAPI_CIRCUIT_BREAKER__MAX_COOLDOWN_MS='5': CircuitBreakerConfig.max_cooldown_ms"
    ), message
    with pytest.raises(ConfigError, match=r"SMOOTHAPI_DEADLINE='0.01'"):
        load_config(toml, env={"SMOOTHAPI_DEADLINE": "0.01", "SMOOTHAPI_BACKOFF__JITTER": "none"})


# -- environment values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "text", "path", "value"),
    [
        ("SMOOTHAPI_RETRY_NON_IDEMPOTENT", word, ("retry_non_idempotent",), truth)
        for words, truth in (
            (("true", "TRUE", "1", "yes", "on", " On "), True),
            (("false", "0", "no", "off", "OFF"), False),
        )
        for word in words
    ]
    + [
        ("SMOOTHAPI_RETRY_ON", "429, 503,", ("retry_on",), frozenset({429, 503})),
        ("SMOOTHAPI_RETRY_ON", "", ("retry_on",), frozenset()),
        ("SMOOTHAPI_IDEMPOTENT_METHODS", "get,query", ("idempotent_methods",), {"GET", "QUERY"}),
        ("SMOOTHAPI_DEADLINE", "none", ("deadline",), None),
        ("SMOOTHAPI_DEADLINE", "", ("deadline",), None),
        ("SMOOTHAPI_DEADLINE", " 2.5 ", ("deadline",), 2.5),
        ("SMOOTHAPI_BACKOFF__MAX_RETRIES", "1_000", ("backoff", "max_retries"), 1000),
        ("SMOOTHAPI_BACKOFF__JITTER", "NONE", ("backoff", "jitter"), Jitter.NONE),
        ("SMOOTHAPI_RATE_LIMIT__KEY", "None", ("rate_limit", "key"), None),
        ("SMOOTHAPI_RATE_LIMIT__BURST", "none", ("rate_limit", "burst"), 50.0),
        ("SMOOTHAPI_HEDGING__PERCENTILE", "NONE", ("hedging", "percentile"), None),
    ],
)
def test_environment_values(var: str, text: str, path: tuple[str, ...], value: Any) -> None:
    """bool words, comma lists, none/empty for optional fields, numbers as Python reads them."""
    env = {var: text}
    if path[0] == "rate_limit":
        env["SMOOTHAPI_RATE_LIMIT__RATE"] = "50"
    assert dig(load_config(env=env), path) == value


@pytest.mark.parametrize(
    ("var", "text", "words"),
    [
        ("SMOOTHAPI_BACKOFF__MAX_RETRIES", "5.0", "expected an int"),
        ("SMOOTHAPI_BACKOFF__MAX_RETRIES", "", "expected an int"),
        ("SMOOTHAPI_BACKOFF__BASE_DELAY", "fast", "expected a number"),
        ("SMOOTHAPI_BACKOFF__BASE_DELAY", "none", "expected a number"),
        ("SMOOTHAPI_DEADLINE", "soon", "expected a number or none"),
        ("SMOOTHAPI_RETRY_ON", "429;503", "expected comma-separated ints"),
        ("SMOOTHAPI_RETRY_NON_IDEMPOTENT", "maybe", "expected true or false"),
        ("SMOOTHAPI_RATE_LIMIT", "maybe", "expected on or off"),
        ("SMOOTHAPI_BACKOFF", "on", "backoff is always on"),
        ("SMOOTHAPI_BACKOFF__BASE_DELAY", "nan", "must be finite"),
    ],
)
def test_bad_environment_values_name_the_variable(var: str, text: str, words: str) -> None:
    """A value that cannot be read (or that the class refuses) names the variable and its text."""
    with pytest.raises(ConfigError) as info:
        load_config(env={var: text})
    assert str(info.value).startswith(f"environment variable {var}={text!r}: ")
    assert words in str(info.value)


@pytest.mark.parametrize("part", ["retry_budget", "bulkhead", "rate_limit", "hedging", "throttle"])
def test_a_part_off_by_default_is_turned_on_and_off(part: str, tmp_path: Path) -> None:
    """Its fields create it with defaults for the rest; on/true its defaults; off/false/none off."""
    cls = next(c for c, n in PARTS.items() if n == part)
    name, sample = next((n, v) for (c, n), v in SAMPLES.items() if c is cls)
    on = load_config(env={env_name((part, name)): env_value(sample)})
    assert getattr(on, part) == cls(**{name: sample})
    assert getattr(load_config(env={env_name((part,)): "on"}), part) == cls()
    assert getattr(config_from_mapping({part: True}), part) == cls()
    assert getattr(config_from_mapping({part: {}}), part) == cls()
    toml = tmp_path / "on.toml"
    toml.write_text(f"[{part}]\n")
    assert getattr(load_config(toml, env={}), part) == cls()
    for off in ("off", "false", "0", "none", ""):
        assert getattr(load_config(toml, env={env_name((part,)): off}), part) is None
    assert getattr(config_from_mapping({part: False}), part) is None
    assert getattr(config_from_mapping({part: None}), part) is None
    assert getattr(config_from_mapping({part: "none"}), part) is None
    # off, then fields over it: on again, from its defaults
    assert getattr(load_config(toml, env={}, **{part: False}), part) is None
    with pytest.raises(ConfigError, match=f"turns {part} off, but"):
        load_config(env={env_name((part,)): "off", env_name((part, name)): env_value(sample)})


def test_parts_always_on_cannot_be_turned_off() -> None:
    """backoff and circuit_breaker take a table, not a switch."""
    with pytest.raises(ConfigTypeError, match="backoff is always on"):
        config_from_mapping({"backoff": False})
    with pytest.raises(ConfigTypeError, match="circuit_breaker takes a table"):
        config_from_mapping({"circuit_breaker": 3})
    with pytest.raises(ConfigTypeError, match="deadline takes a value, not a table"):
        config_from_mapping({"deadline": {"x": 1}})


# -- precedence ---------------------------------------------------------------------------------


def test_precedence_field_by_field(tmp_path: Path) -> None:
    """explicit > environment > file > defaults, each field on its own."""
    toml = tmp_path / "smoothapi.toml"
    toml.write_text(
        "deadline = 20\nretry_on = [503]\n"
        "[backoff]\nmax_retries = 5\nbase_delay = 0.2\nmax_delay = 10\n"
        "[circuit_breaker]\nfailure_threshold = 9\n"
    )
    env = {
        "SMOOTHAPI_BACKOFF__BASE_DELAY": "0.3",
        "SMOOTHAPI_BACKOFF__MAX_DELAY": "11",
        "SMOOTHAPI_DEADLINE": "30",
        "SMOOTHAPI_BULKHEAD__MAX_CONCURRENT": "10",
    }
    config = load_config(toml, env=env, backoff={"max_delay": 12}, retry_on=[429])
    assert config.backoff.max_retries == 5  # file
    assert config.backoff.base_delay == 0.3  # env over file
    assert config.backoff.max_delay == 12  # explicit over env over file
    assert config.backoff.jitter is Jitter.FULL  # default
    assert config.deadline == 30  # env over file
    assert config.retry_on == {429}  # explicit over file
    assert config.circuit_breaker.failure_threshold == 9  # file
    assert config.circuit_breaker.cooldown_ms == 10_000  # default
    assert config.bulkhead == BulkheadConfig(max_concurrent=10)  # env creates the part
    # Each layer alone
    assert load_config(toml, env={}).backoff.base_delay == 0.2
    assert load_config(env=env).backoff.max_retries == 3
    assert load_config(env={}) == ResilientConfig()


def test_an_object_in_code_replaces_its_part_a_mapping_merges(tmp_path: Path) -> None:
    """backoff=BackoffConfig(...) is the whole part; backoff={...} sets only its keys."""
    toml = tmp_path / "s.toml"
    toml.write_text("[backoff]\nmax_retries = 5\n")
    env = {"SMOOTHAPI_BACKOFF__BASE_DELAY": "0.3"}
    whole = load_config(toml, env=env, backoff=BackoffConfig(max_delay=4))
    assert whole.backoff == BackoffConfig(max_delay=4)
    merged = load_config(toml, env=env, backoff={"max_delay": 4})
    assert merged.backoff == BackoffConfig(max_retries=5, base_delay=0.3, max_delay=4)


def test_objects_come_from_code(tmp_path: Path) -> None:
    """hooks, fallback and stores: from keyword arguments only; elsewhere a clear error."""
    seen: list[object] = []
    store = FakeStore()
    config = load_config(
        env={},
        hooks=[seen.append],
        fallback="cached",
        circuit_breaker={"store": store, "failure_threshold": 2},
        retry_budget={"store": store},
        rate_limit={"store": store, "key": "k"},
    )
    assert config.hooks == (seen.append,)
    assert config.fallback == "cached"
    assert config.circuit_breaker.store is store
    assert config.retry_budget is not None
    assert config.retry_budget.store is store
    assert config.rate_limit is not None
    assert config.rate_limit.store is store
    for cls, name in sorted(OBJECTS - STORES, key=lambda k: (k[0].__name__, k[1])):
        path = path_of(cls, name)
        for source in ("mapping", "toml", "env"):
            with pytest.raises(ConfigTypeError) as info:
                load_from(source, nest(path, "something"), tmp_path)
            message = str(info.value)
            assert "cannot come from a file or the environment" in message
            assert "pass it in code" in message
    for cls, name in sorted(STORES, key=lambda k: (k[0].__name__, k[1])):
        path = path_of(cls, name)
        for source in ("mapping", "toml", "json"):
            with pytest.raises(ConfigTypeError) as info:
                load_from(source, nest(path, 6379), tmp_path)
            message = str(info.value)
            assert message.startswith(where_of(source, path, tmp_path))
            assert "takes a Redis URL (redis://, rediss:// or unix://) or 'none'" in message
            assert "a store object is passed in code" in message
    with pytest.raises(ConfigTypeError, match=r"CircuitBreakerConfig\(\.\.\., store=\.\.\.\)"):
        config_from_mapping({"store": 5}, CircuitBreakerConfig)


@pytest.mark.parametrize(("cls", "name"), sorted(STORES, key=lambda k: (k[0].__name__, k[1])))
@pytest.mark.parametrize("source", SOURCES)
def test_no_store_from_none(cls: type, name: str, source: str, tmp_path: Path) -> None:
    """'none' (or an empty variable) is no store: the part keeps its process-local state."""
    path = path_of(cls, name)
    config = load_from(source, nest(path, "none"), tmp_path)
    assert dig(config, path) is None


def test_a_store_url_builds_one_redis_store_per_url(
    redis_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis URL from a file or a variable: RedisStore.from_url, one per URL per load, shared
    by every part (and upstream); two loads share the breaker through Redis, as a fleet does."""
    from smoothapi import CircuitOpenError, RedisStore, resilient_api  # noqa: PLC0415

    url = redis_server.url
    env = {
        "SMOOTHAPI_CIRCUIT_BREAKER__STORE": url,
        "SMOOTHAPI_RETRY_BUDGET__STORE": f" {url} ",
        "SMOOTHAPI_RATE_LIMIT__STORE": url,
    }
    one = load_config(env=env, backoff={"max_retries": 0}, circuit_breaker={"failure_threshold": 2})
    store = one.circuit_breaker.store
    assert isinstance(store, RedisStore)
    assert one.retry_budget is not None
    assert one.retry_budget.store is store
    assert one.rate_limit is not None
    assert one.rate_limit.store is store
    toml = tmp_path / "fleet.toml"
    toml.write_text(
        f'[backoff]\nmax_retries = 0\n[circuit_breaker]\nstore = "{url}"\nfailure_threshold = 2\n'
        f'[upstreams."api.example.com".retry_budget]\nstore = "{url}"\n'
    )
    ups = load_upstreams(toml, env={})
    other = ups.default.circuit_breaker.store
    assert isinstance(other, RedisStore)
    assert other is not store  # another load: a store of its own
    api = ups.configs["api.example.com"]
    assert api.circuit_breaker.store is other
    assert api.retry_budget is not None
    assert api.retry_budget.store is other
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise ConnectionError("down")

    first = resilient_api(dataclasses.replace(one, retry_budget=None, rate_limit=None), name="cfg")
    second = resilient_api(ups.default, name="cfg")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            first(failing)()
    with pytest.raises(CircuitOpenError):  # opened by the other "process", through Redis
        second(failing)()
    assert len(calls) == 2
    store.close()
    other.close()


def test_a_store_url_without_redis_py_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "smoothapi.storage.redis", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError) as info:
        load_config(env={"SMOOTHAPI_CIRCUIT_BREAKER__STORE": "redis://user:secret@localhost/0"})
    message = str(info.value)
    assert message.startswith("environment variable SMOOTHAPI_CIRCUIT_BREAKER__STORE: ")
    assert "pip install 'smoothapi-py[redis]'" in message
    assert "secret" not in message


@pytest.mark.parametrize(
    "url",
    ["redis:/user:secret@localhost", "redis://user:secret@localhost/secret", "http://secret@x"],
)
def test_a_bad_store_url_is_never_shown(url: str, tmp_path: Path) -> None:
    """RedisStore.from_url's refusal, prefixed by where: the URL (and its password) never."""
    for source in ("env", "toml"):
        with pytest.raises(ConfigError) as info:
            load_from(source, nest(("circuit_breaker", "store"), url), tmp_path)
        message = str(info.value)
        assert message.startswith(where_of(source, ("circuit_breaker", "store"), tmp_path)[:40])
        assert "secret" not in message
        assert "RedisStore.from_url" in message


# -- unknown keys, variables and arguments ------------------------------------------------------


def test_unknown_keys_name_the_key_the_choices_and_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"backoff": {"max_retires": 1}}, source="settings.yaml")
    assert str(info.value) == (
        "settings.yaml: backoff.max_retires: unknown setting 'max_retires'; did you mean "
        "'max_retries'? BackoffConfig takes base_delay, max_delay, max_retries, jitter"
    )
    toml = tmp_path / "s.toml"
    toml.write_text("retry_onn = [503]\n")
    with pytest.raises(
        ConfigError,
        match=r"s\.toml: retry_onn: unknown setting 'retry_onn'; did "
        r"you mean 'retry_on'\? ResilientConfig takes backoff, ",
    ):
        load_config(toml, env={})
    with pytest.raises(ConfigError, match="unknown setting 'zzz'; ResilientConfig takes"):
        config_from_mapping({"zzz": 1})
    with pytest.raises(
        ConfigTypeError,
        match=r"load_config\(\) got an unexpected keyword argument "
        r"'backof'; did you mean 'backoff'\?",
    ):
        load_config(env={}, backof={})


def test_unknown_variables_are_errors_with_a_suggestion() -> None:
    """A typo under the prefix would be an override silently not applied: refused."""
    with pytest.raises(ConfigError) as info:
        load_config(env={"SMOOTHAPI_BACKOF__MAX_RETRIES": "5"})
    assert str(info.value).startswith(
        "environment variable SMOOTHAPI_BACKOF__MAX_RETRIES: unknown setting; did you mean "
        "'SMOOTHAPI_BACKOFF__MAX_RETRIES'?"
    )
    with pytest.raises(ConfigError, match="SMOOTHAPI_NOPE: unknown setting; the variables"):
        load_config(env={"SMOOTHAPI_NOPE": "1"})
    # Other prefixes and other variables are not the loader's business.
    assert load_config(env={"PATH": "/bin", "SMOOTHAPIX": "1", "smoothapi_deadline": "x"}) == (
        ResilientConfig()
    )


def test_variables_the_library_reads_elsewhere_are_left_alone() -> None:
    """Every SMOOTHAPI_* name in smoothapi/ is either the loader's or in ENV_ELSEWHERE."""
    found: set[str] = set()
    for source in (ROOT / "smoothapi").rglob("*.py"):
        if source.name == "config_sources.py":
            continue
        found |= set(re.findall(r"\bSMOOTHAPI_[A-Z0-9_]*[A-Z0-9]\b", source.read_text()))
    loader = set(env_variables())
    assert found - loader <= ENV_ELSEWHERE, f"add {found - loader - ENV_ELSEWHERE} to ENV_ELSEWHERE"
    assert found >= ENV_ELSEWHERE  # none stale
    assert load_config(env=dict.fromkeys(ENV_ELSEWHERE, "whatever")) == ResilientConfig()


def test_env_none_reads_os_environ_and_empty_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOOTHAPI_BACKOFF__MAX_RETRIES", "7")
    assert load_config().backoff.max_retries == 7
    assert load_config(env={}).backoff.max_retries == 3


def test_a_prefix_of_your_own() -> None:
    env = {"MYAPP_HTTP_DEADLINE": "4", "SMOOTHAPI_DEADLINE": "x"}
    assert load_config(env=env, prefix="MYAPP_HTTP_").deadline == 4
    with pytest.raises(ConfigError, match="prefix must be a non-empty string"):
        load_config(env={}, prefix="")
    assert env_variables("P_")["P_BACKOFF__MAX_RETRIES"] == ("backoff", "max_retries")


# -- files --------------------------------------------------------------------------------------


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('deadline = 2\n[backoff]\nmax_retries = "\n')
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML: .*line 3"):
        load_config(bad, env={})
    js = tmp_path / "broken.json"
    js.write_text('{"deadline": 2,\n  "backoff": }')
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON: .*line 2"):
        load_config(js, env={})
    js.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"broken\.json: must hold a table of settings"):
        load_config(js, env={})
    with pytest.raises(ConfigError, match=r"settings\.yaml: cannot read a \.yaml file"):
        load_config(tmp_path / "settings.yaml", env={})
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the config file"):
        load_config(tmp_path / "missing.toml", env={})
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\ndeadline = 2\n")
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8"):
        load_config(latin, env={})
    ok = tmp_path / "UPPER.TOML"
    ok.write_text("deadline = 2\n")
    assert load_config(str(ok), env={}).deadline == 2


def test_toml_on_python_310_without_tomli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither tomllib nor tomli: the error names the toml extra (and JSON still works)."""
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    toml = tmp_path / "s.toml"
    toml.write_text("deadline = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(toml, env={})
    assert str(info.value).startswith(f"{toml}: reading TOML on Python ")
    assert "needs tomli: pip install tomli (or use a .json file)" in str(info.value)
    js = tmp_path / "s.json"
    js.write_text('{"deadline": 2}')
    assert load_config(js, env={}).deadline == 2


def test_toml_through_tomli_when_tomllib_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Python 3.10 with the toml extra: tomli reads the file."""
    # tomllib stands in for tomli (the same API) from Python 3.11; on 3.10, tomli itself.
    reader = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    monkeypatch.setitem(sys.modules, "tomli", reader)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    toml = tmp_path / "s.toml"
    toml.write_text("deadline = 2\n")
    assert load_config(toml, env={}).deadline == 2


def test_a_file_with_upstreams_is_for_load_upstreams(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('deadline = 2\n[upstreams."api.example.com"]\ndeadline = 1\n')
    with pytest.raises(ConfigError, match=r"s\.toml: upstreams: .* load_upstreams\(\)"):
        load_config(toml, env={})
    assert load_upstreams(toml, env={}).default.deadline == 2


def test_config_from_mapping_takes_only_config_classes() -> None:
    with pytest.raises(ConfigTypeError, match="cls must be one of the config classes"):
        config_from_mapping({}, dict)
    with pytest.raises(ConfigTypeError, match="mapping: must be a table of settings"):
        config_from_mapping([1])  # type: ignore[arg-type]


def test_a_field_of_a_new_type_is_refused_until_the_loader_reads_it() -> None:
    """The guard behind test_every_field_is_covered: an unknown annotation is a TypeError."""

    @dataclasses.dataclass(frozen=True)
    class NewConfig:
        when: complex = 0j

    with pytest.raises(TypeError, match=r"cannot read NewConfig\.when \(complex\)"):
        config_sources._fields(NewConfig)


# -- upstreams ----------------------------------------------------------------------------------

UPSTREAMS_TOML = """\
deadline = 10
retry_on = [503]

[backoff]
max_retries = 5
base_delay = 0.2

[rate_limit]
rate = 20

[upstreams."api.example.com"]
deadline = 2

[upstreams."api.example.com".backoff]
max_retries = 1

[upstreams."*.internal.example.com"]
rate_limit = false
retry_budget = true

[upstreams."http://localhost:8080".circuit_breaker]
failure_threshold = 1
"""


def test_load_upstreams_merges_each_table_over_the_top_level(tmp_path: Path) -> None:
    toml = tmp_path / "smoothapi.toml"
    toml.write_text(UPSTREAMS_TOML)
    ups = load_upstreams(toml, env={})
    assert isinstance(ups, Upstreams)
    assert sorted(ups.configs) == [
        "*.internal.example.com",
        "api.example.com",
        "http://localhost:8080",
    ]
    top = ups.default
    assert (top.deadline, top.backoff.max_retries, top.backoff.base_delay) == (10, 5, 0.2)
    api = ups.for_origin("https://api.example.com:443")
    assert api is ups.configs["api.example.com"]
    assert (api.deadline, api.backoff.max_retries, api.backoff.base_delay) == (2, 1, 0.2)
    assert api.retry_on == {503}
    assert api.rate_limit == RateLimitConfig(rate=20)
    internal = ups.for_origin("https://db.internal.example.com:443")
    assert internal.rate_limit is None
    assert internal.retry_budget == RetryBudgetConfig()
    local = ups.for_origin("http://localhost:8080")
    assert local.circuit_breaker.failure_threshold == 1
    assert local.backoff.max_retries == 5
    assert ups.for_origin("http://localhost:8081") is top


def test_per_upstream_precedence(tmp_path: Path) -> None:
    """explicit > environment > the upstream's table > the top level > defaults."""
    toml = tmp_path / "smoothapi.toml"
    toml.write_text(UPSTREAMS_TOML)
    env = {"SMOOTHAPI_DEADLINE": "3", "SMOOTHAPI_BACKOFF__BASE_DELAY": "0.3"}
    seen: list[object] = []
    ups = load_upstreams(toml, env=env, hooks=[seen.append], backoff={"max_delay": 9})
    for config in (ups.default, *ups.configs.values()):
        assert config.deadline == 3  # env over every table
        assert config.backoff.base_delay == 0.3
        assert config.backoff.max_delay == 9  # explicit
        assert config.hooks == (seen.append,)
    assert ups.configs["api.example.com"].backoff.max_retries == 1  # its table
    assert ups.default.backoff.max_retries == 5  # top level
    assert ups.default.circuit_breaker.failure_threshold == 3  # default


def test_upstream_errors_name_the_file_and_the_upstream(tmp_path: Path) -> None:
    toml = tmp_path / "u.toml"
    toml.write_text('[upstreams."api.example.com".backoff]\nmax_retries = -1\n')
    with pytest.raises(ConfigError) as info:
        load_upstreams(toml, env={})
    assert str(info.value) == (
        f'{toml}: upstreams."api.example.com".backoff.max_retries: BackoffConfig.max_retries '
        "must be >= 0, got -1"
    )
    toml.write_text('[upstreams."api.example.com"]\nbackof = {}\n')
    with pytest.raises(ConfigError, match=r'upstreams\."api\.example\.com"\.backof: unknown'):
        load_upstreams(toml, env={})
    toml.write_text('[upstreams."api.example.com/v1"]\ndeadline = 1\n')
    with pytest.raises(ConfigError, match=r"u\.toml: upstreams: Upstreams key 'api\.example\.com/"):
        load_upstreams(toml, env={})
    toml.write_text("upstreams = 3\n")
    with pytest.raises(ConfigTypeError, match=r"u\.toml: upstreams must be a table of tables"):
        load_upstreams(toml, env={})
    toml.write_text('[upstreams]\n"api.example.com" = 3\n')
    with pytest.raises(ConfigTypeError, match=r'upstreams\."api\.example\.com": must be a table'):
        load_upstreams(toml, env={})


def test_load_upstreams_without_a_file() -> None:
    ups = load_upstreams(env={"SMOOTHAPI_DEADLINE": "2"})
    assert ups.default.deadline == 2
    assert ups.configs == {}


# -- the public names and the docs --------------------------------------------------------------


def test_public_names() -> None:
    for name in ("config_from_mapping", "load_config", "load_upstreams", "Upstreams"):
        assert name in smoothapi.__all__
        assert getattr(smoothapi, name) is getattr(
            config_sources if name != "Upstreams" else smoothapi.config, name
        )


DOCS = ROOT / "docs" / "configuration-files.md"


def test_every_toml_and_json_block_of_the_docs_loads(tmp_path: Path) -> None:
    """Each ```toml and ```json block of docs/configuration-files.md goes through the loader."""
    text = DOCS.read_text()
    blocks = re.findall(r"^```(toml|json)[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 3, "the page shows its TOML and JSON examples"
    for i, (language, block) in enumerate(blocks):
        path = tmp_path / f"block{i}.{language}"
        path.write_text(block)
        upstreams = load_upstreams(path, env={})
        assert upstreams.default != ResilientConfig() or upstreams.configs


def test_the_error_messages_of_the_docs_are_the_loaders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's list of messages, each produced by the loader as shown."""
    text = DOCS.read_text().split("## Error messages", 1)[1]
    (block,) = re.findall(r"^```text\n(.*?)^```", text, flags=re.S | re.M)[:1]
    shown = block.splitlines()
    monkeypatch.chdir(tmp_path)

    def message(call: Any, *args: Any, **kwargs: Any) -> str:
        with pytest.raises(ConfigError) as info:
            call(*args, **kwargs)
        return str(info.value)

    Path("smoothapi.toml").write_text("[backoff]\nmax_retries = -1\n")
    Path("upstreams.toml").write_text('[upstreams."api.example.com".backoff]\nmax_retries = -1\n')
    Path("syntax.toml").write_text("# 1\n\n\n\n\n[backoff]\nmax_retries = \n")
    Path("hooks.toml").write_text("hooks = []\n")
    Path("store.toml").write_text('[circuit_breaker]\nstore = "redis://localhost:6379/db"\n')
    produced = [
        message(load_config, "smoothapi.toml", env={}),
        message(load_upstreams, "upstreams.toml", env={}),
        message(load_config, env={"SMOOTHAPI_BACKOFF__MAX_RETRIES": "five"}),
        message(load_config, env={"SMOOTHAPI_BACKOFF__MAX_RETRIES": "-1"}),
        message(load_config, env={}, backoff={"max_retries": -1}),
        message(config_from_mapping, {"backoff": {"max_retires": 1}}, source="settings.yaml"),
        message(load_config, "syntax.toml", env={}).replace("syntax.toml", "smoothapi.toml"),
        message(load_config, "hooks.toml", env={}).replace("hooks.toml", "smoothapi.toml"),
        message(load_config, "store.toml", env={}).replace("store.toml", "smoothapi.toml"),
    ]
    assert produced == shown


def test_the_example_files_load() -> None:
    """examples/config/*.toml: what the docs point to."""
    single = load_config(ROOT / "examples/config/smoothapi.toml", env={})
    assert single.circuit_breaker.failure_rate == 0.5
    assert single.retry_budget == RetryBudgetConfig(token_ratio=0.1)
    ups = load_upstreams(ROOT / "examples/config/upstreams.toml", env={})
    api = ups.for_origin("https://api.example.com:443")
    assert api.rate_limit == RateLimitConfig(rate=50, max_wait=0.5)
    assert api.backoff.max_retries == 1
    internal = ups.for_origin("https://billing.internal.example.com:443")
    assert internal.deadline is None
    assert internal.circuit_breaker.cooldown_ms == 2000
    assert ups.for_origin("http://localhost:8080").backoff.max_retries == 0
    assert ups.for_origin("http://localhost:8081") is ups.default


def test_a_config_object_in_a_mapping_is_taken_as_it_is() -> None:
    """Built in Python, a mapping may hold a part already built (and validated)."""
    backoff = BackoffConfig(max_retries=1)
    assert config_from_mapping({"backoff": backoff}).backoff is backoff
    with pytest.raises(ConfigTypeError, match="backoff takes a table of BackoffConfig's"):
        config_from_mapping({"backoff": BulkheadConfig()})


@pytest.mark.parametrize("part", ["backoff", "circuit_breaker"])
@pytest.mark.parametrize("value", ["true", "false"])
def test_a_part_always_on_takes_a_table_not_a_bool(tmp_path: Path, part: str, value: str) -> None:
    path = tmp_path / "smoothapi.toml"
    path.write_text(f"{part} = {value}\n")
    with pytest.raises(ConfigTypeError, match=f"{part} is always on; give its settings as a table"):
        load_config(path, env={})
