"""The ``smooth_api`` alias tells type checkers every public name of ``smoothapi``.

At run time the alias forwards any name (module ``__getattr__``); for mypy and
IDEs, which do not run it, each name must be imported under TYPE_CHECKING - a
name added to ``smoothapi.__all__`` and not there would type as ``Any`` (or be
missing) under the seed's import name.
"""

from __future__ import annotations

import re
from pathlib import Path

import smooth_api
import smoothapi


def test_every_public_name_is_declared_for_type_checkers() -> None:
    text = Path(smooth_api.__file__).read_text(encoding="utf-8")
    declared = set(re.findall(r"from smoothapi import (\w+) as \1\b", text))
    assert set(smoothapi.__all__) - {"__version__"} <= declared


def test_every_public_name_is_the_same_object() -> None:
    for name in smoothapi.__all__:
        assert getattr(smooth_api, name) is getattr(smoothapi, name), name
