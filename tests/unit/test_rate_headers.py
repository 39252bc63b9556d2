"""parse_server_limit: the server's rate limit read from response headers.

Tables per source and per priority, real case-insensitive header objects, epochs
against a fixed ``now``, the cap, every class of hostile value, and a property test
that nothing a server sends makes the parser raise or leave its bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from smoothapi.rate_headers import ServerLimit, parse_server_limit

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
CAP = 60.0
MAX_REMAINING = 10**9


def lookup(headers: Mapping[str, object]) -> Callable[[str], object]:
    """A case-insensitive ``get`` over a plain dict, as the real header objects give."""
    folded = {name.lower(): value for name, value in headers.items()}
    return lambda name: folded.get(name.lower())


def parse(
    headers: Mapping[str, object], status: int | None = 200, cap: float = CAP
) -> ServerLimit | None:
    return parse_server_limit(lookup(headers), status, cap=cap, now=NOW)


# --- Rule 1: Retry-After on 429 and 503 ------------------------------------------------

RETRY_AFTER = [
    pytest.param(429, "7", ServerLimit(0, 7.0), id="429-delta"),
    pytest.param(503, "7", ServerLimit(0, 7.0), id="503-delta"),
    pytest.param(429, "1.5", ServerLimit(0, 1.5), id="429-decimal"),
    pytest.param(429, "0", ServerLimit(0, 0.0), id="429-zero"),
    pytest.param(429, "3600", ServerLimit(0, CAP), id="over-cap-is-cut-to-cap"),
    pytest.param(429, "9" * 60, ServerLimit(0, CAP), id="absurd-is-cut-to-cap"),
    # HTTP-date 30 s after NOW, and one in the past.
    pytest.param(429, "Tue, 14 Nov 2023 22:13:50 GMT", ServerLimit(0, 30.0), id="http-date"),
    pytest.param(503, "Tue, 14 Nov 2023 22:00:00 GMT", ServerLimit(0, 0.0), id="past-date"),
    pytest.param(200, "7", None, id="200-ignored"),
    pytest.param(500, "7", None, id="500-ignored"),
    pytest.param(301, "7", None, id="redirect-ignored"),
    pytest.param(None, "7", None, id="no-status-ignored"),
    pytest.param(429, "soon", None, id="garbage"),
    pytest.param(429, "-5", None, id="negative"),
]


@pytest.mark.parametrize(("status", "value", "expected"), RETRY_AFTER)
def test_retry_after(status: int | None, value: str, expected: ServerLimit | None) -> None:
    assert parse({"Retry-After": value}, status) == expected


# --- Rule 2: RateLimit structured fields (draft -07 and later) -------------------------

STRUCTURED = [
    pytest.param('"default";r=50;t=30', ServerLimit(50, 30.0), id="quoted-name"),
    pytest.param("default;r=50;t=30", ServerLimit(50, 30.0), id="token-name"),
    pytest.param('"default";t=30;r=50', ServerLimit(50, 30.0), id="params-any-order"),
    pytest.param('"d";r=50;t=30;pk=:YWJj:;x="y";q=1.5;b', ServerLimit(50, 30.0), id="extra-params"),
    pytest.param('"d"; r=50; t=30', ServerLimit(50, 30.0), id="spaces-after-semicolon"),
    pytest.param('"d";r=0;t=5', ServerLimit(0, 5.0), id="none-left"),
    pytest.param('"d";r=5;t=0', ServerLimit(5, 0.0), id="reset-now"),
    pytest.param('"d";r=5;t=3600', ServerLimit(5, CAP), id="over-cap-is-cut-to-cap"),
    pytest.param('"d";r=5;t=1;r=9', ServerLimit(9, 1.0), id="duplicate-param-last-wins"),
    pytest.param('"day";r=900;t=3600, "sec";r=5;t=1', ServerLimit(5, 1.0), id="smallest-r"),
    pytest.param('"a";r=5;t=1,"b";r=5;t=9', ServerLimit(5, 9.0), id="tie-largest-t"),
    pytest.param('"a";r=5;t=9 ,\t"b";r=5;t=1', ServerLimit(5, 9.0), id="tie-order-free"),
    pytest.param('"a";r=1, "b";r=7;t=2', ServerLimit(7, 2.0), id="item-without-t-skipped"),
    pytest.param('"a";t=1, "b";r=7;t=2', ServerLimit(7, 2.0), id="item-without-r-skipped"),
    pytest.param('"a";r=1', None, id="no-complete-item"),
    pytest.param('"a";r=-1;t=5', None, id="negative-r"),
    pytest.param('"a";r=5;t=-1', None, id="negative-t"),
    pytest.param('"a";r=1.5;t=5', None, id="decimal-r"),
    pytest.param('"a";r="5";t=5', None, id="string-r"),
    pytest.param('"a";r;t=5', None, id="boolean-r"),
    # One bad item discards the field, so a laxer policy cannot win by default.
    pytest.param('"a";r=-1;t=5, "b";r=90;t=5', None, id="bad-item-discards-field"),
    pytest.param(f'"a";r={MAX_REMAINING + 1};t=5', None, id="r-over-bound"),
    pytest.param(f'"a";r={MAX_REMAINING};t=5', ServerLimit(MAX_REMAINING, 5.0), id="r-at-bound"),
    pytest.param('"a";r=5;t=1,', None, id="trailing-comma"),
    pytest.param('"a;r=5;t=1', None, id="unterminated-string"),
    pytest.param('("a" "b");r=5;t=1', None, id="inner-list"),
    pytest.param('"a";r=5;t=1 junk', None, id="trailing-junk"),
    pytest.param('"a";R=5;T=1', None, id="uppercase-keys-are-not-sf"),
]


@pytest.mark.parametrize(("value", "expected"), STRUCTURED)
def test_structured_ratelimit(value: str, expected: ServerLimit | None) -> None:
    assert parse({"RateLimit": value}) == expected


# --- Rule 3: the older drafts --------------------------------------------------------

OLD_DRAFTS = [
    pytest.param(
        {"RateLimit-Remaining": "50", "RateLimit-Reset": "30"},
        ServerLimit(50, 30.0),
        id="separate-fields",
    ),
    pytest.param(
        {"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "2.5"},
        ServerLimit(0, 2.5),
        id="separate-fields-decimal-reset",
    ),
    pytest.param(
        {"RateLimit-Remaining": "50", "RateLimit-Reset": "3600"},
        ServerLimit(50, CAP),
        id="separate-over-cap",
    ),
    pytest.param({"RateLimit-Remaining": "50"}, None, id="remaining-without-reset"),
    pytest.param({"RateLimit-Reset": "30"}, None, id="reset-without-remaining"),
    pytest.param(
        {"RateLimit": "limit=100, remaining=50, reset=30"},
        ServerLimit(50, 30.0),
        id="combined",
    ),
    pytest.param({"RateLimit": "remaining=0,reset=4"}, ServerLimit(0, 4.0), id="combined-tight"),
    pytest.param({"RateLimit": "limit=100, remaining=50"}, None, id="combined-without-reset"),
    pytest.param({"RateLimit": "remaining=-1, reset=4"}, None, id="combined-negative"),
    pytest.param({"RateLimit": "remaining=5, reset=4, ;;"}, None, id="combined-garbage"),
    # The separate fields come first; the combined form only when they give nothing.
    pytest.param(
        {
            "RateLimit": "limit=100, remaining=9, reset=9",
            "RateLimit-Remaining": "1",
            "RateLimit-Reset": "1",
        },
        ServerLimit(1, 1.0),
        id="separate-before-combined",
    ),
    pytest.param(
        {
            "RateLimit": "limit=100, remaining=9, reset=9",
            "RateLimit-Remaining": "1",
            "RateLimit-Reset": "x",
        },
        ServerLimit(9, 9.0),
        id="bad-separate-falls-to-combined",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), OLD_DRAFTS)
def test_old_drafts(headers: dict[str, str], expected: ServerLimit | None) -> None:
    assert parse(headers) == expected


# --- Rule 4: X-RateLimit-* and X-Rate-Limit-* -----------------------------------------

X_HEADERS = [
    pytest.param(
        {"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "12"},
        ServerLimit(4, 12.0),
        id="delta",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": str(int(NOW) + 25)},
        ServerLimit(4, 25.0),
        id="epoch-seconds-github",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": f"{NOW + 2.5:.3f}"},
        ServerLimit(4, 2.5),
        id="epoch-seconds-decimal",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": str(int(NOW * 1000) + 1500)},
        ServerLimit(4, 1.5),
        id="epoch-millis",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 100)},
        ServerLimit(0, 0.0),
        id="past-epoch-seconds",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW * 1000) - 100_000)},
        ServerLimit(0, 0.0),
        id="past-epoch-millis",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 86_400)},
        ServerLimit(0, CAP),
        id="far-epoch-is-cut-to-cap",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "999999999"},
        ServerLimit(0, CAP),
        id="largest-delta-cut-to-cap",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "500000000000"},
        None,
        id="between-seconds-and-millis-is-garbage",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "100000000000000"},
        None,
        id="beyond-millis-is-garbage",
    ),
    pytest.param(
        # Discord sends both; the delta is free of clock skew, so it wins.
        {
            "X-RateLimit-Remaining": "1",
            "X-RateLimit-Reset-After": "1.25",
            "X-RateLimit-Reset": f"{NOW + 40:.3f}",
        },
        ServerLimit(1, 1.25),
        id="discord-reset-after-wins",
    ),
    pytest.param(
        {
            "X-RateLimit-Remaining": "1",
            "X-RateLimit-Reset-After": "nope",
            "X-RateLimit-Reset": f"{NOW + 40:.3f}",
        },
        ServerLimit(1, 40.0),
        id="bad-reset-after-falls-to-reset",
    ),
    pytest.param(
        {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset-After": "3600"},
        ServerLimit(1, CAP),
        id="reset-after-over-cap",
    ),
    pytest.param(
        {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset-After": "2"},
        ServerLimit(0, 2.0),
        id="dashed-spelling-reset-after",
    ),
    pytest.param(
        {"X-Rate-Limit-Remaining": "7", "X-Rate-Limit-Reset": "3"},
        ServerLimit(7, 3.0),
        id="dashed-spelling",
    ),
    pytest.param(
        {
            "X-RateLimit-Remaining": "bad",
            "X-RateLimit-Reset": "3",
            "X-Rate-Limit-Remaining": "7",
            "X-Rate-Limit-Reset": "3",
        },
        ServerLimit(7, 3.0),
        id="bad-first-spelling-falls-to-second",
    ),
    pytest.param({"X-RateLimit-Remaining": "4"}, None, id="remaining-without-reset"),
    pytest.param({"X-RateLimit-Reset": "4"}, None, id="reset-without-remaining"),
    pytest.param({"X-RateLimit-Limit": "100"}, None, id="limit-alone"),
    pytest.param({}, None, id="no-headers"),
]


@pytest.mark.parametrize(("headers", "expected"), X_HEADERS)
def test_x_headers(headers: dict[str, str], expected: ServerLimit | None) -> None:
    assert parse(headers) == expected


# --- Priority between the rules ------------------------------------------------------

ALL_SOURCES = {
    "Retry-After": "11",
    "RateLimit": '"d";r=22;t=22',
    "RateLimit-Remaining": "33",
    "RateLimit-Reset": "33",
    "X-RateLimit-Remaining": "44",
    "X-RateLimit-Reset": "44",
}

PRIORITY = [
    pytest.param(429, [], ServerLimit(0, 11.0), id="retry-after-first"),
    pytest.param(200, [], ServerLimit(22, 22.0), id="structured-when-not-429"),
    pytest.param(429, ["Retry-After"], ServerLimit(22, 22.0), id="structured-second"),
    pytest.param(200, ["RateLimit"], ServerLimit(33, 33.0), id="old-draft-third"),
    pytest.param(200, ["RateLimit", "RateLimit-Reset"], ServerLimit(44, 44.0), id="x-headers-last"),
    pytest.param(
        200,
        ["RateLimit", "RateLimit-Reset", "X-RateLimit-Reset"],
        None,
        id="only-counts-left",
    ),
]


@pytest.mark.parametrize(("status", "dropped", "expected"), PRIORITY)
def test_priority(status: int, dropped: list[str], expected: ServerLimit | None) -> None:
    headers = {k: v for k, v in ALL_SOURCES.items() if k not in dropped}
    assert parse(headers, status) == expected


FALL_THROUGH = [
    pytest.param(
        {"Retry-After": "later", "RateLimit": '"d";r=2;t=3'},
        ServerLimit(2, 3.0),
        id="bad-retry-after",
    ),
    pytest.param(
        {"RateLimit": '"d";r=-2;t=3', "X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "5"},
        ServerLimit(4, 5.0),
        id="bad-structured",
    ),
    pytest.param(
        {"RateLimit-Remaining": "2", "X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "5"},
        ServerLimit(4, 5.0),
        id="old-draft-count-without-reset",
    ),
    pytest.param(
        {"RateLimit": '"d";r=2;t=3', "RateLimit-Remaining": "9", "RateLimit-Reset": "9"},
        ServerLimit(2, 3.0),
        id="structured-beats-old-draft",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), FALL_THROUGH)
def test_a_bad_source_falls_through(headers: dict[str, str], expected: ServerLimit) -> None:
    assert parse(headers, 429) == expected


# --- Real header objects: the lookup is theirs, and case-insensitive --------------------

MIXED_CASE = {
    "retry-after": "3",
    "x-ratelimit-remaining": "4",
    "X-RATELIMIT-RESET": "5",
}

HEADER_OBJECTS = [
    pytest.param(lambda: httpx.Headers(MIXED_CASE).get, id="httpx.Headers"),
    pytest.param(lambda: CaseInsensitiveDict(MIXED_CASE).get, id="requests-CaseInsensitiveDict"),
]


@pytest.mark.parametrize("make_get", HEADER_OBJECTS)
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(429, ServerLimit(0, 3.0), id="429"),
        pytest.param(200, ServerLimit(4, 5.0), id="200"),
    ],
)
def test_real_header_objects(
    make_get: Callable[[], Callable[[str], object]], status: int, expected: ServerLimit
) -> None:
    assert parse_server_limit(make_get(), status, cap=CAP, now=NOW) == expected


def test_httpx_headers_joins_repeated_fields_into_one_structured_list() -> None:
    headers = httpx.Headers([("RateLimit", '"day";r=90;t=60'), ("ratelimit", '"sec";r=1;t=2')])
    assert parse_server_limit(headers.get, 200, cap=CAP) == ServerLimit(1, 2.0)


def test_now_defaults_to_the_clock() -> None:
    import time  # noqa: PLC0415 - only this test reads the real clock

    reset = str(int(time.time()) + 30)
    found = parse_server_limit(
        lookup({"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": reset}), 200, cap=CAP
    )
    assert found is not None
    assert 27.0 <= found.reset <= 30.0


# --- Hostile values: ignored, never raised ---------------------------------------------

HOSTILE = [
    pytest.param(None, id="none"),
    pytest.param(b"5", id="bytes"),
    pytest.param(5, id="int"),
    pytest.param(5.0, id="float"),
    pytest.param(["5"], id="list"),
    pytest.param(object(), id="object"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("5" * 257, id="longer-than-256"),
    pytest.param(" " * 250 + "5" + " " * 6, id="padded-past-256"),
    pytest.param("-5", id="negative"),
    pytest.param("+5", id="plus-sign"),
    pytest.param("nan", id="nan"),
    pytest.param("inf", id="inf"),
    pytest.param("1e3", id="exponent"),
    pytest.param(" 1e3", id="spaced-exponent"),
    pytest.param("1_0", id="underscore"),
    pytest.param("²", id="superscript-digit"),
    pytest.param("\u0665", id="arabic-indic-digit"),
    pytest.param("\uff15", id="fullwidth-digit"),
    pytest.param("0x10", id="hex"),
    pytest.param("5.", id="trailing-dot"),
    pytest.param(".5", id="leading-dot"),
    pytest.param("5, 5", id="repeated-field"),
    pytest.param("5\x00", id="nul"),
    pytest.param("\u20035", id="unicode-space"),
    pytest.param("5\x0c", id="form-feed"),
    pytest.param("5\x1f", id="unit-separator"),
    pytest.param("5\n", id="newline"),
]


def _raising(name: str) -> object:
    raise RuntimeError(f"broken lookup for {name}")


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    "name",
    [
        "Retry-After",
        "RateLimit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-RateLimit-Reset-After",
    ],
)
def test_a_hostile_value_is_ignored(name: str, value: object) -> None:
    headers: dict[str, object] = {
        "Retry-After": "1",
        "RateLimit": '"d";r=2;t=2',
        "RateLimit-Remaining": "3",
        "RateLimit-Reset": "3",
        "X-RateLimit-Remaining": "4",
        "X-RateLimit-Reset": "4",
        "X-RateLimit-Reset-After": "4",
        "X-Rate-Limit-Remaining": "7",
        "X-Rate-Limit-Reset": "7",
    }
    # Removing sources one by one from the top, the hostile value always reads as absent.
    for first in range(len(headers)):
        rest = dict(list(headers.items())[first:])
        absent = {k: v for k, v in rest.items() if k != name}
        assert parse({**rest, name: value}, 429) == parse(absent, 429)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("5" * 257, id="remaining-longer-than-256"),
        pytest.param(str(MAX_REMAINING + 1), id="remaining-over-1e9"),
        pytest.param("9" * 200, id="remaining-huge"),
    ],
)
def test_a_hostile_remaining_falls_through(value: str) -> None:
    headers = {
        "X-RateLimit-Remaining": value,
        "X-RateLimit-Reset": "3",
        "X-Rate-Limit-Remaining": "7",
        "X-Rate-Limit-Reset": "3",
    }
    assert parse(headers) == ServerLimit(7, 3.0)


def test_remaining_at_the_bound_is_kept() -> None:
    headers = {"X-RateLimit-Remaining": str(MAX_REMAINING), "X-RateLimit-Reset": "1"}
    assert parse(headers) == ServerLimit(MAX_REMAINING, 1.0)


def test_a_raising_lookup_is_no_header() -> None:
    assert parse_server_limit(_raising, 429, cap=CAP, now=NOW) is None


def test_a_lookup_raising_for_one_header_leaves_the_others() -> None:
    def get(name: str) -> object:
        if name == "Retry-After":
            raise KeyError(name)
        return {"x-ratelimit-remaining": "2", "x-ratelimit-reset": "9"}.get(name.lower())

    assert parse_server_limit(get, 429, cap=CAP, now=NOW) == ServerLimit(2, 9.0)


@pytest.mark.parametrize(
    "now",
    [pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf")],
)
def test_a_non_finite_now_never_breaks_the_bounds(now: float) -> None:
    headers = {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": str(int(NOW) + 5)}
    result = parse_server_limit(lookup(headers), 200, cap=CAP, now=now)
    assert result is None or 0.0 <= result.reset <= CAP


@pytest.mark.parametrize(
    "cap",
    [
        pytest.param(0.0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
    ],
)
def test_a_bad_cap_is_the_callers_error(cap: float) -> None:
    with pytest.raises(ValueError, match="cap must be"):
        parse_server_limit(lookup({}), 200, cap=cap)


# --- Property: anything a server sends is survived and bounded -------------------------

HEADER_NAMES = [
    "Retry-After",
    "RateLimit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
    "X-Rate-Limit-Remaining",
    "X-Rate-Limit-Reset",
]

# Text near the grammar finds more than random text alone: digits, signs, separators.
_near = st.text(alphabet='0123456789.-+e ,;="rt:ab\t', max_size=40)
_values = st.one_of(st.none(), st.text(max_size=300), _near, st.integers().map(str))


@settings(max_examples=500, deadline=None)
@given(
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), _values),
    status=st.one_of(st.none(), st.integers(), st.sampled_from([200, 429, 503])),
    cap=st.floats(min_value=1e-3, max_value=1e9),
    now=st.floats(min_value=0.0, max_value=1e11),
)
def test_any_headers_never_raise_and_stay_in_bounds(
    headers: dict[str, str | None], status: int | None, cap: float, now: float
) -> None:
    result = parse_server_limit(lookup(headers), status, cap=cap, now=now)
    if result is not None:
        assert isinstance(result.remaining, int)
        assert 0 <= result.remaining <= MAX_REMAINING
        assert 0.0 <= result.reset <= cap
