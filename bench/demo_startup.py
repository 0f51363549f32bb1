"""Benchmark: `ptguard demo` start-up until ready, against starting the Node FHIR server alone (same run)."""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

READY = re.compile(r"ptguard demo ready in (\d+\.\d) s")


def _wait_line(proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if pattern.search(line):
                return line
    raise RuntimeError(f"no line matching {pattern.pattern!r} within {timeout} s; output:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def fhir_alone() -> float:
    """Wall time from spawning `node server.mjs` to its ready line (what every demo start pays at least)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        ["node", str(ROOT / "sandbox/fhir-server/server.mjs"), "--port", "0"],
        cwd=ROOT / "sandbox/fhir-server",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_line(proc, re.compile(r'"ready": ?true'), 30)
        return time.monotonic() - started
    finally:
        _stop(proc)


def demo() -> tuple[float, float, dict[str, float]]:
    """Wall time from spawning `ptguard demo` to its ready line; the demo's own figure; its step timings."""
    with tempfile.TemporaryDirectory(prefix="ptguard-demo-bench-") as var_dir:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ptguard.cli", "demo", "--var-dir", var_dir],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            line = _wait_line(proc, READY, 60)
            wall = time.monotonic() - started
            info = json.loads((Path(var_dir) / "demo.json").read_text())
        finally:
            _stop(proc)
        found = READY.search(line)
        assert found is not None
        return wall, float(info["startup_seconds"]), dict(info["timings"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    demo()  # warm the OS file cache (node_modules, site-packages) so every measured run starts alike
    baseline, walls, internal = [], [], []
    steps: dict[str, list[float]] = {}
    for _ in range(args.runs):
        baseline.append(fhir_alone())
        wall, own, timings = demo()
        walls.append(wall)
        internal.append(own)
        for key, value in timings.items():
            steps.setdefault(key, []).append(value)
    med = statistics.median
    print(f"runs: {args.runs} (median; min–max)")
    print(f"Node FHIR server alone, spawn → ready:   {med(baseline):.2f} s ({min(baseline):.2f}–{max(baseline):.2f})")
    print(f"ptguard demo, spawn → ready line:        {med(walls):.2f} s ({min(walls):.2f}–{max(walls):.2f})")
    print(f"ptguard demo, its own 'ready in' figure: {med(internal):.2f} s ({min(internal):.2f}–{max(internal):.2f})")
    print(f"ratio demo / FHIR server alone:          {med(walls) / med(baseline):.2f}×")
    print("demo steps (median): " + ", ".join(f"{k} {med(v):.2f} s" for k, v in steps.items()))
    target = 10.0
    print(f"target ≤ {target:.0f} s: {'met' if med(walls) <= target else 'NOT met'}")
    return 0 if med(walls) <= target else 1


if __name__ == "__main__":
    raise SystemExit(main())
