"""The Flask application factory that serves the CDS Hooks service and the SMART app together."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ptguard.config import load_settings
from ptguard.errors import FhirServerError, InputError, NotFoundError, PtguardError

log = logging.getLogger("ptguard.web")

FACES = ("cds_hooks", "smart_app", "webapp.remit_api")
_STATUS = {InputError: 400, NotFoundError: 404, FhirServerError: 502}


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings (defaults → environment → test_config), blueprints, error handlers."""
    app = Flask(__name__)
    settings = load_settings()
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("PTGUARD_SECRET_KEY") or secrets.token_hex(32),
        DATABASE_URL=settings.database_url,
        PTGUARD_SETTINGS=settings,
        PUBLIC_BASE_URL=os.environ.get("PTGUARD_PUBLIC_BASE_URL"),
        SESSION_COOKIE_SAMESITE="None",
        SESSION_COOKIE_SECURE=os.environ.get("PTGUARD_INSECURE_COOKIES") != "1",
        MAX_CONTENT_LENGTH=50 * 1024 * 1024,
    )
    if test_config:
        app.config.update(test_config)
    register_blueprints(app)
    register_errorhandlers(app)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app


def register_blueprints(app: Flask) -> None:
    """Mount each face of the product; each package exposes `init_app(app)`. A missing one is an error."""
    import importlib

    for name in FACES:
        module = importlib.import_module(name)
        init = getattr(module, "init_app", None)
        if init is None:
            where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
            raise RuntimeError(f"{name} has no init_app (imported from {where}; is a folder shadowing the package?)")
        init(app)


def register_errorhandlers(app: Flask) -> None:
    """Core errors become JSON with a fitting status; nothing unexpected leaks a traceback to a user."""

    @app.errorhandler(PtguardError)
    def _ptguard(exc: PtguardError) -> Any:
        status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
        return jsonify(error=exc.one_line()), status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return jsonify(error=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.error("unexpected %s while handling a request", type(exc).__name__)
        return jsonify(error="internal error; the event was logged without request data"), 500
