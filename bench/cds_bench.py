"""Benchmark the 97530 signing hook: in-process per-call time vs orjson, and under gunicorn at concurrency 1/8/32.

Usage: .venv/bin/python bench/cds_bench.py [--calls 300] [--http-seconds 5] [--skip-http]

1. In process (Flask test client): `encounter-discharge` with full prefetch (cigna-01, signed ES384 JWT, cards
   recorded in SQLite) vs a baseline of orjson.loads + orjson.dumps of the same request body; p50/p95 and ratio.
2. Over HTTP: `ptguard serve`'s gunicorn (2 workers, gthread) with the same call at concurrency 1, 8 and 32,
   against an empty Flask route in the same server and run; p50/p99, throughput and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cds_hooks")]

SIGN = "ptguard-97530-signing"
ISS = "https://bench.ehr.test"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def build_request() -> dict[str, Any]:
    """The cigna-01 discharge request with the full prefetch an EHR would send."""
    import responses
    from fakefhir import FakeFhir

    from ptguard.cds import SERVICES, fill_prefetch
    from ptguard.fhir.client import FhirClient

    fake = FakeFhir.for_files("patient-cigna-nakamura.json", base="https://ehr.test/fhir")
    ctx = {"userId": "Practitioner/prac-okafor", "patientId": "pat-nakamura", "encounterId": "enc-cigna-01"}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.register(mock)
        with FhirClient(fake.base) as client:
            prefetch = fill_prefetch(SERVICES[SIGN], ctx, client)
    # The payer Organization and performers, as an EHR would add with _include.
    extra = [r for r in fake.resources if r["resourceType"] in ("Organization", "Practitioner", "PractitionerRole")]
    prefetch["coverage"]["entry"] += [{"resource": r, "search": {"mode": "include"}} for r in extra]
    return {"hook": "encounter-discharge", "hookInstance": str(uuid.uuid4()), "context": ctx, "prefetch": prefetch}


class Signer:
    def __init__(self) -> None:
        from joserfc.jwk import ECKey

        self.key = ECKey.generate_key("P-384", parameters={"kid": "bench"}, private=True)

    def issuers(self) -> dict[str, Any]:
        return {ISS: {"jwks": {"keys": [self.key.as_dict(private=False)]}}}

    def token(self, url: str) -> str:
        from joserfc import jwt

        now = int(time.time())
        claims = {"iss": ISS, "aud": url, "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex}
        return jwt.encode({"alg": "ES384", "typ": "JWT", "kid": "bench"}, claims, self.key, algorithms=["ES384"])


def in_process(calls: int) -> dict[str, float]:
    from webapp import create_app

    signer = Signer()
    body = build_request()
    raw = orjson.dumps(body)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
                "CDS_ISSUERS": signer.issuers(),
                "CDS_WARM_UP": True,
            }
        )
        client = app.test_client()
        path = f"/cds-services/{SIGN}"
        url = "http://localhost" + path
        times: list[float] = []
        for i in range(calls + 20):
            headers = {"Authorization": f"Bearer {signer.token(url)}", "Content-Type": "application/json"}
            t = time.perf_counter()
            response = client.post(path, data=raw, headers=headers)
            elapsed = (time.perf_counter() - t) * 1000
            assert response.status_code == 200, response.data[:200]
            if i >= 20:
                times.append(elapsed)
        app.extensions["ptguard_cds"].recorder.flush()
        cards = response.json["cards"]
        assert cards[0]["summary"] == "97530: 31 timed minutes support 2 units, 3 billed"
    base: list[float] = []
    for _ in range(calls):
        t = time.perf_counter()
        orjson.dumps(orjson.loads(raw))
        base.append((time.perf_counter() - t) * 1000)
    return {
        "request_bytes": len(raw),
        "p50_ms": statistics.median(times),
        "p95_ms": _pct(times, 95),
        "baseline_p50_ms": statistics.median(base),
        "baseline_p95_ms": _pct(base, 95),
        "ratio_p50": statistics.median(times) / statistics.median(base),
    }


def create_bench_app() -> Any:
    """The gunicorn target: the real app plus an empty route (configured through the environment)."""
    from flask import Response

    from webapp import create_app

    app = create_app({"CDS_ISSUERS": orjson.loads(os.environ["BENCH_ISSUERS"])})

    @app.get("/bench/empty")
    def empty() -> Response:
        return Response(b"{}", mimetype="application/json")

    return app


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def over_http(seconds: float) -> list[dict[str, Any]]:
    import requests

    signer = Signer()
    raw = orjson.dumps(build_request())
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "BENCH_ISSUERS": orjson.dumps(signer.issuers()).decode(),
            "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench"), str(ROOT / "tests" / "cds_hooks")]),
        }
        cmd = [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
            "--worker-class", "gthread", "--threads", "8", "--log-level", "warning",
            "cds_bench:create_bench_app()",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, cwd=tmp)
        try:
            for _ in range(200):
                try:
                    requests.get(base + "/healthz", timeout=0.5)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            results = []
            for concurrency in (1, 8, 32):
                for target in ("empty", "hook"):
                    results.append(_load(base, target, raw, signer, concurrency, seconds))
            return results
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _load(base: str, target: str, raw: bytes, signer: Signer, concurrency: int, seconds: float) -> dict[str, Any]:
    import requests

    path = "/bench/empty" if target == "empty" else f"/cds-services/{SIGN}"
    url = base + path
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]

    def worker() -> None:
        local: list[float] = []
        with requests.Session() as session:
            for _ in range(3):  # warm-up calls, not counted
                _one(session)
            while time.monotonic() < stop:
                t = time.perf_counter()
                ok = _one(session)
                local.append((time.perf_counter() - t) * 1000)
                if not ok:
                    errors[0] += 1
        with lock:
            latencies.extend(local)

    def _one(session: requests.Session) -> bool:
        if target == "empty":
            return session.get(url, timeout=10).status_code == 200
        headers = {"Authorization": f"Bearer {signer.token(url)}", "Content-Type": "application/json"}
        return session.post(url, data=raw, headers=headers, timeout=10).status_code == 200

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.monotonic() - started
    return {
        "target": target,
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors[0],
        "p50_ms": statistics.median(latencies),
        "p99_ms": _pct(latencies, 99),
        "throughput_rps": len(latencies) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--http-seconds", type=float, default=5.0)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    r = in_process(args.calls)
    print(f"in-process encounter-discharge, full prefetch ({r['request_bytes']:,} bytes, signed ES384, cards recorded)")
    print(f"  call              p50 {r['p50_ms']:.2f} ms   p95 {r['p95_ms']:.2f} ms")
    print(f"  orjson loads+dumps p50 {r['baseline_p50_ms']:.3f} ms  p95 {r['baseline_p95_ms']:.3f} ms")
    print(
        f"  ratio (p50)       {r['ratio_p50']:.0f}x   target p50 < 100 ms: {'met' if r['p50_ms'] < 100 else 'MISSED'}"
    )
    if args.skip_http:
        return
    rows = over_http(args.http_seconds)
    print("\ngunicorn, 2 workers (gthread x8), same run: hook vs empty route")
    print(f"  {'target':<6} {'conc':>4} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} errors")
    for row in rows:
        print(
            f"  {row['target']:<6} {row['concurrency']:>4} {row['requests']:>8} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['throughput_rps']:>8.0f} {row['errors']}"
        )
    for c in (1, 8, 32):
        hook = next(x for x in rows if x["target"] == "hook" and x["concurrency"] == c)
        empty = next(x for x in rows if x["target"] == "empty" and x["concurrency"] == c)
        print(f"  concurrency {c:>2}: hook/empty p99 ratio {hook['p99_ms'] / empty['p99_ms']:.1f}x")
    hook8 = next(x for x in rows if x["target"] == "hook" and x["concurrency"] == 8)
    print(f"  target p99 <= 50 ms at concurrency 8: {'met' if hook8['p99_ms'] <= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
