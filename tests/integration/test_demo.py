"""`ptguard demo` as a subprocess: it prints one ready line with the URL and leaves no process behind on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"ptguard demo ready in (\d+\.\d) s — open (http://127\.0\.0\.1:\d+/)")


def _start(var_dir: Path, *, sigint_ignored: bool = False) -> tuple[subprocess.Popen[str], re.Match[str], list[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ignore_sigint() -> None:  # what a shell does to a command it starts in the background
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-m", "ptguard.cli", "demo", "--var-dir", str(var_dir)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = READY.search(line)
            if found:
                return proc, found, lines
        elif proc.poll() is not None:
            break
    proc.kill()
    proc.communicate(timeout=10)
    pytest.fail("ptguard demo did not print its ready line:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str], sig: int) -> str:
    proc.send_signal(sig)
    try:
        rest, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail("ptguard demo did not stop within 20 s")
    return rest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_starts_answers_and_stops_without_leftovers(tmp_path: Path, sig: int) -> None:
    proc, ready, lines = _start(tmp_path)
    try:
        seconds, url = float(ready.group(1)), ready.group(2)
        assert seconds <= 10.0, f"start-up took {seconds} s (target ≤ 10 s)"
        assert sum("http://" in line for line in lines) == 1, lines  # one URL to open
        info = json.loads((tmp_path / "demo.json").read_text())
        assert info["simulator"] == url
        with requests.Session() as http:
            page = http.get(url, timeout=10)
            assert page.status_code == 200 and "Sign note" in page.text
            assert http.get(info["ptguard"] + "/healthz", timeout=5).status_code == 200
            assert http.get(url + ".well-known/jwks.json", timeout=5).json()["keys"][0]["alg"] == "ES384"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("node" in (c.name() or "") for c in children), [c.name() for c in children]
    except BaseException:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    rest = _stop(proc, sig)
    assert proc.returncode == 0, rest
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    for p in children:
        assert not psutil.pid_exists(p.pid) or psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE
    # logs went to the var dir and hold no bearer tokens or launch/code query strings
    logs = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in tmp_path.glob("*.log")}
    assert {"fhir-server.log", "ptguard-web.log", "ehr-sim.log", "smart-auth.log"} <= set(logs)
    for name, text in logs.items():
        assert "Bearer " not in text and "launch=" not in text and "code=" not in text, name
    assert "stopping" in rest


def test_demo_started_in_the_background_still_stops_on_sigint(tmp_path: Path) -> None:
    proc, _ready, _lines = _start(tmp_path, sigint_ignored=True)
    children = psutil.Process(proc.pid).children(recursive=True)
    rest = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0 and "stopping" in rest
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


def test_demo_stack_in_process_stops_its_threads_and_node(tmp_path: Path) -> None:
    import threading

    from sandbox.demo import DemoStack

    before = {t.ident for t in threading.enumerate()}
    stack = DemoStack(var_dir=tmp_path)
    urls = stack.start()
    assert stack.fhir is not None
    node = psutil.Process(stack.fhir.pid or -1)
    assert requests.get(urls.simulator, timeout=10).status_code == 200
    stack.stop()
    stack.stop()  # twice is fine
    node.wait(timeout=5)
    assert not node.is_running()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not left:
            break
        time.sleep(0.1)
    assert not left, left


# ---------------------------------------------------------------------------------------------- simulator pieces


def test_simulator_jwt_is_accepted_by_the_cds_verifier_and_only_for_its_audience() -> None:
    from cds_hooks.jwt import AuthError, MemoryReplayCache, Verifier, parse_issuers
    from sandbox.ehr_sim import SigningKey

    key = SigningKey()
    iss, aud = "http://127.0.0.1:9/", "http://127.0.0.1:8/cds-services/ptguard-97530-signing"
    verifier = Verifier(
        parse_issuers({iss: {"jwks": key.jwks(), "algorithms": ["ES384"]}}), replay=MemoryReplayCache(), leeway=60
    )
    token = key.caller_jwt(iss, aud)
    caller = verifier.verify(f"Bearer {token}", aud)
    assert caller.iss == iss
    with pytest.raises(AuthError):  # the same jti again
        verifier.verify(f"Bearer {token}", aud)
    with pytest.raises(AuthError):  # another URL
        verifier.verify(f"Bearer {key.caller_jwt(iss, aud)}", aud + "/feedback")
    assert "d" not in key.jwks()["keys"][0]  # the private part is never published


def test_prefetch_templates_are_filled_from_context_and_user() -> None:
    from sandbox.ehr_sim.cds_client import fill_template

    context = {"patientId": "p1", "encounterId": "e1", "draftOrders": {"resourceType": "Bundle"}}
    assert fill_template("Procedure?encounter=Encounter/{{context.encounterId}}", context, None) == (
        "Procedure?encounter=Encounter/e1"
    )
    assert fill_template("Patient/{{ context.patientId }}", context, None) == "Patient/p1"
    assert fill_template("Practitioner/{{userPractitionerId}}", context, "Practitioner/u9") == "Practitioner/u9"
    assert fill_template("Practitioner/{{userPractitionerId}}", context, "PractitionerRole/r1") is None
    assert fill_template("X?y={{context.draftOrders}}", context, None) is None  # not a primitive: left out
    assert fill_template("X?y={{context.missing}}", context, None) is None


def test_card_markdown_is_rendered_without_raw_html_or_script_links() -> None:
    from sandbox.ehr_sim.app import render_markdown

    html = str(
        render_markdown("**Fix**: add <script>alert(1)</script> [x](javascript:alert(1)) [ok](https://a.example)")
    )
    assert "<strong>Fix</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html
    assert '<a href="https://a.example">ok</a>' in html


def test_demo_against_an_external_fhir_server_signs_a_note(tmp_path: Path) -> None:
    from sandbox.demo import DemoStack
    from sandbox.fhir_server import FhirServerProcess

    with FhirServerProcess(log_path=tmp_path / "external.log") as external:
        assert external.base_url is not None
        with DemoStack(var_dir=tmp_path / "demo", external_fhir=external.base_url + "/") as stack:
            assert stack.fhir is None and stack.urls is not None
            assert stack.urls.fhir == external.base_url
            with requests.Session() as http:
                page = http.get(stack.urls.simulator, timeout=10).text
                row = re.search(
                    r'data-encounter="enc-cigna-01".*?name="patient" value="([^"]+)".*?name="encounter" value="([^"]+)"',
                    page,
                    re.S,
                )
                assert row is not None
                answer = http.post(
                    stack.urls.simulator + "sign", data={"patient": row[1], "encounter": row[2]}, timeout=30
                )
                assert answer.status_code == 200 and "/calls/" in answer.url
                assert 'data-indicator="critical"' in answer.text, answer.text
        assert external.running  # the demo never stops a server it did not start


# ---------------------------------------------------------------------------------------------- one demo per var dir


def _snapshot(var_dir: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of the var dir but the logs: inode, mtime and bytes."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for p in sorted(var_dir.iterdir()):
        if p.is_file() and p.suffix != ".log":
            st = p.stat()
            out[p.name] = (st.st_ino, st.st_mtime_ns, p.read_bytes())
    return out


def test_a_second_demo_on_the_same_var_dir_refuses_and_touches_nothing(tmp_path: Path) -> None:
    proc, ready, _lines = _start(tmp_path)
    try:
        before = _snapshot(tmp_path)
        assert {"smart-issuers.json", "cds-issuers.json", "ptguard.sqlite3", "demo.lock"} <= set(before)
        time.sleep(0.05)  # a rewrite would show in mtime_ns
        second = subprocess.run(
            [sys.executable, "-m", "ptguard.cli", "demo", "--var-dir", str(tmp_path), "--port", "0"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 5, second.stderr
        lines = second.stderr.strip().splitlines()
        assert lines == [
            f"ptguard demo: another ptguard demo (pid {proc.pid}) is using {tmp_path}; stop it or give --var-dir DIR"
        ], second.stderr
        assert "ready" not in second.stdout
        assert _snapshot(tmp_path) == before
        # the first demo still trusts its own EHR: its issuer files and store are the ones it wrote
        smart = json.loads((tmp_path / "smart-issuers.json").read_text())
        info = json.loads((tmp_path / "demo.json").read_text())
        assert smart["issuers"][0]["fhir_base"] == info["auth_fhir_base"]
        assert requests.get(ready.group(2), timeout=10).status_code == 200
    finally:
        rest = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, rest
    # once the first has stopped, the folder is free again
    from sandbox.demo import DemoStack

    stack = DemoStack(var_dir=tmp_path)
    stack.acquire()
    stack.release()


def test_demo_lock_in_process_refuses_a_second_stack_before_touching_anything(tmp_path: Path) -> None:
    from ptguard.errors import ConfigError
    from sandbox.demo import DemoStack

    var_dir = tmp_path / "demo"
    first = DemoStack(var_dir=var_dir)
    first.acquire()
    try:
        (var_dir / "smart-issuers.json").write_text("mine\n")
        second = DemoStack(var_dir=var_dir)
        with pytest.raises(ConfigError, match=rf"another ptguard demo \(pid {os.getpid()}\) is using {var_dir}"):
            second.start()
        assert sorted(p.name for p in var_dir.iterdir()) == ["demo.lock", "smart-issuers.json"]
        assert (var_dir / "smart-issuers.json").read_text() == "mine\n"
    finally:
        first.release()
    second.acquire()  # free once released
    second.release()


def test_run_demo_locks_and_checks_the_ports_once_and_restores_the_signal_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptguard.cli import build_parser
    from ptguard.errors import PtguardError
    from sandbox.demo import DemoStack, run_demo

    calls: list[str] = []
    real_acquire, real_check = DemoStack.acquire, DemoStack.check_ports

    def acquire(self: DemoStack) -> None:
        calls.append("acquire")
        real_acquire(self)

    def check_ports(self: DemoStack) -> None:
        calls.append("check_ports")
        real_check(self)

    def fail(self: DemoStack, started: float) -> Any:
        calls.append("start")
        raise PtguardError("stopped here by the test")

    monkeypatch.setattr(DemoStack, "acquire", acquire)
    monkeypatch.setattr(DemoStack, "check_ports", check_ports)
    monkeypatch.setattr(DemoStack, "_start", fail)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    args = build_parser().parse_args(["demo", "--var-dir", str(tmp_path)])
    assert run_demo(args) == 1
    assert calls == ["acquire", "check_ports", "start"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    second = DemoStack(var_dir=tmp_path)
    second.acquire()  # released on the way out
    second.release()



def test_a_bad_contract_setting_stops_the_demo_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ptguard.errors import ConfigError
    from sandbox.demo import DemoStack

    monkeypatch.setenv("PTGUARD_CONTRACT_DEADLINES", str(tmp_path / "missing.yaml"))
    stack = DemoStack(var_dir=tmp_path / "var")
    with pytest.raises(ConfigError, match="PTGUARD_CONTRACT_DEADLINES"):
        stack.prepare()
    assert not (tmp_path / "var" / "demo.lock").exists()
