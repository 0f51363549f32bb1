"""HTTP intake of 835 remittances: POST /remit/835, POST /remit/notify, GET /remit/jobs/<id> (bearer API key)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ptguard.config import env_int
from ptguard.fhir.client import FhirClient
from ptguard.remit.denial_output import looks_like_x12
from ptguard.remit.fetch import FETCH_BASES_SETTING, FETCH_TOKEN_SETTING, allowed, fetch, normalise, parse_bases
from ptguard.remit.intake import import_835
from ptguard.remit.jobs import JobQueue
from ptguard.remit.matching import CLAIM_ID_SYSTEM_SETTING, claim_id_systems

log = logging.getLogger("ptguard.web.remit")

bp = Blueprint("remit_api", __name__, url_prefix="/remit")

API_KEYS_SETTING = "PTGUARD_REMIT_API_KEYS"
FHIR_SETTING = "PTGUARD_REMIT_FHIR_BASE"
FHIR_TOKEN_SETTING = "PTGUARD_REMIT_FHIR_TOKEN"  # noqa: S105 - the variable name, not a secret
MAX_BYTES_SETTING = "PTGUARD_REMIT_MAX_BYTES"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
X12_TYPES = frozenset({"application/edi-x12", "text/plain", "application/octet-stream"})
_EXT = "ptguard_remit_jobs"


def _setting(name: str, default: str | None = None) -> str | None:
    value = current_app.config.get(name)
    if value is None:
        value = os.environ.get(name, default)
    return None if value is None else str(value)


def _max_bytes() -> int:
    return int(current_app.config["REMIT_MAX_BYTES"])


def _jobs() -> JobQueue:
    jobs: JobQueue = current_app.extensions[_EXT]
    return jobs


def _error(status: int, message: str) -> Any:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ptguard-remit"'
    return response


def _authorised() -> bool:
    keys = [k.strip() for k in (_setting(API_KEYS_SETTING) or "").split(",") if k.strip()]
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip() or not keys:
        return False
    given_bytes = given.strip().encode()
    # Compare against every key (no early exit), each in constant time.
    results = [hmac.compare_digest(given_bytes, key.encode()) for key in keys]
    return any(results)


@bp.before_request
def _require_key() -> Any:
    if not _authorised():
        log.info("remit API: request refused (missing or unknown API key)")
        return _error(401, "a valid API key is required (Authorization: Bearer <key>)")
    return None


def _run_import(data: bytes, filename: str, app: Flask) -> dict[str, Any]:
    with app.app_context():
        base = _setting(FHIR_SETTING)
        systems = claim_id_systems({CLAIM_ID_SYSTEM_SETTING: _setting(CLAIM_ID_SYSTEM_SETTING) or ""})
        db_url = str(app.config["DATABASE_URL"])
        token = _setting(FHIR_TOKEN_SETTING)
    client = FhirClient(base, token=token) if base else None
    try:
        result = import_835(
            data,
            filename=filename,
            db_url=db_url,
            fhir=client,
            today=datetime.now().astimezone().date(),
            claim_id_systems=systems,
        )
    finally:
        if client is not None:
            client.close()
    out = result.to_dict()
    out.pop("therapy_denials", None)
    out["therapy_denial_lines"] = len(result.therapy_denials)
    return out


def _accepted(job_id: str, status: str) -> Any:
    response = jsonify(job_id=job_id, status=status, status_url=f"/remit/jobs/{job_id}")
    response.status_code = 202
    response.headers["Location"] = f"/remit/jobs/{job_id}"
    return response


@bp.post("/835")
def post_835() -> Any:
    """A raw 835 body → 202 with a job id; the import runs in the background."""
    mime = (request.mimetype or "").lower()
    if mime not in X12_TYPES:
        return _error(415, f"Content-Type must be application/edi-x12 or text/plain, got {mime or 'none'}")
    limit = _max_bytes()
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"the body is over the {limit} byte limit")
    data = request.get_data(cache=False)
    if len(data) > limit:
        return _error(413, f"the body is over the {limit} byte limit")
    if not data.strip():
        return _error(400, "the body is empty; expected an X12 835 interchange")
    if not looks_like_x12(data):
        return _error(400, "the body is not an X12 interchange: it does not start with an ISA segment")
    sha = hashlib.sha256(data).hexdigest()
    raw_name = request.headers.get("X-Filename") or f"posted-{sha[:12]}.835"
    filename = os.path.basename(raw_name)[:200] or f"posted-{sha[:12]}.835"
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    job = _jobs().submit("835", lambda: _run_import(data, filename, app), dedupe_key=f"sha:{sha}")
    log.info("remit API: 835 accepted as job %s (%d bytes)", job.id, len(data))
    return _accepted(job.id, job.status)


@bp.post("/notify")
def post_notify() -> Any:
    """A clearinghouse notification {"file_url", "file_id"} → 202; the file is fetched and imported in the background."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'expected a JSON object {"file_url": "...", "file_id": "..."}')
    url = body.get("file_url")
    file_id = body.get("file_id")
    if not isinstance(url, str) or not url.strip():
        return _error(400, "file_url is missing or not a string")
    if file_id is not None and not isinstance(file_id, str | int):
        return _error(400, "file_id must be a string")
    try:
        bases = parse_bases(_setting(FETCH_BASES_SETTING))
    except Exception:
        log.error("remit API: %s is invalid", FETCH_BASES_SETTING)
        return _error(500, "the clearinghouse allow-list is misconfigured")
    if not bases:
        return _error(403, "no clearinghouse base URL is allow-listed (PTGUARD_REMIT_FETCH_BASES); refusing to fetch")
    target = normalise(url.strip(), bases) if allowed(url.strip(), bases) else None
    if target is None:
        return _error(403, "file_url is not under an allow-listed clearinghouse base; refusing to fetch")
    url = target  # the normalised URL: what was checked is what is fetched
    name = str(file_id) if file_id is not None else url.rsplit("/", 1)[-1]
    filename = os.path.basename(name)[:200] or "notified.835"
    limit = _max_bytes()
    token = _setting(FETCH_TOKEN_SETTING)
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def work() -> dict[str, Any]:
        data = fetch(url, bases=bases, max_bytes=limit, token=token)
        return _run_import(data, filename, app)

    job = _jobs().submit("notify", work, dedupe_key=f"url:{url}|{file_id}")
    log.info("remit API: notification accepted as job %s", job.id)
    return _accepted(job.id, job.status)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    """The status of a job: queued, running, done (with the import result) or error (with a one-line reason)."""
    job = _jobs().get(job_id)
    if job is None:
        return _error(404, "no such job (unknown id, or finished long ago)")
    return jsonify(job.to_dict())


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Any:
    return _error(exc.code or 500, exc.description or exc.name)


def init_app(app: Flask) -> None:
    """Register the blueprint and the app's background job queue."""
    db_url = app.config.get("DATABASE_URL")
    if "REMIT_MAX_BYTES" not in app.config:  # read once at start: a bad value stops start-up (exit 5)
        configured = app.config.get(MAX_BYTES_SETTING)
        environ = {MAX_BYTES_SETTING: str(configured)} if configured is not None else None
        app.config["REMIT_MAX_BYTES"] = env_int(
            MAX_BYTES_SETTING, DEFAULT_MAX_BYTES, low=1, high=2**31, what="a size in bytes", environ=environ
        )
    # Job status lives in the database: under gunicorn each worker has its own queue, and any of them may be
    # asked GET /remit/jobs/<id>.
    app.extensions.setdefault(_EXT, JobQueue(db_url=str(db_url) if db_url else None))
    app.register_blueprint(bp)
