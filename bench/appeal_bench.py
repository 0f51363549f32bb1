"""Benchmark: the aetna-01 CARC 50 appeal (assembly and PDF packet), from a local bundle and from the FHIR server."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptguard.appeals.assemble import assemble  # noqa: E402
from ptguard.appeals.gather import build_source, gather_from_server  # noqa: E402
from ptguard.appeals.render import render_packet  # noqa: E402
from ptguard.fhir.load import load_path  # noqa: E402

BUNDLE = ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json"
TODAY = date(2026, 12, 3)
DENIALS = ("cr-aetna-01", "cr-uhc-01", "cr-bcbs-01")


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    out, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        out.append((time.perf_counter() - t) * 1000)
    return out, result


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):8.2f} ms   p95 {p95:8.2f} ms   (n={len(ms)})"


def local(runs: int) -> None:
    raw = BUNDLE.read_bytes()
    base, _ = timed(lambda: orjson.loads(raw), runs)
    load_ms, load = timed(lambda: load_path(BUNDLE), runs)
    src_ms, src = timed(lambda: build_source(load, "cr-aetna-01"), runs)
    asm_ms, letter = timed(lambda: assemble(src, today=TODAY), runs)
    render_packet(letter, today=TODAY)  # warm fonts once
    pdf_ms, packet = timed(lambda: render_packet(letter, today=TODAY), runs)
    med_base = statistics.median(base)
    print(f"aetna-01 CARC 50 from {BUNDLE.name} ({len(raw):,} bytes), {runs} runs")
    print(f"  baseline orjson.loads of the bundle   {summary(base)}")
    print(f"  load bundle (ptguard loader)          {summary(load_ms)}")
    print(f"  decode + visits + rules               {summary(src_ms)}")
    print(
        f"  assemble letter                       {summary(asm_ms)}   ×{statistics.median(asm_ms) / med_base:,.0f} baseline"
    )
    print(
        f"  render PDF packet                     {summary(pdf_ms)}   ×{statistics.median(pdf_ms) / med_base:,.0f} baseline"
    )
    total = [a + b + c + d for a, b, c, d in zip(load_ms, src_ms, asm_ms, pdf_ms, strict=True)]
    print(f"  bundle → finished PDF                 {summary(total)}")
    print(
        f"  packet: {packet.pages} pages, {len(packet.pdf):,} bytes, {len(letter.sentences())} sentences, {len(letter.gaps)} gap(s)"
    )


def server(runs: int) -> None:
    from ptguard.fhir.client import FhirClient
    from ptguard.fixtures_load import load_fixtures
    from sandbox.fhir_server import FhirServerProcess

    with FhirServerProcess() as proc:
        assert proc.base_url
        with FhirClient(proc.base_url) as client:
            load_fixtures(client, ROOT / "fhir_fixtures")
            originals = [
                client.search("ClaimResponse", {"identifier": f"https://ptguard.dev/fixture-id|{d}"})[0]
                for d in DENIALS
            ]
            # One distinct ClaimResponse per run (copies of the three fixture denials, each with its own id and
            # identifier), so no run reads a resource an earlier run already read.
            ids = []
            for i in range(runs):
                copy = {k: v for k, v in originals[i % len(originals)].items() if k not in ("id", "meta")}
                copy["identifier"] = [{"system": "https://ptguard.dev/bench-id", "value": f"appeal-bench-{i}"}]
                ids.append(client.create(copy)["id"])
            totals: list[float] = []
            fetch_ms: list[float] = []
            for cr in ids:
                t0 = time.perf_counter()
                load, res, _ = gather_from_server(client, cr)
                t1 = time.perf_counter()
                letter = assemble(build_source(load, f"ClaimResponse/{res['id']}"), today=TODAY)
                render_packet(letter, today=TODAY)
                t2 = time.perf_counter()
                fetch_ms.append((t1 - t0) * 1000)
                totals.append((t2 - t0) * 1000)
    print(
        f"ClaimResponse id → finished PDF against the local FHIR server, {runs} distinct denials "
        f"(copies of {', '.join(DENIALS)} in turn)"
    )
    print(f"  fetch the chart                        {summary(fetch_ms)}")
    print(f"  id → PDF                               {summary(totals)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--no-server", dest="server", action="store_false", help="skip id → PDF against a local sandbox FHIR server"
    )
    parser.add_argument("--server", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old scripts
    args = parser.parse_args()
    local(args.runs)
    if args.server:
        server(args.runs)


if __name__ == "__main__":
    main()
