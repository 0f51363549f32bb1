"""`ptguard demo`: the whole sandbox in one command — FHIR server, fixtures, SMART auth, ptguard web app, EHR simulator."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import importlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import requests

from ptguard.errors import ConfigError, PtguardError
from ptguard.serving import PortInUseError, check_ports_free, stop_signals
from sandbox.fhir_server import FhirServerProcess

log = logging.getLogger("sandbox.demo")

DEFAULT_VAR_DIR = Path("var/demo")
LOCK_FILE = "demo.lock"  # flock'ed for the demo's lifetime; holds the pid of the demo that has it
PORT_ROLES = ("the sandbox FHIR server", "the SMART authorization server", "the ptguard web app", "the EHR simulator")
SIM_CLIENT_ID = "ehr-simulator"
AUTH_FHIR_PATH = "/fhir/R4"  # the SMART authorization server's protected FHIR base path (its default)
SIM_SCOPE = "user/*.rs"
SIM_TOKEN_SECONDS = 300
# Loggers → files under the var dir (each line: method, path, status or a count — never a token or a query string).
LOG_FILES = {
    "sandbox.smart_auth": "smart-auth.log",
    "sandbox.ehr-sim": "ehr-sim.log",
    "sandbox.ehr_sim": "ehr-sim.log",
    "sandbox.ptguard-web": "ptguard-web.log",
    "ptguard": "ptguard-web.log",
    "sandbox.demo": "demo.log",
}


@dataclass
class DemoUrls:
    """Where each part of the running demo listens."""

    simulator: str
    ptguard: str
    fhir: str
    auth: str
    auth_fhir_base: str

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class DemoStack:
    """Start and stop the demo's servers in-process (the FHIR server is a Node child process).

    `port=0` picks free loopback ports; a base port gives FHIR = base, auth = base+1, ptguard = base+2,
    simulator = base+3.

    The var dir is locked (`demo.lock`, flock) from start() to stop(), before anything in it is touched: a second
    demo on the same folder gets a ConfigError and changes nothing there.
    """

    var_dir: Path = DEFAULT_VAR_DIR
    port: int = 0
    host: str = "127.0.0.1"
    fixtures_dir: Path | None = None
    database_url: str | None = None
    keep_data: bool = False
    external_fhir: str | None = None  # use this FHIR R4 base instead of starting the Node server
    load: bool = True  # load the fixtures (conditional creates: a second load creates nothing)
    log_to_files: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    urls: DemoUrls | None = None
    startup_seconds: float | None = None
    fhir: FhirServerProcess | None = None
    db_url: str | None = None  # the store in use once started
    _servers: list[Any] = field(default_factory=list)
    _handlers: list[logging.Handler] = field(default_factory=list)
    _saved_levels: dict[str, tuple[int, bool]] = field(default_factory=dict)
    _lock_fd: int | None = None
    _prepared: bool = False

    def prepare(self) -> None:
        """Lock the var dir, then check the ports (before anything in the var dir is touched); done once until stop().

        start() prepares when not done yet; a caller that reports these errors apart (`ptguard demo`) calls it first.
        """
        if self._prepared:
            return
        from ptguard.denials.deadlines import configured_contract

        configured_contract()  # a bad PTGUARD_CONTRACT_DEADLINES stops the start (exit 5), as it does for serve
        self.acquire()
        try:
            self.check_ports()
        except BaseException:
            self.release()
            raise
        self._prepared = True

    def acquire(self) -> None:
        """Lock the var dir for this demo (creating it and `demo.lock` if needed, nothing else); safe to call twice.

        Raises ConfigError naming the other demo's pid when another demo holds the lock.
        """
        if self._lock_fd is not None:
            return
        self.var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.var_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", errors="replace").strip()
            os.close(fd)
            pid = holder if holder.isdigit() else "unknown"
            raise ConfigError(
                f"another ptguard demo (pid {pid}) is using {self.var_dir}; stop it or give --var-dir DIR"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock_fd = fd

    def release(self) -> None:
        """Unlock the var dir (the lock file stays: removing it would let two demos lock different files)."""
        self._prepared = False
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def check_ports(self) -> None:
        """A PortInUseError naming the first of PORT..PORT+3 that is taken (nothing to check with port 0)."""
        if not self.port:
            return
        first = 1 if self.external_fhir else 0  # no FHIR server of ours with --fhir
        check_ports_free(
            self.host,
            [
                (self.port + k, f"{PORT_ROLES[k]}: --port {self.port}" + (f" + {k}" if k else ""))
                for k in range(first, len(PORT_ROLES))
            ],
        )

    def _port(self, offset: int) -> int:
        return self.port + offset if self.port else 0

    def _setup_logging(self) -> None:
        if not self.log_to_files:
            return
        handlers: dict[str, logging.Handler] = {}
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        for name, filename in LOG_FILES.items():
            handler = handlers.get(filename)
            if handler is None:
                handler = logging.FileHandler(self.var_dir / filename, encoding="utf-8")
                handler.setFormatter(fmt)
                handlers[filename] = handler
                self._handlers.append(handler)
            logger = logging.getLogger(name)
            self._saved_levels[name] = (logger.level, logger.propagate)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.addHandler(handler)

    def _teardown_logging(self) -> None:
        for name in LOG_FILES:
            logger = logging.getLogger(name)
            for handler in self._handlers:
                logger.removeHandler(handler)
            level, propagate = self._saved_levels.get(name, (logging.NOTSET, True))
            logger.setLevel(level)
            logger.propagate = propagate
        for handler in self._handlers:
            handler.close()
        self._handlers.clear()

    def _mark(self, what: str, since: float) -> None:
        self.timings[what] = round(time.monotonic() - since, 3)

    def start(self) -> DemoUrls:
        """Bring everything up and wait until each part answers; `startup_seconds` says how long it took."""
        started = time.monotonic()
        self.prepare()
        try:
            self._setup_logging()
            urls = self._start(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.urls = urls
        (self.var_dir / "demo.json").write_text(
            json.dumps(
                {**urls.as_dict(), "startup_seconds": round(self.startup_seconds, 3), "timings": self.timings}, indent=2
            )
            + "\n",
            encoding="utf-8",
        )
        log.info("demo ready in %.2f s: %s", self.startup_seconds, self.timings)
        return urls

    def _start(self, started: float) -> DemoUrls:
        from sandbox.ehr_sim.server import ThreadedServer

        db_url = self.database_url or f"sqlite:///{(self.var_dir / 'ptguard.sqlite3').resolve()}"
        self.db_url = db_url
        if not self.database_url and not self.keep_data:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    (self.var_dir / f"ptguard.sqlite3{suffix}").unlink()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-start") as pool:
            if self.external_fhir:
                fhir_ready: Future[str] = pool.submit(_check_fhir, self.external_fhir)
            else:
                self.fhir = FhirServerProcess(
                    port=self._port(0), host=self.host, log_path=self.var_dir / "fhir-server.log"
                )
                fhir_ready = pool.submit(self.fhir.start)
            # While Node loads its definitions (about 1 s): bind our sockets, import and build the web app,
            # migrate the store. Everything that needs the FHIR server's URL is filled in afterwards.
            t = time.monotonic()
            web = ThreadedServer("ptguard-web", host=self.host, port=self._port(2))
            self._servers.append(web)
            for module in ("webapp", "cds_hooks.routes", "smart_app.views", "webapp.remit_api"):
                with contextlib.suppress(ModuleNotFoundError):  # the slow part: Flask, SQLAlchemy, weasyprint…
                    importlib.import_module(module)
            from sandbox.ehr_sim import EhrSimulator, SimulatorSettings
            from sandbox.smart_auth import SmartAuthServer, ptguard_app_client
            from webapp import create_app

            self._mark("import", t)
            t = time.monotonic()
            _migrate(db_url)  # here, not in a thread: alembic's migration context is process-global
            auth_port = self._port(1) or _free_port(self.host)
            auth_url = f"http://{self.host}:{auth_port}"
            auth_fhir_base = auth_url + AUTH_FHIR_PATH
            auth_holder: list[Any] = []
            settings = SimulatorSettings(
                fhir_url="",  # set once the FHIR server is up
                cds_base=web.url,
                cds_fhir_server=auth_fhir_base,
                token_provider=lambda patient: mint_ehr_token(auth_holder[0], patient),
                auth_url=auth_url,
                launch_iss=auth_fhir_base,
                app_launch_url=web.url + "/app/launch",
                database_url=db_url,
            )
            sim = EhrSimulator(settings, host=self.host, port=self._port(3))
            self._servers.append(sim)
            cds_issuers = self.var_dir / "cds-issuers.json"
            cds_issuers.write_text(json.dumps(sim.issuer_entry(), indent=2) + "\n", encoding="utf-8")
            smart_issuers = self.var_dir / "smart-issuers.json"
            smart_issuers.write_text(
                json.dumps(
                    {"issuers": [{"fhir_base": auth_fhir_base, "client_id": "ptguard-app", "name": "Sandbox EHR"}]},
                    indent=2,
                )
                + "\n",
                encoding="utf-8",
            )
            app = create_app(
                {
                    "DATABASE_URL": db_url,
                    "CDS_ISSUERS_FILE": str(cds_issuers),
                    "PTGUARD_SMART_ISSUERS": str(smart_issuers),
                    "PUBLIC_BASE_URL": web.url,
                    "SECRET_KEY": secrets.token_hex(32),
                    "SESSION_COOKIE_SECURE": False,  # plain http on loopback (PTGUARD_INSECURE_COOKIES=1)
                    "SESSION_COOKIE_SAMESITE": "Lax",  # browsers drop SameSite=None cookies that are not Secure
                }
            )
            web.set_app(app)
            self._mark("apps", t)
            fhir_url = fhir_ready.result()
            self._mark("fhir_server", started)
        if self.load:
            t = time.monotonic()
            report = _load_fixtures(fhir_url, self.fixtures_dir)
            self._mark("fixtures", t)
            log.info("fixtures: %d created, %d already there", report.created_count, report.existing_count)
            if not report.ok:
                failed = [f.path.name for f in report.files if not f.ok]
                raise PtguardError(f"fixtures failed to load: {', '.join(failed)} (see {self.var_dir}/*.log)")
            t = time.monotonic()
            listed = _list_denials(fhir_url, db_url, auth_fhir_base)
            self._mark("worklist", t)
            log.info("worklist: %d denied line(s) from the FHIR server's ClaimResponses", listed)

        t = time.monotonic()
        auth = SmartAuthServer(
            fhir_url=fhir_url,
            host=self.host,
            port=auth_port,
            clients=[ptguard_app_client(web.url + "/app/callback", launch_uri=web.url + "/app/launch")],
        )
        auth.start()
        self._servers.append(auth)
        auth_holder.append(auth)
        if auth.fhir_base != auth_fhir_base:
            raise PtguardError(f"the authorization server listens at {auth.fhir_base}, not {auth_fhir_base}")
        settings.fhir_url = fhir_url
        web.start()
        sim.start()
        self._mark("servers", t)
        t = time.monotonic()
        _wait_healthy([web.url + "/healthz", sim.url + "/healthz", auth.url + "/healthz"])
        self._mark("health", t)
        return DemoUrls(
            simulator=sim.url + "/", ptguard=web.url, fhir=fhir_url, auth=auth.url, auth_fhir_base=auth.fhir_base
        )

    def stop(self) -> None:
        """Stop every server (newest first) and the Node child; close the log files. Safe to call twice."""
        while self._servers:
            server = self._servers.pop()
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                log.warning("stopping %s failed (%s)", type(server).__name__, type(exc).__name__)
        if self.fhir is not None:
            self.fhir.stop()
            self.fhir = None
        self._teardown_logging()
        self.release()

    def __enter__(self) -> DemoStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _check_fhir(base: str) -> str:
    """An external FHIR base answers `metadata` (or a search) without a token; returns it without a trailing slash."""
    from ptguard.fhir.client import FhirClient

    with FhirClient(base, timeout=15.0) as client:
        try:
            client.capabilities()
        except PtguardError:
            client.search_bundle("Patient", {"_count": "1"})
    return base.rstrip("/")


def _free_port(host: str) -> int:
    """A port that was free a moment ago (for a server that binds only when started)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _migrate(db_url: str) -> None:
    from ptguard.store.db import migrate

    migrate(db_url)


def _load_fixtures(fhir_url: str, directory: Path | None) -> Any:
    from ptguard.fhir.client import FhirClient
    from ptguard.fixtures_load import default_fixture_dir, load_fixtures

    with FhirClient(fhir_url, timeout=30.0) as client:
        return load_fixtures(client, directory or default_fixture_dir())


def _list_denials(fhir_url: str, db_url: str, session_base: str) -> int:
    """The fixture denials onto the demo's worklist, recorded under the FHIR base the SMART app's sessions use."""
    from datetime import datetime

    from ptguard.fhir.client import FhirClient
    from ptguard.remit.native import sync_from_server

    with FhirClient(fhir_url, timeout=30.0) as client:
        results = sync_from_server(client, db_url=db_url, today=datetime.now().astimezone().date(),
                                   fhir_server=session_base)
    return sum(r.work_items_created + r.work_items_existing for r in results)


def _wait_healthy(urls: list[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with requests.Session() as http:
        for url in urls:
            while True:
                try:
                    if http.get(url, timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise PtguardError(f"{url} did not answer within {timeout:.0f} s")
                time.sleep(0.05)


def mint_ehr_token(auth: Any, patient_id: str) -> dict[str, Any]:
    """An access token for the CDS service's FHIR reads, as the EHR grants it (`fhirAuthorization`).

    The sandbox authorization server has no client-credentials grant, so the simulator — standing in for the
    EHR, which owns its tokens — records one directly in the server's state (user-level read/search scope).
    """
    from sandbox.smart_auth.state import TokenRecord, User

    state = auth.state
    token = secrets.token_urlsafe(32)
    record = TokenRecord(
        access_token=token,
        client_id=SIM_CLIENT_ID,
        scope=SIM_SCOPE,
        user=User(state.default_user or "Practitioner/ehr-simulator"),
        context={"patient": patient_id},
        expires_at=time.time() + SIM_TOKEN_SECONDS,
    )
    with state.lock:
        state.tokens[token] = record
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": SIM_TOKEN_SECONDS,
        "scope": SIM_SCOPE,
        "subject": SIM_CLIENT_ID,
        "patient": patient_id,
    }


# ---------------------------------------------------------------------------------------------- the command


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register `ptguard demo` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the whole sandbox (FHIR server, SMART auth, ptguard, EHR simulator) until Ctrl-C",
        description="Start the sandbox FHIR server, load fhir_fixtures/, start the SMART authorization server, the "
        "ptguard web app (CDS Hooks service + SMART app) and the EHR simulator; print the URL to open. "
        "Works offline. Ctrl-C (or SIGTERM) stops everything.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="base port: FHIR = PORT, auth = PORT+1, ptguard = PORT+2, simulator = PORT+3 (default 0: free ports)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--var-dir", type=Path, default=DEFAULT_VAR_DIR, help="logs, keys, database (default var/demo)")
    parser.add_argument("--fixtures", type=Path, default=None, help="fixture Bundles to load (default fhir_fixtures/)")
    parser.add_argument(
        "--fhir",
        metavar="URL",
        default=None,
        help="use this FHIR R4 server (no token; e.g. a HAPI server) instead of starting the in-memory one",
    )
    parser.add_argument("--no-load", action="store_true", help="do not load the fixtures (they are already there)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PTGUARD_DEMO_DATABASE_URL"),
        help="store (default: a fresh SQLite file in the var dir)",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the SQLite store of the previous run")
    parser.set_defaults(func=run_demo)
    return parser


def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the demo in the foreground until Ctrl-C / SIGTERM; returns an exit code."""
    out = out or sys.stdout
    stack = DemoStack(
        var_dir=args.var_dir,
        port=args.port,
        host=args.host,
        fixtures_dir=args.fixtures,
        database_url=args.database_url,
        keep_data=args.keep_data,
        external_fhir=args.fhir,
        load=not args.no_load,
    )
    # Ctrl-C and SIGTERM stop the demo, also when a shell started it in the background (SIGINT ignored).
    with stop_signals():
        try:
            return _run_stack(stack, args, out)
        except KeyboardInterrupt:
            out.write("ptguard demo: stopping…\n")
            out.flush()
            return 0
        finally:
            stack.stop()


def _run_stack(stack: DemoStack, args: argparse.Namespace, out: TextIO) -> int:
    """Start the stack, say where to go, and wait until interrupted or the FHIR server stops."""
    try:
        stack.prepare()  # the lock, then the ports: before anything in the var dir is touched
    except PtguardError as exc:
        print(f"ptguard demo: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    try:
        urls = stack.start()
    except PtguardError as exc:
        print(f"ptguard demo: {exc.one_line()} (logs in {args.var_dir}/)", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:  # taken between the check and the bind
            if args.port:
                print(
                    f"ptguard demo: one of ports {args.port}-{args.port + 3} on {args.host} was taken meanwhile;"
                    " choose another with --port",
                    file=sys.stderr,
                )
            else:
                print("ptguard demo: a free port it picked was taken meanwhile; start it again", file=sys.stderr)
            return PortInUseError.exit_code
        if isinstance(exc.filename, str):
            print(f"ptguard demo: cannot read or write {exc.filename} ({exc.strerror})", file=sys.stderr)
            return 74
        print(f"ptguard demo: cannot start ({exc.strerror or type(exc).__name__})", file=sys.stderr)
        return 1
    out.write(f"ptguard demo ready in {stack.startup_seconds or 0:.1f} s — open {urls.simulator}\n")
    out.write(f"  logs and URLs: {args.var_dir}/ (demo.json); Ctrl-C stops everything\n")
    out.flush()
    while True:
        time.sleep(0.5)
        if stack.fhir is not None and not stack.fhir.running:
            print(f"ptguard demo: the FHIR server stopped (see {args.var_dir}/fhir-server.log)", file=sys.stderr)
            return 1
