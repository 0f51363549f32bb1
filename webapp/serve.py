"""`ptguard serve`: the CDS Hooks service and the SMART app together, under gunicorn (or werkzeug with --dev)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from ptguard.config import env_int
from ptguard.errors import ConfigError

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


GUNICORN_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def gunicorn_loglevel(environ: Mapping[str, str] | None = None) -> str:
    """gunicorn's log level: PTGUARD_LOG_LEVEL when it names one, else `warning` (the servers' default).

    Never `debug`: gunicorn's debug lines carry each request path, and the app's paths carry claim and encounter ids.
    """
    env = os.environ if environ is None else environ
    level = env.get("PTGUARD_LOG_LEVEL", "").strip().lower()
    level = {"warn": "warning", "fatal": "critical", "debug": "info"}.get(level, level)
    return level if level in GUNICORN_LOG_LEVELS else "warning"


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """The gunicorn settings of `ptguard serve` (bench/hooks_bench.py serves with the same ones).

    The app is built once in the master before the fork (as `--preload` would), so the workers start warm.
    No control socket (gunicorn 25+ would make one at $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl,
    the same path for every serve on the machine); settings this gunicorn does not know are skipped.
    """
    return {
        "loglevel": gunicorn_loglevel(),
        "control_socket_disable": True,
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "accesslog": None,  # access logs carry URLs with patient ids: off by default
        "errorlog": "-",
        "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        "when_ready": _say_ready(workers, threads),
    }


def ready_line(address: str, how: str) -> str:
    """The one line `ptguard serve` prints once it listens (gunicorn itself says nothing at its warning level)."""
    return f"ptguard serve: listening on http://{address}/ ({how}); Ctrl-C stops\n"


def _say_ready(workers: int, threads: int) -> Callable[[Any], None]:
    def when_ready(server: Any) -> None:
        for listener in getattr(server, "LISTENERS", []):
            host, port = listener.sock.getsockname()[:2]
            address = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
            sys.stderr.write(ready_line(address, f"gunicorn, {workers} worker(s) × {threads} thread(s)"))
        sys.stderr.flush()

    return when_ready


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


def resolve_settings(args: argparse.Namespace) -> None:
    """Fill --port, --workers and --threads from PTGUARD_PORT / PTGUARD_WORKERS / PTGUARD_THREADS when not given.

    Read here, when `serve` runs, not while the CLI is built: a bad value must not break the other commands.
    The range of --port is checked with the port itself (ptguard.serving.check_port_free).
    """
    if args.port is None:
        args.port = env_int("PTGUARD_PORT", 8000, low=0, high=65535, what="a port number (0-65535)")
    if args.workers is None:
        args.workers = env_int("PTGUARD_WORKERS", 2, low=1, high=1024, what="a number of workers (1 or more)")
    if args.threads is None:
        args.threads = env_int("PTGUARD_THREADS", 4, low=1, high=1024, what="a number of threads (1 or more)")
    if args.workers < 1 or args.threads < 1:
        raise ConfigError("--workers and --threads must be 1 or more")


def run_serve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Handler of `ptguard serve`."""
    from ptguard.denials.deadlines import configured_contract
    from ptguard.serving import check_port_free, stop_signals

    resolve_settings(args)
    configured_contract()  # a bad PTGUARD_CONTRACT_DEADLINES stops the start (exit 5), not each deadline later
    check_port_free(args.host, args.port)  # before building the app: one line and exit 5, not gunicorn's retries
    from webapp import create_app

    for warning in startup_warnings(args.host):
        log.warning("%s", warning)
        (out or sys.stderr).write("WARNING: " + warning + "\n")
    app = create_app()
    if args.dev:
        # werkzeug stops on KeyboardInterrupt; make Ctrl-C work even when started from a background shell
        # (SIGINT ignored) and SIGTERM a clean stop too.
        with stop_signals():
            sys.stderr.write(ready_line(f"{args.host}:{args.port}", "development server"))
            app.run(host=args.host, port=args.port, debug=False, use_reloader=False, request_handler=quiet_handler())
        return 0
    gunicorn_app(app, gunicorn_options(args.host, args.port, args.workers, args.threads)).run()
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register `serve [--host H] [--port P] [--workers N] [--threads N] [--dev]`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="serve the CDS Hooks service and the SMART app (gunicorn)"
    )
    parser.add_argument(
        "--host", default=os.environ.get("PTGUARD_HOST", "127.0.0.1"), help="address (default: $PTGUARD_HOST, else 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $PTGUARD_PORT, else 8000)")
    parser.add_argument(
        "--workers", type=int, default=None, help="gunicorn workers (default: $PTGUARD_WORKERS, else 2)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="threads per worker (default: $PTGUARD_THREADS, else 4)"
    )
    parser.add_argument("--dev", action="store_true", help="werkzeug's development server instead of gunicorn")
    handler: Callable[[argparse.Namespace, TextIO | None], int] = run_serve
    parser.set_defaults(func=handler)
    return parser
