"""A pytest plugin for *your* test suite (registered as ``smoothapi`` via the ``pytest11``
entry point, so installing smoothapi is enough).

* ``smoothapi_clock`` - a fixture: retries sleep 0 s (each skipped sleep moves the clock),
  every breaker reads this :class:`~smoothapi.testing.FakeClock`, and every live breaker is
  reset before and after the test.  Move breakers through cooldowns with
  ``smoothapi_clock.advance(seconds)``.
* ``@pytest.mark.smoothapi`` - the same for a test (or a module, with ``pytestmark``) that
  does not need the clock itself.
"""

from __future__ import annotations

import pytest

# pytest loads this plugin in every test run of a project that has smoothapi installed:
# the breakers and the testing helpers load with the first test that asks for them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from .testing import FakeClock

__all__ = ["smoothapi_clock"]


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        "smoothapi: instant smoothapi retries, a fake clock for breakers, and every "
        "breaker reset around the test",
    )


@pytest.fixture
def smoothapi_clock() -> Iterator[FakeClock]:
    """Instant retries, a fake clock for every breaker, all breakers reset around the test."""
    from .breaker import reset_all  # noqa: PLC0415 - see above
    from .testing import FakeClock, set_testing  # noqa: PLC0415

    clock = FakeClock()
    reset_all()
    with set_testing(clock=clock):
        yield clock
    reset_all()


@pytest.fixture(autouse=True)
def _smoothapi_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("smoothapi") is not None:
        request.getfixturevalue("smoothapi_clock")
