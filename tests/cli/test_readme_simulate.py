"""The README's simulator transcripts for the trip rules are what the command prints today.

Each ``$ python -m smoothapi simulate ...`` block of the section "The trip rules
on the same traffic" is run as written (its ``examples/simulate/*.toml``
files included) and its output compared line by line with the README's,
except the wall time.  A change to the engine that moves a figure the README
quotes fails here, so the prose is updated with the figures.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from smoothapi.cli import main

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### The trip rules on the same traffic"


def transcripts() -> list[tuple[list[str], list[str]]]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    found = []
    for block in re.findall(r"```console\n(.*?)```", text[start:end], re.S):
        command, _, output = block.partition("\n")
        while command.endswith("\\"):
            more, _, output = output.partition("\n")
            command = command[:-1] + more
        argv = shlex.split(command.removeprefix("$ "))
        assert argv[:4] == ["python", "-m", "smoothapi", "simulate"], command
        found.append((argv[3:], output.splitlines()))
    return found


def test_the_section_has_the_three_comparisons() -> None:
    assert len(transcripts()) == 3


@pytest.mark.parametrize(("argv", "expected"), transcripts())
def test_readme_transcript_is_current(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cwd = Path.cwd()
    os.chdir(ROOT)  # the README's paths are relative to the repository
    try:
        assert main(argv) == 0
    finally:
        os.chdir(cwd)
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    wall = re.compile(r"simulated in [\d.]+ s of wall time")
    assert [wall.sub("", line) for line in printed] == [wall.sub("", line) for line in expected]
