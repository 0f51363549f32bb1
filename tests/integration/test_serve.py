"""`ptguard serve` as a subprocess under gunicorn: signed discovery, 401 without a JWT, SMART launch, clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import time_machine
from joserfc import jwt
from joserfc.jwk import ECKey
from jsonschema import Draft202012Validator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PTGUARD = ROOT / ".venv" / "bin" / "ptguard"
DISCOVERY_SCHEMA = Draft202012Validator(
    json.loads((ROOT / "schemas" / "cds-hooks-discovery.schema.json").read_text(encoding="utf-8"))
)
ISS = "https://ehr.serve-test.example/cds-client"
SMART_FHIR = "https://ehr.serve-test.example/fhir"
# Settings a developer's shell could carry that would change what this test sees.
SCRUB = (
    "PTGUARD_CDS_ALLOW_UNSIGNED",
    "PTGUARD_PUBLIC_BASE_URL",
    "PTGUARD_TRUSTED_HOSTS",
    "PTGUARD_REDIS_URL",
    "PTGUARD_SMART_LAUNCH_URL",
    "PTGUARD_SMART_ISSUERS",
    "PTGUARD_CDS_ISSUERS",
)


def _real_time() -> float:
    """The wall clock of the server process: the tests run under a frozen clock (tests/conftest.py)."""
    if time_machine.escape_hatch.is_travelling():
        return time_machine.escape_hatch.time.time()
    return time.time()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base: str
    key: ECKey
    log: Path
    started: float

    def token(self, path: str, *, key: ECKey | None = None) -> str:
        now = int(_real_time())
        claims = {"iss": ISS, "aud": self.base + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        signing = key or self.key
        return jwt.encode({"alg": "ES384", "typ": "JWT", "kid": signing.kid}, claims, signing, algorithms=["ES384"])

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    assert PTGUARD.is_file(), f"{PTGUARD} is missing: run `make test` (it creates the venv)"
    key = ECKey.generate_key("P-384", parameters={"kid": "serve-es384"}, private=True)
    issuers = tmp_path / "cds-issuers.json"
    issuers.write_text(json.dumps({ISS: {"jwks": {"keys": [key.as_dict(private=False)]}, "algorithms": ["ES384"]}}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
            "PTGUARD_CDS_ISSUERS": str(issuers),
            "PTGUARD_CDS_ALLOW_UNSIGNED": "0",
            "PTGUARD_SMART_ISSUERS": json.dumps({"issuers": [{"fhir_base": SMART_FHIR, "client_id": "ptguard"}]}),
            "PYTHONUNBUFFERED": "1",
            # gunicorn's control socket goes to $XDG_RUNTIME_DIR: keep it out of the user's home (and other serves')
            "XDG_RUNTIME_DIR": str(tmp_path),
        }
    )
    log = tmp_path / "serve.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(PTGUARD), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--threads", "2"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    here = Served(proc, f"http://127.0.0.1:{port}", key, log, started)
    try:
        _wait_ready(here)
        yield here
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
        proc.wait(timeout=10)


def _wait_ready(served: Served) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            pytest.fail(f"ptguard serve exited with {served.proc.returncode}:\n{served.output()}")
        try:
            if requests.get(served.base + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail("ptguard serve did not answer /healthz within 10 s:\n" + served.output())


def _workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The gunicorn workers (the master forks them after binding; wait until both are there)."""
    master = psutil.Process(proc.pid)
    deadline = time.monotonic() + 5
    children = master.children(recursive=True)
    while len(children) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        children = master.children(recursive=True)
    return children


def test_serve_answers_signed_calls_launches_and_stops_without_leftovers(served: Served) -> None:
    # It says where it listens, once (gunicorn itself is silent at its warning level).
    ready = f"ptguard serve: listening on {served.base}/ (gunicorn, 2 worker(s) × 2 thread(s)); Ctrl-C stops"
    assert served.output().count(ready) == 1, served.output()
    with requests.Session() as http:
        # A valid ES384 JWT from the configured issuer: the discovery document, as the schema describes it.
        path = "/cds-services"
        ok = http.get(served.base + path, headers={"Authorization": f"Bearer {served.token(path)}"}, timeout=5)
        assert ok.status_code == 200, (ok.status_code, ok.text[:300], served.output()[-2000:])
        body: Any = ok.json()
        errors = [f"{e.json_path}: {e.message}" for e in DISCOVERY_SCHEMA.iter_errors(body)]
        assert not errors, errors
        assert body["services"] and all(s["id"].startswith("ptguard-") for s in body["services"])
        # No JWT, or one signed by a key the issuer does not have: a bare 401.
        bare = http.get(served.base + path, timeout=5)
        assert bare.status_code == 401 and bare.content == b""
        assert bare.headers.get("WWW-Authenticate") == "Bearer"
        stranger = ECKey.generate_key("P-384", parameters={"kid": "serve-es384"}, private=True)
        forged = http.get(
            served.base + path, headers={"Authorization": f"Bearer {served.token(path, key=stranger)}"}, timeout=5
        )
        assert forged.status_code == 401
        # The SMART app: a launch from an EHR that is not configured gets the "Unknown EHR" page, not a 500.
        launch = http.get(
            served.base + "/app/launch",
            params={"iss": "https://unknown-ehr.example/fhir", "launch": "abc"},
            timeout=5,
            allow_redirects=False,
        )
        assert launch.status_code == 400, (launch.status_code, launch.text[:300])
        assert "Unknown EHR" in launch.text and "Traceback" not in launch.text
    workers = _workers(served.proc)
    assert len(workers) >= 2, [(p.pid, p.name()) for p in workers]  # --workers 2 under the master
    master = psutil.Process(served.proc.pid)
    served.proc.send_signal(signal.SIGTERM)
    try:
        served.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("ptguard serve did not stop within 10 s of SIGTERM:\n" + served.output())
    assert served.proc.returncode == 0, served.output()[-2000:]
    assert not master.is_running()
    _gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    for p in workers:
        assert not psutil.pid_exists(p.pid) or psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE
    assert not list(served.log.parent.glob("*.ctl")), "gunicorn's control socket was left behind"
    assert "Traceback" not in served.output()
    elapsed = time.monotonic() - served.started
    assert elapsed < 15, f"start, calls and stop took {elapsed:.1f} s (target < 15 s)"
