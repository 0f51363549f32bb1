"""CDS Hooks HTTP layer: discovery, service calls and feedback, with JWT checks, CORS and OperationOutcome errors."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from cds_hooks.cards import CardOptions, cards_for, prune_empty
from cds_hooks.jwt import (
    AuthError,
    Caller,
    MemoryReplayCache,
    RedisReplayCache,
    ReplayCache,
    Verifier,
    load_issuers,
    parse_issuers,
)
from ptguard.cds import (
    SERVICES,
    CdsRequestError,
    ClientFactory,
    RequiredDataUnavailableError,
    discovery,
    parse_request,
    restrict_fhir_server,
    run_check,
    warm_up,
    worklist_reader,
)
from ptguard.cds_feedback import CardRecord, CardRecorder, parse_feedback, store_feedback, unknown_cards
from ptguard.config import Settings, env_int, load_settings
from ptguard.errors import PtguardError
from ptguard.store.db import session_scope

log = logging.getLogger("ptguard.cds")
bp = Blueprint("cds_hooks", __name__)

CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept",
    "Access-Control-Max-Age": "600",
}
CDS_MAX_BODY_BYTES = 10 * 1024 * 1024  # a CDS request body (prefetch included) larger than this is refused (413)
UNSIGNED_WARNING = (
    "!!! PTGUARD_CDS_ALLOW_UNSIGNED=1: the CDS Hooks service accepts calls WITHOUT a verified JWT. "
    "Development only — never run this in production. !!!"
)


@dataclass
class CdsState:
    """Per-app CDS objects: the caller verifier and settings read once at start-up."""

    verifier: Verifier
    allow_unsigned: bool
    settings: Settings
    recorder: CardRecorder


def configure(app: Flask) -> None:
    """Defaults from the environment (test_config wins), the verifier, and the blueprint."""
    env = os.environ
    cfg = app.config
    settings = cfg.get("PTGUARD_SETTINGS") or load_settings()
    cfg.setdefault("CDS_ISSUERS", None)
    cfg.setdefault("CDS_ISSUERS_FILE", env.get("PTGUARD_CDS_ISSUERS"))
    cfg.setdefault("CDS_ALLOW_UNSIGNED", env.get("PTGUARD_CDS_ALLOW_UNSIGNED") == "1")
    if "CDS_LEEWAY_SECONDS" not in cfg:
        cfg["CDS_LEEWAY_SECONDS"] = env_int(
            "PTGUARD_CDS_LEEWAY_SECONDS", 60, low=0, high=3600, what="a number of seconds (0-3600)"
        )
    cfg.setdefault("REDIS_URL", env.get("PTGUARD_REDIS_URL"))
    cfg.setdefault("CDS_TIME_BUDGET_MS", settings.cds_time_budget_ms)
    cfg.setdefault("CDS_ALL_CLEAR", env.get("PTGUARD_CDS_ALL_CLEAR") == "1")
    cfg.setdefault("SMART_LAUNCH_URL", env.get("PTGUARD_SMART_LAUNCH_URL"))
    cfg.setdefault("CDS_RECORD_CARDS", True)
    cfg.setdefault("CDS_VALIDATE", env.get("PTGUARD_CDS_VALIDATE") == "1")
    cfg.setdefault("CDS_CLIENT_FACTORY", None)
    cfg.setdefault("CDS_JWKS_CACHE", None)
    cfg.setdefault("CDS_TRUSTED_HOSTS", env.get("PTGUARD_TRUSTED_HOSTS"))
    if "CDS_MAX_BODY_BYTES" not in cfg:
        cfg["CDS_MAX_BODY_BYTES"] = env_int(
            "PTGUARD_CDS_MAX_BODY_BYTES", CDS_MAX_BODY_BYTES, low=1024, high=2**31, what="a size in bytes (1024 or more)"
        )
    if cfg["CDS_ISSUERS"] is not None:
        issuers = parse_issuers(cfg["CDS_ISSUERS"], "CDS_ISSUERS")
    elif cfg["CDS_ISSUERS_FILE"]:
        issuers = load_issuers(cfg["CDS_ISSUERS_FILE"])
    else:
        issuers = {}
    replay: ReplayCache = RedisReplayCache(cfg["REDIS_URL"]) if cfg["REDIS_URL"] else MemoryReplayCache()
    verifier = Verifier(issuers, replay=replay, jwks=cfg["CDS_JWKS_CACHE"], leeway=int(cfg["CDS_LEEWAY_SECONDS"]))
    allow_unsigned = bool(cfg["CDS_ALLOW_UNSIGNED"])
    if allow_unsigned:
        log.warning(UNSIGNED_WARNING)
        sys.stderr.write(UNSIGNED_WARNING + "\n")
    elif not issuers:
        log.warning("no trusted CDS clients configured (PTGUARD_CDS_ISSUERS): every CDS Hooks call will get 401")
    if cfg.get("CDS_WARM_UP", not app.testing):
        warm_store(cfg["DATABASE_URL"])
        warm_up()
    recorder = CardRecorder(cfg["DATABASE_URL"])
    app.extensions["ptguard_cds"] = CdsState(verifier, allow_unsigned, settings, recorder)
    app.register_blueprint(bp)
    app.register_error_handler(MethodNotAllowed, _method_not_allowed)


def _method_not_allowed(exc: MethodNotAllowed) -> Response:
    """405: an OperationOutcome with CORS headers on the CDS paths; the app's usual JSON error elsewhere."""
    allow = ", ".join(sorted(exc.valid_methods or ()))
    if request.path == "/cds-services" or request.path.startswith("/cds-services/"):
        response = _cors(_outcome(405, f"{request.method} is not allowed here", code="not-supported"))
    else:
        response = Response(orjson.dumps({"error": exc.description or exc.name}), 405, mimetype="application/json")
    if allow:
        response.headers["Allow"] = allow
    return response


def warm_store(database_url: str) -> None:
    """Migrate the store at start-up, so the first call does not spend its time budget on it."""
    try:
        with session_scope(database_url):
            pass
    except Exception as exc:
        log.warning("the store is not reachable at start-up (%s); cards will not be recorded", type(exc).__name__)


def _state() -> CdsState:
    state: CdsState = current_app.extensions["ptguard_cds"]
    return state


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def parse_trusted_hosts(raw: str | None) -> list[tuple[str, str | None]]:
    """`PTGUARD_TRUSTED_HOSTS` (comma-separated host[:port]) → (host, port or None = any port); default loopback."""
    out: list[tuple[str, str | None]] = []
    for part in (raw or "").split(","):
        entry = part.strip().lower()
        if entry:
            out.append(_split_host(entry))
    return out or [(h, None) for h in LOOPBACK_HOSTS]


def _split_host(value: str) -> tuple[str, str | None]:
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") and rest[1:] else None
    host, sep, port = value.rpartition(":")
    if sep and host and port.isdigit():
        return host, port
    return value, None


def host_trusted(host_header: str, trusted: list[tuple[str, str | None]]) -> bool:
    """True when the request's Host (host[:port]) is on the trusted list."""
    if not host_header or any(ch in host_header for ch in "/@\\ \t"):
        return False
    host, port = _split_host(host_header)
    return any(host == h and (p is None or p == port) for h, p in trusted)


def _public_url() -> str | None:
    """The URL the caller called: PTGUARD_PUBLIC_BASE_URL + path behind a proxy, else the request's own URL.

    The request's own URL is built from the Host header, which the caller controls: it is used only when that
    host is trusted (PTGUARD_TRUSTED_HOSTS, by default loopback names only); otherwise None (the call is refused).
    """
    base = current_app.config.get("PUBLIC_BASE_URL")
    if base:
        return str(base).rstrip("/") + request.path
    if not host_trusted(request.host, parse_trusted_hosts(current_app.config.get("CDS_TRUSTED_HOSTS"))):
        return None
    return request.base_url


def _launch_url() -> str:
    configured = current_app.config.get("SMART_LAUNCH_URL")
    if configured:
        return str(configured)
    base = current_app.config.get("PUBLIC_BASE_URL") or request.url_root
    return str(base).rstrip("/") + "/app/launch"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _outcome(status: int, message: str, *, code: str = "invalid", where: str | None = None) -> Response:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
    if where:
        issue["expression"] = [where]
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(orjson.dumps(body), status=status, mimetype="application/fhir+json")


def _unauthorized(reason: str) -> Response:
    log.info("CDS call refused (401): %s", reason)  # the reason names a check, never the token or its claims
    response = Response(b"", status=401)
    response.headers["WWW-Authenticate"] = "Bearer"
    del response.headers["Content-Type"]
    return response


def _authorize() -> Response | None:
    refused, _caller = _authenticate()
    return refused


def _authenticate() -> tuple[Response | None, Caller | None]:
    """(a 401 response, None) when the call is refused, else (None, the verified caller or None when unsigned)."""
    state = _state()
    if state.allow_unsigned:
        return None, None
    audience = _public_url()
    if audience is None:
        return _unauthorized("Host is not trusted and PTGUARD_PUBLIC_BASE_URL is not set"), None
    try:
        caller = state.verifier.verify(request.headers.get("Authorization"), audience)
    except AuthError as exc:
        return _unauthorized(str(exc)), None
    return None, caller


@bp.after_request
def _cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    response.headers["Access-Control-Allow-Origin"] = origin or "*"
    if origin:
        response.headers.add("Vary", "Origin")
    for key, value in CORS_HEADERS.items():
        response.headers[key] = value
    return response


@bp.route("/cds-services", methods=["OPTIONS"])
@bp.route("/cds-services/<service_id>", methods=["OPTIONS"])
@bp.route("/cds-services/<service_id>/feedback", methods=["OPTIONS"])
def preflight(service_id: str | None = None) -> Response:
    """CORS preflight (browsers send it without credentials, so no JWT is asked for)."""
    return Response(status=204)


@bp.get("/cds-services")
def services() -> Response:
    refused = _authorize()
    if refused is not None:
        return refused
    return _json(discovery())


class BodyTooLargeError(CdsRequestError):
    """The request body is over CDS_MAX_BODY_BYTES (answered 413)."""


def _body() -> Any:
    limit = int(current_app.config["CDS_MAX_BODY_BYTES"])
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(f"the request body is over the {limit} byte limit", code="too-long")
    request.max_content_length = limit  # also bounds a chunked body without Content-Length
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise BodyTooLargeError(f"the request body is over the {limit} byte limit", code="too-long") from None
    if not raw:
        raise CdsRequestError("empty request body", code="structure")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CdsRequestError(f"malformed JSON ({exc.msg})", code="structure") from None


@bp.post("/cds-services/<service_id>")
def call(service_id: str) -> Response:
    started = time.monotonic()
    refused, caller = _authenticate()
    if refused is not None:
        return refused
    service = SERVICES.get(service_id)
    if service is None:
        return _outcome(404, f"no CDS service {service_id!r}", code="not-found")
    cfg = current_app.config
    state = _state()
    try:
        req = parse_request(_body(), service)
        issuer = state.verifier.issuers.get(caller.iss) if caller is not None else None
        if issuer is not None and issuer.fhir_servers is not None:
            restrict_fhir_server(req, issuer.fhir_servers)
        factory: ClientFactory | None = cfg.get("CDS_CLIENT_FACTORY")
        worklist = worklist_reader(cfg["DATABASE_URL"]) if service.kind == "denials" else None
        kwargs: dict[str, Any] = {"client_factory": factory} if factory is not None else {}
        result = run_check(
            service,
            req,
            budget_ms=int(cfg["CDS_TIME_BUDGET_MS"]),
            started=started,
            worklist=_safe(worklist),
            today=date.today(),
            payer_map=state.settings.payer_map,
            validate=bool(cfg["CDS_VALIDATE"]),
            **kwargs,
        )
    except CdsRequestError as exc:
        return _outcome(413 if isinstance(exc, BodyTooLargeError) else 400, exc.message, code=exc.code, where=exc.where)
    except RequiredDataUnavailableError as exc:
        return _outcome(412, exc.message, code="not-found", where=exc.where)
    except PtguardError as exc:
        return _outcome(400, exc.one_line())
    options = CardOptions(smart_launch_url=_launch_url(), all_clear=bool(cfg["CDS_ALL_CLEAR"]))
    card_set = cards_for(result, options)
    if cfg["CDS_RECORD_CARDS"] and card_set.issued:
        state.recorder.submit(
            service.id, req.hook_instance, [CardRecord(c.uuid, c.criterion_id, c.payer_id) for c in card_set.issued]
        )
    log.info(
        "CDS %s %s: %d card(s), %s, %.0f ms",
        service.id,
        req.hook,
        len(card_set.cards),
        "complete" if result.complete else "incomplete",
        (time.monotonic() - started) * 1000,
    )
    return _json({"cards": [prune_empty(c) for c in card_set.cards]})


def _safe(reader: Any) -> Any:
    if reader is None:
        return None

    def read(patient_id: str) -> Any:
        try:
            return reader(patient_id)
        except Exception as exc:
            log.warning("denial worklist unavailable (%s)", type(exc).__name__)
            return []

    return read


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    refused = _authorize()
    if refused is not None:
        return refused
    if service_id not in SERVICES:
        return _outcome(404, f"no CDS service {service_id!r}", code="not-found")
    try:
        items = parse_feedback(_body())
    except CdsRequestError as exc:
        return _outcome(413 if isinstance(exc, BodyTooLargeError) else 400, exc.message, code=exc.code, where=exc.where)
    _state().recorder.flush(1.0)
    if current_app.config["CDS_RECORD_CARDS"]:
        unknown = unknown_cards(current_app.config["DATABASE_URL"], service_id, items)
        if unknown:
            i = unknown[0]
            return _outcome(
                400,
                f"feedback[{i}]: no such card was issued by this service",
                code="not-found",
                where=f"feedback[{i}].card",
            )
    new, repeats = store_feedback(current_app.config["DATABASE_URL"], service_id, items)
    log.info("CDS feedback for %s: %d new, %d repeated", service_id, new, repeats)
    return Response(status=200)
