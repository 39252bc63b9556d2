"""A mount point whose client library is missing names its extra, once.

``smoothapi.<Name>`` loads the module that defines it on first use; when its
client library is not installed, the ``ModuleNotFoundError`` says which extra
to install - in one sentence, not wrapped in a second one saying the same.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("library", "name", "extra"),
    [
        ("requests", "ResilientAdapter", "requests"),
        ("httpx", "ResilientTransport", "httpx"),
        ("httpx", "AsyncResilientTransport", "httpx"),
        ("aiohttp", "ResilientMiddleware", "aiohttp"),
        ("redis", "RedisStore", "redis"),
    ],
)
def test_the_error_names_the_extra_once(library: str, name: str, extra: str) -> None:
    code = (
        f"import sys\nsys.modules[{library!r}] = None  # as if not installed\n"
        "import smoothapi\n"
        f"try:\n    smoothapi.{name}\nexcept ModuleNotFoundError as exc:\n"
        "    print(exc)\n    print(exc.name)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    message, module = done.stdout.strip().splitlines()
    assert message.count(f"'{extra}' extra") == 1, message
    assert "pip install" in message
    assert module == library


def test_an_aiohttp_without_client_middlewares_is_named() -> None:
    """aiohttp before 3.12 has no client middlewares: say so at import, not at first use."""
    code = (
        "import sys, types\n"
        "old = types.ModuleType('aiohttp')\nold.__version__ = '3.11.18'\n"
        "sys.modules['aiohttp'] = old\n"
        "import smoothapi\n"
        "try:\n    smoothapi.ResilientMiddleware\nexcept ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "needs aiohttp 3.12 or later" in done.stdout
    assert "aiohttp 3.11.18 is installed" in done.stdout
