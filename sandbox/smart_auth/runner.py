"""Run the sandbox SMART authorization server in-process on a free loopback port (a background thread)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.smart_auth.app import create_app, make_launch
from sandbox.smart_auth.state import AuthState, Client

log = logging.getLogger("sandbox.smart_auth")


class QuietRequestHandler(WSGIRequestHandler):
    """Logs method, path (never the query string: it can hold `code` or `launch`) and status."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request without the query string or headers."""
        path = self.path.split("?", 1)[0]
        log.info("%s %s %s", self.command, path, code)

    def log_message(self, format: str, *args: Any) -> None:
        """Other messages (errors) go to our logger without request details."""
        log.debug("smart-auth server: %s", (format % args).split("?", 1)[0])


class SmartAuthServer:
    """The authorization server + FHIR proxy in a thread; context manager or start()/stop().

    `url` is the root (issuer), `fhir_base` the protected FHIR base (`iss` for launches, the `aud` to send).
    """

    def __init__(
        self,
        *,
        fhir_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        fhir_base_path: str = "/fhir/R4",
        clients: list[dict[str, Any] | Client] | None = None,
        clients_file: Path | str | None = None,
        default_user: str | None = None,
        **switches: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.app: Flask = create_app(
            fhir_url=fhir_url,
            fhir_base_path=fhir_base_path,
            clients=clients,
            clients_file=clients_file,
            default_user=default_user,
            switches=switches or None,
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> AuthState:
        """The in-memory state (clients, tokens, switches)."""
        state: AuthState = self.app.extensions["smart_auth"]
        return state

    @property
    def url(self) -> str:
        """The root URL (issuer, discovery, /authorize, /token)."""
        if self._server is None:
            raise RuntimeError("the SMART authorization server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def fhir_base(self) -> str:
        """The protected FHIR base URL."""
        return self.url + self.state.fhir_base_path

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return self.url + "/token"

    @property
    def authorize_url(self) -> str:
        """The authorization endpoint."""
        return self.url + "/authorize"

    def start(self) -> str:
        """Bind, serve in a background thread, and return the root URL."""
        if self._server is not None:
            raise RuntimeError("the SMART authorization server is already started")
        server = make_server(self.host, self.port, self.app, threaded=True, request_handler=QuietRequestHandler)
        self._server = server
        self.port = server.server_port
        self.state.public_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, name="smart-auth-server", daemon=True)
        self._thread.start()
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def serve_forever(self) -> None:
        """Foreground use (the CLI): bind and serve until interrupted."""
        server = make_server(self.host, self.port, self.app, threaded=True, request_handler=QuietRequestHandler)
        self._server = server
        self.port = server.server_port
        self.state.public_url = f"http://{self.host}:{self.port}"
        try:
            server.serve_forever()
        finally:
            self._server = None
            server.server_close()

    # -- conveniences for tests and the EHR simulator (same as the HTTP endpoints)
    def set_switches(self, **values: Any) -> dict[str, Any]:
        """Turn real-world behaviour switches on or off."""
        with self.state.lock:
            self.state.switches.update(values)
            return self.state.switches.as_dict()

    def reset_switches(self) -> None:
        """All switches back to their defaults."""
        self.state.reset()

    def register_client(self, **registration: Any) -> Client:
        """Register (or replace) a client: client_id, redirect_uris, scope, token_endpoint_auth_method, jwks…"""
        return self.state.register(registration)

    def launch(self, **context: Any) -> str:
        """A launch token for patient, encounter, fhirContext, intent, need_patient_banner, … , user."""
        return make_launch(self.state, context)

    def ehr_launch_url(self, app_launch_uri: str, **context: Any) -> str:
        """`{app_launch_uri}?iss=…&launch=…` as the EHR would open it."""
        prepared = requests.Request(
            "GET", app_launch_uri, params={"iss": self.fhir_base, "launch": self.launch(**context)}
        ).prepare()
        return str(prepared.url)

    def __enter__(self) -> SmartAuthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def ptguard_app_client(
    redirect_uri: str | list[str],
    *,
    launch_uri: str | None = None,
    jwks_uri: str | None = None,
    jwks: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The registration of the ptguard SMART app (`ptguard-app`): public, or private_key_jwt when keys are given."""
    confidential = jwks_uri is not None or jwks is not None
    registration: dict[str, Any] = {
        "client_id": "ptguard-app",
        "client_name": "ptguard",
        "redirect_uris": [redirect_uri] if isinstance(redirect_uri, str) else list(redirect_uri),
        "launch_uri": launch_uri,
        "scope": " ".join(
            [
                "launch",
                "launch/patient",
                "launch/encounter",
                "openid",
                "fhirUser",
                "profile",
                "offline_access",
                "online_access",
                "patient/*.cruds",
                "user/*.cruds",
            ]
        ),
        "token_endpoint_auth_method": "private_key_jwt" if confidential else "none",
    }
    if jwks_uri:
        registration["jwks_uri"] = jwks_uri
    if jwks:
        registration["jwks"] = jwks
    return registration
