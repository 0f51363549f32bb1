"""`ptguard serve`: the CDS Hooks service and the SMART app together, under gunicorn (or werkzeug with --dev)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

log = logging.getLogger("ptguard.web")


def gunicorn_app(app: Any, options: dict[str, Any]) -> Any:
    """A gunicorn BaseApplication serving an already-built WSGI app with the given settings.

    The app (rules, tables, schemas, warm-up) is built once here in the master; its objects are then frozen out of
    the cyclic garbage collector, so the workers forked from it never walk them: no 70 ms generation-2 pauses in
    the middle of a call, and the pages stay shared between workers after the fork.
    """
    from gunicorn.app.base import BaseApplication

    gc.collect()
    gc.freeze()

    class _App(BaseApplication):  # type: ignore[misc]
        def __init__(self) -> None:
            self.options = options
            self.application = app
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return self.application

    return _App()


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """The gunicorn settings of `ptguard serve` (bench/hooks_bench.py serves with the same ones).

    The app is built once in the master before the fork (as `--preload` would), so the workers start warm.
    """
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "accesslog": None,  # access logs carry URLs with patient ids: off by default
        "errorlog": "-",
        "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
    }


LOOPBACK_BINDS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
PUBLIC_URL_WARNING = (
    "ptguard serve is bound to {host}, which is not a loopback address, and PTGUARD_PUBLIC_BASE_URL is not set: "
    "CDS Hooks calls are refused (401) unless their Host is in PTGUARD_TRUSTED_HOSTS (default: loopback names "
    "only). Set PTGUARD_PUBLIC_BASE_URL to the URL the EHR calls."
)


def startup_warnings(host: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Warnings `ptguard serve` prints at start-up for a risky or unusable configuration."""
    env = os.environ if environ is None else environ
    out: list[str] = []
    if host.strip().lower() not in LOOPBACK_BINDS and not env.get("PTGUARD_PUBLIC_BASE_URL"):
        out.append(PUBLIC_URL_WARNING.format(host=host))
    return out


def quiet_handler() -> Any:
    """werkzeug's request handler, logging method, path and status only: query strings carry patient ids."""
    from werkzeug.serving import WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            path = (getattr(self, "path", "") or "").split("?", 1)[0]
            status = getattr(code, "value", code)
            self.log("info", '"%s %s" %s', getattr(self, "command", "-"), path, status)

    return QuietHandler


def run_serve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Handler of `ptguard serve`."""
    from webapp import create_app

    for warning in startup_warnings(args.host):
        log.warning("%s", warning)
        (out or sys.stderr).write("WARNING: " + warning + "\n")
    app = create_app()
    if args.dev:
        app.run(host=args.host, port=args.port, debug=False, use_reloader=False, request_handler=quiet_handler())
        return 0
    gunicorn_app(app, gunicorn_options(args.host, args.port, args.workers, args.threads)).run()
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register `serve [--host H] [--port P] [--workers N] [--threads N] [--dev]`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="serve the CDS Hooks service and the SMART app (gunicorn)"
    )
    parser.add_argument("--host", default=os.environ.get("PTGUARD_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PTGUARD_PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("PTGUARD_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PTGUARD_THREADS", "4")))
    parser.add_argument("--dev", action="store_true", help="werkzeug's development server instead of gunicorn")
    handler: Callable[[argparse.Namespace, TextIO | None], int] = run_serve
    parser.set_defaults(func=handler)
    return parser
