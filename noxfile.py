"""Developer sessions: ``nox -s tests``, ``lint``, ``mypy``, ``docs``, ``demo``, ``benchmarks``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "tests_core_only", "lint", "mypy"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, with every extra installed."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def tests_core_only(session: nox.Session) -> None:
    """The core without requests or httpx: importing smoothapi must not need them."""
    session.install("-e", ".", "pytest", "anyio", "trio")
    session.run("python", "-m", "pytest", "tests/unit/test_core_only.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "smoothapi", "smooth_api", "tests", "benchmarks", "examples")
    session.run("ruff", "format", "--check", "smoothapi", "smooth_api")


@nox.session
def mypy(session: nox.Session) -> None:
    session.install("-e", ".[test,lint]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors, into site/ (``nox -s docs -- serve``
    previews it at http://127.0.0.1:8000 instead)."""
    session.install("-e", ".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:])
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a flaky local server, an outage and a recovery."""
    session.install("-e", ".[demo]")
    session.run("python", "-m", "smoothapi", "demo")


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Side-by-side benchmarks against the peers (not run by default); prints ratio tables."""
    session.install(
        "-e",
        ".[test]",
        "tenacity",
        "stamina",
        "backoff",
        "pybreaker",
        "circuitbreaker",
        "httpx-retries",
        "aiohttp-retry",
    )
    session.run(
        "python",
        "-m",
        "pytest",
        "benchmarks",
        "-p",
        "no:cacheprovider",
        "--benchmark-json=.benchmarks/latest.json",
        *session.posargs,
    )
    session.run("python", "benchmarks/report.py", ".benchmarks/latest.json")
