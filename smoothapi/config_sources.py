"""Configs from mappings, TOML/JSON files and ``SMOOTHAPI_*`` environment variables.

* :func:`config_from_mapping` - any config class from nested settings
  (``{"backoff": {"max_retries": 5}}``), as parsed from YAML, a settings
  system or your own format.
* :func:`load_config` - a :class:`~smoothapi.ResilientConfig` from a ``.toml``
  or ``.json`` file, the environment and keyword arguments; precedence
  explicit > environment > file > defaults, field by field.
* :func:`load_upstreams` - the same, plus ``[upstreams."host"]`` tables: an
  :class:`~smoothapi.config.Upstreams` the transports pick a config from per
  origin.  Per upstream: explicit > environment > its table > the file's top
  level > defaults (the environment is the operator's override of them all).

Theory of operation: every source becomes a *layer*, a tree of settings whose
leaves remember where they came from (:class:`_Setting`: the value and the
words an error starts with, such as ``smoothapi.toml: backoff.max_retries``).
A part's table (``[backoff]``, ``SMOOTHAPI_BACKOFF__*``) is a subtree; a part
given whole (an object in code, ``true`` for its defaults, ``false`` or
``"none"`` for off) is a leaf.  Layers are merged field by field, the higher
over the lower (:func:`_merge`), and the merged tree is built bottom-up
(:func:`_build`): each part's dataclass from its fields, then the config.  The
constructors validate as they always do; an error they raise is raised again
prefixed by where the values it names came from.

What a field takes is read from its annotation (:func:`_fields`): a field
whose annotation the loader does not know is an error at its first use, and a
test builds every field of every config class from every source, so a new
field cannot go unreadable unnoticed.  Objects - hooks, the fallback - never
come from a file or the environment: they are passed in code.  A store comes
from either as a Redis URL (built with ``RedisStore.from_url`` when the config
is, one store per URL per load), or from code as an object.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar, overload

from .config import (
    BackoffConfig,
    BulkheadConfig,
    CircuitBreakerConfig,
    HedgingConfig,
    RateLimitConfig,
    ResilientConfig,
    RetryBudgetConfig,
    ThrottleConfig,
    Upstreams,
)
from .errors import ConfigError, ConfigTypeError

__all__ = [
    "ENV_ELSEWHERE",
    "config_from_mapping",
    "config_from_sources",
    "env_variables",
    "load_config",
    "load_upstreams",
    "read_config_file",
]

T = TypeVar("T")

#: The config classes the loader builds.
CONFIG_CLASSES: Final[tuple[type, ...]] = (
    ResilientConfig,
    BackoffConfig,
    CircuitBreakerConfig,
    RetryBudgetConfig,
    BulkheadConfig,
    RateLimitConfig,
    HedgingConfig,
    ThrottleConfig,
)
_BY_NAME: Final = {cls.__name__: cls for cls in CONFIG_CLASSES}

#: ``SMOOTHAPI_*`` variables the library reads elsewhere: the loader leaves them alone.
ENV_ELSEWHERE: Final = frozenset({"SMOOTHAPI_PROMETHEUS", "SMOOTHAPI_REDIS_URL"})

# What a field takes, by its annotation (config.py's, as written there).
_SCALARS: Final = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "Jitter | str": "str",
    "Iterable[int]": "ints",
    "Iterable[str]": "strs",
}
# Objects: given in code only.
_OBJECTS: Final = {
    "Any": "a value or a callable of yours",
    "tuple[Callable[[Event], object], ...]": "callables",
}
# A store: a Redis URL from a file or the environment (RedisStore.from_url), or an object.
_STORE: Final = "BreakerStore"

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


class _On:
    """A part turned on with its defaults (``rate_limit = true``)."""

    def __repr__(self) -> str:
        return "on"


_ON: Final = _On()


class _StoreURL(NamedTuple):
    """A store's URL, from a file or a variable: built into a RedisStore when the config is."""

    url: str

    def __repr__(self) -> str:
        return "<a store URL>"  # never the URL: it may hold a password


class _Field(NamedTuple):
    name: str
    kind: str  # int, float, bool, str, ints, strs, part, object, store
    optional: bool  # takes None
    part: type | None  # the dataclass of a part
    owner: type
    note: str = ""  # what an object field holds


class _Setting(NamedTuple):
    value: Any
    where: str  # what an error about it starts with
    code: bool = False  # given in code: objects are welcome


_Tree = dict[str, Any]  # name -> _Setting or a subtree (a part's table)

_FIELDS: dict[type, dict[str, _Field]] = {}


def _fields(cls: type) -> dict[str, _Field]:
    """The init fields of config class ``cls``, each with what it takes."""
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    fields: dict[str, _Field] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        text = str(f.type).replace("'", "")
        optional = text.endswith(" | None")
        base = text.removesuffix(" | None")
        if base in _BY_NAME:
            fields[f.name] = _Field(f.name, "part", optional, _BY_NAME[base], cls)
        elif base in _SCALARS:
            fields[f.name] = _Field(f.name, _SCALARS[base], optional, None, cls)
        elif base == _STORE:
            fields[f.name] = _Field(f.name, "store", optional, None, cls)
        elif base in _OBJECTS:
            fields[f.name] = _Field(f.name, "object", optional, None, cls, _OBJECTS[base])
        else:  # a new field: teach the loader its type (tests/unit/test_config_sources.py)
            raise TypeError(
                f"smoothapi.config_sources cannot read {cls.__name__}.{f.name} ({f.type}) "
                "from a file or the environment: add its type to _SCALARS or _OBJECTS"
            )
    _FIELDS[cls] = fields
    return fields


# -- errors -------------------------------------------------------------------------------------


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _unknown(where: str, key: str, cls: type) -> ConfigError:
    names = list(_fields(cls))
    return ConfigError(
        f"{where}: unknown setting {key!r}; {_suggest(key, names)}"
        f"{cls.__name__} takes {', '.join(names)}"
    )


def _hint(path: str, field: _Field) -> str:
    """How to pass the field at ``path`` in code."""
    top, _, rest = path.partition(".")
    if field.owner is not ResilientConfig and not rest:  # config_from_mapping(data, cls)
        return f"{field.owner.__name__}(..., {top}=...)"
    if rest:
        return f"load_config(..., {top}={{{rest.split('.')[-1]!r}: ...}})"
    return f"load_config(..., {top}=...)"


def _in_code(where: str, path: str, field: _Field) -> ConfigTypeError:
    return ConfigTypeError(
        f"{where}: {field.owner.__name__}.{field.name} cannot come from a file or the "
        f"environment ({field.note}); pass it in code, e.g. {_hint(path, field)}"
    )


def _blame(exc: Exception, given: list[tuple[str, str]]) -> ConfigError:
    """``exc`` from a constructor, prefixed by where the settings it names came from."""
    message = str(exc)
    named = [where for name, where in given if re.search(rf"\b{re.escape(name)}\b", message)]
    wheres = list(dict.fromkeys(named or [where for _, where in given]))
    prefix = " and ".join(wheres)
    text = f"{prefix}: {message}" if prefix else message
    if isinstance(exc, ConfigError):
        return type(exc)(text)
    if isinstance(exc, TypeError):
        return ConfigTypeError(text)
    return ConfigError(text)


# -- layers -------------------------------------------------------------------------------------


def _layer(
    cls: type,
    data: Mapping[str, Any],
    source: Callable[[str], str],
    *,
    code: bool = False,
    path: str = "",
) -> _Tree:
    """The layer of nested settings ``data`` for ``cls``; ``source(path)`` words where."""
    if not isinstance(data, Mapping):
        raise ConfigTypeError(f"{source(path)}: must be a table of settings, got {data!r}")
    fields = _fields(cls)
    tree: _Tree = {}
    for key, value in data.items():
        here = f"{path}.{key}" if path else str(key)
        where = source(here)
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            raise _unknown(where, str(key), cls)
        if field.kind == "part":
            assert field.part is not None
            if isinstance(value, Mapping):
                tree[key] = _layer(field.part, value, source, code=code, path=here)
            else:
                tree[key] = _Setting(_whole(field, value, where, code=code), where, code)
            continue
        if field.kind == "store" and (code or isinstance(value, str) or value is None):
            tree[key] = _Setting(_store_url(value), where, code)
            continue
        if field.kind == "store":
            raise ConfigTypeError(
                f"{where}: {field.owner.__name__}.{field.name} takes a Redis URL "
                "(redis://, rediss:// or unix://) or 'none' from a file or the environment; "
                f"a store object is passed in code, e.g. {_hint(here, field)}"
            )
        if isinstance(value, Mapping) and not (code and field.kind == "object"):
            raise ConfigTypeError(f"{where}: {key} takes a value, not a table")
        if field.kind == "object" and not code:
            raise _in_code(where, here, field)
        none = field.optional and isinstance(value, str) and value.strip().lower() == "none"
        tree[key] = _Setting(None if none else value, where, code)
    return tree


def _store_url(value: Any) -> Any:
    """A string is a store's URL ('none' or empty: no store); anything else, as it is."""
    if not isinstance(value, str):
        return value
    url = value.strip()
    return None if url.lower() in ("", "none") else _StoreURL(url)


def _whole(field: _Field, value: Any, where: str, *, code: bool) -> Any:
    """A part given whole: None (off), _ON (its defaults) or, in code, the object."""
    assert field.part is not None
    name = field.part.__name__
    if isinstance(value, field.part):  # a config object: checked when it was built
        return value
    if isinstance(value, str) and value.strip().lower() == "none":
        value = None
    if isinstance(value, bool) or value is None:
        if field.optional:
            return _ON if value is True else None
        raise ConfigTypeError(
            f"{where}: {field.name} is always on; give its settings as a table "
            f"({name}'s fields), not {value!r}"
        )
    turn = "; true turns it on with its defaults, false or 'none' off" if field.optional else ""
    raise ConfigTypeError(
        f"{where}: {field.name} takes a table of {name}'s settings{turn}, got {value!r}"
    )


def _merge(lower: _Tree, higher: _Tree) -> _Tree:
    """``higher`` over ``lower``, field by field (neither is changed)."""
    merged = dict(lower)
    for key, node in higher.items():
        below = merged.get(key)
        if isinstance(node, dict):  # a table over a switch or an object: the table, on
            merged[key] = _merge(below, node) if isinstance(below, dict) else node
        else:
            merged[key] = node
    return merged


def _build(cls: type[T], tree: _Tree, stores: dict[str, Any] | None = None) -> T:
    """An instance of ``cls`` from a merged tree; errors prefixed by where.

    ``stores``: the stores built from URLs so far, by URL (one per URL per load).
    """
    stores = {} if stores is None else stores
    fields = _fields(cls)
    kwargs: dict[str, Any] = {}
    given: list[tuple[str, str]] = []
    for name, node in tree.items():
        field = fields[name]
        if isinstance(node, dict):
            assert field.part is not None
            kwargs[name] = _build(field.part, node, stores)
            given += _leaves(node)
            continue
        value = node.value
        if value is _ON:
            assert field.part is not None
            value = field.part()
        elif isinstance(value, _StoreURL):
            if value.url not in stores:
                stores[value.url] = _redis_store(value.url, node.where)
            value = stores[value.url]
        kwargs[name] = value
        given.append((name, node.where))
    try:
        return cls(**kwargs)
    except (ConfigError, TypeError, ValueError) as exc:
        raise _blame(exc, given) from exc


def _redis_store(url: str, where: str) -> Any:
    """``RedisStore.from_url(url)``; its errors (which never quote the URL) say where."""
    try:
        from .storage.redis import RedisStore  # noqa: PLC0415 - imports redis: only for a URL
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{where}: a store URL needs redis-py ({exc}): pip install 'smoothapi-py[redis]'"
        ) from None
    try:
        return RedisStore.from_url(url)
    except ConfigError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _leaves(tree: _Tree) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name, node in tree.items():
        if isinstance(node, dict):
            found += _leaves(node)
        else:
            found.append((name, node.where))
    return found


def _config_class(cls: object) -> type:
    if not isinstance(cls, type) or cls not in CONFIG_CLASSES:
        names = ", ".join(c.__name__ for c in CONFIG_CLASSES)
        raise ConfigTypeError(f"cls must be one of the config classes ({names}), got {cls!r}")
    return cls


# -- mappings -----------------------------------------------------------------------------------


@overload
def config_from_mapping(data: Mapping[str, Any], *, source: str = "mapping") -> ResilientConfig: ...
@overload
def config_from_mapping(data: Mapping[str, Any], cls: type[T], *, source: str = "mapping") -> T: ...
def config_from_mapping(
    data: Mapping[str, Any], cls: type[Any] = ResilientConfig, *, source: str = "mapping"
) -> Any:
    """A config of class ``cls`` (any config class) from nested settings.

    ``config_from_mapping({"backoff": {"max_retries": 5}, "deadline": 2.5})``;
    a part is a nested mapping, ``True`` (its defaults) or ``False``/``None``
    (off, for a part that is off by default).  The settings are data, as read
    from a file: hooks, the fallback and stores are passed in code.  An
    unknown key, a bad value or a missing object raise
    :class:`~smoothapi.errors.ConfigError` naming ``source`` and the key.
    """
    cls = _config_class(cls)
    return _build(cls, _layer(cls, data, lambda path: f"{source}: {path}" if path else source))


def config_from_sources(
    sources: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    code: Mapping[str, Any] | None = None,
    function: str = "config_from_sources",
) -> ResilientConfig:
    """A :class:`~smoothapi.ResilientConfig` from several mappings, each over those before it.

    ``sources`` are ``(where, settings)`` pairs, lowest precedence first (the
    simulator's: its file, then each ``--set``); ``code`` (keyword arguments,
    objects allowed, errors naming ``function(name=...)``) goes over them all.
    """
    tree: _Tree = {}
    for where, data in sources:
        tree = _merge(tree, _layer(ResilientConfig, data, _prefixed(where)))
    if code:
        tree = _merge(tree, _code_layer(ResilientConfig, code, function))
    return _build(ResilientConfig, tree)


def _prefixed(where: str, *, dot: bool = False) -> Callable[[str], str]:
    """Where a setting at ``path`` came from: ``where: path`` (``where.path`` with ``dot``)."""
    if dot:
        return lambda path: f"{where}.{path}" if path else where
    return lambda path: f"{where}: {path}" if path else where


def _code_layer(cls: type, given: Mapping[str, Any], function: str) -> _Tree:
    """The layer of keyword arguments: ``load_config(backoff=...)`` words where."""
    fields = _fields(cls)
    tree: _Tree = {}
    for key, value in given.items():
        if key not in fields:
            raise ConfigTypeError(
                f"{function}() got an unexpected keyword argument {key!r}; "
                f"{_suggest(key, list(fields))}{cls.__name__} takes {', '.join(fields)}"
            )
        name = f"{function}({key}=...)"

        def source(path: str, name: str = name, key: str = key) -> str:
            return name if path in ("", key) else f"{name}: {path}"

        tree.update(_layer(cls, {key: value}, source, code=True))
    return tree


# -- files --------------------------------------------------------------------------------------


def _tomllib(path: str) -> Any:
    """tomllib (Python 3.11+), else tomli (the toml extra on 3.10), else an error saying so."""
    for name in ("tomllib", "tomli"):
        try:
            # By name: mypy checks for Python 3.10, which has neither module.
            return importlib.import_module(name)
        except ImportError:
            continue
    version = ".".join(map(str, sys.version_info[:2]))
    raise ConfigError(
        f"{path}: reading TOML on Python {version} needs tomli: "
        "pip install tomli (or use a .json file)"
    )


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The table of settings in a ``.toml`` or ``.json`` file, unchecked."""
    name = os.fspath(path)
    suffix = Path(name).suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(
            f"{name}: cannot read a {suffix or 'suffix-less'!s} file; "
            "configs are .toml or .json files"
        )
    toml = _tomllib(name) if suffix == ".toml" else None
    try:
        with open(name, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    data: Any
    if toml is None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: not valid JSON: {exc}") from None
    else:
        try:
            data = toml.loads(text)
        except toml.TOMLDecodeError as exc:
            raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: must hold a table of settings, got {type(data).__name__}")
    return data


# -- the environment ----------------------------------------------------------------------------


def env_variables(prefix: str = "SMOOTHAPI_") -> dict[str, tuple[str, ...]]:
    """Every variable the loader reads, with the path of the field it sets.

    ``SMOOTHAPI_DEADLINE`` -> ``("deadline",)``; ``SMOOTHAPI_BACKOFF__MAX_RETRIES``
    -> ``("backoff", "max_retries")``; a part's own name (``SMOOTHAPI_RATE_LIMIT``)
    turns it on or off.
    """
    names: dict[str, tuple[str, ...]] = {}
    for field in _fields(ResilientConfig).values():
        top = f"{prefix}{field.name.upper()}"
        names[top] = (field.name,)
        if field.part is not None:
            for inner in _fields(field.part).values():
                names[f"{top}__{inner.name.upper()}"] = (field.name, inner.name)
    return names


def _env_layer(env: Mapping[str, str], prefix: str) -> _Tree:
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(f"load_config prefix must be a non-empty string, got {prefix!r}")
    names = env_variables(prefix)
    tree: _Tree = {}
    for var in sorted(env):
        if not var.startswith(prefix) or var in ENV_ELSEWHERE:
            continue
        raw = env[var]
        path = names.get(var)
        if path is None:
            # Compared without the prefix, which every name shares.
            close = _suggest(var[len(prefix) :], [n[len(prefix) :] for n in names])
            close = close.replace("'", f"'{prefix}", 1) if close else ""
            raise ConfigError(
                f"environment variable {var}: unknown setting; "
                f"{close}the variables are {prefix}<FIELD> and "
                f"{prefix}<PART>__<FIELD> (e.g. {prefix}BACKOFF__MAX_RETRIES); unset it, "
                "or pick another prefix"
            )
        owner: type = ResilientConfig
        node = tree
        for name in path[:-1]:
            part = _fields(owner)[name].part
            assert part is not None
            owner = part
            inner = node.get(name)
            if isinstance(inner, _Setting) and inner.value is None:  # sorted: it came first
                raise ConfigError(
                    f"{inner.where} turns {name} off, but {var} sets one of its fields; "
                    "unset one of them"
                )
            if not isinstance(inner, dict):  # given fields turn the part on
                inner = node[name] = {}
            node = inner
        field = _fields(owner)[path[-1]]
        if field.kind == "store":  # never the value: a URL may hold a password
            node[path[-1]] = _Setting(_store_url(raw), f"environment variable {var}")
            continue
        where = f"environment variable {var}={raw!r}"
        if field.kind == "object":
            raise _in_code(f"environment variable {var}", ".".join(path), field)
        if field.kind == "part":
            if path[-1] not in node:  # a part's fields are given too: they turn it on
                node[path[-1]] = _Setting(_env_whole(field, raw, where), where)
            continue
        node[path[-1]] = _Setting(_parse(field, raw, where), where)
    return tree


def _env_whole(field: _Field, raw: str, where: str) -> Any:
    word = raw.strip().lower()
    if field.optional and word in _TRUE:
        return _ON
    if field.optional and (word in _FALSE or word in ("", "none")):
        return None
    assert field.part is not None
    prefix = where.split("=", 1)[0].removeprefix("environment variable ")
    if not field.optional:
        raise ConfigTypeError(
            f"{where}: {field.name} is always on; set its fields, e.g. {prefix}__"
            f"{next(iter(_fields(field.part))).upper()}"
        )
    raise ConfigTypeError(f"{where}: expected on or off (true/false, 1/0, yes/no, on/off, none)")


def _parse(field: _Field, raw: str, where: str) -> Any:
    """An environment variable's text as the field's type; ConfigTypeError naming it."""
    text = raw.strip()
    if field.optional and text.lower() in ("", "none"):
        return None
    kind = field.kind
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool" and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        if kind == "bool":
            raise ValueError(text)  # noqa: TRY301 - worded once, below
        if kind == "ints":
            return [int(item) for item in _items(text)]
        if kind == "strs":
            return list(_items(text))
    except ValueError:
        expected = {
            "int": "an int",
            "float": "a number",
            "bool": "true or false (1/0, yes/no, on/off)",
            "ints": "comma-separated ints (e.g. 429,503)",
        }[kind]
        none = " or none" if field.optional else ""
        raise ConfigTypeError(
            f"{where}: expected {expected}{none} for {field.owner.__name__}.{field.name}"
        ) from None
    return text


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


# -- files, the environment and code ------------------------------------------------------------


def _layers(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    prefix: str,
    explicit: Mapping[str, Any],
    function: str,
) -> tuple[_Tree, dict[str, Any] | None, str, _Tree, _Tree]:
    """(file's top level, its upstreams table or None, the file's name, env, explicit)."""
    top: _Tree = {}
    upstreams: dict[str, Any] | None = None
    name = ""
    if path is not None:
        name = os.fspath(path)
        data = read_config_file(name)
        if "upstreams" in data:
            upstreams = data.pop("upstreams")
            if not isinstance(upstreams, Mapping):
                raise ConfigTypeError(
                    f"{name}: upstreams must be a table of tables, e.g. "
                    f'[upstreams."api.example.com"], got {upstreams!r}'
                )
        top = _layer(ResilientConfig, data, _prefixed(name))
    environment = _env_layer(os.environ if env is None else env, prefix)
    code = _code_layer(ResilientConfig, explicit, function)
    return top, (None if upstreams is None else dict(upstreams)), name, environment, code


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    prefix: str = "SMOOTHAPI_",
    **explicit: Any,
) -> ResilientConfig:
    """A :class:`~smoothapi.ResilientConfig` from a file, the environment and code.

    Precedence, field by field: ``explicit`` > environment > file > defaults,
    so a file's ``backoff.max_retries`` and ``SMOOTHAPI_BACKOFF__BASE_DELAY``
    both apply.

    * ``path`` - a ``.toml`` or ``.json`` file (None: none): the top level
      holds ``ResilientConfig``'s fields, its parts are tables (``[backoff]``).
      TOML needs Python 3.11+, or ``tomli`` (the ``toml`` extra) on 3.10.
      A file with ``[upstreams...]`` tables is for :func:`load_upstreams`.
    * ``env`` - the variables to read (None: ``os.environ``; ``{}``: none):
      ``SMOOTHAPI_<FIELD>`` and ``SMOOTHAPI_<PART>__<FIELD>``, e.g.
      ``SMOOTHAPI_DEADLINE=2.5``, ``SMOOTHAPI_RETRY_ON=429,503``,
      ``SMOOTHAPI_BACKOFF__MAX_RETRIES=5``.  Any other variable under the
      prefix (but those the library reads elsewhere, ``SMOOTHAPI_PROMETHEUS``
      and ``SMOOTHAPI_REDIS_URL``) is an error: a typo must not go unapplied.
    * ``prefix`` - the variables' prefix.
    * ``explicit`` - ``ResilientConfig``'s keyword arguments (a part as an
      object, which replaces it whole, or a mapping of some of its fields);
      objects such as ``hooks=[...]`` and ``fallback=`` come only from here.

    A part's ``store`` takes a Redis URL from the file or the environment
    (``SMOOTHAPI_CIRCUIT_BREAKER__STORE=redis://host:6379/0``), built with
    ``RedisStore.from_url`` (the ``redis`` extra) when the config is: one
    store per URL per call, shared by every part that names it; ``"none"``
    is no store.  No message shows the URL.

    Every error is a :class:`~smoothapi.errors.ConfigError` (or
    :class:`~smoothapi.errors.ConfigTypeError`) that starts with where the
    value came from: ``smoothapi.toml: backoff.max_retries: ...``,
    ``environment variable SMOOTHAPI_DEADLINE='x': ...``,
    ``load_config(backoff=...): ...``.
    """
    top, upstreams, name, environment, code = _layers(path, env, prefix, explicit, "load_config")
    if upstreams is not None:
        raise ConfigError(
            f"{name}: upstreams: per-upstream tables are read by load_upstreams(), which "
            "gives each upstream its config (load_upstreams(path).default is the top "
            "level's); load_config() would ignore them"
        )
    return _build(ResilientConfig, _merge(_merge(top, environment), code))


def load_upstreams(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    prefix: str = "SMOOTHAPI_",
    **explicit: Any,
) -> Upstreams:
    """An :class:`~smoothapi.config.Upstreams`: a config per upstream from one file.

    The file's top level is the default config; each
    ``[upstreams."api.example.com"]`` table (any key :class:`Upstreams`
    takes: ``host``, ``host:port``, ``scheme://host[:port]``,
    ``*.example.com``) holds settings merged over the top level field by
    field, its parts as sub-tables (``[upstreams."api.example.com".backoff]``).
    For each upstream: ``explicit`` > environment > its table > the top level
    > defaults - the environment overrides every upstream, as an operator's
    emergency switch.  ``env``, ``prefix`` and ``explicit`` are as for
    :func:`load_config`.  Give the result to a transport as its config:
    ``ResilientTransport(load_upstreams("smoothapi.toml"))``.
    """
    top, upstreams, name, environment, code = _layers(path, env, prefix, explicit, "load_upstreams")
    over = _merge(environment, code)
    stores: dict[str, Any] = {}  # one store per URL, shared by every upstream
    default = _build(ResilientConfig, _merge(top, over), stores)
    configs: dict[str, ResilientConfig] = {}
    for key, table in (upstreams or {}).items():
        here = f'{name}: upstreams."{key}"'
        if not isinstance(table, Mapping):
            raise ConfigTypeError(
                f"{here}: must be a table of settings (ResilientConfig's fields), got {table!r}"
            )
        layer = _layer(ResilientConfig, table, _prefixed(here, dot=True))
        configs[key] = _build(ResilientConfig, _merge(_merge(top, layer), over), stores)
    try:
        return Upstreams(default, configs)
    except ConfigError as exc:
        raise type(exc)(f"{name}: upstreams: {exc}") from exc
