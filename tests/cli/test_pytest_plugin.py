"""The pytest plugin shipped with smoothapi, used by a small sample suite in a subprocess,
as a user's project would: installed by the package's ``pytest11`` entry point (never
``-p smoothapi``), run by pytest's own ``pytester``.

The sample suite's order is part of the proof: pytest collects the modules of a directory
sorted by name and runs a module's tests top to bottom, and the ``sample`` breaker lives in
one shared module, so a test sees the state the previous test left it in - unless the plugin
resets it.
"""

from __future__ import annotations

import textwrap

import pytest

import smoothapi

# The code under test, shared by every sample module (so is its breaker).
SAMPLE_API = """
    import time

    from smoothapi import BackoffConfig, CircuitBreakerConfig, ResilientConfig, resilient_api

    BACKOFF = 5.0  # seconds, per retry
    RETRIES = 2
    SKIPPED = BACKOFF * RETRIES  # what one exhausted call would really sleep

    CONFIG = ResilientConfig(
        backoff=BackoffConfig(
            base_delay=BACKOFF, max_delay=BACKOFF, max_retries=RETRIES, jitter="none"
        ),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, cooldown_ms=60_000),
        fallback="cached",
    )
    calls = []

    @resilient_api(CONFIG, name="sample")
    def fetch():
        calls.append(1)
        if len(calls) <= 3:
            raise ConnectionError("down")
        return "fresh"

    def always_down(name):
        # A fresh sync function (and breaker) that fails every attempt.
        attempts = []

        @resilient_api(CONFIG, name=name)
        def call():
            attempts.append(time.monotonic())
            raise ConnectionError("down")

        return call, attempts

    def async_always_down(name):
        # The same, as a coroutine function.
        attempts = []

        @resilient_api(CONFIG, name=name)
        async def call():
            attempts.append(time.monotonic())
            raise ConnectionError("down")

        return call, attempts
"""

# The fixture, then the marker on a test, each resetting before the test (the previous test,
# without the plugin, left the breaker OPEN) and after it (the next test, without the plugin,
# finds it CLOSED).
SAMPLE_FIXTURE_AND_MARKER = """
    import time

    import pytest

    from sample_api import BACKOFF, SKIPPED, always_down, calls, fetch

    def test_outage_and_recovery_without_waiting(smoothapi_clock):
        started = time.monotonic()
        assert fetch() == "cached"           # 3 attempts, 10 s of backoff skipped, opens
        assert len(calls) == 3
        assert fetch.breaker.state == "OPEN"
        assert fetch() == "cached"           # rejected: the cooldown has not passed
        assert len(calls) == 3
        smoothapi_clock.advance(60)          # the cooldown passes at once
        assert fetch() == "fresh"            # the probe
        assert len(calls) == 4
        assert fetch.breaker.state == "CLOSED"
        assert time.monotonic() - started < BACKOFF  # not even one real 5 s sleep

    def test_the_fixture_clock_moves_by_the_skipped_sleeps(smoothapi_clock):
        call, attempts = always_down("fixture-timing")
        before = smoothapi_clock.now
        started = time.monotonic()
        assert call() == "cached"
        assert len(attempts) == 3
        assert time.monotonic() - started < BACKOFF  # SKIPPED s were skipped
        assert smoothapi_clock.now - before == SKIPPED  # the skipped sleeps still "pass"

    def test_a_plain_test_leaves_the_breaker_open():
        fetch.breaker.force_open()
        assert fetch.breaker.state == "OPEN"

    def test_the_fixture_resets_before_the_test(smoothapi_clock):
        assert fetch.breaker.state == "CLOSED"
        fetch.breaker.force_open()
        assert fetch.breaker.state == "OPEN"

    def test_the_fixture_resets_after_the_test():
        assert fetch.breaker.state == "CLOSED"
        fetch.breaker.force_open()           # left OPEN for the marked test

    @pytest.mark.smoothapi
    def test_the_marker_resets_before_the_test_and_retries_are_instant():
        assert fetch.breaker.state == "CLOSED"
        call, attempts = always_down("marker-timing")
        started = time.monotonic()
        assert call() == "cached"
        assert len(attempts) == 3
        assert time.monotonic() - started < BACKOFF  # SKIPPED s were skipped
        fetch.breaker.force_open()
        assert fetch.breaker.state == "OPEN"

    def test_the_marker_resets_after_the_test():
        assert fetch.breaker.state == "CLOSED"
        fetch.breaker.force_open()           # left OPEN for the next module
"""

# ``pytestmark`` on a whole module: every test in it is reset and instant.
SAMPLE_MODULE_MARK = """
    import time

    import pytest

    from sample_api import BACKOFF, always_down, fetch

    pytestmark = pytest.mark.smoothapi

    def test_the_module_mark_resets_before_its_first_test():
        assert fetch.breaker.state == "CLOSED"   # the previous module left it OPEN
        fetch.breaker.force_open()

    def test_the_module_mark_resets_between_its_tests():
        assert fetch.breaker.state == "CLOSED"
        call, attempts = always_down("module-mark-timing")
        started = time.monotonic()
        assert call() == "cached"
        assert len(attempts) == 3
        assert time.monotonic() - started < BACKOFF  # SKIPPED s were skipped
"""

# A coroutine function under the marker, on both anyio backends.
SAMPLE_ASYNC = """
    import time

    import pytest

    from sample_api import BACKOFF, async_always_down, fetch

    pytestmark = pytest.mark.anyio

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(request):
        return request.param

    def test_a_plain_test_leaves_the_breaker_open_again():
        fetch.breaker.force_open()

    @pytest.mark.smoothapi
    async def test_async_retries_are_instant_under_the_marker(anyio_backend):
        assert fetch.breaker.state == "CLOSED"
        call, attempts = async_always_down(f"async-timing-{anyio_backend}")
        started = time.monotonic()
        assert await call() == "cached"
        assert len(attempts) == 3
        assert time.monotonic() - started < BACKOFF  # SKIPPED s were skipped
        assert call.breaker.state == "OPEN"
"""

SAMPLE_PASSED = 7 + 2 + 3  # fixture and marker, module mark, async (2 backends) + its opener

# Without the plugin's reset nothing closes a breaker between tests: a plain test still sees
# the OPEN a previous plain test left, and the marked test sees CLOSED only because the plugin
# reset it (run with ``-p no:smoothapi``, it fails).
SAMPLE_NEGATIVE_CONTROL = """
    import pytest

    from sample_api import fetch

    def test_a_plain_test_leaves_the_breaker_open():
        fetch.breaker.force_open()
        assert fetch.breaker.state == "OPEN"

    def test_nothing_else_resets_it():
        assert fetch.breaker.state == "OPEN"

    @pytest.mark.smoothapi
    def test_only_the_plugin_resets_it():
        assert fetch.breaker.state == "CLOSED", f"still {fetch.breaker.state}"
"""

# Every warning is an error in the sample suite too (``--strict-markers`` is passed per run).
SAMPLE_INI = """
    [pytest]
    filterwarnings =
        error
"""

COMMON_ARGS = ("-p", "no:cacheprovider", "--strict-config")


@pytest.fixture
def sample(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with the sample's shared code; plugins load by entry point, as for a user."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("PYTEST_PLUGINS", raising=False)
    pytester.makeini(textwrap.dedent(SAMPLE_INI))
    pytester.makepyfile(sample_api=textwrap.dedent(SAMPLE_API))
    return pytester


def test_sample_suite_passes_with_the_plugin(sample: pytest.Pytester) -> None:
    """The fixture makes retries (sync and async) instant and moves cooldowns; the fixture,
    the marker and a module's ``pytestmark`` reset every breaker before and after a test."""
    sample.makepyfile(
        test_1_fixture_and_marker=textwrap.dedent(SAMPLE_FIXTURE_AND_MARKER),
        test_2_module_mark=textwrap.dedent(SAMPLE_MODULE_MARK),
        test_3_async=textwrap.dedent(SAMPLE_ASYNC),
    )
    result = sample.runpytest_subprocess("-v", "--strict-markers", *COMMON_ARGS, timeout=120)
    result.assert_outcomes(passed=SAMPLE_PASSED)
    assert result.ret == pytest.ExitCode.OK
    # Loaded from the installed distribution's entry point, not from a -p option.
    result.stdout.fnmatch_lines(["plugins:*smoothapi-py-*"])
    # Both backends really ran (a missing anyio plugin would skip or fail them).
    result.stdout.fnmatch_lines(
        [
            "*test_async_retries_are_instant_under_the_marker?asyncio? PASSED*",
            "*test_async_retries_are_instant_under_the_marker?trio? PASSED*",
        ]
    )


def test_without_a_reset_a_breaker_stays_open(sample: pytest.Pytester) -> None:
    """Negative control: the CLOSED the marked test sees is the plugin's doing.

    With the plugin a plain test still sees the OPEN left by the previous plain test (so no
    other mechanism closes breakers between tests) and the marked test sees CLOSED; the same
    suite with the plugin blocked fails exactly that marked test, on the OPEN breaker.
    """
    sample.makepyfile(test_control=textwrap.dedent(SAMPLE_NEGATIVE_CONTROL))

    with_plugin = sample.runpytest_subprocess("-v", "--strict-markers", *COMMON_ARGS, timeout=120)
    with_plugin.assert_outcomes(passed=3)
    with_plugin.stdout.fnmatch_lines(
        [
            "*::test_a_plain_test_leaves_the_breaker_open PASSED*",
            "*::test_nothing_else_resets_it PASSED*",
            "*::test_only_the_plugin_resets_it PASSED*",
        ]
    )

    # Blocked, the marker is unknown: a warning (not an error) for this run only.
    without_plugin = sample.runpytest_subprocess(
        "-v",
        "-p",
        "no:smoothapi",
        "-W",
        "default::pytest.PytestUnknownMarkWarning",
        *COMMON_ARGS,
        timeout=120,
    )
    without_plugin.assert_outcomes(passed=2, failed=1, warnings=1)
    without_plugin.stdout.fnmatch_lines(
        [
            "*::test_a_plain_test_leaves_the_breaker_open PASSED*",
            "*::test_nothing_else_resets_it PASSED*",
            "*::test_only_the_plugin_resets_it FAILED*",
            "*AssertionError: still OPEN*",
        ]
    )
    without_plugin.stdout.no_fnmatch_line("plugins:*smoothapi-py-*")


def test_the_marker_is_registered(sample: pytest.Pytester) -> None:
    """``--strict-markers`` accepts ``@pytest.mark.smoothapi``; ``--markers`` documents it."""
    sample.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.smoothapi
        def test_marked():
            pass
        """
    )
    strict = sample.runpytest_subprocess("--strict-markers", *COMMON_ARGS, timeout=120)
    strict.assert_outcomes(passed=1)

    markers = sample.runpytest_subprocess("--markers", *COMMON_ARGS, timeout=120)
    assert markers.ret == pytest.ExitCode.OK
    markers.stdout.fnmatch_lines(["@pytest.mark.smoothapi: instant smoothapi retries*"])


def test_live_breakers_lists_and_reset_all_closes_them() -> None:
    """Introspection: every live breaker (decorators' included) is listed; reset_all closes."""

    @smoothapi.resilient_api(name="listed-breaker")
    def call() -> None:
        return None

    assert call.breaker in smoothapi.live_breakers()
    call.breaker.force_open()
    smoothapi.reset_all()
    assert call.breaker.state == "CLOSED"
