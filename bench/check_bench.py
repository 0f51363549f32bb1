"""Benchmark: `ptguard check` over a Bundle of 1,000 therapy encounters, against plain orjson.loads."""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptguard.check import run_check  # noqa: E402


def _rename(value: Any, suffix: str) -> Any:
    """Copy of a resource tree with every id, fullUrl and reference made unique by a suffix."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in {"id", "fullUrl", "reference"} and isinstance(v, str):
                out[k] = f"{v}-{suffix}"
            else:
                out[k] = _rename(v, suffix)
        return out
    if isinstance(value, list):
        return [_rename(v, suffix) for v in value]
    return value


def build_bundle(target: int) -> tuple[bytes, int]:
    """A collection Bundle with at least `target` therapy encounters, cloned from the fixtures."""
    entries: list[dict[str, Any]] = []
    per_copy = 0
    sources = [orjson.loads(p.read_bytes()) for p in sorted((ROOT / "fhir_fixtures").glob("patient-*.json"))]
    per_copy = sum(1 for b in sources for e in b["entry"] if e["resource"]["resourceType"] == "Encounter")
    copies = -(-target // per_copy)
    shared = orjson.loads((ROOT / "fhir_fixtures" / "clinic-shared.json").read_bytes())
    for i in range(copies):
        for bundle in sources:
            for e in bundle["entry"]:
                entries.append(_rename(copy.deepcopy({"fullUrl": e["fullUrl"], "resource": e["resource"]}), str(i)))
    for e in shared["entry"]:
        entries.append({"fullUrl": e["fullUrl"], "resource": e["resource"]})
    data = orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    return data, copies * per_copy


def best_of(n: int, fn: Any) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encounters", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data, count = build_bundle(args.encounters)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.json"
        path.write_bytes(data)
        parse = best_of(args.repeat, lambda: orjson.loads(path.read_bytes()))
        results = {}
        for label, limit in (("check (default)", 100), ("check --validate all", None), ("check --validate none", 0)):
            seconds = best_of(args.repeat, lambda v=limit: run_check([path], validate_limit=v))
            results[label] = seconds
        report = run_check([path], validate_limit=0)
    evaluated = len(report.evaluations)
    print(
        f"bundle: {len(data) / 1e6:.1f} MB, {count} encounters in the fixtures' copies, {evaluated} therapy encounters checked"
    )
    print(f"orjson.loads baseline: {parse * 1000:.1f} ms")
    for label, seconds in results.items():
        print(
            f"{label:22s} {seconds * 1000:8.1f} ms  {evaluated / seconds:8.0f} encounters/s  {seconds / parse:6.1f}× orjson.loads"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
