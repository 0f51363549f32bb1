"""The EHR simulator (Flask): a schedule of fixture patients with "Sign note" CDS Hooks calls, cards, and a denial worklist."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from flask import Flask, Response, abort, jsonify, redirect, render_template, request
from markdown_it import MarkdownIt
from markupsafe import Markup

from ptguard.errors import PtguardError
from ptguard.fhir.client import FhirClient
from sandbox.ehr_sim.cds_client import CdsCallError, CdsClient, SigningKey, fill_prefetch
from sandbox.ehr_sim.data import denied_claims, schedule

log = logging.getLogger("sandbox.ehr_sim")

DEFAULT_SERVICE = "ptguard-97530-signing"
DEFAULT_HOOK = "encounter-discharge"
MAX_CALLS = 200
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str | None) -> Markup:
    """CDS card detail (GitHub-ish markdown) → HTML; raw HTML is escaped and unsafe link schemes are dropped."""
    if not text:
        return Markup("")
    return Markup(_MD.render(text))  # noqa: S704 - markdown-it with html disabled escapes every raw tag


def _is_web_url(url: Any) -> bool:
    return isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and bool(urlsplit(url).netloc)


# A token provider gives the `fhirAuthorization` object for a patient (None: call without one).
TokenProvider = Callable[[str], dict[str, Any] | None]


@dataclass
class SimulatorSettings:
    """Where the simulator reads its chart, which CDS service it calls, and how it launches the SMART app."""

    fhir_url: str  # the EHR's own FHIR base: the schedule, the worklist, prefetch
    cds_base: str | None = None  # the CDS Hooks service base (discovery at {cds_base}/cds-services)
    service_id: str = DEFAULT_SERVICE
    hook: str = DEFAULT_HOOK
    cds_fhir_server: str | None = None  # `fhirServer` sent to the service (default: fhir_url)
    token_provider: TokenProvider | None = None  # `fhirAuthorization` per patient (default: none)
    auth_url: str | None = None  # the SMART authorization server root (its POST /launch-token)
    launch_iss: str | None = None  # `iss` of an EHR launch (default: {auth_url}/fhir/R4)
    app_launch_url: str | None = None  # the SMART app's launch URL ("Open appeal")
    database_url: str | None = None  # the ptguard store, for the stored denial worklist
    user_id: str | None = None  # context.userId (default: the first Practitioner)
    public_url: str | None = None  # the simulator's own URL (the JWT `iss`), set when it listens
    tenant: str | None = None
    key: SigningKey = field(default_factory=SigningKey)


@dataclass
class CallRecord:
    """One "Sign note" call and what came back, kept in memory so the page can offer feedback and launches."""

    id: str
    patient_id: str
    encounter_id: str
    hook_instance: str
    service_id: str
    request_summary: dict[str, Any]
    cards: list[dict[str, Any]] = field(default_factory=list)
    system_actions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    elapsed_ms: float = 0.0
    prefetch_notes: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    feedback: dict[str, str] = field(default_factory=dict)  # card uuid → outcome sent


class CallStore:
    """The last MAX_CALLS calls (thread-safe)."""

    def __init__(self) -> None:
        self._calls: OrderedDict[str, CallRecord] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, record: CallRecord) -> None:
        with self._lock:
            self._calls[record.id] = record
            while len(self._calls) > MAX_CALLS:
                self._calls.popitem(last=False)

    def get(self, call_id: str) -> CallRecord | None:
        with self._lock:
            return self._calls.get(call_id)


class Simulator:
    """The simulator's state: settings, the CDS client, calls."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.calls = CallStore()
        self.http = requests.Session()
        self.cds = CdsClient(settings.cds_base, issuer=self.issuer, key=settings.key) if settings.cds_base else None
        self._user_id: str | None = settings.user_id

    def issuer(self) -> str:
        """The JWT `iss`: the simulator's public URL."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return request.host_url.rstrip("/")

    def fhir(self) -> FhirClient:
        return FhirClient(self.settings.fhir_url, timeout=10.0, retries=1)

    def user_id(self) -> str:
        """context.userId: configured, else the first Practitioner on the FHIR server."""
        if self._user_id is None:
            try:
                with self.fhir() as client:
                    found = client.search_bundle("Practitioner", {"_count": "1"})
                entries = [e.get("resource") for e in found.get("entry") or [] if isinstance(e, dict)]
                pid = entries[0].get("id") if entries and isinstance(entries[0], dict) else None
                self._user_id = f"Practitioner/{pid}" if pid else "Practitioner/ehr-sim-user"
            except PtguardError:
                return "Practitioner/ehr-sim-user"
        return self._user_id

    def close(self) -> None:
        self.http.close()
        if self.cds is not None:
            self.cds.close()

    # -------------------------------------------------------------------------------------------- calls

    def sign(self, patient_id: str, encounter_id: str) -> CallRecord:
        """Fire the hook as an EHR does when a note is signed: discovery → prefetch → signed POST."""
        s = self.settings
        record = CallRecord(
            id=uuid.uuid4().hex[:16],
            patient_id=patient_id,
            encounter_id=encounter_id,
            hook_instance=str(uuid.uuid4()),
            service_id=s.service_id,
            request_summary={},
        )
        self.calls.add(record)
        started = time.monotonic()
        if self.cds is None:
            record.error = "no CDS Hooks service is configured for this simulator"
            return record
        context = {"userId": self.user_id(), "patientId": patient_id, "encounterId": encounter_id}
        try:
            entry = self.cds.service(s.service_id)
            prefetch = fill_prefetch(
                entry.get("prefetch") or {}, context, fhir_url=s.fhir_url, user_id=context["userId"], session=self.http
            )
            record.prefetch_notes = prefetch.notes
            body: dict[str, Any] = {
                "hook": entry.get("hook") or s.hook,
                "hookInstance": record.hook_instance,
                "context": context,
                "fhirServer": s.cds_fhir_server or s.fhir_url,
                "prefetch": prefetch.values,
            }
            authorization = s.token_provider(patient_id) if s.token_provider else None
            if authorization:
                body["fhirAuthorization"] = authorization
            record.request_summary = {
                "hook": body["hook"],
                "hookInstance": record.hook_instance,
                "context": context,
                "fhirServer": body["fhirServer"],
                "fhirAuthorization": "bearer token, scope " + str(authorization.get("scope"))
                if authorization
                else "none",
                "prefetch": sorted(prefetch.values),
            }
            answer = self.cds.call(s.service_id, body)
        except CdsCallError as exc:
            record.error = str(exc)
        else:
            record.cards = [c for c in answer.get("cards") or [] if isinstance(c, dict)]
            record.system_actions = [a for a in answer.get("systemActions") or [] if isinstance(a, dict)]
        record.elapsed_ms = (time.monotonic() - started) * 1000
        log.info(
            "sign: %d card(s) in %.0f ms%s", len(record.cards), record.elapsed_ms, " (error)" if record.error else ""
        )
        return record

    def send_feedback(self, record: CallRecord, item: dict[str, Any]) -> str:
        """POST feedback for one card; a message for the page."""
        if self.cds is None:
            return "no CDS service configured"
        item.setdefault("outcomeTimestamp", datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            status = self.cds.feedback(record.service_id, [item])
        except CdsCallError as exc:
            return f"feedback not sent: {exc}"
        if status == 200:
            record.feedback[item["card"]] = item["outcome"]
            return f"feedback sent ({item['outcome']})"
        return f"feedback refused: HTTP {status}"

    def apply_actions(self, actions: list[dict[str, Any]]) -> list[str]:
        """Apply a suggestion's actions to the EHR's own FHIR server, as an EHR would on accept."""
        out: list[str] = []
        base = self.settings.fhir_url.rstrip("/")
        for action in actions:
            kind, resource = action.get("type"), action.get("resource")
            try:
                if kind == "update" and isinstance(resource, dict) and resource.get("id"):
                    url = f"{base}/{resource['resourceType']}/{resource['id']}"
                    response = self.http.put(url, json=resource, timeout=10)
                elif kind == "create" and isinstance(resource, dict) and resource.get("resourceType"):
                    response = self.http.post(f"{base}/{resource['resourceType']}", json=resource, timeout=10)
                elif kind == "delete" and isinstance(action.get("resourceId"), list | str):
                    ids = action["resourceId"] if isinstance(action["resourceId"], list) else [action["resourceId"]]
                    for rid in ids:
                        response = self.http.delete(f"{base}/{str(rid).lstrip('/')}", timeout=10)
                else:
                    out.append(f"{kind}: not applied (unsupported action)")
                    continue
            except requests.RequestException as exc:
                out.append(f"{kind}: failed ({type(exc).__name__})")
                continue
            out.append(
                f"{kind} {resource.get('resourceType') if isinstance(resource, dict) else ''}: HTTP {response.status_code}"
            )
        return out

    def launch_url(
        self,
        app_launch_url: str,
        *,
        patient: str,
        encounter: str | None = None,
        fhir_context: list[dict[str, str]] | None = None,
        app_context: str | None = None,
    ) -> str:
        """A real EHR launch: ask the authorization server for a launch token, then `{launch}?iss=…&launch=…`."""
        s = self.settings
        if not s.auth_url:
            raise CdsCallError("no SMART authorization server is configured for launches")
        data: dict[str, Any] = {"patient": patient}
        if encounter:
            data["encounter"] = encounter
        if fhir_context:
            data["fhirContext"] = fhir_context
        if s.tenant:
            data["tenant"] = s.tenant
        user = self.user_id()
        if user:
            data["user"] = user
        url = s.auth_url.rstrip("/") + "/launch-token"
        try:
            answer = self.http.post(url, json={**data, "appContext": app_context} if app_context else data, timeout=10)
            if answer.status_code == 400 and app_context and "appContext" in answer.text:
                # the sandbox authorization server does not carry appContext: launch without it (as some EHRs do)
                answer = self.http.post(url, json=data, timeout=10)
            answer.raise_for_status()
            launch = answer.json()["launch"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise CdsCallError(f"the authorization server did not issue a launch ({type(exc).__name__})") from None
        iss = s.launch_iss or s.auth_url.rstrip("/") + "/fhir/R4"
        separator = "&" if "?" in app_launch_url else "?"
        return f"{app_launch_url}{separator}{urlencode({'iss': iss, 'launch': launch})}"


def create_app(settings: SimulatorSettings) -> Flask:
    """The simulator's Flask app (sandbox only)."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = uuid.uuid4().hex  # no sessions are used; set so nothing else invents one
    app.config["SESSION_COOKIE_NAME"] = "ehr_sim"
    sim = Simulator(settings)
    app.extensions["ehr_sim"] = sim
    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.tests["web_url"] = _is_web_url

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"settings": sim.settings}

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(ok=True)

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        return jsonify(sim.settings.key.jwks())

    @app.get("/")
    def index() -> str:
        error = None
        patients: list[Any] = []
        try:
            with sim.fhir() as client:
                patients = schedule(client)
        except PtguardError as exc:
            error = exc.one_line()
        return render_template("index.html", patients=patients, error=error, tab="schedule")

    @app.post("/sign")
    def sign() -> Response:
        patient, encounter = request.form.get("patient", ""), request.form.get("encounter", "")
        if not patient or not encounter:
            abort(400)
        record = sim.sign(patient, encounter)
        return redirect(f"/calls/{record.id}", code=303)  # type: ignore[return-value]

    def _record(call_id: str) -> CallRecord:
        record = sim.calls.get(call_id)
        if record is None:
            abort(404)
        return record

    def _card(record: CallRecord) -> dict[str, Any]:
        card_id = request.form.get("card", "")
        for card in record.cards:
            if card.get("uuid") == card_id:
                return card
        abort(400)

    @app.get("/calls/<call_id>")
    def call(call_id: str) -> str:
        record = _record(call_id)
        return render_template("call.html", call=record, tab="schedule")

    @app.post("/calls/<call_id>/accept")
    def accept(call_id: str) -> Response:
        record = _record(call_id)
        card = _card(record)
        wanted = request.form.get("suggestion", "")
        suggestion = next((s for s in card.get("suggestions") or [] if s.get("uuid") == wanted), None)
        if suggestion is None:
            abort(400)
        applied = sim.apply_actions([a for a in suggestion.get("actions") or [] if isinstance(a, dict)])
        message = sim.send_feedback(
            record, {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": wanted}]}
        )
        record.messages.append(
            f"Accepted “{suggestion.get('label', 'suggestion')}”: {message}"
            + (f"; {', '.join(applied)}" if applied else "")
        )
        return redirect(f"/calls/{record.id}", code=303)  # type: ignore[return-value]

    @app.post("/calls/<call_id>/override")
    def override(call_id: str) -> Response:
        record = _record(call_id)
        card = _card(record)
        item: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden"}
        code = request.form.get("reason", "")
        reason = next((r for r in card.get("overrideReasons") or [] if r.get("code") == code), None)
        comment = request.form.get("comment", "").strip()
        if reason is not None or comment:
            item["overrideReason"] = {}
            if reason is not None:
                item["overrideReason"]["reason"] = reason
            if comment:
                item["overrideReason"]["userComment"] = comment[:500]
        message = sim.send_feedback(record, item)
        record.messages.append(f"Overrode “{card.get('summary', '')}”: {message}")
        return redirect(f"/calls/{record.id}", code=303)  # type: ignore[return-value]

    @app.post("/calls/<call_id>/launch")
    def launch(call_id: str) -> Response:
        record = _record(call_id)
        card = _card(record)
        try:
            link = (card.get("links") or [])[int(request.form.get("link", "-1"))]
        except (ValueError, IndexError):
            abort(400)
        if link.get("type") != "smart" or not _is_web_url(link.get("url")):
            abort(400)
        try:
            url = sim.launch_url(
                link["url"],
                patient=record.patient_id,
                encounter=record.encounter_id,
                app_context=link.get("appContext"),
            )
        except CdsCallError as exc:
            record.messages.append(f"SMART launch failed: {exc}")
            return redirect(f"/calls/{record.id}", code=303)  # type: ignore[return-value]
        return redirect(url, code=303)  # type: ignore[return-value]

    @app.get("/worklist")
    def worklist() -> str:
        rows: list[Any] = []
        notes: list[str] = []
        try:
            with sim.fhir() as client:
                rows, notes = denied_claims(client, database_url=sim.settings.database_url)
        except PtguardError as exc:
            notes.append(exc.one_line())
        return render_template("worklist.html", rows=rows, notes=notes, tab="worklist")

    @app.post("/worklist/launch")
    def worklist_launch() -> Response | tuple[str, int]:
        patient = request.form.get("patient", "")
        claim, claim_response = request.form.get("claim", ""), request.form.get("claim_response", "")
        if not patient or not (claim or claim_response) or not sim.settings.app_launch_url:
            abort(400)
        fhir_context = [{"reference": f"Claim/{claim}"}] if claim else []
        if claim_response:
            fhir_context.append({"reference": f"ClaimResponse/{claim_response}"})
        try:
            url = sim.launch_url(sim.settings.app_launch_url, patient=patient, fhir_context=fhir_context)
        except CdsCallError as exc:
            return render_template("error.html", message=str(exc), tab="worklist"), 502
        return redirect(url, code=303)  # type: ignore[return-value]

    return app
