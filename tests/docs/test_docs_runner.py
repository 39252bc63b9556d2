"""The docs runner fails when a block breaks, and names the page and the block's line.

These feed the runner pages written here (a broken python block, an unknown
fence, an unknown command, a toml block that does not parse, a transcript
that no longer matches) and require the failure it must report; and a page
whose blocks are right, to show what passes: names shared between blocks,
top-level ``await``, the docs server behind ``https://api.example.com``, a
titled toml block written as a file the code loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from docs_blocks import blocks, classify, commands, parts, rewrite, run_page
from docs_server import DocsServer

FENCE = "```"


def _page(*lines: str) -> str:
    return "\n".join(lines).replace("~~~", FENCE) + "\n"


def _run(tmp_path: Path, text: str, page: str = "docs/example.md") -> list[str]:
    with DocsServer() as server:
        return run_page(page, tmp_path, server.url, None, text).failures


def test_a_good_page_passes(tmp_path: Path) -> None:
    """Blocks share names, await at top level, reach the docs server, load a titled file."""
    text = _page(
        "# A page",
        "",
        '~~~toml title="upstream.toml"',
        'url = "https://api.example.com/flaky/a"',
        "~~~",
        "",
        "~~~python",
        "import tomllib",
        "import httpx",
        'url = tomllib.load(open("upstream.toml", "rb"))["url"]',
        "~~~",
        "",
        "~~~python",
        "async with httpx.AsyncClient() as client:",
        "    answers = [(await client.get(url)).status_code for _ in range(3)]",
        "assert answers == [503, 503, 200], answers",
        'assert httpx.get("https://api.example.com/users/7").json()["id"] == "7"',
        "~~~",
        "",
        "~~~text",
        "anything at all $ rm -rf /",
        "~~~",
        "",
        "~~~bash",
        'pip install -e ".[test]"   # not run',
        "python -m smoothapi --version",
        "~~~",
    )
    if sys.version_info < (3, 11):  # pragma: no cover
        pytest.skip("the runner parses toml blocks with tomllib, which needs Python 3.11")
    assert _run(tmp_path, text) == []


def test_a_broken_python_block_names_the_page_and_line(tmp_path: Path) -> None:
    text = _page("# A page", "", "~~~python", "x = 1", "~~~", "", "~~~python", "y = x + z", "~~~")
    failures = _run(tmp_path, text)
    assert len(failures) == 1
    assert "docs/example.md: the python block at line 7 failed" in failures[0]
    assert "line 8" in failures[0]
    assert "NameError: name 'z' is not defined" in failures[0]


@pytest.mark.parametrize("fence", ["", "py", "sh", "pycon", "yaml"])
def test_a_block_without_a_known_language_fails(tmp_path: Path, fence: str) -> None:
    failures = _run(tmp_path, _page("text", "", f"~~~{fence}", "print(1)", "~~~"))
    assert len(failures) == 1
    assert failures[0].startswith("docs/example.md:3: a ```")


def test_an_unknown_command_fails(tmp_path: Path) -> None:
    failures = _run(tmp_path, _page("~~~bash", "curl https://example.com", "~~~"))
    assert len(failures) == 1
    assert "docs/example.md:1 `curl https://example.com`" in failures[0]
    assert "not a command the docs runner knows" in failures[0]


def test_a_data_block_that_does_not_parse_fails(tmp_path: Path) -> None:
    failures = _run(tmp_path, _page("~~~toml", "a = ", "~~~", "~~~json", "{'a': 1}", "~~~"))
    assert [f.split(":")[1] for f in failures] == ["1", "4"]


def test_a_stale_transcript_fails(tmp_path: Path) -> None:
    text = _page("~~~console", "$ python -m smoothapi --version", "smoothapi 0.0.1", "~~~")
    failures = _run(tmp_path, text)
    assert len(failures) == 1
    assert "the output differs from the page's" in failures[0]
    assert "want: smoothapi 0.0.1" in failures[0]


def test_a_failing_command_fails(tmp_path: Path) -> None:
    failures = _run(tmp_path, _page("~~~console", "$ python -m smoothapi nonsense", "~~~"))
    assert len(failures) == 1
    assert "exit 2" in failures[0]


def test_commands_are_classified_exactly() -> None:
    assert [
        classify(a)
        for a in parts(
            "python3 -m venv .venv && . .venv/bin/activate && "
            'pip install -e ".[test]" && python -m pytest'
        )
    ] == ["install", "install", "install", "ci"]
    assert (
        classify(["SMOOTHAPI_REDIS_URL=redis://x", "python", "-m", "smoothapi", "status"]) == "run"
    )
    assert classify(["python", "-m", "smoothapi", "demo"]) == "elsewhere"
    loop = "for i in 1 2; do python -m pytest benchmarks/x.py; done"
    assert parts(loop) == [["python", "-m", "pytest", "benchmarks/x.py"]]
    assert classify(["python", "benchmarks/report.py", "b.json"]) == "ci"
    for unknown in (["python", "script.py"], ["python", "-m", "benchmarks"], ["curl", "x"]):
        with pytest.raises(ValueError, match="not a command"):
            classify(unknown)


def test_blocks_in_lists_are_dedented_and_console_output_kept() -> None:
    text = _page(
        "- item:",
        "",
        "  ~~~python",
        "  x = 1",
        "  ~~~",
        "~~~console",
        "$ smoothapi a \\",
        "    b",
        "out",
        "~~~",
    )
    found = blocks("p.md", text)
    assert next((b.line, b.lang, b.text) for b in found) == (3, "python", "x = 1")
    (command,) = commands(found[1])
    assert (command.line, command.output) == ("smoothapi a b", ["out"])


def test_rewrite_keeps_lines() -> None:
    text = "https://api.example.com:443\nhttps://api.example.com/x\napi.example.com\nredis://localhost:6379/0"
    assert rewrite(text, "http://127.0.0.1:9", "redis://127.0.0.1:5/3").split("\n") == [
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/x",
        "127.0.0.1:9",
        "redis://127.0.0.1:5/3",
    ]
