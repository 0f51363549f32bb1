"""Servers: a taken port (and, for serve, a bad PTGUARD_* number) is exit 5; Ctrl-C / SIGTERM stop them cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PTGUARD = [sys.executable, "-m", "ptguard.cli"]


def _ignore_sigint() -> None:  # what a shell does to a command it starts in the background
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _listen(port: int) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
    except OSError:  # taken: close it here (an unclosed socket is a ResourceWarning, an error under pytest)
        sock.close()
        raise
    return sock


def _free_base(count: int) -> int:
    """A port P with P..P+count-1 free a moment ago."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count >= 65536:
            continue
        held: list[socket.socket] = []
        try:
            for k in range(count):
                held.append(_listen(base + k))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    pytest.fail("no run of free loopback ports found: the port tests cannot run on this machine")


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port something listens on."""
    sock = _listen(0)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTGUARD_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
            "XDG_RUNTIME_DIR": str(tmp_path),
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
        }
    )
    env.update(extra)
    return env


def _run(args: list[str], tmp_path: Path, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run(
        PTGUARD + args,
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    done.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return done


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------- taken ports


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["serve"], "ptguard: error: "),
        (["serve", "--dev"], "ptguard: error: "),
        (["sandbox", "auth"], "ptguard sandbox auth: "),
        (["sandbox", "fhir"], "ptguard sandbox fhir: "),
    ],
    ids=["serve", "serve-dev", "sandbox-auth", "sandbox-fhir"],
)
def test_a_taken_port_is_one_line_and_exit_5(tmp_path: Path, taken: int, command: list[str], prefix: str) -> None:
    done = _run([*command, "--port", str(taken)], tmp_path)
    line = _one_line(done)
    assert done.returncode == 5, done.stderr
    assert line.startswith(prefix + f"port {taken} on 127.0.0.1"), line
    assert line.endswith("is already in use; choose another with --port"), line
    assert done.elapsed < 10, "no retries"  # type: ignore[attr-defined]
    assert "ERROR" not in done.stderr and "Werkzeug" not in done.stderr
    assert not list(tmp_path.glob("ptguard-fhir-server-*.log"))  # nothing left in TMPDIR either


def test_demo_names_the_first_taken_port_and_touches_nothing(tmp_path: Path) -> None:
    base = _free_base(4)
    held = [_listen(base + 1), _listen(base + 2)]
    try:
        var_dir = tmp_path / "demo"
        done = _run(["demo", "--port", str(base), "--var-dir", str(var_dir)], tmp_path, timeout=60)
    finally:
        for sock in held:
            sock.close()
    line = _one_line(done)
    assert done.returncode == 5, done.stderr
    assert line == (
        f"ptguard demo: port {base + 1} on 127.0.0.1 (the SMART authorization server: --port {base} + 1) is already"
        " in use; choose another with --port"
    )
    assert sorted(p.name for p in var_dir.iterdir()) == ["demo.lock"]  # no issuers, no store, no logs


@pytest.mark.parametrize(("sig", "log_kept"), [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGKILL, True)])
def test_sandbox_fhir_keeps_its_temporary_log_only_after_a_crash(sig: signal.Signals, log_kept: bool) -> None:
    """Ctrl-C in a terminal reaches Node as well (the process group): Node gone first is still a clean stop.

    Was: any exit before stop() counted as a crash, so a terminal's Ctrl-C left /tmp/ptguard-fhir-server-*.log.
    """
    from sandbox.fhir_server import FhirServerProcess

    server = FhirServerProcess()
    server.start()
    log = server.log_path
    assert server.pid is not None
    os.kill(server.pid, sig)
    deadline = time.monotonic() + 10
    while server.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.running
    server.stop()
    assert log.exists() == log_kept
    log.unlink(missing_ok=True)


def test_sandbox_fhir_port_taken_in_process_is_a_setting_error(taken: int, tmp_path: Path) -> None:
    from ptguard.serving import PortInUseError
    from sandbox.fhir_server import FhirServerProcess

    server = FhirServerProcess(port=taken)
    log = server.log_path
    with pytest.raises(PortInUseError, match=f"port {taken} on 127.0.0.1") as info:
        server.start()
    assert info.value.exit_code == 5
    assert not server.running
    assert not log.exists()  # the unused temporary log went


# ---------------------------------------------------------------------------------------------- PTGUARD_* numbers


@pytest.mark.parametrize("name", ["PTGUARD_PORT", "PTGUARD_WORKERS", "PTGUARD_THREADS"])
def test_a_bad_serve_number_is_exit_5_for_serve_and_harmless_elsewhere(tmp_path: Path, name: str) -> None:
    other = _run(["worklist"], tmp_path, **{name: "abc"})
    assert other.returncode == 0, other.stderr
    assert "Traceback" not in other.stderr and name not in other.stderr
    done = _run(["serve"], tmp_path, **{name: "abc"})
    assert done.returncode == 5, done.stderr
    assert (
        _one_line(done)
        == f"ptguard: error: {name}='abc' is not "
        + {
            "PTGUARD_PORT": "a port number (0-65535)",
            "PTGUARD_WORKERS": "a number of workers (1 or more)",
            "PTGUARD_THREADS": "a number of threads (1 or more)",
        }[name]
    )


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("PTGUARD_CDS_MAX_BODY_BYTES", "a size in bytes (1024 or more)"),
        ("PTGUARD_CDS_LEEWAY_SECONDS", "a number of seconds (0-3600)"),
        ("PTGUARD_REMIT_MAX_BYTES", "a size in bytes"),
    ],
)
def test_a_bad_service_number_stops_serve_with_exit_5(tmp_path: Path, name: str, what: str) -> None:
    """Was: int() of the value raised ValueError in create_app (exit 70), or the remit limit fell back silently."""
    for bad in ("abc", "-5"):
        done = _run(["serve"], tmp_path, **{name: bad})
        assert done.returncode == 5, done.stderr
        assert _one_line(done) == f"ptguard: error: {name}={bad!r} is not {what}"


def test_serve_numbers_come_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from ptguard.cli import build_parser
    from webapp.serve import resolve_settings

    monkeypatch.setenv("PTGUARD_PORT", "8123")
    monkeypatch.setenv("PTGUARD_WORKERS", "3")
    monkeypatch.delenv("PTGUARD_THREADS", raising=False)
    args = build_parser().parse_args(["serve"])
    resolve_settings(args)
    assert (args.port, args.workers, args.threads) == (8123, 3, 4)
    args = build_parser().parse_args(["serve", "--port", "9001", "--workers", "1"])
    resolve_settings(args)
    assert (args.port, args.workers) == (9001, 1)  # the flags win


# ---------------------------------------------------------------------------------------------- gunicorn settings


def test_gunicorn_logs_at_warning_and_has_no_control_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.config import Config

    from webapp.serve import gunicorn_options

    def configured() -> Config:
        cfg = Config()
        for key, value in gunicorn_options("127.0.0.1", 8000, 2, 4).items():
            if key in cfg.settings and value is not None:
                cfg.set(key, value)
        return cfg

    monkeypatch.delenv("PTGUARD_LOG_LEVEL", raising=False)
    cfg = configured()
    assert cfg.loglevel == "warning"
    if "control_socket_disable" in cfg.settings:  # gunicorn 25+
        assert cfg.control_socket_disable is True
    monkeypatch.setenv("PTGUARD_LOG_LEVEL", "info")
    assert configured().loglevel == "info"
    monkeypatch.setenv("PTGUARD_LOG_LEVEL", "loud")
    assert configured().loglevel == "warning"


def _wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited with {proc.returncode}:\n{out}\n{err}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{url} did not answer")


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[str, str]:
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail(f"did not stop within 15 s of signal {sig}")


def test_gunicorn_serve_prints_no_info_lines_and_makes_no_control_socket(tmp_path: Path) -> None:
    port = _free_base(1)
    proc = subprocess.Popen(
        [*PTGUARD, "serve", "--port", str(port), "--workers", "1", "--threads", "1"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    finally:
        _out, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert "[INFO]" not in err and "Listening at" not in err, err
    assert not list(tmp_path.rglob("gunicorn.ctl")), "a control socket was made"


# ---------------------------------------------------------------------------------------------- Ctrl-C and SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("command", [["sandbox", "auth"], ["serve", "--dev"], ["sandbox", "fhir"]])
def test_servers_started_in_the_background_stop_cleanly(tmp_path: Path, command: list[str], sig: int) -> None:
    port = _free_base(1)
    proc = subprocess.Popen(
        [*PTGUARD, *command, "--port", str(port)],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint,
    )
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        _wait_http(health, proc)
    except BaseException:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    _out, err = _stop(proc, sig)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    with pytest.raises(requests.ConnectionError):
        requests.get(health, timeout=1)


def test_sandbox_fhir_removes_its_temporary_log_but_keeps_a_named_one(tmp_path: Path) -> None:
    named = tmp_path / "kept.log"
    for extra in ([], ["--log", str(named)]):
        port = _free_base(1)
        proc = subprocess.Popen(
            [*PTGUARD, "sandbox", "fhir", "--port", str(port), *extra],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        if not extra:
            assert len(list(tmp_path.glob("ptguard-fhir-server-*.log"))) == 1
        requests.get(f"http://127.0.0.1:{port}/fhir/R4/metadata", timeout=5)
        _out, err = _stop(proc, signal.SIGINT)
        assert proc.returncode == 0, err
    assert not list(tmp_path.glob("ptguard-fhir-server-*.log"))
    assert "/metadata" in named.read_text()


def test_fhir_server_keeps_its_temporary_log_when_it_dies(tmp_path: Path) -> None:
    from sandbox.fhir_server import FhirServerProcess

    server = FhirServerProcess()
    server.start()
    try:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    finally:
        server.stop()
    try:
        assert server.log_path.exists()  # a crash keeps the log it would name
    finally:
        server.log_path.unlink(missing_ok=True)
    clean = FhirServerProcess()
    clean.start()
    clean.stop()
    assert not clean.log_path.exists()


WATCH_LIKE = textwrap.dedent(
    """
    import sys, time
    from ptguard.serving import install_stop_signals
    install_stop_signals()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_install_stop_signals_turns_both_signals_into_an_interrupt(tmp_path: Path, sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCH_LIKE],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    out, err = _stop(proc, sig)
    assert proc.returncode == 130, err
    assert out.strip() == "interrupted"


def test_stop_signals_puts_the_previous_handlers_back() -> None:
    from ptguard.serving import stop_signals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_signals():
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
