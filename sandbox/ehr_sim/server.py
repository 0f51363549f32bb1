"""A WSGI app served from a background thread on a loopback port that is bound first (so its URL is known early)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _LazyApp:
    """Answers 503 until the real app is set (the socket is bound before the app can be built)."""

    def __init__(self) -> None:
        self.app: WsgiApp | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "1")])
            return [b"starting\n"]
        return self.app(environ, start_response)


def _handler(logger: logging.Logger) -> type[WSGIRequestHandler]:
    class QuietHandler(WSGIRequestHandler):
        """One log line per request: method, path without the query string (codes, launch tokens), status."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            logger.info("%s %s %s", self.command, self.path.split("?", 1)[0], code)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s", (format % args).split("?", 1)[0])

    return QuietHandler


class ThreadedServer:
    """Bind now (`url` is known), `set_app` later, `start()` serves in a thread, `stop()` shuts down and joins."""

    def __init__(self, name: str, *, host: str = "127.0.0.1", port: int = 0, app: WsgiApp | None = None) -> None:
        self.name = name
        self.log = logging.getLogger(f"sandbox.{name}")
        self._lazy = _LazyApp()
        self._lazy.app = app
        self._server: BaseWSGIServer | None = make_server(
            host, port, self._lazy, threaded=True, request_handler=_handler(self.log)
        )
        self.host = host
        self.port = self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """http://host:port (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def set_app(self, app: WsgiApp) -> None:
        """The app that answers from now on."""
        self._lazy.app = app

    def start(self) -> str:
        """Serve in a background thread; returns the URL."""
        if self._server is None:
            raise RuntimeError(f"{self.name}: already stopped")
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name=f"{self.name}-server", daemon=True)
            self._thread.start()
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket, join the thread. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def __enter__(self) -> ThreadedServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
