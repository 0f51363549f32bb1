"""Start and stop the sandbox FHIR server (Node, Medplum in-memory) on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ptguard.errors import ConfigError, FhirServerError, PtguardError
from ptguard.serving import PortInUseError, check_port_free, port_in_use_message

SERVER_DIR = Path(__file__).resolve().parent / "fhir-server"
SERVER_SCRIPT = SERVER_DIR / "server.mjs"
DEFAULT_BASE_PATH = "/fhir/R4"


def find_node() -> str:
    """The `node` executable: $PTGUARD_NODE, else the first `node` on PATH."""
    explicit = os.environ.get("PTGUARD_NODE")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"PTGUARD_NODE={explicit} does not exist")
        return explicit
    found = shutil.which("node")
    if not found:
        raise ConfigError("Node.js (`node`, version 20 or later) is not on PATH; the sandbox FHIR server needs it")
    return found


def check_installed(server_dir: Path = SERVER_DIR) -> None:
    """Raise a ConfigError telling the user to run `make setup` when the npm packages are missing."""
    if not (server_dir / "node_modules" / "@medplum" / "fhir-router").is_dir():
        raise ConfigError(
            f"the sandbox FHIR server's npm packages are not installed ({server_dir / 'node_modules'} is missing);"
            " run `make setup` (or `npm ci --prefix sandbox/fhir-server`)"
        )


# How Node ends when the terminal's Ctrl-C (or a SIGTERM to the process group) reaches it as well as us.
_ASKED_TO_STOP = frozenset({0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM})

class FhirServerProcess:
    """The sandbox FHIR server as a child process; use as a context manager or call start()/stop().

    `base_url` is known after start(). Logs (method, path, status per request; never bodies) go to
    `log_path`; without one, to a temporary file that a clean stop() removes (it stays when the server failed
    or died on its own, since the error names it). The child also exits when our end of its stdin closes, so it
    cannot outlive us. A port that is taken is a PortInUseError (exit 5) before Node is started.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        base_path: str = DEFAULT_BASE_PATH,
        log_path: Path | str | None = None,
        require_token: str | None = None,
        startup_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        server_dir: Path = SERVER_DIR,
    ) -> None:
        self.port = port
        self.host = host
        self.base_path = base_path
        self.require_token = require_token
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.server_dir = server_dir
        self._temp_log = log_path is None
        self._keep_log = False
        self.log_path = Path(log_path) if log_path is not None else self._temp_log_path()
        self.base_url: str | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._drain: threading.Thread | None = None

    @staticmethod
    def _temp_log_path() -> Path:
        fd, name = tempfile.mkstemp(prefix="ptguard-fhir-server-", suffix=".log")
        os.close(fd)
        return Path(name)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start the server, wait for its ready line and return the FHIR base URL."""
        if self._proc is not None:
            raise RuntimeError("the FHIR server is already started")
        try:
            node = find_node()
            check_installed(self.server_dir)
            check_port_free(self.host, self.port, "the sandbox FHIR server")
        except BaseException:
            self.stop()  # nothing started: an unused temporary log goes
            raise
        env = {**os.environ, **self.extra_env, "FHIR_EXIT_ON_STDIN_CLOSE": "1"}
        env.pop("FHIR_REQUIRE_TOKEN", None)
        if self.require_token:
            env["FHIR_REQUIRE_TOKEN"] = self.require_token
        cmd = [
            node,
            str(self.server_dir / "server.mjs"),
            "--port",
            str(self.port),
            "--host",
            self.host,
            "--base",
            self.base_path,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                cwd=self.server_dir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log_file,
            )
            ready = self._wait_ready(started)
        except BaseException:
            self._keep_log = True  # the error names the log
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.port = int(ready["port"])
        self.base_url = str(ready["base"])
        self._drain = threading.Thread(target=self._drain_stdout, name="fhir-server-stdout", daemon=True)
        self._drain.start()
        return self.base_url

    def _wait_ready(self, started: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buffer = b""
        deadline = started + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FhirServerError(
                    f"the sandbox FHIR server did not become ready within {self.startup_timeout:.0f} s"
                    f" (log: {self.log_path})"
                )
            readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not readable:
                if self._proc.poll() is not None:
                    raise self._died()
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self._proc.wait(timeout=5)
                raise self._died()
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("ready") is True:
                    return message

    def _died(self) -> PtguardError:
        code = self._proc.returncode if self._proc is not None else None
        tail = ""
        with contextlib.suppress(OSError):
            if self._log_file is not None:
                self._log_file.flush()
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        if "EADDRINUSE" in tail:  # taken between our check and Node's listen
            return PortInUseError(port_in_use_message(self.host, self.port, "the sandbox FHIR server"))
        return FhirServerError(
            f"the sandbox FHIR server exited before it was ready (exit code {code}): {tail} (log: {self.log_path})"
        )

    def _drain_stdout(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        with contextlib.suppress(OSError, ValueError):
            fd = proc.stdout.fileno()
            while os.read(fd, 65536):
                pass

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: close stdin, SIGTERM, wait, then SIGKILL. Safe to call twice.

        A temporary log (no `log_path` given) is removed on a clean stop: the server still running, or already gone
        because Ctrl-C in a terminal reached Node too (exit 0 or by SIGINT/SIGTERM). A crash keeps it.
        """
        proc = self._proc
        if proc is not None and proc.poll() is not None and proc.returncode not in _ASKED_TO_STOP:
            self._keep_log = True  # it died on its own: its log says why
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            if self._drain is not None:
                self._drain.join(timeout=timeout)
                self._drain = None
            if proc.stdout is not None:
                proc.stdout.close()
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._temp_log and not self._keep_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        """The Node process id while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> int:
        """Block until the server exits (foreground use); returns its exit code."""
        if self._proc is None:
            raise RuntimeError("the FHIR server is not started")
        return self._proc.wait()

    def read_log(self) -> str:
        """The server's log so far (method, path, status lines)."""
        if self._log_file is not None:
            self._log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> FhirServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
