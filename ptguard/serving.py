"""What every long-running command shares: checking its ports before it starts, and stopping on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

from ptguard.errors import ConfigError


class PortInUseError(ConfigError):
    """A port the command must listen on is taken (exit 5: choose another with --port)."""


def port_in_use_message(host: str, port: int, what: str = "") -> str:
    """The one line every server prints when its port is taken."""
    label = f" ({what})" if what else ""
    return f"port {port} on {host}{label} is already in use; choose another with --port"


def check_port_free(host: str, port: int, what: str = "") -> None:
    """Raise PortInUseError when nothing could listen on host:port now (0 = any free port: always fine).

    Binds a throw-away socket with SO_REUSEADDR, as werkzeug, gunicorn and Node do, so a port held only by
    connections in TIME_WAIT counts as free and one a process listens on does not. An unresolvable host is a
    ConfigError; other bind errors (say, an address this machine does not have) are left to the server itself.
    """
    if port == 0:
        return
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is not a port number (1-65535, or 0 for any free port)")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: the host name does not resolve") from exc
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(port_in_use_message(host, port, what)) from exc
                if exc.errno == errno.EACCES:
                    raise ConfigError(
                        f"cannot listen on {host}:{port} (permission denied); choose another with --port"
                    ) from exc


def check_ports_free(host: str, ports: Iterable[tuple[int, str]]) -> None:
    """check_port_free for each (port, what) in order: the first clash is the one named."""
    for port, what in ports:
        check_port_free(host, port, what)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def install_stop_signals() -> Callable[[], None]:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread; returns a function putting the old ones back.

    A shell that starts a command in the background leaves SIGINT ignored, and Python's default SIGTERM ends the
    process at once (exit 143, no clean-up): both are replaced. A no-op off the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)

    def restore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous_int is None else previous_int)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_term is None else previous_term)

    return restore


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """install_stop_signals() for the duration of a with block."""
    restore = install_stop_signals()
    try:
        yield
    finally:
        restore()
