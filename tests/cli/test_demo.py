"""``python -m smoothapi demo`` runs end to end and verifies itself.

The demo drives a real local server through healthy, blip, outage and
recovery phases with @resilient_api over requests, httpx.Client and
httpx.AsyncClient, then through the three transports and the aiohttp
middleware mounted under those clients; it exits non-zero when what it
observes contradicts the contract.  These tests run it as a user would (a
subprocess) and in-process.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smoothapi.cli import demo as demo_module
from smoothapi.cli import main

ROOT = Path(__file__).resolve().parents[2]

PHASES = (
    "phase 1: healthy",
    "phase 2: transient blip",
    "phase 3: outage",
    "phase 4: recovery",
)
CLIENTS = {
    "requests": ("requests (sync)", "requests.Session + ResilientAdapter"),
    "httpx": (
        "httpx.Client (sync)",
        "httpx.AsyncClient (async)",
        "httpx.Client + ResilientTransport",
        "httpx.AsyncClient + AsyncResilientTransport",
    ),
    "aiohttp": ("aiohttp.ClientSession + ResilientMiddleware",),
}
#: The transport sections: heading, how attempts are read, the client's own error.
TRANSPORTS = {
    "requests": (
        '== requests.Session + ResilientAdapter: session.mount("http://", '
        "ResilientAdapter(config)) ==",
        "response.smoothapi_attempts=3",
        "raised CircuitOpenConnectionError (a smoothapi.CircuitOpenError), "
        "caught by `except requests.ConnectionError`: name='http://127.0.0.1:",
    ),
    "httpx": (
        "== httpx.Client + ResilientTransport: httpx.Client(transport=ResilientTransport(config))",
        'response.extensions["smoothapi_attempts"]=3',
        "raised CircuitOpenTransportError (a smoothapi.CircuitOpenError), "
        "caught by `except httpx.TransportError`: name='http://127.0.0.1:",
    ),
    "aiohttp": (
        "== aiohttp.ClientSession + ResilientMiddleware: "
        "aiohttp.ClientSession(middlewares=(ResilientMiddleware(config),))",
        "smoothapi.attempts(response)=3",
        "raised CircuitOpenClientError (a smoothapi.CircuitOpenError), "
        "caught by `except aiohttp.ClientConnectionError`: name='http://127.0.0.1:",
    ),
}
ASYNC_TRANSPORT_HEADING = (
    "== httpx.AsyncClient + AsyncResilientTransport: "
    "httpx.AsyncClient(transport=AsyncResilientTransport(config))"
)

needs_a_client = pytest.mark.skipif(
    all(importlib.util.find_spec(name) is None for name in CLIENTS),
    reason="the demo needs requests or httpx",
)


def _expected_clients() -> list[str]:
    return [label for module, labels in CLIENTS.items() if _installed(module) for label in labels]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _assert_demo_output(output: str) -> None:
    for heading in PHASES:
        assert heading in output, f"missing phase heading {heading!r}"
    assert "CLOSED -> OPEN" in output
    assert "OPEN -> HALF_OPEN" in output
    assert "HALF_OPEN -> CLOSED" in output
    assert "retry in " in output
    assert "fallback served: {'status': 'degraded'}" in output
    assert "CHECK FAILED" not in output
    summaries = [line for line in output.splitlines() if line.startswith("summary:")]
    for label in _expected_clients():
        assert any(line.startswith(f"summary: {label}:") for line in summaries), label
    assert any(line.startswith("summary: total:") for line in summaries)
    assert any("checks passed" in line for line in summaries)
    assert "\x1b[" not in output, "no ANSI colors when the output is not a TTY"
    _assert_transport_sections(output, summaries)


def _assert_transport_sections(output: str, summaries: list[str]) -> None:
    """Each transport: a retried blip, the last 503 returned, the rejection caught as the
    client's own error, fallback= answering without I/O; breakers named after the origin."""
    sections = 0
    for module, (heading, attempts, caught) in TRANSPORTS.items():
        if not _installed(module):
            continue
        # httpx has two sections: ResilientTransport and AsyncResilientTransport.
        per_module = 2 if module == "httpx" else 1
        sections += per_module
        assert heading in output
        assert attempts in output, attempts
        assert output.count(caught) == per_module, caught
    if _installed("httpx"):
        assert ASYNC_TRANSPORT_HEADING in output
    if not sections:
        return
    opened = re.findall(
        r"breaker http://127\.0\.0\.1:\d+: CLOSED -> OPEN \(3 consecutive failed attempts\)",
        output,
    )
    assert len(opened) == sections, opened
    assert output.count("(the last response, as is)") == sections
    assert output.count("(built by fallback=)") == 2 * sections
    lines = [line for line in summaries if "Resilient" in line]
    assert len(lines) == sections, lines
    for line in lines:
        # 11 GETs for 12 requests (2 retries); 2 answered by fallback=, 1 rejection raised,
        # and the outage's last 503 returned as is.
        assert "11 calls, 12 upstream requests" in line, line
        assert "2 fallbacks served, 1 error raised, 1 failed response returned" in line, line
    assert f"{sections} mount points under a client" in summaries[-1], summaries[-1]


@needs_a_client
def test_demo_command_exits_0_and_prints_the_timeline() -> None:
    """`python -m smoothapi demo --no-color` succeeds and shows every phase, both transitions
    and the summary lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "smoothapi", "demo", "--no-color"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    _assert_demo_output(proc.stdout)


def test_the_demo_command_hands_run_demo_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """`smoothapi demo` calls run_demo(out=sys.stdout) with colors left to the terminal, and
    `--no-color` turns them off.  (The demo itself runs once per session, as the user runs
    it: the subprocess test above; running it in-process too doubled its ~11 s.)"""
    calls: list[dict[str, object]] = []

    def fake_run_demo(**kwargs: object) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(demo_module, "run_demo", fake_run_demo)
    assert main(["demo"]) == 0
    assert main(["demo", "--no-color"]) == 0
    assert calls == [
        {"out": sys.stdout, "color": None},
        {"out": sys.stdout, "color": False},
    ]


def test_cli_needs_a_subcommand_and_documents_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """`smoothapi` with no subcommand is a usage error; `demo --help` documents --no-color."""
    with pytest.raises(SystemExit) as missing:
        main([])
    assert missing.value.code == 2
    with pytest.raises(SystemExit) as helped:
        main(["demo", "--help"])
    assert helped.value.code == 0
    assert "--no-color" in capsys.readouterr().out
