"""``smoothapi simulate --config``: the library's loader reads the files, and errors say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoothapi.cli import main
from smoothapi.cli.simulate import build_config, load_config_file
from smoothapi.config_sources import config_from_mapping

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["simulate", "--clients", "2", "--duration", "3", "--json"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        (
            "[backoff]\nmax_retries = -1\n",
            [],
            "{file}: backoff.max_retries: BackoffConfig.max_retries must be >= 0, got -1",
        ),
        (
            "[backof]\nmax_retries = 1\n",
            [],
            "{file}: backof: unknown setting 'backof'; did you mean 'backoff'?",
        ),
        ("[backoff]\nmax_retries = \n", [], "{file}: not valid TOML: Invalid value (at line 2"),
        ("hooks = []\n", [], "{file}: hooks: ResilientConfig.hooks cannot come from a file"),
        (
            "",
            ["--set", "circuit_breaker.cooldown_ms=-3"],
            "--set circuit_breaker.cooldown_ms=-3: circuit_breaker.cooldown_ms: "
            "CircuitBreakerConfig.cooldown_ms must be",
        ),
        (
            "",
            ["--max-retries", "-2"],
            "--max-retries: backoff.max_retries: BackoffConfig.max_retries must be >= 0, got -2",
        ),
        (
            "[circuit_breaker]\ncooldown_ms = 100\n",
            ["--set", "circuit_breaker.max_cooldown_ms=5"],
            "{file}: circuit_breaker.cooldown_ms and --set circuit_breaker.max_cooldown_ms=5: "
            "circuit_breaker.max_cooldown_ms: CircuitBreakerConfig.max_cooldown_ms (5) must not",
        ),
    ],
)
def test_errors_name_the_file_or_the_flag_and_the_field(
    text: str,
    extra: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    file = write(tmp_path, "my.toml", text)
    status, _, err = run([*SMALL, "--config", file, *extra], capsys)
    assert status == 2
    assert err.startswith("smoothapi simulate: error: " + message.format(file=file)), err


def test_flags_and_set_go_over_the_file_field_by_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(
        tmp_path,
        "mine.toml",
        'name = "mine"\n[backoff]\nmax_retries = 1\nbase_delay = 0.2\n[rate_limit]\nrate = 5\n',
    )
    argv = [*SMALL, "--config", file, "--max-delay", "2", "--set", "rate_limit.burst=3"]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    (result,) = json.loads(out)["results"]
    assert result["name"] == "mine"
    assert result["config"]["backoff"]["max_retries"] == 1
    assert result["config"]["backoff"]["base_delay"] == 0.2
    assert result["config"]["backoff"]["max_delay"] == 2
    assert result["config"]["rate_limit"]["rate"] == 5
    assert result["config"]["rate_limit"]["burst"] == 3


def test_the_simulator_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run is reproducible: SMOOTHAPI_* variables (even unknown ones) change nothing."""
    monkeypatch.setenv("SMOOTHAPI_BACKOFF__MAX_RETRIES", "9")
    monkeypatch.setenv("SMOOTHAPI_NOPE", "1")
    status, out, err = run([*SMALL, "--config", str(ROOT / "examples/load-none.toml")], capsys)
    assert status == 0, err
    assert json.loads(out)["results"][0]["config"]["backoff"]["max_retries"] == 3


def test_json_configs_and_other_suffixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(tmp_path, "c.json", json.dumps({"backoff": {"max_retries": 2}, "fallback": True}))
    status, out, err = run([*SMALL, "--config", file], capsys)
    assert status == 0, err
    config = json.loads(out)["results"][0]["config"]
    assert config["backoff"]["max_retries"] == 2
    assert config["fallback"] == "fallback"
    other = write(tmp_path, "c.yaml", "backoff: {}\n")
    status, _, err = run([*SMALL, "--config", other], capsys)
    assert status == 2
    assert f"{other}: cannot read a .yaml file; configs are .toml or .json files" in err


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(ROOT)
        for p in ROOT.glob("examples/**/*.toml")
        if "[upstreams." not in p.read_text()  # load_upstreams' files, not the simulator's
    ),
    ids=str,
)
def test_every_example_config_reads_as_the_loader_reads_it(path: Path) -> None:
    """The simulator's configs are the library's: the same file gives the same config."""
    name, spec = load_config_file(ROOT / path)
    assert name
    fallback = spec.pop("fallback", None)
    assert build_config(spec) == config_from_mapping(spec)
    assert fallback is None
