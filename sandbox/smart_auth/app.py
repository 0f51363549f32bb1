"""The sandbox SMART authorization server as a Flask app: discovery, authorize, token, registration, FHIR proxy."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError, OAuth2Error
from flask import Flask, Response, current_app, jsonify, redirect, request
from markupsafe import escape

from sandbox.smart_auth import proxy
from sandbox.smart_auth.oauth import SmartAuthorizationServer, create_authorization_server
from sandbox.smart_auth.scopes import drop_v1_read, split_scopes
from sandbox.smart_auth.state import CONTEXT_KEYS, AuthState, Client, User

CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-asymmetric",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
]
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "user/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.read",
    "user/*.write",
]
FALLBACK_USER = "Practitioner/sandbox-user"
LAUNCH_FIELDS = (
    "patient",
    "encounter",
    "intent",
    "smart_style_url",
    "tenant",
    "user",
    "fhirContext",
    "need_patient_banner",
    "appContext",
)


def create_app(
    *,
    fhir_url: str,
    fhir_base_path: str = "/fhir/R4",
    public_url: str | None = None,
    clients: list[dict[str, Any] | Client] | None = None,
    clients_file: Path | str | None = None,
    default_user: str | None = None,
    switches: dict[str, Any] | None = None,
) -> Flask:
    """Build the app. `fhir_url` is the sandbox FHIR server it protects; `public_url` its own root URL (else per request)."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = secrets.token_hex(16)
    state = AuthState(
        fhir_url=fhir_url,
        fhir_base_path=fhir_base_path,
        public_url=public_url,
        default_user=default_user,
        switches=switches,
    )
    if clients_file is not None:
        state.load_clients_file(clients_file)
    for client in clients or []:
        state.register(client)
    server = create_authorization_server(state)
    server.init_app(app)
    app.extensions["smart_auth"] = state
    app.extensions["smart_auth_server"] = server
    _routes(app, state.fhir_base_path)
    return app


def _state() -> AuthState:
    state: AuthState = current_app.extensions["smart_auth"]
    return state


def _server() -> SmartAuthorizationServer:
    server: SmartAuthorizationServer = current_app.extensions["smart_auth_server"]
    return server


def _norm(url: str) -> str:
    return url.strip().rstrip("/")


# ------------------------------------------------------------------ discovery


def smart_configuration(state: AuthState) -> dict[str, Any]:
    """The `.well-known/smart-configuration` document (absolute URLs)."""
    root = state.root()
    return {
        "issuer": state.issuer(),
        "jwks_uri": f"{root}/jwks",
        "authorization_endpoint": state.authorize_url(),
        "token_endpoint": state.token_url(),
        "registration_endpoint": f"{root}/register",
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(state: AuthState) -> dict[str, Any]:
    """The OpenID Connect discovery document."""
    root = state.root()
    return {
        "issuer": state.issuer(),
        "authorization_endpoint": state.authorize_url(),
        "token_endpoint": state.token_url(),
        "jwks_uri": f"{root}/jwks",
        "registration_endpoint": f"{root}/register",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
    }


# ------------------------------------------------------------------ authorize helpers


def _error_page(error: OAuth2Error) -> Response:
    html = (
        "<!doctype html><title>Authorization error</title><h1>Authorization error</h1>"
        f"<p><code>{escape(error.error)}</code>: {escape(error.description or '')}</p>"
        "<p>The request cannot be sent back to the application (unknown client or redirect URI).</p>"
    )
    return Response(html, status=400, content_type="text/html; charset=utf-8")


def _fhir_search(state: AuthState, resource_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
    try:
        with requests.get(f"{state.fhir_url}/{resource_type}", params=params, timeout=10) as response:
            response.raise_for_status()
            bundle = response.json()
    except (requests.RequestException, ValueError):
        return []
    return [e["resource"] for e in bundle.get("entry", []) or [] if isinstance(e.get("resource"), dict)]


def _default_user(state: AuthState) -> str:
    if state.default_user:
        return state.default_user
    found = _fhir_search(state, "Practitioner", {"_count": "1"})
    if found and found[0].get("id"):
        state.default_user = f"Practitioner/{found[0]['id']}"
        return state.default_user
    return FALLBACK_USER


def _as_user_ref(value: Any) -> str | None:
    if not value:
        return None
    text = str(value)
    return text if "/" in text else f"Practitioner/{text}"


def _patient_name(patient: dict[str, Any]) -> str:
    for name in patient.get("name", []) or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("given", []), name.get("family", "")]
        joined = " ".join(p for p in parts if p)
        if joined:
            return joined
    return str(patient.get("id"))


def _picker(state: AuthState, values: dict[str, str]) -> Response:
    patients = _fhir_search(state, "Patient", {"_count": "100", "_sort": "family"})
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in values.items()
        if k not in ("patient_pick", "auto_patient")
    )
    rows = "".join(
        f'<li><button type="submit" name="patient_pick" value="{escape(p.get("id", ""))}">'
        f"{escape(_patient_name(p))}</button> <small>Patient/{escape(p.get('id', ''))}</small></li>"
        for p in patients
    )
    html = (
        "<!doctype html><meta charset=utf-8><title>Select a patient</title>"
        "<h1>Select a patient</h1>"
        f'<form method="post" action="{escape(state.authorize_url())}">{hidden}<ul id="patients">'
        f"{rows or '<li>No patients on the FHIR server.</li>'}</ul></form>"
    )
    return Response(html, status=200, content_type="text/html; charset=utf-8")


def _narrow(state: AuthState, scopes: list[str]) -> list[str]:
    narrow = state.switches.narrow_scopes
    if narrow is True:
        return drop_v1_read(scopes)
    if isinstance(narrow, list):
        return [s for s in scopes if s not in narrow]
    return scopes


def authorize() -> Response:
    """The authorization endpoint (GET or POST): checks, EHR/standalone context, auto-approve, redirect."""
    state, server = _state(), _server()
    try:
        grant = server.get_consent_grant(end_user=None)
    except OAuth2Error as error:
        if error.redirect_uri:
            return server.handle_error_response(None, error)  # type: ignore[no-any-return]
        return _error_page(error)
    values = {k: v for k, v in request.values.items()}
    redirect_uri = grant.redirect_uri
    oauth_state = values.get("state")

    def fail(description: str, error_cls: type[OAuth2Error] = InvalidRequestError) -> Response:
        error = error_cls(description=description, redirect_uri=redirect_uri, state=oauth_state)
        return server.handle_error_response(None, error)  # type: ignore[no-any-return]

    if not oauth_state:
        return fail("Missing 'state'.")
    aud = values.get("aud")
    if not aud:
        return fail("Missing 'aud': it must be the FHIR base URL.")
    if _norm(aud) != _norm(state.fhir_base()):
        return fail(f"'aud' must be the FHIR base URL {state.fhir_base()}.")
    requested = split_scopes(values.get("scope"))
    context: dict[str, Any] = {}
    user_ref: str | None = None
    launch = values.get("launch")
    if launch:
        if "launch" not in requested:
            return fail("An EHR launch needs the 'launch' scope.", InvalidScopeError)
        launch_context = state.keys.open_launch(launch)
        if launch_context is None:
            return fail("Unknown or expired 'launch'.")
        context = {k: launch_context[k] for k in CONTEXT_KEYS if launch_context.get(k) is not None}
        user_ref = _as_user_ref(launch_context.get("user"))
    elif "launch" in requested:
        return fail("The 'launch' scope asks for an EHR launch but no 'launch' parameter was sent.")
    elif "launch/patient" in requested:
        picked = values.get("patient_pick") or values.get("auto_patient")
        auto = state.switches.auto_select_patient
        if not picked and isinstance(auto, str) and auto:
            picked = auto
        elif not picked and auto is True:
            first = _fhir_search(state, "Patient", {"_count": "1", "_sort": "family"})
            picked = str(first[0]["id"]) if first else None
        if not picked:
            return _picker(state, values)
        context = {"patient": picked.removeprefix("Patient/"), "need_patient_banner": True}
    granted = _narrow(state, split_scopes(grant.request.scope))
    grant.request.smart_context = context
    grant.request.smart_granted_scope = " ".join(granted)
    user = User(user_ref or _default_user(state))
    return server.create_authorization_response(grant=grant, grant_user=user)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ routes


def _routes(app: Flask, base_path: str) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"ok": True})

    @app.get("/.well-known/smart-configuration")
    def smart_config_root() -> Response:
        return jsonify(smart_configuration(_state()))

    @app.get(f"{base_path}/.well-known/smart-configuration")
    def smart_config_fhir() -> Response:
        state = _state()
        if state.switches.smart_config_only_at_root:
            return proxy.operation_outcome(
                404, "Not found: smart-configuration is served at the server root.", "not-found"
            )
        return jsonify(smart_configuration(state))

    @app.get("/.well-known/openid-configuration")
    def openid_config() -> Response:
        return jsonify(openid_configuration(_state()))

    @app.get("/jwks")
    def jwks() -> Response:
        return jsonify(_state().keys.jwks())

    app.add_url_rule("/authorize", "authorize", authorize, methods=["GET", "POST"])

    @app.post("/token")
    def token() -> Response:
        response: Response = _server().create_token_response()
        return response

    @app.post("/register")
    def register() -> tuple[Response, int]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify({"error": "invalid_client_metadata", "error_description": "JSON object expected"}), 400
        try:
            client = _state().register(data)
        except ValueError as exc:
            return jsonify({"error": "invalid_client_metadata", "error_description": str(exc)}), 400
        return jsonify(client.public_dict()), 201

    @app.post("/launch-token")
    def launch_token() -> tuple[Response, int]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify({"error": "a JSON object is expected"}), 400
        try:
            launch = make_launch(_state(), data)
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400
        return jsonify({"launch": launch}), 200

    @app.get("/ehr-launch-url")
    def ehr_launch_url() -> Response | tuple[Response, int]:
        app_uri = request.args.get("app")
        if not app_uri:
            return jsonify({"error": "the 'app' parameter (the app's launch URL) is required"}), 400
        data: dict[str, Any] = {
            k: v
            for k in ("patient", "encounter", "intent", "smart_style_url", "tenant", "user")
            if (v := request.args.get(k))
        }
        refs = [r for value in request.args.getlist("fhirContext") for r in value.split(",") if r]
        if refs:
            data["fhirContext"] = [{"reference": r} for r in refs]
        if request.args.get("need_patient_banner") is not None:
            data["need_patient_banner"] = request.args.get("need_patient_banner", "").lower() in ("1", "true", "yes")
        state = _state()
        try:
            launch = make_launch(state, data)
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400
        separator = "&" if "?" in app_uri else "?"
        url = f"{app_uri}{separator}{urlencode({'iss': state.fhir_base(), 'launch': launch})}"
        if request.args.get("redirect") in ("1", "true"):
            return redirect(url)  # type: ignore[return-value]
        return jsonify({"url": url, "iss": state.fhir_base(), "launch": launch})

    @app.route("/_switches", methods=["GET", "POST", "DELETE"])
    def switches() -> Response | tuple[Response, int]:
        state = _state()
        if request.method == "DELETE":
            state.reset()
        elif request.method == "POST":
            data = request.get_json(silent=True)
            if not isinstance(data, dict):
                return jsonify({"error": "a JSON object of switches is expected"}), 400
            if data.pop("reset", False):
                state.reset()
            try:
                with state.lock:
                    state.switches.update(data)
            except ValueError as exc:
                return jsonify({"error": str(exc)}), 400
        return jsonify(state.switches.as_dict())

    @app.post("/_expire-tokens")
    def expire_tokens() -> Response:
        data = request.get_json(silent=True) or {}
        client_id, access_token = data.get("client_id"), data.get("access_token")
        return jsonify({"expired": _state().expire_tokens(client_id=client_id, access_token=access_token)})

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

    @app.route(base_path, methods=methods, defaults={"subpath": ""}, strict_slashes=False)
    @app.route(f"{base_path}/<path:subpath>", methods=methods)
    def fhir(subpath: str) -> Response:
        return proxy.handle(_state(), request, subpath)


def make_launch(state: AuthState, data: dict[str, Any]) -> str:
    """An opaque launch token for the context in `data` (patient, encounter, fhirContext, …, user)."""
    context: dict[str, Any] = {}
    for key in LAUNCH_FIELDS[:6]:
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            context[key] = value.split("/", 1)[1] if key in ("patient", "encounter") and "/" in value else value
    fhir_context = data.get("fhirContext")
    if fhir_context is not None:
        if not isinstance(fhir_context, list) or not all(
            isinstance(item, dict) and any(k in item for k in ("reference", "canonical", "identifier"))
            for item in fhir_context
        ):
            raise ValueError("fhirContext must be a list of objects with reference, canonical or identifier")
        context["fhirContext"] = fhir_context
    app_context = data.get("appContext")
    if app_context is not None:
        if not isinstance(app_context, str):
            raise ValueError("appContext must be a string (CDS Hooks passes it through unchanged)")
        context["appContext"] = app_context
    banner = data.get("need_patient_banner")
    context["need_patient_banner"] = bool(banner) if banner is not None else False
    unknown = set(data) - set(LAUNCH_FIELDS)
    if unknown:
        raise ValueError(f"unknown launch field(s): {', '.join(sorted(unknown))}")
    return state.keys.seal_launch(context)
