"""`ptguard sandbox …` commands: run the sandbox FHIR server or the SMART authorization server in the foreground."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from ptguard.errors import ConfigError, PtguardError
from ptguard.serving import PortInUseError, check_port_free, port_in_use_message, stop_signals
from sandbox.fhir_server import DEFAULT_BASE_PATH, FhirServerProcess


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register `sandbox fhir [--port P]` on an argparse subparsers object; returns the `sandbox` parser."""
    sandbox: argparse.ArgumentParser = subparsers.add_parser("sandbox", help="run sandbox services (dev and demo only)")
    commands = sandbox.add_subparsers(dest="sandbox_command", metavar="COMMAND")
    commands.required = True
    fhir = commands.add_parser("fhir", help="run the sandbox FHIR R4 server (in memory) until Ctrl-C")
    fhir.add_argument("--port", type=int, default=8090, help="port on 127.0.0.1 (0 = any free port; default 8090)")
    fhir.add_argument("--base", default=DEFAULT_BASE_PATH, help=f"base path (default {DEFAULT_BASE_PATH})")
    fhir.add_argument("--require-token", metavar="TOKEN", default=None, help="require this bearer token")
    fhir.add_argument("--log", type=Path, default=None, help="request log file (default: a temporary file)")
    fhir.set_defaults(func=run_fhir)
    auth = commands.add_parser(
        "auth", help="run the sandbox SMART authorization server and its scope-enforcing FHIR proxy until Ctrl-C"
    )
    auth.add_argument("--port", type=int, default=8091, help="port (0 = any free port; default 8091)")
    auth.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    auth.add_argument(
        "--fhir", default="http://127.0.0.1:8090/fhir/R4", help="the FHIR server to protect (default: the sandbox one)"
    )
    auth.add_argument("--clients", type=Path, default=None, help="JSON or YAML file of clients to register")
    auth.add_argument(
        "--app-redirect",
        action="append",
        default=[],
        metavar="URI",
        help="register the ptguard SMART app (client id ptguard-app, public) with this redirect URI (repeatable)",
    )
    auth.add_argument("--switch", action="append", default=[], metavar="NAME=JSON", help="set a behaviour switch")
    auth.set_defaults(func=run_auth)
    return sandbox


def run_fhir(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the FHIR server in the foreground; Ctrl-C or SIGTERM stops it. Returns an exit code."""
    server = FhirServerProcess(port=args.port, base_path=args.base, log_path=args.log, require_token=args.require_token)
    with stop_signals():
        try:
            try:
                base = server.start()
            except PtguardError as exc:
                print(f"ptguard sandbox fhir: {exc.one_line()}", file=sys.stderr)
                return exc.exit_code
            print(f"FHIR server ready at {base} (started in {server.startup_seconds or 0:.2f} s)", flush=True)
            kept = "" if args.log else " (removed when it stops; --log FILE keeps one)"
            print(f"request log: {server.log_path}{kept}; press Ctrl-C to stop", flush=True)
            code = server.wait()
            if code:
                print(f"FHIR server exited with code {code} (log: {server.log_path})", file=sys.stderr)
            return 1 if code else 0
        except KeyboardInterrupt:
            return 0
        finally:
            server.stop()


def _switch_values(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--switch {item!r}: expected NAME=VALUE")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return values


def run_auth(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the SMART authorization server in the foreground; Ctrl-C stops it. Returns an exit code."""
    from sandbox.smart_auth import SmartAuthServer, ptguard_app_client

    out = out or sys.stdout
    clients = [ptguard_app_client(args.app_redirect)] if args.app_redirect else []
    try:
        server = SmartAuthServer(
            fhir_url=args.fhir,
            host=args.host,
            port=args.port,
            clients=clients,
            clients_file=args.clients,
            **_switch_values(args.switch),
        )
    except (OSError, ValueError) as exc:
        print(f"ptguard sandbox auth: {exc}", file=sys.stderr)
        return 2
    with stop_signals():
        try:
            check_port_free(args.host, args.port)
            server.start()
        except PtguardError as exc:
            print(f"ptguard sandbox auth: {exc.one_line()}", file=sys.stderr)
            return exc.exit_code
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:  # taken between the check and the bind
                print(f"ptguard sandbox auth: {port_in_use_message(args.host, args.port)}", file=sys.stderr)
                return PortInUseError.exit_code
            print(
                f"ptguard sandbox auth: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return ConfigError.exit_code
        try:
            ready = {"ready": True, "url": server.url, "fhir_base": server.fhir_base, "protects": args.fhir}
            out.write(json.dumps(ready) + "\n")
            out.write(
                f"SMART authorization server at {server.url}; FHIR base (iss/aud) {server.fhir_base}; Ctrl-C stops\n"
            )
            out.flush()
            threading.Event().wait()
            return 0
        except KeyboardInterrupt:
            return 0
        finally:
            server.stop()
