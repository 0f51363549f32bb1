"""SMART app routes: launch, callback, worklist, denied-claim view, documentation check, appeal editor, PDF, write-back."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from datetime import date, datetime
from typing import Any

import requests
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException

from ptguard.appeals import cases
from ptguard.appeals.advice import external_review_advice
from ptguard.appeals.assemble import assemble
from ptguard.appeals.gather import AppealSource, build_source, gather_from_server
from ptguard.appeals.render import render_packet
from ptguard.appeals.writeback import writeback
from ptguard.chart import build_visits
from ptguard.denials.deadlines import canonical_level, compute_deadline, next_level, payer_type
from ptguard.denials.decode import Denial, decode_or_note
from ptguard.errors import FhirServerError, InputError, NotFoundError, PtguardError, debugging
from ptguard.fhir.client import FhirClient
from ptguard.fhir.fetch import encounter_queries, fetch, merge
from ptguard.fhir.load import LoadResult
from ptguard.fhir.refs import ref_string
from ptguard.rules.engine import evaluate
from smart_app import sessions, smart
from smart_app.smart import SmartConfiguration, SmartError, TokenSet

log = logging.getLogger("ptguard.smart_app")
bp = Blueprint("smart_app", __name__, url_prefix="/app", template_folder="templates", static_folder="static")
DISCOVERY_TTL = 600


# The app's pages carry PHI: scripts, styles and images only from the app itself, no plug-ins, no <base> rewrites;
# no Referer (page URLs name claims and patients' resources) and no caching. Framing stays allowed: EHRs embed
# SMART apps in an iframe of their own origin, which ptguard cannot know in advance.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@bp.after_request
def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


class NeedLaunchError(SmartError):
    """No signed-in session for this request."""


# A FHIR id (R4: [A-Za-z0-9\-\.]{1,64}), matched in full: no trailing newline, and not "." or ".." (path segments).
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
ID_ARGS = ("cr_id", "claim_id", "encounter_id", "case_id", "item_id")


def valid_id(value: object) -> bool:
    """A FHIR / case id: the whole string is 1-64 of A-Z a-z 0-9 - . and it is not made only of dots."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None and value.strip(".") != ""


@bp.url_value_preprocessor
def _check_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    for name in ID_ARGS:
        if values and name in values and not valid_id(values[name]):
            raise NotFoundError("that is not a valid id (1-64 letters, digits, '-' or '.')")


# ------------------------------------------------------------------ app state


def _ext() -> dict[str, Any]:
    ext: dict[str, Any] = current_app.extensions["smart_app"]
    return ext


def _db() -> str:
    return str(current_app.config["DATABASE_URL"])


def _issuers() -> dict[str, smart.IssuerConfig]:
    ext = _ext()
    if ext.get("issuers") is None:
        ext["issuers"] = smart.load_issuers(current_app.config.get("PTGUARD_SMART_ISSUERS") or smart.env_issuers())
    issuers: dict[str, smart.IssuerConfig] = ext["issuers"]
    return issuers


def _discover(cfg: smart.IssuerConfig) -> SmartConfiguration:
    cache: dict[str, tuple[float, SmartConfiguration]] = _ext()["discovery"]
    hit = cache.get(cfg.fhir_base)
    if hit and hit[0] > time.time():
        return hit[1]
    found = smart.discover(cfg.fhir_base, http=_ext()["http"])
    cache[cfg.fhir_base] = (time.time() + DISCOVERY_TTL, found)
    return found


def _redirect_uri() -> str:
    configured = current_app.config.get("SMART_REDIRECT_URI")
    return str(configured) if configured else url_for("smart_app.callback", _external=True)


def _today() -> date:
    return datetime.now().astimezone().date()


def _tokens() -> sessions.TokenStore:
    """The session store (database-backed, shared by every worker), built on first use from the app's config."""
    ext = _ext()
    key = (_db(), str(current_app.config.get("SECRET_KEY") or ""))
    store: sessions.TokenStore | None = ext.get("tokens")
    if store is None or ext.get("tokens_key") != key:
        store = sessions.TokenStore(key[0], key[1])
        ext["tokens"], ext["tokens_key"] = store, key
    return store


def _found() -> tuple[TokenSet, str] | None:
    """This request's session (read from the store once per request)."""
    if "smart_found" not in g:
        g.smart_found = _tokens().get(session.get("sid"))
    found: tuple[TokenSet, str] | None = g.smart_found
    return found


def _current() -> tuple[str, TokenSet, str]:
    sid = session.get("sid")
    found = _found()
    if found is None:
        raise NeedLaunchError(
            "There is no signed-in session for this page (it ended, or the browser did not keep the session cookie).",
            title="Please launch the app",
            action="Open ptguard again from the EHR, or start a standalone launch.",
        )
    ts, csrf = found
    return str(sid), ts, csrf


def _patient_scoped(ts: TokenSet) -> bool:
    """A patient-scoped launch: the token names a patient and every granted resource scope is `patient/…`."""
    if not ts.context.patient:
        return False
    kinds = {x.split("/", 1)[0] for x in ts.scopes.items if "/" in x}
    kinds &= {"patient", "user", "system"}
    return "patient" in kinds and not kinds & {"user", "system"}


def _scope(ts: TokenSet) -> cases.CaseScope:
    """The cases this session may see: its own EHR's (FHIR base), and only its patient's after a patient launch."""
    return cases.CaseScope(ts.fhir_base, ts.context.patient if _patient_scoped(ts) else None)


def _case(case_id: str) -> tuple[cases.CaseView, TokenSet]:
    """A case of this session's EHR (and patient); any other → the 404 page."""
    _sid, ts, _ = _current()
    return cases.get_case(_db(), case_id, scope=_scope(ts)), ts


def _actor(ts: TokenSet) -> str:
    if ts.fhir_user:
        return ts.fhir_user
    return "smart-session:" + hashlib.sha256(ts.access_token.encode()).hexdigest()[:12]


def _client() -> tuple[FhirClient, TokenSet]:
    """A FHIR client with a live token: refreshed before expiry, else a clean re-launch."""
    sid, ts, csrf = _current()
    if ts.needs_refresh():
        if ts.can_refresh() and ts.refresh_token:
            cfg = smart.find_issuer(_issuers(), ts.fhir_base)
            try:
                token = smart.refresh(cfg, SmartConfiguration.from_dict(ts.smart), ts.refresh_token)
            except SmartError:
                # another worker may have refreshed this session a moment ago (the old refresh token is spent)
                again = _tokens().get(sid)
                if again is None or again[0].access_token == ts.access_token or again[0].needs_refresh():
                    raise
                ts = again[0]
                g.smart_found = again
            else:
                ts.update(token)
                _tokens().save(sid, ts, csrf)
                g.smart_found = (ts, csrf)
                log.info("smart session refreshed")
        elif ts.expires_in() <= 0:
            raise SmartError(
                "Your access to the EHR has expired and the EHR gave no refresh token.",
                title="Session expired",
                action="Launch the app again from the EHR to continue; your appeal drafts are saved.",
            )
    return FhirClient(ts.fhir_base, token=ts.access_token, timeout=15), ts


def _check_csrf() -> None:
    _sid, _ts, csrf = _current()
    sent = request.form.get("csrf", "")
    # Bytes, not str: compare_digest refuses non-ASCII strings (a TypeError would be a 500 any page could cause).
    if not secrets.compare_digest(sent.encode("utf-8", "surrogatepass"), str(csrf).encode("utf-8", "surrogatepass")):
        abort(400, description="The form was stale or came from elsewhere; reload the page and try again.")


@bp.app_context_processor
def _inject() -> dict[str, Any]:
    if request.blueprint != "smart_app":
        return {}
    found = _found()
    if found is None:
        return {"ts": None, "csrf": "", "features": [], "banner": None}
    ts, csrf = found
    return {"ts": ts, "csrf": csrf, "features": smart.features(ts), "banner": session.get("banner")}


# ------------------------------------------------------------------ errors


def _page(title: str, message: str, action: str | None, status: int) -> tuple[str, int]:
    return render_template("smart_app/error.html", title=title, message=message, action=action), status


@bp.errorhandler(SmartError)
def _smart_error(exc: SmartError) -> tuple[str, int]:
    status = 401 if isinstance(exc, NeedLaunchError) else 400
    log.info("smart app: %s", exc.title)
    return _page(exc.title, exc.message, exc.action, status)


@bp.errorhandler(PtguardError)
def _core_error(exc: PtguardError) -> tuple[str, int]:
    if isinstance(exc, FhirServerError) and exc.status == 401:
        return _page(
            "Session expired",
            "The EHR no longer accepts this session's access token.",
            "Launch the app again from the EHR to continue; your appeal drafts are saved.",
            401,
        )
    if isinstance(exc, FhirServerError) and exc.status == 403:
        return _page(
            "The EHR refused access",
            f"The FHIR server refused a read ({exc.status}): {exc.one_line()}",
            "The granted scopes may not cover this resource type. Ask for the missing scope or launch again.",
            403,
        )
    status = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InputError) else 502
    return _page(
        "Something is missing" if status == 404 else "The request could not be completed", exc.one_line(), None, status
    )


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return _page(exc.name, exc.description or exc.name, None, exc.code or 500)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int]:
    log.error("smart app: unexpected %s", type(exc).__name__)
    return _page(
        "Something went wrong",
        "An unexpected error occurred. It was logged without any patient data.",
        "Try again, or launch the app again.",
        500,
    )


# ------------------------------------------------------------------ launch and callback


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The public keys of the app's private_key_jwt registrations (the "JWK Set URL" EHRs ask for)."""
    keys: dict[str, dict[str, Any]] = {}
    for cfg in _issuers().values():
        if cfg.auth_method != "private_key_jwt":
            continue
        key = cfg.key()
        public = key.as_dict(private=False)
        public.setdefault("kid", key.thumbprint())
        public["alg"] = cfg.algorithm()
        public["use"] = "sig"
        keys[str(public["kid"])] = public
    response = jsonify({"keys": list(keys.values())})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/launch")
def launch() -> Response:
    """EHR launch (`iss` + `launch`) or standalone launch (`iss` optional when one EHR is configured)."""
    iss = request.args.get("iss", "").strip()
    launch_token = request.args.get("launch")
    issuers = _issuers()
    if not iss:
        distinct = {c.fhir_base for c in issuers.values()}
        if len(distinct) != 1:
            raise SmartError(
                "The launch did not say which EHR to use (no `iss`).",
                title="Unknown EHR",
                action="Start the app from the EHR, or add ?iss=<FHIR base> to the launch URL.",
            )
        iss = distinct.pop()
    cfg = smart.find_issuer(issuers, iss)
    config = _discover(cfg)
    scopes = smart.requested_scopes(cfg, config, ehr_launch=bool(launch_token))
    state, verifier = sessions.new_state(), secrets.token_urlsafe(64)
    sessions.save_state(
        _db(),
        state,
        {
            "fhir_base": cfg.fhir_base,
            "verifier": verifier,
            "scopes": scopes,
            "ehr_launch": bool(launch_token),
            "redirect_uri": _redirect_uri(),
            "smart": config.to_dict(),
            "next": request.args.get("next") if (request.args.get("next") or "").startswith("/app/") else None,
        },
    )
    session["pending_state"] = state  # convenience only: the callback works without this cookie
    url = smart.authorize_url(
        cfg, config, redirect_uri=_redirect_uri(), scopes=scopes, state=state, verifier=verifier, launch=launch_token
    )
    log.info("smart launch started (%s)", "ehr" if launch_token else "standalone")
    return redirect(url)  # type: ignore[return-value]


@bp.get("/callback")
def callback() -> Response | tuple[str, int]:
    """Authorization response: state checked against the server-side record (not the cookie), code exchanged."""
    state = request.args.get("state")
    if not state:
        return _page(
            "Sign-in could not be completed",
            "The EHR's answer carried no state, so it cannot be matched to a launch.",
            "Launch the app again from the EHR.",
            400,
        )
    data, why = sessions.take_state(_db(), state)
    if data is None:
        return _page(
            "This sign-in link has expired" if why == "expired" else "Sign-in could not be matched",
            "The launch this answer belongs to has expired (launches are kept for 10 minutes)."
            if why == "expired"
            else "No launch is waiting for this answer: it was already used, or it came from elsewhere.",
            "Launch the app again from the EHR.",
            400,
        )
    if request.args.get("error"):
        return _page(
            "The EHR did not authorize the app",
            f"The EHR answered {request.args.get('error')}: {request.args.get('error_description') or 'no description'}.",
            "Launch again, or ask your administrator to check the app's registration.",
            400,
        )
    code = request.args.get("code")
    if not code:
        return _page(
            "Sign-in could not be completed",
            "The EHR's answer carried no authorization code.",
            "Launch the app again.",
            400,
        )
    cfg = smart.find_issuer(_issuers(), data["fhir_base"])
    config = SmartConfiguration.from_dict(data["smart"])
    token = smart.exchange_code(cfg, config, code=code, verifier=data["verifier"], redirect_uri=data["redirect_uri"])
    identity = smart.check_id_token(token.get("id_token"), cfg, config, http=_ext()["http"])
    ts = smart.token_set(token, cfg, config, data["scopes"], identity)
    old = session.get("sid")
    _tokens().drop(old)
    sid, _csrf = _tokens().put(ts)
    session.clear()
    session["sid"] = sid
    session["banner"] = None
    cases.record_event(
        _db(),
        None,
        actor=_actor(ts),
        action="smart.signed-in",
        detail={"ehr_launch": data["ehr_launch"], "granted": len(ts.scopes.items)},
    )
    if ts.context.need_patient_banner or ts.context.patient:
        session["banner"] = _banner(ts)
    return redirect(_landing(ts, data))  # type: ignore[return-value]


def _banner(ts: TokenSet) -> dict[str, str] | None:
    if not ts.context.patient or not ts.context.need_patient_banner:
        return None
    try:
        with FhirClient(ts.fhir_base, token=ts.access_token, timeout=10) as client:
            p = client.read("Patient", ts.context.patient)
    except PtguardError:
        return None
    names = p.get("name") or [{}]
    given = " ".join(names[0].get("given") or [])
    return {"name": f"{given} {names[0].get('family', '')}".strip(), "birth_date": str(p.get("birthDate", ""))}


def _landing(ts: TokenSet, data: dict[str, Any]) -> str:
    """Where a launch lands: fhirContext/appContext ClaimResponse → the claim, Encounter → the check, else the worklist."""
    ctx = ts.context
    app = ctx.app_context or {}
    if app.get("view") == "check" and ref_string(app.get("encounter")):
        return url_for("smart_app.check", encounter_id=str(app["encounter"]).split("/")[-1])
    if app.get("view") == "appeal" and app.get("claimResponse"):
        return url_for("smart_app.start_appeal", cr_id=str(app["claimResponse"]).split("/")[-1])
    cr = ctx.reference("ClaimResponse")
    if cr:
        return url_for("smart_app.claim", cr_id=cr)
    claim = ctx.reference("Claim")
    if claim:
        return url_for("smart_app.claim_by_claim", claim_id=claim)
    if data.get("next"):
        return str(data["next"])
    if ctx.encounter:
        return url_for("smart_app.check", encounter_id=ctx.encounter)
    return url_for("smart_app.worklist", picker="1" if data.get("ehr_launch") and not ctx.patient else None)


@bp.post("/logout")
def logout() -> Response:
    """Sign out (POST with the CSRF token: a link or image elsewhere cannot end the session)."""
    _check_csrf()
    _tokens().drop(session.get("sid"))
    session.clear()
    return redirect(url_for("smart_app.worklist"))  # type: ignore[return-value]


# ------------------------------------------------------------------ worklist


@bp.get("/")
def worklist() -> str:
    """The biller's front door: the denial worklist and the open appeal cases."""
    from ptguard.remit.worklist import list_work_items

    _sid, ts, _ = _current()
    scope = _scope(ts)
    items = list_work_items(_db(), today=_today(), exclude=("resolved", "dismissed", "reversed"))
    open_items = [i for i in items if _item_visible(i, scope)]
    more = max(0, len(open_items) - WORKLIST_LIMIT)
    open_items = open_items[:WORKLIST_LIMIT]
    case_rows = cases.list_cases(_db(), scope=scope)
    for i in open_items:
        i["code_labels"] = _code_labels(i)
        i["chart_matched"] = bool(i.get("matched")) and bool((i.get("patient") or {}).get("reference"))
    return render_template(
        "smart_app/worklist.html",
        items=open_items,
        cases=case_rows,
        picker=request.args.get("picker") == "1",
        today=_today(),
        more=more,
    )


WORKLIST_LIMIT = 500  # rows shown (soonest deadline first); 20,000 rows made a 5 MB page that took seconds


def _item_visible(item: dict[str, Any], scope: cases.CaseScope) -> bool:
    """A worklist item this session may see: one from this EHR (or from an 835 tied to no EHR), and only this
    patient's after a patient launch."""
    patient_ref = (item.get("patient") or {}).get("reference")
    return scope.allows(str(item.get("fhir_server") or scope.fhir_server), patient_ref)


@bp.get("/item/<item_id>")
def work_item(item_id: str) -> str:
    """A worklist denial as received (835): decoded from the stored ClaimResponse, even when no chart claim matched."""
    from ptguard.remit.worklist import get_work_item

    _sid, ts, _ = _current()
    scope = _scope(ts)
    item = get_work_item(_db(), item_id, today=_today())
    patient_ref = (item.get("patient") or {}).get("reference")
    if not _item_visible(item, scope):
        raise NotFoundError(f"no work item {item_id!r}")
    denial: Denial | None = None
    resource = item.get("claim_response_resource")
    if isinstance(resource, dict):
        try:  # data that trips the reader is a Denial saying it could not be read, not an empty page
            denial = decode_or_note(resource, payer_hint=(item.get("payer") or {}).get("id"))
        except PtguardError:
            denial = None
    matched = bool(item.get("matched")) and bool(patient_ref) and bool(item.get("claim_response"))
    return render_template("smart_app/item.html", item=item, denial=denial, matched=matched, codes=_code_labels(item))


def _code_labels(item: dict[str, Any]) -> list[str]:
    """The item's reason codes as a biller writes them: `CO-50`, `N130` (not the stored dicts)."""
    out: list[str] = []
    for c in item.get("codes") or []:
        if isinstance(c, dict) and c.get("code"):
            label = f"{c['group']}-{c['code']}" if c.get("group") else str(c["code"])
        elif isinstance(c, str | int):
            label = str(c)
        else:
            continue
        if label not in out:
            out.append(label)
    return out


# ------------------------------------------------------------------ denied-claim view


def _load_source(cr_id: str) -> tuple[AppealSource | None, Denial, list[str], dict[str, Any], LoadResult]:
    client, _ts = _client()
    with client:
        load, cr, findings = gather_from_server(client, cr_id, budget_seconds=20)
    notes = [f.message for f in findings]
    try:
        src = build_source(load, f"ClaimResponse/{cr.get('id')}")
        return src, src.denial, notes, cr, load
    except NotFoundError as exc:
        from ptguard.fhir.refs import ResourceIndex

        denial = decode_or_note(cr, index=ResourceIndex.from_load(load))
        return None, denial, [*notes, exc.one_line()], cr, load


def _after_upheld(case: cases.CaseView, ptype: str, notice: date) -> tuple[str | None, date | None]:
    """The level that follows an upheld case, and the date of that decision (which the next level runs from).

    The decision date is the local calendar date of the audit entry that recorded the case as decided.
    """
    level = next_level(ptype, case.level or "", notice) if case.level else None
    decided = [a for a in case.audit if a["action"] == "case.status" and (a.get("detail") or {}).get("to") == "decided"]
    when = datetime.fromisoformat(decided[-1]["at"]).astimezone().date() if decided else None
    return level, when


def _upheld(case_views: list[cases.CaseView]) -> list[cases.CaseView]:
    return [c for c in case_views if c.status == "decided" and c.decision == "upheld"]


def _next_step(denial: Denial, payer_id: str, case_views: list[cases.CaseView]) -> dict[str, Any]:
    """The level to file next and its deadline; after an upheld decision, the following level."""
    today = _today()
    upheld = _upheld(case_views)
    out: dict[str, Any] = {"payer_type": payer_type(payer_id), "internal_exhausted": False}
    if denial.notice_date is None:
        out["message"] = "The denial has no date; the deadline cannot be computed."
        return out
    if denial.path in ("none", "resubmit"):
        out["message"] = "No appeal deadline: " + denial.why
        return out
    level = None
    notice = denial.notice_date
    if upheld:
        last = upheld[-1]
        level, decided = _after_upheld(last, payer_type(payer_id), notice)
        if level is None or decided is None:
            out["message"] = "Every appeal level of this payer type has been used."
            return out
        notice = decided
        out["decision_note"] = (
            f"The {last.level} was upheld (recorded {notice.isoformat()}); the next level runs from that decision."
        )
        out["internal_exhausted"] = level in ("external-review", "reconsideration", "alj", "state-fair-hearing")
    elif denial.path == "reopen" and payer_type(payer_id) == "medicare":
        level = "reopening"
    out["deadline"] = compute_deadline(payer_id, notice, today=today, level=level)
    return out


def _list_on_worklist(cr: dict[str, Any], load: Any, fhir_base: str, payer_id: str | None) -> None:
    """A native denial opened in the app goes on the worklist too (once; a failure here never blocks the view)."""
    from ptguard.fhir.refs import ResourceIndex
    from ptguard.remit.intake import ingest_claim_response

    try:
        index = ResourceIndex.from_load(load) if load is not None else None
        ingest_claim_response(cr, db_url=_db(), today=_today(), index=index, fhir_server=fhir_base, payer_id=payer_id)
    except Exception as exc:  # malformed data, a locked database...: the claim page still shows
        if debugging():
            raise
        log.warning("denial not put on the worklist (%s)", type(exc).__name__)


@bp.get("/claim/<cr_id>")
def claim(cr_id: str) -> str:
    """The denied claim: lines, codes in plain words, category, path and why, next step and deadline, advice."""
    src, denial, notes, cr, load = _load_source(cr_id)
    _sid, ts, _ = _current()
    payer_id = src.payer_id if src else "default-commercial"
    if denial.denied:
        _list_on_worklist(cr, load, ts.fhir_base, payer_id if src else None)
    case_views = cases.cases_for(_db(), denial.reference, scope=_scope(ts))
    step = _next_step(denial, payer_id, case_views)
    advice = None
    if src is not None and denial.denied:
        same = cases.count_same_denials(_db(), payer_id=payer_id, category=denial.category, exclude=denial.reference)
        advice = external_review_advice(
            denial, src.evaluations, payer_id=payer_id, internal_exhausted=step["internal_exhausted"], same_denials=same
        )
    return render_template(
        "smart_app/claim.html",
        denial=denial,
        src=src,
        notes=notes,
        cr_id=cr.get("id"),
        step=step,
        advice=advice,
        cases=case_views,
        payer_id=payer_id,
    )


@bp.get("/claim-for/<claim_id>")
def claim_by_claim(claim_id: str) -> Response:
    """A launch with only a Claim in fhirContext: find its ClaimResponse."""
    client, _ts = _client()
    with client:
        found = client.search("ClaimResponse", {"request": f"Claim/{claim_id}"})
    if not found:
        raise NotFoundError(f"no ClaimResponse for Claim/{claim_id} on the FHIR server yet: nothing to appeal")
    return redirect(url_for("smart_app.claim", cr_id=found[0]["id"]))  # type: ignore[return-value]


@bp.route("/claim/<cr_id>/appeal", methods=["GET", "POST"])
def start_appeal(cr_id: str) -> Response | str:
    """Open the draft appeal of this denial. GET only opens an existing draft or shows the "Build the appeal letter"
    form; the case is assembled and stored only by a POST carrying the CSRF token (a link or image cannot)."""
    _sid, ts, _ = _current()
    if request.method == "POST":
        _check_csrf()
    existing = [c for c in cases.cases_for(_db(), f"ClaimResponse/{cr_id}", scope=_scope(ts)) if c.status == "draft"]
    if existing and request.form.get("level") in (None, "", existing[-1].level):
        return redirect(url_for("smart_app.appeal", case_id=existing[-1].id))  # type: ignore[return-value]
    if request.method != "POST":
        return render_template("smart_app/start.html", cr_id=cr_id)
    src, _denial, _notes, _cr, _load = _load_source(cr_id)
    if src is None:
        raise NotFoundError("the letter cannot be assembled: " + "; ".join(_notes[-1:]))
    level = request.form.get("level") or None
    decision = None
    upheld = _upheld(cases.cases_for(_db(), f"ClaimResponse/{cr_id}", scope=_scope(ts)))
    if level and upheld and src.denial.notice_date:
        following, decided = _after_upheld(upheld[-1], payer_type(src.payer_id), src.denial.notice_date)
        decision = decided if following == canonical_level(level) else None
    letter = assemble(src, today=_today(), level=level, decision_date=decision)
    case_id = cases.create_case(_db(), letter, actor=_actor(ts), fhir_server=ts.fhir_base)
    return redirect(url_for("smart_app.appeal", case_id=case_id))  # type: ignore[return-value]


# ------------------------------------------------------------------ documentation check


@bp.get("/check/<encounter_id>")
def check(encounter_id: str) -> str:
    """The rules engine's findings for one encounter: evidence quoted, gaps listed."""
    client, _ts = _client()
    with client:
        enc = client.read("Encounter", encounter_id)
        patient = (ref_string(enc.get("subject")) or "").split("/")[-1]
        if not patient:
            raise NotFoundError("the Encounter names no patient")
        result = fetch(client, encounter_queries(patient, encounter_id), budget_seconds=15)
    first = LoadResult(source="encounter")
    first.add(enc)
    _builder, visits = build_visits(merge(first, result.load), encounter_id=encounter_id, validate_limit=0)
    if not visits:
        raise NotFoundError(f"Encounter/{encounter_id} has no therapy services to check")
    evaluation = evaluate(visits[0])
    return render_template(
        "smart_app/check.html", ev=evaluation, visit=visits[0], notes=[f.message for f in result.findings]
    )


# ------------------------------------------------------------------ appeal editor, PDF, write-back, status


def _appeal_page(
    view: cases.CaseView, *, kept: dict[str, tuple[str, bool]] | None = None, save_error: str | None = None
) -> str:
    next_info = None
    if view.status == "decided" and view.decision == "upheld" and view.level:
        next_info = next_level(payer_type(view.payer_id or ""), view.level, _today())
    return render_template(
        "smart_app/appeal.html",
        case=view,
        letter=view.letter,
        next_level=next_info,
        decisions=cases.DECISIONS,
        kept=kept or {},
        save_error=save_error,
    )


@bp.get("/appeal/<case_id>")
def appeal(case_id: str) -> str:
    view, _ts = _case(case_id)
    return _appeal_page(view)


@bp.post("/appeal/<case_id>/edit")
def edit(case_id: str) -> Response | tuple[str, int]:
    _check_csrf()
    view, ts = _case(case_id)
    edits: dict[str, tuple[str, bool]] = {}
    for s in view.letter.sentences():
        text = request.form.get(f"text-{s.id}")
        if text is None:
            continue
        keep = request.form.get(f"keep-{s.id}") == "1"
        if " ".join(text.split()) != s.text or (not keep and s.sources):
            edits[s.id] = (text, keep)
    if not edits:
        flash("No changes to save.")
        return redirect(url_for("smart_app.appeal", case_id=case_id))  # type: ignore[return-value]
    try:
        cases.save_edits(_db(), case_id, edits, actor=_actor(ts))
    except (InputError, NotFoundError) as exc:
        why, status_code = exc.one_line(), 400
    except Exception as exc:  # the store failed: the biller's words must not be lost with it
        if debugging():
            raise
        log.error("smart app: saving letter edits failed (%s)", type(exc).__name__)
        why, status_code = "the edits could not be stored (a database error); try again in a moment", 503
    else:
        flash(f"Saved {len(edits)} edited sentence(s).")
        return redirect(url_for("smart_app.appeal", case_id=case_id))  # type: ignore[return-value]
    # Not saved: the page again, the biller's text in its fields, and why.
    try:
        current = cases.get_case(_db(), case_id, scope=_scope(ts))
    except Exception:  # the store is down: show the case as it was read before the save
        current = view
    if status_code == 400 and current.status != "draft":  # marked sent meanwhile (or before): a conflict
        status_code = 409
    return _appeal_page(current, kept=edits, save_error=f"Your edits were not saved: {why}."), status_code


@bp.get("/appeal/<case_id>/packet.pdf")
def packet(case_id: str) -> Response:
    view, ts = _case(case_id)
    pdf = render_packet(view.letter, today=_today()).pdf
    cases.record_event(_db(), case_id, actor=_actor(ts), action="packet.downloaded", detail={"bytes": len(pdf)})
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="appeal-{case_id[:8]}.pdf"'},
    )


@bp.post("/appeal/<case_id>/writeback")
def do_writeback(case_id: str) -> Response:
    _check_csrf()
    view, _ts = _case(case_id)
    client, ts = _client()
    # One write-back per case: a double submit (or a second worker) finds the claim and creates nothing.
    claim = cases.begin_writeback(_db(), case_id)
    if claim.state == "busy":
        client.close()
        flash("This packet is being saved to the chart by another request; reload the page in a moment.", "warning")
        return redirect(url_for("smart_app.appeal", case_id=case_id))  # type: ignore[return-value]
    if claim.state == "done":
        client.close()
        flash(f"Already saved to the chart as {claim.document_ref} (task {claim.task_ref}); nothing was created again.")
        return redirect(url_for("smart_app.appeal", case_id=case_id))  # type: ignore[return-value]
    try:
        pdf = render_packet(view.letter, today=_today()).pdf
        with client:
            result = writeback(
                client,
                view.letter,
                pdf,
                scopes=ts.scopes,
                case_id=case_id,
                existing_document=claim.document_ref,
                existing_task=claim.task_ref,
            )
    except BaseException:
        try:
            cases.end_writeback(_db(), case_id, claim.token)
        except Exception as exc:  # the store is down too: the claim runs out on its own; the first error is shown
            log.error("smart app: could not release the write-back claim (%s)", type(exc).__name__)
        raise
    cases.record_writeback(
        _db(),
        case_id,
        actor=_actor(ts),
        document_ref=result.document_reference,
        task_ref=result.task,
        skipped=len(result.skipped),
        token=claim.token,
    )
    if result.document_reference and result.document_reference != claim.document_ref:
        flash(f"Saved the packet to the chart as {result.document_reference}.")
    if result.task and result.task != claim.task_ref:
        flash(f"Created the appeal task {result.task} with its due date.")
    for why in result.skipped:
        flash(why, "warning")
    return redirect(url_for("smart_app.appeal", case_id=case_id))  # type: ignore[return-value]


@bp.post("/appeal/<case_id>/status")
def status(case_id: str) -> Response:
    _check_csrf()
    _view, ts = _case(case_id)
    cases.set_status(
        _db(), case_id, request.form.get("status", ""), actor=_actor(ts), decision=request.form.get("decision") or None
    )
    flash("Status updated.")
    return redirect(url_for("smart_app.appeal", case_id=case_id))  # type: ignore[return-value]


def init_state(app: Any) -> None:
    """Per-app SMART state: token store, discovery cache, HTTP session, issuer allow-list (loaded lazily)."""
    app.extensions["smart_app"] = {
        "tokens": None,  # sessions.TokenStore, built on first use (DATABASE_URL and SECRET_KEY are final by then)
        "discovery": {},
        "http": requests.Session(),
        "issuers": None,
    }
