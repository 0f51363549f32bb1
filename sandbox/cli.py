"""`ptguard sandbox …` commands: run the sandbox FHIR server in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from ptguard.errors import PtguardError
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
    return sandbox


def run_fhir(args: argparse.Namespace) -> int:
    """Run the FHIR server in the foreground; Ctrl-C stops it. Returns an exit code."""
    server = FhirServerProcess(port=args.port, base_path=args.base, log_path=args.log, require_token=args.require_token)
    try:
        base = server.start()
    except PtguardError as exc:
        print(f"ptguard sandbox fhir: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    print(f"FHIR server ready at {base} (started in {server.startup_seconds or 0:.2f} s)", flush=True)
    print(f"request log: {server.log_path}; press Ctrl-C to stop", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            code = server.wait()
            if code:
                print(f"FHIR server exited with code {code} (log: {server.log_path})", file=sys.stderr)
            return 1 if code else 0
        return 0
    finally:
        server.stop()
