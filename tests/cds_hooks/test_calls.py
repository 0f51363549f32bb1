"""Service calls: discovery, prefetch in all its real-world shapes, fetching within the budget, cards, errors, CORS."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import responses
from cdshelpers import (
    DISCOVERY_SCHEMA,
    FHIR,
    LAUNCH,
    REQUEST_SCHEMA,
    SCENARIOS,
    Keys,
    TokenFactory,
    assert_valid_response,
    call_service,
    card_topics,
    fake_for,
    full_prefetch,
    hook_request,
    issuers_config,
    patient_of,
    post,
    therapy_draft_orders,
)
from fakefhir import FakeFhir

from ptguard.cds import SERVICES, discovery, discovery_errors, prefetch_token_errors
from ptguard.store.db import session_scope
from ptguard.store.models import CardIssued, WorkItem
from tests.shared_data import PUBLIC_FHIR, require

SIGN = "ptguard-97530-signing"
PUBLIC = PUBLIC_FHIR


def _setup(ident: str, service: str = SIGN) -> tuple[FakeFhir, str, str]:
    s = next(x for x in SCENARIOS if x["id"] == ident)
    fake = fake_for(ident)
    return fake, patient_of(fake, s["encounter"]), s["encounter"]


def _ctx(pid: str, enc: str | None) -> dict[str, Any]:
    ctx = {"userId": "Practitioner/prac-okafor", "patientId": pid}
    if enc:
        ctx["encounterId"] = enc
    return ctx


# ---------------------------------------------------------------------------------------------- discovery


def test_discovery_document(client: Any, token: TokenFactory) -> None:
    response = client.get("/cds-services", headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 200
    body = response.json
    assert not list(DISCOVERY_SCHEMA.iter_errors(body))
    assert discovery_errors(body) == []
    hooks = {s["id"]: s["hook"] for s in body["services"]}
    assert hooks == {
        "ptguard-97530-signing": "encounter-discharge",
        "ptguard-97530-order-sign": "order-sign",
        "ptguard-97530-note-sign": "ptguard-note-sign",
        "ptguard-97530-patient-view": "patient-view",
        "ptguard-denials": "patient-view",
    }
    signing = next(s for s in body["services"] if s["id"] == SIGN)
    assert signing["prefetch"]["encounter"] == "Encounter/{{context.encounterId}}"
    assert "status=active" in signing["prefetch"]["coverage"]
    # patient-scope services never use the optional encounterId token
    for s in body["services"]:
        if s["hook"] in ("patient-view", "order-sign"):
            assert all("encounterId" not in t for t in s["prefetch"].values()), s["id"]


@pytest.mark.parametrize(
    ("template", "hook", "fragment"),
    [
        ("Patient?_id={{context.draftOrders.entry}}", "order-sign", "only {{context.X}}"),
        ("ServiceRequest?_id={{context.draftOrders}}", "order-sign", "not a primitive"),
        ("Encounter/{{context.visitId}}", "encounter-discharge", "no context field"),
        ("Patient/{{patientId}}", "patient-view", "only {{context.X}}"),
        ("Patient/{{context.patientId}", "patient-view", "unbalanced"),
    ],
)
def test_invalid_prefetch_tokens_are_flagged(template: str, hook: str, fragment: str) -> None:
    errors = prefetch_token_errors(template, hook)
    assert errors and any(fragment in e for e in errors), errors


def test_valid_prefetch_tokens() -> None:
    assert prefetch_token_errors("Practitioner/{{userPractitionerId}}", "patient-view") == []
    assert prefetch_token_errors("Coverage?patient={{context.patientId}}&status=active", "order-sign") == []
    assert discovery_errors(discovery()) == []


def test_public_discovery_documents_token_rules() -> None:
    """Third-party discovery documents: the sandbox's keeps the 2.0 token rules; Da Vinci CRD's use nested
    FHIRPath-like tokens (`{{context.draftOrders.entry...}}`, a CRD extension 2.0 does not define) — flagged."""
    sandbox = PUBLIC / "cds-hooks" / "sandbox-cds-services" / "service-definitions.json"
    crd = PUBLIC / "davinci-crd" / "hl7-repo-hook-examples" / "CRDServices.json"
    require(sandbox)
    require(crd)
    assert discovery_errors(orjson.loads(sandbox.read_bytes())) == []
    errors = discovery_errors(orjson.loads(crd.read_bytes()))
    assert errors and all("only {{context.X}}" in e or "no context field" in e for e in errors)
    # order-dispatch has no encounterId in the hook library; CRD's template uses one
    assert any("order-dispatch has no context field 'encounterId'" in e for e in errors)
    assert any("{{context.draftOrders.entry" in e or "{{context.appointments.entry" in e for e in errors)


# ---------------------------------------------------------------------------------------------- CORS


def test_cors_on_discovery_post_and_options(client: Any, token: TokenFactory) -> None:
    origin = {"Origin": "https://ehr-app.example.org"}
    for path in ("/cds-services", f"/cds-services/{SIGN}", f"/cds-services/{SIGN}/feedback"):
        pre = client.options(
            path,
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 204, path
        assert pre.headers["Access-Control-Allow-Origin"] == origin["Origin"]
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    got = client.get("/cds-services", headers={**origin, "Authorization": f"Bearer {token()}"})
    assert got.headers["Access-Control-Allow-Origin"] == origin["Origin"]
    path = f"/cds-services/{SIGN}"
    posted = client.post(path, data=b"{", headers={**origin, "Authorization": f"Bearer {token(path)}"})
    assert posted.status_code == 400 and posted.headers["Access-Control-Allow-Origin"] == origin["Origin"]
    refused = client.post(path, json={}, headers=origin)
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == origin["Origin"]


# ---------------------------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("ident", [s["id"] for s in SCENARIOS])
def test_every_scenario_with_full_prefetch(client: Any, token: TokenFactory, ident: str) -> None:
    fake, pid, enc = _setup(ident)
    prefetch = full_prefetch(fake, SIGN, _ctx(pid, enc))
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert response.status_code == 200
    expected = next(s for s in SCENARIOS if s["id"] == ident)["intended_problems"]
    assert card_topics(response) == sorted(expected)
    # only references the templates cannot express (payer Organization, performers) were read
    assert all(p.split("/")[0] in {"Organization", "Practitioner", "PractitionerRole"} for p in fake.paths)
    cards = response.json["cards"]
    indicators = [c["indicator"] for c in cards]
    assert indicators == sorted(indicators, key=["critical", "warning", "info"].index)
    for card in cards:
        assert len(card["summary"]) < 140
        assert card["overrideReasons"] and all(r["display"] for r in card["overrideReasons"])
        link = card["links"][0]
        assert link["type"] == "smart" and link["url"] == LAUNCH
        assert orjson.loads(link["appContext"]) == {"view": "check", "encounter": f"Encounter/{enc}"}
        assert "**What is missing:**" in card["detail"]


def test_cigna_units_card_without_prefetch_fetches_with_the_bearer_token(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup("cigna-01")
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, token="tok-123"))
    assert response.status_code == 200
    assert fake.paths and set(fake.auth_seen) == {"Bearer tok-123"}
    card = response.json["cards"][0]
    assert card["summary"] == "97530: 31 timed minutes support 2 units, 3 billed"
    assert card["indicator"] == "critical"
    assert card["source"]["topic"]["code"] == "units.billed-vs-supported"
    assert card["selectionBehavior"] == "at-most-one"
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    assert action["type"] == "update" and action["resource"]["resourceType"] == "Claim"
    item = next(i for i in action["resource"]["item"] if i["productOrService"]["coding"][0]["code"] == "97530")
    assert item["quantity"]["value"] == 2
    assert client.application.extensions["ptguard_cds"].recorder.flush()  # cards are recorded off the request path
    with session_scope(client.application.config["DATABASE_URL"]) as s:
        issued = s.get(CardIssued, card["uuid"])
        assert issued is not None and issued.criterion_id == "units.billed-vs-supported" and issued.payer_id == "cigna"


def test_goal_card_names_payer_and_fix(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup("uhc-01")
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc))
    goal = next(c for c in response.json["cards"] if c["source"]["topic"]["code"] == "note.functional-goal")
    assert goal["summary"] == (
        "UnitedHealthcare: activity not tied to a functional goal — add which functional goal the activity serves"
    )
    assert goal["indicator"] == "warning"
    assert goal["source"]["label"].startswith("UnitedHealthcare")
    assert "**Compliant example:** “Toward goal" in goal["detail"]


@pytest.mark.parametrize(("ident", "modifier"), [("medicare-01", "CQ"), ("medicare-02", "KX"), ("bcbs-01", "59")])
def test_modifier_suggestions_update_the_claim_line(
    client: Any, token: TokenFactory, ident: str, modifier: str
) -> None:
    fake, pid, enc = _setup(ident)
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc))
    card = response.json["cards"][0]
    claim = card["suggestions"][0]["actions"][0]["resource"]
    mods = {c["code"] for i in claim["item"] for m in i.get("modifier", []) for c in m["coding"]}
    assert modifier in mods
    assert card["suggestions"][0]["uuid"] != card["uuid"]


def test_all_clear_card_is_off_by_default_and_behind_a_flag(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup("aetna-01")
    body = hook_request(SIGN, patient=pid, encounter=enc)
    assert call_service(client, token, fake, SIGN, body).json == {"cards": []}
    client.application.config["CDS_ALL_CLEAR"] = True
    body = hook_request(SIGN, patient=pid, encounter=enc)
    (card,) = call_service(client, token, fake, SIGN, body).json["cards"]
    assert card["indicator"] == "info" and card["summary"].startswith("Aetna:")


def test_an_encounter_that_could_not_be_read_gets_a_not_checked_card_never_an_all_clear(
    client: Any, token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the chart reader's safety net left only a data-quality finding, which cards drop: no card at all, or
    (with CDS_ALL_CLEAR) "meet every checked criterion" for an encounter on which nothing was checked."""
    from ptguard.chart import ChartBuilder

    def trip(self: Any, encounter: Any, *, payer_override: Any) -> Any:
        raise TypeError("a reader missed a wrong-typed element")

    monkeypatch.delenv("PTGUARD_DEBUG", raising=False)
    monkeypatch.setattr(ChartBuilder, "_assemble", trip)
    client.application.config["CDS_ALL_CLEAR"] = True
    fake, pid, enc = _setup("aetna-01")
    (card,) = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc)).json["cards"]
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("97530 check not run") and "re-check before billing" in card["summary"]
    assert card["source"]["topic"]["code"] == "data-quality.malformed-data"


# ---------------------------------------------------------------------------------------------- prefetch shapes


def _partial(fake: FakeFhir, pid: str, enc: str, keep: set[str]) -> dict[str, Any]:
    return {k: v for k, v in full_prefetch(fake, SIGN, _ctx(pid, enc)).items() if k in keep}


def test_partial_prefetch_fetches_the_rest(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup("cigna-01")
    prefetch = _partial(fake, pid, enc, {"patient", "encounter", "procedures"})
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert card_topics(response) == ["units.billed-vs-supported"]
    assert not any(p.startswith(("Encounter/", "Procedure?")) for p in fake.paths)
    assert any(p.startswith("Claim?") for p in fake.paths)


def test_operation_outcome_as_a_prefetch_value_is_fetched_instead(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup("cigna-01")
    prefetch = full_prefetch(fake, SIGN, _ctx(pid, enc))
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    prefetch["claims"] = outcome
    prefetch["procedures"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": outcome}]}
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert card_topics(response) == ["units.billed-vs-supported"]
    assert any(p.startswith("Claim?") for p in fake.paths) and any(p.startswith("Procedure?") for p in fake.paths)


def test_null_empty_bundle_and_non_fhir_values(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup("cigna-01")
    prefetch = full_prefetch(fake, SIGN, _ctx(pid, enc))
    prefetch["encounter"] = None  # "no such resource" — but the encounter is required: it is read anyway
    prefetch["goals"] = {"resourceType": "Bundle", "type": "searchset", "total": 0}  # empty search: nothing to fetch
    prefetch["notes"] = {"message": "not FHIR"}  # not FHIR: fetched
    prefetch["compositions"] = None  # null search: satisfied, not fetched
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert response.status_code == 200
    assert f"Encounter/{enc}" in fake.paths
    assert any(p.startswith("DocumentReference?") for p in fake.paths)
    assert not any(p.startswith(("Goal?", "Composition?")) for p in fake.paths)
    # the goals prefetch said "none", so the goals-on-record criterion fires
    assert "goals.on-record" in card_topics(response) or "units.billed-vs-supported" in card_topics(response)


def test_incomplete_prefetch_and_no_fhir_server(client: Any, token: TokenFactory) -> None:
    """One service assumed prefetch is always complete; here it is not and there is no server to ask."""
    fake, pid, enc = _setup("cigna-01")
    prefetch = _partial(fake, pid, enc, {"patient", "encounter", "procedures", "claims", "coverage"})
    body = hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch, server=None)
    response = call_service(client, token, None, SIGN, body)
    assert response.status_code == 200
    topics = card_topics(response)
    assert "units.billed-vs-supported" in topics and "data-quality" in topics
    dq = next(c for c in response.json["cards"] if c["source"]["topic"]["code"] == "data-quality")
    assert dq["indicator"] == "info" and "notes" in dq["detail"]


def test_encounter_that_cannot_be_had_is_412(client: Any, token: TokenFactory) -> None:
    fake, pid, _enc = _setup("cigna-01")
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter="enc-nowhere"))
    assert response.status_code == 412
    assert response.json["resourceType"] == "OperationOutcome"
    response = call_service(client, token, None, SIGN, hook_request(SIGN, patient=pid, encounter="enc-x", server=None))
    assert response.status_code == 412


# ---------------------------------------------------------------------------------------------- malformed requests


def _good() -> dict[str, Any]:
    return hook_request(SIGN, patient="pat-1", encounter="enc-1", server=None)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: b.pop("hook"), "hook"),
        (lambda b: b.pop("hookInstance"), "hookInstance"),
        (lambda b: b.pop("context"), "context"),
        (lambda b: b.update(hook="patient-view"), "hook"),
        (lambda b: b["context"].pop("patientId"), "context.patientId"),
        (lambda b: b["context"].pop("encounterId"), "context.encounterId"),
        (lambda b: b["context"].update(patientId="a b/c?"), "context.patientId"),
        (lambda b: b.update(prefetch=["x"]), "prefetch"),
        (lambda b: b.update(fhirServer="ftp://x"), "fhirServer"),
        (lambda b: b.update(fhirAuthorization="token"), "fhirAuthorization"),
        (lambda b: b.update(context="x"), "context"),
    ],
)
def test_malformed_requests_get_400_with_an_operation_outcome(
    client: Any, token: TokenFactory, mutate: Any, where: str
) -> None:
    body = _good()
    mutate(body)
    response = call_service(client, token, None, SIGN, body)
    assert response.status_code == 400
    assert response.mimetype == "application/fhir+json"
    issue = response.json["issue"][0]
    assert response.json["resourceType"] == "OperationOutcome" and issue["severity"] == "error"
    assert issue["expression"] == [where]


@pytest.mark.parametrize("raw", [b"{", b"", b"[]", b"null", b"\xff\xfe"])
def test_bad_json_is_400(client: Any, token: TokenFactory, raw: bytes) -> None:
    response = post(client, token, SIGN, raw)
    assert response.status_code == 400 and response.json["resourceType"] == "OperationOutcome"


def test_unknown_service_is_404(client: Any, token: TokenFactory) -> None:
    response = post(client, token, "nope", _good())
    assert response.status_code == 404 and response.json["resourceType"] == "OperationOutcome"


# ---------------------------------------------------------------------------------------------- other hooks


def test_order_sign_with_a_therapy_plan_of_care_order(client: Any, token: TokenFactory) -> None:
    fake, pid, _enc = _setup("medicare-02")
    draft = therapy_draft_orders(pid)
    order = draft["entry"][0]["resource"]
    service = "ptguard-97530-order-sign"
    body = hook_request(service, patient=pid, encounter=None, draftOrders=draft)
    response = call_service(client, token, fake, service, body)
    assert card_topics(response) == ["medicare.kx-threshold"]
    app_context = orjson.loads(response.json["cards"][0]["links"][0]["appContext"])
    assert app_context["encounter"] == "Encounter/enc-medicare-02"  # the most recent unbilled visit
    # an order that is not therapy (a CT) gets no cards and reads nothing
    order["code"] = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72133"}]}
    fake.paths.clear()
    body = hook_request(service, patient=pid, encounter=None, draftOrders=draft)
    assert call_service(client, token, fake, service, body).json == {"cards": []}
    assert fake.paths == []


def test_custom_note_sign_hook_reads_the_draft_note(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup("humana-01")
    service = "ptguard-97530-note-sign"
    before = call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=enc))
    assert "note.patient-response" in card_topics(before)
    draft = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": "UGF0aWVudCB0b2xlcmF0ZWQgdGhlIHRhc2sgd2VsbCwgcmVwb3J0ZWQgcGFpbiAzLzEwIGF0IHRoZSBlbmQsIGFuZCBzdGF5ZWQgZW5nYWdlZCB0aHJvdWdob3V0Lg==",
                }
            }
        ],
    }
    after = call_service(
        client,
        token,
        fake,
        service,
        hook_request(service, patient=pid, encounter=enc, draftNote=draft, documentId="doc-x"),
    )
    assert after.status_code == 200
    assert "note.patient-response" not in card_topics(after)
    assert "DocumentReference/doc-x" in fake.paths  # the note being signed was asked for by id


def test_patient_view_checks_the_encounter_in_context_else_the_latest_unbilled(
    client: Any, token: TokenFactory
) -> None:
    service = "ptguard-97530-patient-view"
    fake, pid, enc = _setup("medicare-04")
    with_enc = call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=enc))
    assert card_topics(with_enc) == ["progress-report.due"]
    without = call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=None))
    assert card_topics(without) == ["progress-report.due"]
    # every visit of this patient has been adjudicated: nothing to check on chart open
    fake, pid, _enc = _setup("uhc-01")
    assert call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=None)).json == {"cards": []}


def test_denials_from_the_fhir_server_and_the_worklist(client: Any, token: TokenFactory) -> None:
    service = "ptguard-denials"
    fake, pid, _enc = _setup("uhc-01")
    response = call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=None))
    (card,) = response.json["cards"]
    assert card["summary"].startswith("97530 denied by UnitedHealthcare (service 2026-10-20): appeal due ")
    assert "CARC" in card["detail"] or "50" in card["detail"]
    assert orjson.loads(card["links"][0]["appContext"]) == {
        "view": "appeal",
        "claimResponse": "ClaimResponse/cr-uhc-01",
    }
    with session_scope(client.application.config["DATABASE_URL"]) as s:
        s.add(
            WorkItem(
                dedupe_key="835|x|1",
                source="835",
                patient_ref=f"Patient/{pid}",
                claim_ref="Claim/other",
                claim_response_ref="ClaimResponse/from-835",
                payer_id="uhc",
                payer_name="UnitedHealthcare",
                lines=[{"code": "97110", "service_date": "2026-09-30"}],
                codes=[{"code": "CO-50"}],
                category="medical-necessity",
                path="appeal",
                amount=95.0,
                status="open",
            )
        )
        s.add(WorkItem(dedupe_key="835|x|2", source="835", patient_ref=f"Patient/{pid}", status="closed"))
        s.add(WorkItem(dedupe_key="835|x|3", source="835", patient_ref="Patient/someone-else", status="open"))
    response = call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=None))
    cards = response.json["cards"]
    assert len(cards) == 2
    from_835 = next(c for c in cards if c["source"]["label"] == "ptguard denial worklist")
    assert orjson.loads(from_835["links"][0]["appContext"])["claimResponse"] == "ClaimResponse/from-835"


def test_denials_for_a_patient_without_any(client: Any, token: TokenFactory) -> None:
    service = "ptguard-denials"
    fake, pid, _enc = _setup("cigna-01")
    assert call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=None)).json == {"cards": []}


# ---------------------------------------------------------------------------------------------- dead and slow servers


BUDGET_MS = 300  # the time budget of budget_client
SLOW_SERVER_SECONDS = 5.0  # the "slow server" of the issue: it answers after 5 s


@pytest.fixture
def budget_client(tmp_path: Path, keys: Keys) -> Any:
    from webapp import create_app

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'b.sqlite3'}",
            "CDS_ISSUERS": issuers_config(keys),
            "SMART_LAUNCH_URL": LAUNCH,
            "CDS_TIME_BUDGET_MS": BUDGET_MS,
            "CDS_WARM_UP": True,
        }
    )
    return app.test_client()


def test_slow_server_answer_within_budget_with_what_could_be_checked(
    budget_client: Any, token: TokenFactory, silent_server: str
) -> None:
    fake, pid, enc = _setup("cigna-01")
    prefetch = _partial(fake, pid, enc, {"patient", "encounter", "procedures", "claims", "coverage"})
    body = hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch, server=silent_server)
    started = time.monotonic()
    response = post(budget_client, token, SIGN, body)
    elapsed = (time.monotonic() - started) * 1000
    assert response.status_code == 200 and elapsed < 300 + 100, elapsed
    assert_valid_response(response.json)
    topics = card_topics(response)
    assert "units.billed-vs-supported" in topics and "data-quality" in topics
    # no prefetch at all and a silent server: the encounter cannot be had → 412, still within the budget
    started = time.monotonic()
    response = post(budget_client, token, SIGN, hook_request(SIGN, patient=pid, encounter=enc, server=silent_server))
    assert response.status_code == 412 and (time.monotonic() - started) * 1000 < 400


def test_a_fetch_that_runs_out_of_time_never_reports_the_unfollowed_references_as_missing(
    budget_client: Any, token: TokenFactory
) -> None:
    """Was (seen in CI): no prefetch, one slow query, so the fetch never reached its second round (the performer's
    Practitioner and PractitionerRole) — and clinician.qualification reported the unread qualification as missing."""
    fake, pid, enc = _setup("cigna-01")
    answer = fake._handle

    def slow_goals(request: Any) -> tuple[int, dict[str, str], bytes]:
        if "/Goal" in request.url:
            time.sleep(BUDGET_MS / 1000 * 2)
        return answer(request)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(re.escape(fake.base) + r"/.*"), callback=slow_goals)
        response = post(budget_client, token, SIGN, hook_request(SIGN, patient=pid, encounter=enc))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert not any(p.startswith(("Practitioner/", "PractitionerRole")) for p in fake.paths), fake.paths
    topics = card_topics(response)
    assert "clinician.qualification" not in topics and "units.billed-vs-supported" in topics, topics
    incomplete = next(c for c in response.json["cards"] if c["source"]["topic"]["code"] == "data-quality")
    assert "clinician.qualification" in incomplete["detail"]  # listed under "Not checked"


@pytest.mark.parametrize("kind", ["refused", "html", "500", "delay"])
def test_dead_or_broken_server_never_gives_500(budget_client: Any, token: TokenFactory, kind: str) -> None:
    fake, pid, enc = _setup("cigna-01")
    prefetch = _partial(fake, pid, enc, {"patient", "encounter", "procedures", "claims", "coverage"})
    server = "http://127.0.0.1:9/fhir" if kind == "refused" else FHIR
    body = hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch, server=server)

    release = threading.Event()
    slow_calls: list[str] = []
    slow_answers: list[str] = []

    def slow(request: Any) -> tuple[int, dict[str, str], str]:
        slow_calls.append(request.url)
        # Answers after SLOW_SERVER_SECONDS; the test releases it as soon as ptguard has answered, so the
        # abandoned fetch threads end at once instead of sleeping on past the test (and past the mock).
        release.wait(SLOW_SERVER_SECONDS)
        slow_answers.append(request.url)
        return 200, {}, "{}"

    threads_before = set(threading.enumerate())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if kind == "refused":
            rsps.add_passthru("http://127.0.0.1:9")
        elif kind == "html":
            rsps.get(
                __import__("re").compile(FHIR + ".*"),
                body="<html><body>Gateway error</body></html>",
                content_type="text/html",
            )
        elif kind == "500":
            rsps.get(__import__("re").compile(FHIR + ".*"), status=500, json={"resourceType": "OperationOutcome"})
        else:
            rsps.add_callback(responses.GET, __import__("re").compile(FHIR + ".*"), callback=slow)
        started = time.monotonic()
        response = post(budget_client, token, SIGN, body)
        elapsed = (time.monotonic() - started) * 1000
        stalled = len(slow_calls) - len(slow_answers)  # requests the slow server was still sitting on
        release.set()
        for t in set(threading.enumerate()) - threads_before:
            if t.name.startswith("ptguard-fetch"):
                t.join(timeout=2)
                assert not t.is_alive(), f"{t.name} still runs after the slow server was released"
    assert response.status_code == 200, kind
    assert elapsed < BUDGET_MS + 100, (kind, elapsed)
    if kind == "delay":
        assert slow_calls, "the slow server was never asked: the delay case tested nothing"
        assert stalled > 0, "ptguard answered only after the slow server did: the budget did not cut it off"
    assert_valid_response(response.json)
    # what could be checked is reported; what depends on unread data is withheld, not reported as missing
    assert card_topics(response) == ["data-quality", "units.billed-vs-supported"]
    dq = next(c for c in response.json["cards"] if c["source"]["topic"]["code"] == "data-quality")
    assert "**Not checked**" in dq["detail"] and "note." in dq["detail"]


# ---------------------------------------------------------------------------------------------- public requests


def _public_requests() -> list[Path]:
    found = []
    for folder in ("cds-hooks", "davinci-crd"):
        for path in sorted((PUBLIC / folder).rglob("*.json")):
            try:
                data = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict) and "hook" in data and "hookInstance" in data:
                found.append(path)
    return found


# Public request files that the strict request schema rejects, and why.
SCHEMA_INVALID = {
    "deviceRequestEmptyPrefetch_r4.json": "legacy 'user' field; fhirAuthorization null; encounterId null",
    "deviceRequestFullPrefetchWithCoverage_r4.json": "legacy 'user' field; fhirAuthorization null; encounterId null",
    "deviceRequestPrefetch.json": "legacy 'user' field; nulls in fhirAuthorization and context",
    "medicationRequestNoPrefetch.json": "legacy 'user' field; fhirAuthorization null; encounterId null",
    "requestWithHydratedPrefetchBundle.json": "fhirAuthorization null",
}


def test_public_requests_against_the_schema() -> None:
    """The Da Vinci CRD reference implementation's test requests hold nulls and a 1.0 'user' field; the rest are valid."""
    files = _public_requests()
    require(PUBLIC)
    assert files, "the public CDS Hooks request files are expected under shared/public-fhir"
    invalid = {}
    for path in files:
        errors = sorted(REQUEST_SCHEMA.iter_errors(orjson.loads(path.read_bytes())), key=lambda e: e.json_path)
        if errors:
            invalid[path.name] = [f"{e.json_path}: {e.message}" for e in errors]
    assert set(invalid) == set(SCHEMA_INVALID), invalid
    for name, errors in invalid.items():
        assert any("None is not of type" in e for e in errors), errors
        assert ("'user' was unexpected" in " ".join(errors)) == ("'user'" in SCHEMA_INVALID[name])


@pytest.mark.parametrize("path", _public_requests(), ids=lambda p: p.name)
def test_public_requests_get_200_or_a_specific_4xx(budget_client: Any, token: TokenFactory, path: Path) -> None:
    data = orjson.loads(path.read_bytes())
    by_hook = {s.hook: s.id for s in SERVICES.values() if s.kind == "signing"}
    service = by_hook.get(data.get("hook"), SIGN)
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # their fhirServer hosts are never contacted
        response = post(budget_client, token, service, data)
    assert response.status_code in (200, 400, 412), (path.name, response.status_code, response.data[:300])
    if response.status_code == 200:
        assert_valid_response(response.json)
    else:
        assert response.json["resourceType"] == "OperationOutcome"
    if data.get("hook") not in by_hook:
        assert response.status_code == 400  # a hook none of the signing services answers


def test_a_contract_setting_broken_while_serving_is_said_on_the_denial_card(
    client: Any, token: TokenFactory, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_bytes(b"\xff\xfe binary")
    monkeypatch.setenv("PTGUARD_CONTRACT_DEADLINES", str(contract))
    service = "ptguard-denials"
    fake, pid, _enc = _setup("uhc-01")
    response = call_service(client, token, fake, service, hook_request(service, patient=pid, encounter=None))
    assert response.status_code == 200
    (card,) = response.json["cards"]
    assert card["summary"].endswith("deadline not counted (setting error)")
    assert "contract deadline setting is broken" in card["detail"]
    assert "PTGUARD_CONTRACT_DEADLINES is unusable" in caplog.text
