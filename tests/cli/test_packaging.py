"""Packaging: version, wheel contents, and an editable install that type-checks.

Issue 11 (first-hour friction): the name's line on the package index reached
1.4.0 with another implementation, so this one is 2.0.0 and up; and after the
README's ``pip install -e .``, ``mypy --strict`` on a user's program must find
the package and see a decorated function's types (setuptools' import-hook
editable installs are invisible to mypy; the build backend's editable install
must be a path entry).

The builds call the project's own PEP 517 backend (whatever pyproject.toml
names) in a subprocess, without network: the backend must be installed (it is
in the ``test`` extra).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import smoothapi

ROOT = Path(__file__).resolve().parents[2]
DIST = "smoothapi-py"


def _pyproject() -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib  # noqa: PLC0415
    else:  # pragma: no cover - Python 3.10: hatchling depends on tomli there
        tomllib = pytest.importorskip("tomli")
    with (ROOT / "pyproject.toml").open("rb") as file:
        data: dict[str, Any] = tomllib.load(file)
    return data


def _build(hook: str, outdir: Path) -> Path:
    """Run the project's PEP 517 ``hook`` (build_wheel, build_editable) into ``outdir``."""
    backend = _pyproject()["build-system"]["build-backend"]
    module = backend.partition(":")[0]
    pytest.importorskip(module, reason=f"the build backend {module} is not installed")
    code = (
        "import importlib, sys\n"
        "module, _, attr = sys.argv[1].partition(':')\n"
        "backend = importlib.import_module(module)\n"
        "if attr:\n"
        "    backend = getattr(backend, attr)\n"
        "print(getattr(backend, sys.argv[2])(sys.argv[3]))\n"
    )
    outdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", code, backend, hook, str(outdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return outdir / done.stdout.strip().splitlines()[-1]


# -- version -----------------------------------------------------------------------------------


def test_version_is_2_or_later_and_the_same_everywhere() -> None:
    """pyproject's version, the installed metadata, smoothapi.__version__ and smooth_api's are
    one value, at least 2.0.0 (never below the index's older 1.x line), with a CHANGELOG
    entry."""
    import smooth_api  # noqa: PLC0415

    declared = _pyproject()["project"]["version"]
    installed = importlib.metadata.version(DIST)
    assert installed == declared, (
        f"installed metadata says {installed}, pyproject.toml {declared}: reinstall "
        "(pip install -e .)"
    )
    assert smoothapi.__version__ == declared
    assert smooth_api.__version__ == declared
    assert int(declared.split(".")[0]) >= 2
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[?{re.escape(declared)}\]?", changelog, re.MULTILINE)


# -- the wheel ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_wheel_holds_both_packages_their_markers_and_the_entry_points(
    tmp_path: Path,
) -> None:
    """A built wheel has every module of smoothapi (storage included) and smooth_api, both
    py.typed markers, the console script and the pytest plugin, no tests, and no runtime
    dependency outside an extra."""
    wheel = _build("build_wheel", tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()

    sources = {
        path.relative_to(ROOT).as_posix()
        for package in ("smoothapi", "smooth_api")
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }
    assert {
        "smoothapi/py.typed",
        "smooth_api/py.typed",
        "smooth_api/__init__.py",
        "smooth_api/config.py",
        "smoothapi/storage/__init__.py",
        "smoothapi/storage/redis.py",
        "smoothapi/pytest_plugin.py",
    } <= sources
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]

    assert f"Version: {smoothapi.__version__}" in metadata.splitlines()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires
    assert all("extra ==" in line for line in requires), requires  # zero core dependencies
    assert re.search(r"^smoothapi = smoothapi\.cli:main$", entry_points, re.MULTILINE)
    assert "[pytest11]" in entry_points
    assert re.search(r"^smoothapi = smoothapi\.pytest_plugin$", entry_points, re.MULTILINE)


# -- mypy on a user's program after an editable install ----------------------------------------

USER_PROGRAM = """\
from typing import TYPE_CHECKING

from smooth_api import ResilientConfig as SeedConfig
from smoothapi import BackoffConfig, ResilientConfig, resilient_api


@resilient_api(ResilientConfig(backoff=BackoffConfig(max_retries=1)))
def fetch(user_id: str) -> int:
    return len(user_id)


count: int = fetch("42")
seed: SeedConfig = ResilientConfig()
if TYPE_CHECKING:
    reveal_type(fetch)
print(count, type(seed).__module__)
"""

USER_MISTAKE = """\
from smoothapi import resilient_api


@resilient_api
def fetch(user_id: str) -> int:
    return len(user_id)


fetch(42)
"""


def _mypy(python: Path, program: Path) -> subprocess.CompletedProcess[str]:
    """mypy --strict on ``program`` as the interpreter ``python`` sees its packages, run from
    the program's own folder (outside the project, so only the install can be found)."""
    pytest.importorskip("mypy", reason="mypy is in the lint extra")
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-executable",
            str(python),
            "--cache-dir",
            str(program.parent / ".mypy_cache"),
            "--no-error-summary",
            program.name,
        ],
        cwd=program.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _user_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    good = folder / "user_program.py"
    good.write_text(USER_PROGRAM, encoding="utf-8")
    bad = folder / "user_mistake.py"
    bad.write_text(USER_MISTAKE, encoding="utf-8")
    return good, bad


def _assert_type_checks(python: Path, good: Path, bad: Path) -> None:
    checked = _mypy(python, good)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ResilientFunction[[user_id: builtins.str], builtins.int]" in checked.stdout or (
        "ResilientFunction[[user_id: str], int]" in checked.stdout
    ), checked.stdout
    # The decorated function is typed, not Any: a wrong argument is an error.
    mistake = _mypy(python, bad)
    assert mistake.returncode == 1, mistake.stdout + mistake.stderr
    assert "import-not-found" not in mistake.stdout
    assert re.search(
        r'user_mistake\.py:9: error: Argument 1 .*has incompatible type "int"; expected "str"',
        mistake.stdout,
    ), mistake.stdout


@pytest.mark.slow
def test_an_editable_install_type_checks_a_users_program(tmp_path: Path) -> None:
    """The project's editable wheel (what `pip install -e .` installs) put into a fresh,
    empty virtualenv: the package imports at run time from this tree, the `smoothapi`
    command works, and mypy --strict on a user's program outside the tree finds smoothapi
    and smooth_api and sees the decorated function's signature."""
    editable = _build("build_editable", tmp_path / "editable")
    venv = tmp_path / "venv"
    subprocess.run(  # noqa: S603
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    installed = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(editable),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    good, bad = _user_files(tmp_path / "user")

    ran = subprocess.run(  # noqa: S603
        [str(python), good.name],
        cwd=good.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["2", "smoothapi.config"]
    where = subprocess.run(  # noqa: S603
        [str(python), "-c", "import smoothapi; print(smoothapi.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).resolve() == ROOT / "smoothapi" / "__init__.py"
    command = venv / ("Scripts/smoothapi.exe" if sys.platform == "win32" else "bin/smoothapi")
    version = subprocess.run(  # noqa: S603
        [str(command), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert smoothapi.__version__ in version.stdout

    _assert_type_checks(python, good, bad)


@pytest.mark.slow
def test_this_environments_install_type_checks_a_users_program(tmp_path: Path) -> None:
    """The environment running the tests (CI: `pip install -e ".[test,lint,docs]"`):
    mypy --strict from a folder outside the project finds the installed package."""
    try:
        distribution = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare tree
        pytest.skip(f"{DIST} is not installed in this environment")
    direct = json.loads(distribution.read_text("direct_url.json") or "{}")
    good, bad = _user_files(tmp_path / "user")
    _assert_type_checks(Path(sys.executable), good, bad)
    if direct.get("dir_info", {}).get("editable"):
        assert direct["url"].rstrip("/").endswith(ROOT.name)


def test_the_editable_install_is_a_path_entry_not_an_import_hook() -> None:
    """The build backend's editable mode is path based (what static tools can follow)."""
    build = _pyproject()["build-system"]
    assert build["build-backend"] == "hatchling.build"
    assert _pyproject()["tool"]["hatch"]["build"]["dev-mode-dirs"] == ["."]
    assert not _pyproject()["tool"]["hatch"]["build"].get("dev-mode-exact", False)


def test_ci_checks_nothing_less_than_the_documented_install() -> None:
    """.ci/run installs the package the way the development docs say (editable, with the
    test, lint and docs extras), so the type-check test above runs against the documented
    install."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'pip install .*-e "\.\[test,lint,docs\]"', script)
    development = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[test,lint,docs]"' in development
    assert "python -m pytest" in script
