"""The documentation's code blocks: found, classified and run (the runner of tests/docs).

Every fenced block of ``README.md`` and ``docs/**/*.md`` has a language, and the
language says what happens to it (``LANGUAGES``; any other, or none, is an error):

- ``python``: run.  A page's python blocks run in order in one fresh
  interpreter (``sys.executable``, ``_exec_page.py``), so a block uses the
  names of the blocks above it.  Top-level ``await`` works (all such blocks
  share one asyncio event loop).  A traceback names the Markdown file and its
  real line numbers.
- ``toml`` / ``json``: parsed (``tomllib`` / ``json``).  A block titled with
  a file name (``title="smoothapi.toml"`` in the fence's info string, or a
  first line ``# name.toml``) is also written to that file in the page's
  working directory before anything runs, so the page's code and commands can
  load it.
- ``bash`` / ``console``: commands (``console``: the lines starting with
  ``$ ``, each followed by its expected output; ``bash``: every line that is
  not a comment).  Each command (each ``&&`` part) is classified by
  ``classify()``: ``python -m smoothapi ...`` and ``smoothapi ...`` are run
  (each on its own, beside the python blocks) and, in a ``console`` block
  that shows output, their output compared line by line (a wall time
  excepted); install commands and the tools CI runs itself are not run;
  anything else is an error.
- ``text``: not run (output, signatures, diagrams, command synopses).

Before running, the page's text is rewritten (line numbers kept):
``https://api.example.com`` becomes the docs server's ``http://127.0.0.1:PORT``
(``docs_server.py``), and ``redis://localhost:6379`` / ``redis://127.0.0.1:6379``
a private Redis server started by the tests.  Everything runs in a temporary
working directory holding ``examples/`` (a link to the repository's) and an
empty ``docs/``.

Run one page by hand: ``python tests/docs/docs_blocks.py docs/fleet.md``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
EXEC_PAGE = Path(__file__).resolve().parent / "_exec_page.py"

#: What happens to a block, by its fence's language.  Nothing else is accepted.
RUN, DATA, COMMANDS, TEXT = "run", "data", "commands", "text"
LANGUAGES = {
    "python": RUN,
    "toml": DATA,
    "json": DATA,
    "bash": COMMANDS,
    "console": COMMANDS,
    "text": TEXT,
}

#: Commands that are not run, by their first words: installing (CI installs
#: the package itself) and the tools CI runs itself (.ci/run, noxfile.py).
INSTALL = (
    ("pip",),
    ("python", "-m", "pip"),
    ("python3", "-m", "venv"),
    ("python", "-m", "venv"),
    (".",),  # . .venv/bin/activate
    ("source",),
    ("git",),
    ("cd",),
    ("apt-get",),
    ("apt",),
)
CI_TOOLS = (
    ("python", "-m", "pytest"),
    ("python", "benchmarks/*"),  # the benchmarks' own scripts: nox -s benchmarks
    ("ruff",),
    ("mypy",),
    ("lint-imports",),
    ("nox",),
    ("mkdocs",),
)
#: smoothapi commands run by another test (too slow to run twice):
#: command -> (that test, what it holds that shows it runs the command).
COVERED_ELSEWHERE = {
    "python -m smoothapi demo": ("tests/cli/test_demo.py", '"-m", "smoothapi", "demo"'),
}
#: Removed from a smoothapi command before it runs: the picture is in the
#: repository, and matplotlib (the `plot` extra) is not installed by CI.
PLOT_OPTION = "--plot"
PLOT_LINE = re.compile(r"^plot written to ")
WALL_TIME = re.compile(r"simulated in [\d.]+ s of wall time")

PAGE_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')
_FILE_COMMENT = re.compile(r"^#\s*(?P<name>[\w.-]+\.(?:toml|json))\s*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$', re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced block: its page (relative to the repository), fence line and text."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    info: str
    text: str  # dedented by the fence's indentation

    @property
    def kind(self) -> str | None:
        return LANGUAGES.get(self.lang)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def filename(self) -> str | None:
        """The file a data block is written to, if it names one."""
        title = _TITLE.search(self.info)
        if title:
            return title["title"]
        first = self.text.split("\n", 1)[0]
        named = _FILE_COMMENT.match(first)
        return named["name"] if named else None


def pages() -> list[str]:
    """README.md, every Markdown page under docs/ and the files those pages include
    (``--8<-- "CHANGELOG.md"``), relative to the repository."""
    found = ["README.md"]
    found += sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    for page in list(found):
        for included in _SNIPPET.findall((ROOT / page).read_text(encoding="utf-8")):
            if included not in found:
                found.append(included)
    return found


def blocks(page: str, text: str | None = None) -> list[Block]:
    """The fenced blocks of a page, in order."""
    if text is None:
        text = (ROOT / page).read_text(encoding="utf-8")
    lines = text.split("\n")
    found = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        start = i
        body = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        else:
            raise ValueError(f"{page}:{start + 1}: a code block that is never closed")
        lang = info.split()[0].strip("{}.") if info else ""
        found.append(Block(page, start + 1, lang, info, textwrap.dedent("\n".join(body))))
        i += 1
    return found


# -- commands ------------------------------------------------------------------------------


@dataclass
class Command:
    """One command of a bash/console block, with the output a console block shows for it."""

    block: Block
    line: str
    output: list[str] = field(default_factory=list)


def commands(block: Block) -> list[Command]:
    """The commands of a ``bash`` or ``console`` block, continuations joined."""
    found: list[Command] = []
    lines = block.text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if block.lang == "console":
            if not raw.startswith("$ "):
                if not found:
                    raise ValueError(f"{block.where}: console output before any `$ ` command")
                found[-1].output.append(raw)
                continue
            raw = raw[2:]
        elif not raw.strip() or raw.lstrip().startswith("#"):
            continue
        while raw.rstrip().endswith("\\") and i < len(lines):
            raw = raw.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        found.append(Command(block, raw.strip()))
    return found


def parts(line: str) -> list[list[str]]:
    """A command line's ``&&`` / ``;`` parts as argv lists (comments dropped); a
    ``for ...; do COMMAND; done`` loop gives its COMMAND."""
    words = shlex.split(line.replace(";", " ; "), comments=True)
    split: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", ";", "||"):
            split.append([])
        else:
            split[-1].append(word)
    loop = [argv for argv in split if argv and argv[0] not in ("for", "done")]
    return [argv[1:] if argv[0] == "do" else argv for argv in loop if argv != ["do"]]


def _without_env(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while argv and _ASSIGNMENT.match(argv[0]):
        name, _, value = argv[0].partition("=")
        env[name] = value
        argv = argv[1:]
    return env, argv


def _matches(argv: list[str], prefix: tuple[str, ...]) -> bool:
    """``argv`` starts with ``prefix``; a word ending in ``*`` matches by its start."""
    if len(argv) < len(prefix):
        return False
    return all(
        word.startswith(want[:-1]) if want.endswith("*") else word == want
        for word, want in zip(argv, prefix, strict=False)
    )


def classify(argv: list[str]) -> str:
    """``run``, ``install``, ``ci`` or ``elsewhere`` for a known command; else ValueError."""
    _, argv = _without_env(argv)
    if argv[:3] == ["python", "-m", "smoothapi"] or argv[:1] == ["smoothapi"]:
        return "elsewhere" if " ".join(argv) in COVERED_ELSEWHERE else RUN
    if any(tuple(argv[: len(p)]) == p for p in INSTALL):
        return "install"
    if any(_matches(argv, p) for p in CI_TOOLS):
        return "ci"
    raise ValueError(
        f"`{' '.join(argv)}` is not a command the docs runner knows: run only "
        "`python -m smoothapi ...`, install commands and CI's tools "
        "(tests/docs/docs_blocks.py: INSTALL, CI_TOOLS), or fence the block as ```text"
    )


# -- rewriting for the local servers ---------------------------------------------------------

_API = (
    (re.compile(r"https?://api\.example\.com:443"), "{url}"),
    (re.compile(r"https?://api\.example\.com"), "{url}"),
    (re.compile(r"(?<![\w.-])api\.example\.com"), "{host}"),
)
_REDIS = re.compile(r"redis://(?:localhost|127\.0\.0\.1):6379(?:/\d+)?")


def needs_redis(text: str) -> bool:
    return bool(_REDIS.search(text))


def rewrite(text: str, api_url: str, redis_url: str | None) -> str:
    """The docs' example hosts pointed at the local servers (never changes a line count)."""
    host = api_url.split("://", 1)[1]
    for pattern, replacement in _API:
        text = pattern.sub(replacement.format(url=api_url, host=host), text)
    if redis_url is not None:
        text = _REDIS.sub(redis_url, text)
    return text


# -- running a page --------------------------------------------------------------------------


@dataclass
class PageResult:
    page: str
    python_blocks: int = 0
    commands_run: int = 0
    failures: list[str] = field(default_factory=list)


def workdir(base: Path, page_blocks: list[Block], api_url: str, redis_url: str | None) -> Path:
    """A fresh working directory: examples/ (linked), docs/, and the page's named files."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "docs").mkdir(exist_ok=True)
    if not (base / "examples").exists():
        (base / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    for block in page_blocks:
        if block.kind == DATA and block.filename:
            (base / block.filename).write_text(
                rewrite(block.text, api_url, redis_url) + "\n", encoding="utf-8"
            )
    return base


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of what a page runs: no SMOOTHAPI_* setting of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMOOTHAPI_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def check_data(block: Block) -> str | None:
    """A parse error of a toml/json block, or None."""
    try:
        if block.lang == "toml":
            tomllib.loads(block.text)
        else:
            json.loads(block.text)
    except ValueError as exc:
        return f"{block.where}: the {block.lang} block does not parse: {exc}"
    return None


def run_python(  # noqa: PLR0917 - one page's run: each argument is needed
    page: str,
    page_blocks: list[Block],
    cwd: Path,
    api_url: str,
    redis_url: str | None,
    timeout: float = PAGE_TIMEOUT,
) -> tuple[int, str | None]:
    """Run a page's python blocks in one fresh interpreter: (blocks run, failure or None)."""
    python = [b for b in page_blocks if b.kind == RUN]
    if not python:
        return 0, None
    source = (ROOT / page).resolve()
    payload = {
        "file": str(source),
        "page": page,
        "blocks": [
            {
                "line": b.line,
                "code": rewrite(b.text, api_url, redis_url),
            }
            for b in python
        ],
    }
    spec = cwd / f".blocks-{page.replace('/', '_')}.json"
    spec.write_text(json.dumps(payload), encoding="utf-8")
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, str(EXEC_PAGE), str(spec)],
            cwd=cwd,
            env=child_env({"DOCS_SERVER_URL": api_url}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        return len(python), (
            f"{page}: its python blocks did not finish within {timeout:.0f} s; "
            f"output so far:\n{out or ''}"
        )
    if done.returncode != 0:
        return len(python), (
            f"{page}: a python block failed (exit {done.returncode}):\n"
            f"{done.stderr.strip()}\n-- stdout --\n{done.stdout.strip()}"
        )
    return len(python), None


def run_command(
    command: Command, cwd: Path, api_url: str, redis_url: str | None, timeout: float
) -> tuple[bool, str | None]:
    """Run one command if it is a smoothapi command: (ran, failure or None)."""
    where = f"{command.block.where} `{command.line}`"
    try:
        argvs = parts(command.line)
        kinds = [classify(argv) for argv in argvs]
    except ValueError as exc:
        return False, f"{where}: {exc}"
    ran = False
    for argv, kind in zip(argvs, kinds, strict=True):
        if kind == "elsewhere":
            test, proof = COVERED_ELSEWHERE[" ".join(_without_env(argv)[1])]
            if proof not in (ROOT / test).read_text(encoding="utf-8"):
                return ran, f"{where}: {test} no longer runs it (no `{proof}` there)"
            continue
        if kind != RUN:
            continue
        env, words = _without_env([rewrite(word, api_url, redis_url) for word in argv])
        run = [sys.executable, "-m", "smoothapi", *words[3 if words[0] == "python" else 1 :]]
        expected = list(command.output)
        if PLOT_OPTION in run:
            at = run.index(PLOT_OPTION)
            del run[at : at + 2]
            expected = [line for line in expected if not PLOT_LINE.match(line)]
        try:
            done = subprocess.run(  # noqa: S603 - our own interpreter
                run,
                cwd=cwd,
                env=child_env(env),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return True, f"{where}: did not finish within {timeout:.0f} s"
        ran = True
        if done.returncode != 0:
            return ran, f"{where}: exit {done.returncode}\n{done.stderr.strip()}"
        if expected:
            got = [WALL_TIME.sub("", line.rstrip()) for line in done.stdout.splitlines()]
            want = [WALL_TIME.sub("", line.rstrip()) for line in expected]
            while want and not want[-1]:
                want.pop()
            while got and not got[-1]:
                got.pop()
            if got != want:
                diff = "\n".join(
                    f"{'  ' if g == w else '!='} want: {w}\n{'  ' if g == w else '!='}  got: {g}"
                    for g, w in zip(got + [""] * len(want), want + [""] * len(got), strict=False)
                    if g != w
                )
                return ran, f"{where}: the output differs from the page's:\n{diff}"
    return ran, None


def iter_commands(page_blocks: list[Block]) -> Iterator[Command]:
    for block in page_blocks:
        if block.kind == COMMANDS:
            yield from commands(block)


def run_page(
    page: str, base: Path, api_url: str, redis_url: str | None, text: str | None = None
) -> PageResult:
    """Everything a page's blocks ask for: data blocks first, then python and commands."""
    page_blocks = blocks(page, text)
    result = PageResult(page)
    for block in page_blocks:
        if block.kind is None:
            fence = block.lang or "(no language)"
            result.failures.append(
                f"{block.where}: a ```{fence} block: give every block one of "
                f"{', '.join(sorted(LANGUAGES))} (tests/docs/docs_blocks.py LANGUAGES)"
            )
        elif block.kind == DATA:
            problem = check_data(block)
            if problem:
                result.failures.append(problem)
    if result.failures:
        return result
    cwd = workdir(base, page_blocks, api_url, redis_url)
    # The python blocks (one interpreter, in order) and each command run side by side:
    # a command depends only on the data blocks' files, written above.
    with ThreadPoolExecutor(max_workers=4) as pool:
        python = pool.submit(run_python, page, page_blocks, cwd, api_url, redis_url)
        runs = [
            pool.submit(run_command, command, cwd, api_url, redis_url, PAGE_TIMEOUT)
            for command in iter_commands(page_blocks)
        ]
        result.python_blocks, failure = python.result()
        if failure:
            result.failures.append(failure)
        for run in runs:
            ran, failure = run.result()
            result.commands_run += ran
            if failure:
                result.failures.append(failure)
    return result


def main(argv: list[str]) -> int:  # pragma: no cover - a developer's tool
    """Run pages by hand: ``python tests/docs/docs_blocks.py [PAGE...]`` (default: all)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(ROOT / "tests"))
    from docs_server import DocsServer  # noqa: PLC0415
    from redisserver import RedisServer, find_binary  # noqa: PLC0415

    status = 0
    redis = None
    try:
        for page in argv or pages():
            text = (ROOT / page).read_text(encoding="utf-8")
            redis_url = None
            if needs_redis(text):
                if redis is None:
                    if find_binary() is None:
                        print(f"{page}: skipped, no redis-server on PATH")
                        continue
                    redis = RedisServer().start()
                redis_url = redis.url
            with DocsServer() as server, tempfile.TemporaryDirectory() as tmp:
                result = run_page(page, Path(tmp), server.url, redis_url)
            state = "FAILED" if result.failures else "ok"
            print(
                f"{state:6} {page}: {result.python_blocks} python blocks, "
                f"{result.commands_run} commands run"
            )
            for failure in result.failures:
                status = 1
                print(textwrap.indent(failure, "    "))
    finally:
        if redis is not None:
            redis.close()
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
