"""Benchmark the 97530 signing hook: in-process per-call time vs orjson, and under gunicorn at concurrency 1/8/32.

Usage: .venv/bin/python bench/hooks_bench.py [--calls 300] [--http-seconds 8] [--pin wrk|split|none] [--skip-http]

1. In process (Flask test client): `encounter-discharge` with full prefetch (cigna-01, signed ES384 JWT, cards
   recorded in SQLite) vs a baseline of orjson.loads + orjson.dumps of the same request body; p50/p95 and ratio.
2. Over HTTP: the app served as `ptguard serve` serves it (gunicorn, 2 workers, gthread, app built and warmed once
   before the fork), loaded by `wrk` (Debian package `wrk`; one thread, keep-alive connections, hooks_bench.lua)
   with the same call at concurrency 1, 8 and 32, against an empty Flask route of the same server in the same run;
   p50/p99, throughput and the ratio. Every call carries its own pre-signed ES384 JWT (distinct `jti`: the
   service's replay cache is left on). `--pin wrk` (default) runs wrk on CPU 1 only; `split` also pins the server
   to CPU 0; `none` pins nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cds_hooks")]

SIGN = "ptguard-97530-signing"
LUA = Path(__file__).with_name("hooks_bench.lua")
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


def bench_app(issuers: dict[str, Any]) -> Any:
    """The served app: the real one plus an empty route, in the same process (so both pay the same WSGI path)."""
    from flask import Response

    from webapp import create_app

    app = create_app({"CDS_ISSUERS": issuers})

    @app.get("/bench/empty")
    def empty() -> Response:
        return Response(b"{}", mimetype="application/json")

    return app


def serve(port: int, workers: int, threads: int) -> None:
    """Child process: build the app once (warm-up included) and serve it as `ptguard serve` does."""
    from webapp.serve import gunicorn_app, gunicorn_options

    app = bench_app(orjson.loads(os.environ["BENCH_ISSUERS"]))
    options = gunicorn_options("127.0.0.1", port, workers, threads)
    options["errorlog"] = "-"
    options["loglevel"] = "warning"
    sys.argv = sys.argv[:1]  # gunicorn parses the command line too
    gunicorn_app(app, options).run()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    import http.client

    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode})")
        try:
            conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not start")


def _taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def over_http(
    seconds: float, levels: tuple[int, ...], per_call_ms: float, pin: str, threads: int
) -> list[dict[str, Any]]:
    """wrk (one thread, keep-alive) against gunicorn (2 workers): empty route then hook, per concurrency level."""
    signer = Signer()
    raw = orjson.dumps(build_request())
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    hook_url = f"{base}/cds-services/{SIGN}"
    server_cpus, wrk_cpus = {"split": ("0", "1"), "wrk": (None, "1"), "none": (None, None)}[pin]
    # One distinct JWT per call (the service refuses a replayed jti): signed before the server starts, so the
    # signing costs no server CPU. Enough for twice the rate two workers could reach at the in-process cost.
    rate_cap = 2 * 2 * 1000 / max(per_call_ms, 0.5)
    per_cell = int(min(60_000, max(3_000, rate_cap * seconds)))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        token_files = {}
        for label, count in [("warm", int(rate_cap) + 200)] + [(f"c{c}", per_cell) for c in levels]:
            path = Path(tmp) / f"tokens-{label}.txt"
            path.write_text("\n".join(signer.token(hook_url) for _ in range(count)) + "\n")
            token_files[label] = path
        print(
            f"  ({len(token_files)} token files, {per_cell:,} JWTs per cell, "
            f"signed in {time.perf_counter() - t:.1f} s)",
            file=sys.stderr,
        )
        body = Path(tmp) / "body.json"
        body.write_bytes(raw)
        env = {
            **os.environ,
            "BENCH_ISSUERS": orjson.dumps(signer.issuers()).decode(),
            "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench"), str(ROOT / "tests" / "cds_hooks")]),
        }
        cmd = [*_taskset(server_cpus), sys.executable, str(Path(__file__).resolve()), "--serve", str(port),
               "--threads", str(threads)]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, cwd=tmp)
        try:
            _wait_ready(base, proc)
            server = proc.pid
            _wrk(base, "hook", 4, 1.0, body, token_files["warm"], wrk_cpus, server)  # warm-up, not counted
            _wrk(base, "empty", 4, 1.0, body, None, wrk_cpus, server)
            rows = []
            for c in levels:
                rows.append(_wrk(base, "empty", c, seconds, body, None, wrk_cpus, server))
                rows.append(_wrk(base, "hook", c, seconds, body, token_files[f"c{c}"], wrk_cpus, server))
            return rows
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the given processes (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU time the whole machine spent busy (all processes, kernel included), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _wrk(
    base: str,
    target: str,
    concurrency: int,
    seconds: float,
    body: Path,
    tokens: Path | None,
    cpus: str | None,
    server: int,
) -> dict[str, Any]:
    path = "/bench/empty" if target == "empty" else f"/cds-services/{SIGN}"
    cmd = [
        *_taskset(cpus), "wrk", "--threads", "1", "--connections", str(concurrency),
        "--duration", f"{max(1, round(seconds))}s", "--timeout", "5s", "--script", str(LUA), base + path,
        "--", target, str(body), str(tokens or ""), "1",
    ]  # fmt: skip
    pids = [server, *_children(server)]  # the arbiter and its workers
    server_cpu, busy = _cpu_seconds(pids), _busy_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu, busy = _cpu_seconds(pids) - server_cpu, _busy_seconds() - busy
    wrk_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    r = orjson.loads(line.removeprefix("BENCH "))
    if "tokens exhausted" in out.stderr:
        raise SystemExit(f"{target} c={concurrency}: ran out of pre-signed JWTs; raise per_cell")
    errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {
        "target": target,
        "concurrency": concurrency,
        "requests": r["requests"],
        "errors": errors,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "throughput_rps": r["requests"] / (r["duration_us"] / 1e6),
        "server_cpu_ms": server_cpu * 1000 / max(1, r["requests"]),
        "wrk_cores": wrk_cpu / (r["duration_us"] / 1e6),
        "other_cores": max(0.0, busy - server_cpu - wrk_cpu) / (r["duration_us"] / 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--http-seconds", type=float, default=8.0)
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels (comma-separated)")
    parser.add_argument("--pin", choices=("wrk", "split", "none"), default="wrk")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (ptguard serve: 4)")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the server child
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, 2, args.threads)
        return
    r = in_process(args.calls)
    print(f"in-process encounter-discharge, full prefetch ({r['request_bytes']:,} bytes, signed ES384, cards recorded)")
    print(f"  call              p50 {r['p50_ms']:.2f} ms   p95 {r['p95_ms']:.2f} ms")
    print(f"  orjson loads+dumps p50 {r['baseline_p50_ms']:.3f} ms  p95 {r['baseline_p95_ms']:.3f} ms")
    print(
        f"  ratio (p50)       {r['ratio_p50']:.0f}x   target p50 < 100 ms: {'met' if r['p50_ms'] < 100 else 'MISSED'}"
    )
    if args.skip_http:
        return
    if not shutil.which("wrk"):
        print("\nover HTTP: SKIPPED — `wrk` is not installed (Debian/Ubuntu: apt-get install wrk)")
        return
    levels = tuple(int(x) for x in args.levels.split(","))
    rows = over_http(args.http_seconds, levels, r["p50_ms"], args.pin, args.threads)
    pinning = {"wrk": "wrk on CPU 1", "split": "wrk on CPU 1, server on CPU 0", "none": "no pinning"}[args.pin]
    print(f"\ngunicorn, 2 workers (gthread x{args.threads}), wrk 1 thread keep-alive ({pinning}), "
          f"{args.http_seconds:g} s per cell; {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"  {'target':<6} {'conc':>4} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8} "
        f"{'srv CPU ms/req':>14} {'wrk cores':>9} {'other cores':>11} errors"
    )
    for row in rows:
        print(
            f"  {row['target']:<6} {row['concurrency']:>4} {row['requests']:>8} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f} {row['throughput_rps']:>8.0f} "
            f"{row['server_cpu_ms']:>14.2f} {row['wrk_cores']:>9.2f} {row['other_cores']:>11.2f} {row['errors']}"
        )
    print(
        "  (srv CPU = the gunicorn processes' CPU per request; other cores = CPU the rest of the machine used meanwhile)"
    )
    for c in levels:
        hook = next(x for x in rows if x["target"] == "hook" and x["concurrency"] == c)
        empty = next(x for x in rows if x["target"] == "empty" and x["concurrency"] == c)
        print(
            f"  concurrency {c:>2}: hook/empty p50 {hook['p50_ms'] / empty['p50_ms']:.1f}x, "
            f"p99 {hook['p99_ms'] / empty['p99_ms']:.1f}x, throughput {empty['throughput_rps'] / hook['throughput_rps']:.1f}x"
        )
    hook8 = next((x for x in rows if x["target"] == "hook" and x["concurrency"] == 8), None)
    if hook8 is not None:
        print(f"  target p99 <= 50 ms at concurrency 8: {'met' if hook8['p99_ms'] <= 50 else 'MISSED'}")
    if any(row["errors"] for row in rows):
        raise SystemExit("some calls failed (see the errors column)")


if __name__ == "__main__":
    main()
