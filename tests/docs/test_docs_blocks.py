"""Every code block of README.md and docs/ runs, parses or is a known command (docs_blocks.py).

One test per page: its python blocks run in order in one fresh interpreter
against a local docs server (and a private Redis server when the page names
``redis://localhost:6379``), its toml/json blocks parse, and its
``python -m smoothapi`` commands run, with their output compared with the
page's.  A failure names the page and the block's line.  The pages run in
parallel (one worker per CPU), each in its own working directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from docs_blocks import (
    COMMANDS,
    ROOT,
    RUN,
    PageResult,
    blocks,
    commands,
    needs_redis,
    pages,
    run_page,
)
from docs_server import DocsServer
from redisserver import BINARIES, RedisServer, find_binary

PAGES = pages()


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class _Runs:
    """The pages' runs, started together on first use, one future per page."""

    def __init__(self, base: Path, wanted: list[str]) -> None:
        self._base = base
        self._wanted = wanted
        self._redis: RedisServer | None = None
        self._redis_problem: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        self._futures: dict[str, Future[PageResult]] = {}

    def _redis_url(self, page: str) -> str | None:
        if self._redis is None and self._redis_problem is None:
            if find_binary() is None:
                self._redis_problem = f"none of {', '.join(BINARIES)} is on PATH"
            else:
                self._redis = RedisServer().start()
        if self._redis is None:
            return None
        database = self._wanted.index(page) % 16  # a database per page: no shared keys
        return self._redis.url.rsplit("/", 1)[0] + f"/{database}"

    def _run(self, page: str, redis_url: str | None) -> PageResult:
        with DocsServer() as server:
            return run_page(page, self._base / page.replace("/", "_"), server.url, redis_url)

    def start(self) -> None:
        for page in self._wanted:
            text = (ROOT / page).read_text(encoding="utf-8")
            redis_url = None
            if needs_redis(text):
                redis_url = self._redis_url(page)
                if redis_url is None:
                    continue
            self._futures[page] = self._pool.submit(self._run, page, redis_url)

    def result(self, page: str) -> PageResult:
        if page not in self._futures:
            message = (
                f"{page} needs a Redis server and {self._redis_problem}: install one "
                "(e.g. `apt-get install redis-server`)"
            )
            if _ci():
                pytest.fail(f"{message}. CI is set, so this is a failure.", pytrace=False)
            pytest.skip(message)
        return self._futures[page].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._redis is not None:
            self._redis.close()


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Runs]:
    wanted = sorted(
        {
            item.callspec.params["page"]
            for item in request.session.items
            if item.module is request.module
            and hasattr(item, "callspec")
            and "page" in item.callspec.params
        },
        key=PAGES.index,
    )
    running = _Runs(tmp_path_factory.mktemp("docs-blocks"), wanted)
    running.start()
    try:
        yield running
    finally:
        running.close()


@pytest.mark.parametrize("page", PAGES)
def test_page_blocks_run(page: str, runs: _Runs) -> None:
    """The page's python blocks run, its data blocks parse, its smoothapi commands print
    what the page shows, and every block's language is one the runner knows."""
    result = runs.result(page)
    assert not result.failures, "\n\n".join(result.failures)


def test_the_pages_have_runnable_blocks() -> None:
    """The runner finds the blocks it should: python on the front page, the simulator's
    transcripts (the three trip-rule comparisons among them) on the simulator page."""
    readme = blocks("README.md")
    assert sum(b.kind == RUN for b in readme) >= 4
    if "docs/simulator.md" in PAGES:
        shown = [
            c
            for b in blocks("docs/simulator.md")
            if b.kind == COMMANDS
            for c in commands(b)
            if c.output
        ]
        assert sum("examples/simulate/" in c.line for c in shown) == 3
