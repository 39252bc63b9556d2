"""Upstreams: one config per upstream, picked per origin by the most specific key."""

from __future__ import annotations

import pytest

import smoothapi.config
from smoothapi.config import BackoffConfig, ResilientConfig, Upstreams
from smoothapi.errors import ConfigError, ConfigTypeError


def cfg(retries: int) -> ResilientConfig:
    """A config told apart by its max_retries."""
    return ResilientConfig(backoff=BackoffConfig(max_retries=retries))


DEFAULT = cfg(0)


def pick(keys: list[str], origin: str) -> str | None:
    """The key whose config for_origin returns (None: the default)."""
    configs = {key: cfg(i + 1) for i, key in enumerate(keys)}
    found = Upstreams(DEFAULT, configs).for_origin(origin)
    if found is DEFAULT:
        return None
    (key,) = [k for k, c in configs.items() if c is found]
    return key


# (keys, origin, the key that must win) - every key given matches the origin unless the
# row says otherwise; the winner is the most specific.
MATCHES = [
    (["api.example.com"], "https://api.example.com:443", "api.example.com"),
    (["api.example.com"], "http://api.example.com:8080", "api.example.com"),
    (["api.example.com"], "https://other.example.com:443", None),
    (["API.Example.COM"], "https://api.example.com:443", "API.Example.COM"),
    (["api.example.com:8443"], "https://api.example.com:443", None),
    (["api.example.com:8443"], "https://api.example.com:8443", "api.example.com:8443"),
    (["https://api.example.com"], "https://api.example.com:9000", "https://api.example.com"),
    (["https://api.example.com"], "http://api.example.com:80", None),
    (["HTTPS://api.example.com:443"], "https://api.example.com:443", "HTTPS://api.example.com:443"),
    (["https://api.example.com:443"], "https://api.example.com:8443", None),
    # the same host: scheme and port > port > scheme > host alone, in any order given
    (
        [
            "api.example.com",
            "https://api.example.com",
            "api.example.com:443",
            "https://api.example.com:443",
        ],
        "https://api.example.com:443",
        "https://api.example.com:443",
    ),
    (
        [
            "https://api.example.com:443",
            "api.example.com:443",
            "https://api.example.com",
            "api.example.com",
        ],
        "https://api.example.com:443",
        "https://api.example.com:443",
    ),
    (
        ["api.example.com", "https://api.example.com", "api.example.com:443"],
        "https://api.example.com:443",
        "api.example.com:443",
    ),
    (
        ["api.example.com", "https://api.example.com"],
        "https://api.example.com:443",
        "https://api.example.com",
    ),
    # wildcards: any depth below the suffix, not the domain itself
    (["*.example.com"], "https://api.example.com:443", "*.example.com"),
    (["*.example.com"], "https://a.b.example.com:443", "*.example.com"),
    (["*.example.com"], "https://example.com:443", None),
    (["*.example.com"], "https://badexample.com:443", None),
    (["*.example.com:8080"], "http://api.example.com:8080", "*.example.com:8080"),
    (["*.example.com:8080"], "http://api.example.com:80", None),
    (["https://*.example.com"], "http://api.example.com:80", None),
    # exact beats wildcard, whatever the wildcard's scheme and port
    (
        ["https://*.example.com:443", "api.example.com"],
        "https://api.example.com:443",
        "api.example.com",
    ),
    # a longer suffix beats a shorter one, before scheme and port
    (
        ["https://*.example.com:443", "*.eu.example.com"],
        "https://api.eu.example.com:443",
        "*.eu.example.com",
    ),
    (["*.example.com", "*.com"], "https://x.example.com:443", "*.example.com"),
    (
        ["*.example.com", "https://*.example.com"],
        "https://x.example.com:443",
        "https://*.example.com",
    ),
    # IPv6 and IPv4 hosts
    (["[::1]"], "http://[::1]:8080", "[::1]"),
    (["::1"], "http://[::1]:8080", "::1"),
    (["[::1]:8080"], "http://[::1]:8080", "[::1]:8080"),
    (["http://[::1]:8080"], "http://[::1]:8081", None),
    (["127.0.0.1:8080"], "http://127.0.0.1:8080", "127.0.0.1:8080"),
    (["localhost"], "http://localhost:5000", "localhost"),
    # an origin written without its default port, or in capitals, still matches
    (["api.example.com:443"], "https://api.example.com", "api.example.com:443"),
    (["api.example.com:443"], "HTTPS://API.EXAMPLE.COM:443", "api.example.com:443"),
    # what cannot be read is the default's
    (["api.example.com"], "api.example.com", None),
    (["api.example.com"], "", None),
]


@pytest.mark.parametrize(("keys", "origin", "winner"), MATCHES)
def test_the_most_specific_matching_key_wins(
    keys: list[str], origin: str, winner: str | None
) -> None:
    """Exact host > wildcard (longer suffix first); then scheme+port > port > scheme > host."""
    assert pick(keys, origin) == winner


def test_for_origin_returns_the_same_object_each_time() -> None:
    """The transports cache by identity: one key, one config object."""
    api = cfg(5)
    ups = Upstreams(DEFAULT, {"api.example.com": api, "*.example.com": cfg(6)})
    assert ups.for_origin("https://api.example.com:443") is api
    assert ups.for_origin("http://api.example.com:80") is api
    assert ups.for_origin("https://nowhere.test:443") is DEFAULT
    assert ups.for_origin("https://x.example.com:443") is ups.configs["*.example.com"]


def test_no_keys_gives_the_default() -> None:
    """Upstreams(default) alone answers the default for any origin."""
    assert Upstreams(DEFAULT).for_origin("https://x:1") is DEFAULT
    assert Upstreams(DEFAULT, {}).configs == {}


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "empty"),
        ("   ", "whitespace"),
        ("api.example.com ", "whitespace"),
        ("api.example.com/v1", "a path"),
        ("https://api.example.com/", "a path"),
        ("api.example.com?x=1", "a query"),
        ("api.example.com#top", "a fragment"),
        ("user:pw@api.example.com", "userinfo"),
        ("https://", "no host"),
        ("://api.example.com", "no valid scheme"),
        ("1http://api.example.com", "no valid scheme"),
        ("api.example.com:", "port"),
        ("api.example.com:0", "port"),
        ("api.example.com:65536", "port"),
        ("api.example.com:https", "port"),
        (":8080", "no host"),
        ("*", "'*'"),
        ("*.", "'*'"),
        ("a.*.example.com", "'*'"),
        ("*example.com", "'*'"),
        ("*.*.example.com", "'*'"),
        ("[::1", "unclosed"),
        ("[]:80", "empty IPv6"),
        ("[::1]x", "after the IPv6"),
        ("api..example.com", "empty label"),
        (".example.com", "empty label"),
    ],
)
def test_a_bad_key_is_refused_at_construction_naming_it(key: str, words: str) -> None:
    """Paths, queries, userinfo, empty or odd hosts and ports fail when built, naming the key."""
    with pytest.raises(ConfigError) as info:
        Upstreams(DEFAULT, {key: cfg(1)})
    assert repr(key) in str(info.value)
    assert words in str(info.value)


def test_two_keys_for_one_upstream_are_refused() -> None:
    """Keys that differ only in case (or IPv6 brackets) name the same upstream: an error."""
    with pytest.raises(ConfigError, match=r"'API\.example\.com' and 'api\.example\.com'"):
        Upstreams(DEFAULT, {"API.example.com": cfg(1), "api.example.com": cfg(2)})
    with pytest.raises(ConfigError, match="name the same upstream"):
        Upstreams(DEFAULT, {"::1": cfg(1), "[::1]": cfg(2)})


def test_types_are_checked() -> None:
    """The default, the mapping, its keys and its values are checked, naming the culprit."""
    with pytest.raises(ConfigTypeError, match=r"Upstreams\.default must be a ResilientConfig"):
        Upstreams(BackoffConfig(), {})  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match=r"Upstreams\.configs must be a mapping"):
        Upstreams(DEFAULT, [("a", cfg(1))])  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match=r"Upstreams\.configs\['api'\] must be a Resil"):
        Upstreams(DEFAULT, {"api": {"backoff": {}}})  # type: ignore[dict-item]
    with pytest.raises(ConfigTypeError, match="Upstreams key 3 must be a string"):
        Upstreams(DEFAULT, {3: cfg(1)})  # type: ignore[dict-item]


def test_immutable_and_a_copy_of_the_mapping() -> None:
    """Neither attributes nor the configs can change after construction."""
    given = {"api.example.com": cfg(1)}
    ups = Upstreams(DEFAULT, given)
    given["other.example.com"] = cfg(2)
    assert list(ups.configs) == ["api.example.com"]
    assert ups.for_origin("https://other.example.com:443") is DEFAULT
    with pytest.raises(TypeError):
        ups.configs["x"] = cfg(3)  # type: ignore[index]
    with pytest.raises(AttributeError):
        ups.default = cfg(3)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ups._exact = {}  # type: ignore[misc]


def test_equality_and_repr() -> None:
    """Two Upstreams with equal parts are equal (and hash alike); the repr shows the keys."""
    a = Upstreams(DEFAULT, {"api.example.com": cfg(1)})
    b = Upstreams(cfg(0), {"api.example.com": cfg(1)})
    assert a == b
    assert hash(a) == hash(b)
    assert a != Upstreams(DEFAULT, {"api.example.com": cfg(2)})
    assert "api.example.com" in repr(a)


def test_exported() -> None:
    """Upstreams is part of smoothapi.config's public names."""
    assert "Upstreams" in smoothapi.config.__all__
