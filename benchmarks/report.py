"""Turn a pytest-benchmark JSON file into ratio tables (markdown).

    python -m pytest benchmarks --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json

Per group: each contender's median per call, its overhead over ``bare``
(median minus bare, per call), and ratios against ``bare``, ``passthrough``
and ``circuitbreaker`` where those ran in the same group, and against ``no
stage`` in the load-control groups. Absolute times are printed for context
only; compare the ratios.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any


def _name(bench: dict[str, Any]) -> str:
    params = bench.get("params") or {}
    return str(params.get("name", bench["name"]))


def report(data: dict[str, Any]) -> str:
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench["group"] or "", {})[_name(bench)] = bench
    machine = data.get("machine_info", {})
    lines = [
        f"Machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
        f"{machine.get('cpu', {}).get('count', '?')} cores, Python "
        f"{machine.get('python_version', platform.python_version())}; "
        f"run {data.get('datetime', '?')}",
        "",
    ]
    for group, benches in groups.items():
        lines += [f"### {group}", ""]
        if any("upstream_requests" in b.get("extra_info", {}) for b in benches.values()):
            lines += ["| contender | calls | requests that reached the server |", "|---|---|---|"]
            for name, b in sorted(
                benches.items(), key=lambda kv: kv[1]["extra_info"]["upstream_requests"]
            ):
                info = b["extra_info"]
                lines.append(f"| {name} | {info['calls']} | {info['upstream_requests']} |")
            lines.append("")
            continue
        if group == "import-time":
            lines += ["| package | import time (ms, cumulative) |", "|---|---|"]
            for b in benches.values():
                for name, us in sorted(b["extra_info"]["paired"].items(), key=lambda kv: kv[1]):
                    lines.append(f"| {name} | {us / 1000:.1f} |")
            lines.append("")
            continue
        per_call: dict[str, float] = {}
        for name, b in benches.items():
            info = b.get("extra_info", {})
            if "paired" in info:  # interleaved contenders, medians per call in µs
                per_call.update(info["paired"])
            else:
                per_call[name] = b["stats"]["median"] / info.get("batch", 1) * 1e6
        bare = per_call.get("bare")
        refs = [r for r in ("bare", "passthrough", "circuitbreaker") if r in per_call]
        if bare is None:  # no bare baseline: throughput and ratio to the fastest
            fastest = min(per_call.values())
            lines += ["| contender | median per call (µs) | calls/s | time ÷ fastest's |"]
            lines += ["|---|---|---|---|"]
            for name, t in sorted(per_call.items(), key=lambda kv: kv[1]):
                lines.append(f"| {name} | {t:.3f} | {1e6 / t:,.0f} | {t / fastest:.1f} |")
            lines.append("")
            continue
        header = "| contender | median per call (µs) | overhead over bare (µs) |"
        header += "".join(f" overhead ÷ {r}'s |" for r in refs if r != "bare")
        header += " time ÷ bare's |" if bare else ""
        # Load-control groups (test_load_control.py): also against the default config's.
        stageless = per_call.get("no stage")
        if stageless:
            header += " added over no stage (µs) | time ÷ no stage's |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for name, t in sorted(per_call.items(), key=lambda kv: kv[1]):
            over = t - bare if bare is not None else float("nan")
            row = f"| {name} | {t:.3f} | {over:+.3f} |"
            for r in refs:
                if r == "bare":
                    continue
                ref_over = per_call[r] - (bare or 0.0)
                row += f" {over / ref_over:.2f} |" if ref_over > 0 else " - |"
            if bare:
                row += f" {t / bare:.3f} |"
            if stageless:
                row += f" {t - stageless:+.3f} | {t / stageless:.3f} |"
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(report(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
