"""Every relative link of README.md and docs/ resolves, anchors included; the site builds.

A link is checked the way GitHub and a clone read it: the file must exist
relative to the page, and a ``#fragment`` must be a heading of the target
page (GitHub's heading ids: lower case, punctuation dropped, spaces become
hyphens).  The site itself is built with ``mkdocs build --strict`` (every
MkDocs warning - a broken link or anchor, a page left out of the nav, a
reference mkdocstrings cannot resolve - fails it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import ROOT, blocks, pages

_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_EXTERNAL = ("http://", "https://", "mailto:")


def _outside_code(page: str) -> list[str]:
    """The page's lines with fenced blocks and inline code blanked out."""
    lines = (ROOT / page).read_text(encoding="utf-8").split("\n")
    for block in blocks(page):
        end = block.line + block.text.count("\n") + 1
        for n in range(block.line - 1, min(end, len(lines))):
            lines[n] = ""
    return [re.sub(r"`[^`]*`", "``", line) for line in lines]


def _heading_texts(page: str) -> list[str]:
    """Heading lines with their inline code kept (code is part of GitHub's id text)."""
    raw = (ROOT / page).read_text(encoding="utf-8").split("\n")
    blank = _outside_code(page)
    return [raw[n] for n, line in enumerate(blank) if _HEADING.match(line)]


def github_anchors(page: str) -> set[str]:
    found: set[str] = set()
    for line in _heading_texts(page):
        match = _HEADING.match(line)
        assert match
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def links(page: str) -> list[tuple[int, str]]:
    return [
        (n, target)
        for n, line in enumerate(_outside_code(page), start=1)
        for target in _LINK.findall(line)
    ]


@pytest.mark.parametrize("page", pages())
def test_relative_links_resolve(page: str) -> None:
    """Each relative link names a file that exists, and a heading of it when it has a #."""
    broken = []
    for line, target in links(page):
        if target.startswith(_EXTERNAL):
            continue
        path, _, fragment = target.partition("#")
        file = (ROOT / page).parent / path if path else ROOT / page
        if not file.exists():
            broken.append(f"{page}:{line}: {target} - no such file")
        elif fragment and file.suffix == ".md":
            known = github_anchors(file.resolve().relative_to(ROOT).as_posix())
            if fragment not in known:
                broken.append(f"{page}:{line}: {target} - no heading #{fragment} there")
        elif fragment:
            broken.append(f"{page}:{line}: {target} - an anchor into a file that is not a page")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_docs_page() -> None:
    """The front page links each page of the site (the nav's pages)."""
    linked = {target.partition("#")[0] for _, target in links("README.md")}
    missing = [
        page
        for page in pages()
        if page.startswith("docs/")
        and page not in linked
        and page not in ("docs/index.md", "docs/benchmarks.md", "docs/changelog.md")
    ]
    assert not missing, f"README.md does not link {missing}"


def test_the_readme_is_a_front_page() -> None:
    """About 200 lines: what it is, install, the two commands, the seed, one snippet per mount."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 230
    for needed in (
        'pip install -e ".[demo]" && python -m smoothapi demo',
        'pip install -e ".[test]" && python -m pytest',
        "## Usage (the seed example)",
        "ResilientAdapter(",
        "ResilientTransport(",
        "ResilientMiddleware(",
        "@resilient_api(config)",
    ):
        assert needed in text, needed


def test_the_link_checker_catches_a_broken_anchor(tmp_path: Path) -> None:
    """The checker's own rule: a heading's id as GitHub writes it."""
    assert "fork-gunicorn-uwsgi-multiprocessing" in github_anchors("docs/fork.md")
    assert "which-breakers-are-open-introspection-and-smoothapi-status" in github_anchors(
        "docs/observability.md"
    )
    assert "no-such-heading" not in github_anchors("docs/fork.md")


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """`mkdocs build --strict`: no broken link or anchor, every page in the nav, every
    mkdocstrings reference resolved (what `nox -s docs` and .ci/run run)."""
    if importlib.util.find_spec("mkdocs") is None:
        message = "mkdocs is not installed: the docs extra, pip install -e '.[docs]'"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{message}. CI is set, so this is a failure.", pytrace=False)
        pytest.skip(message)
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    assert (tmp_path / "site" / "reference" / "index.html").exists()
