"""Hostile or broken input to the CDS service: bad fhirServer URLs, R5 data, broken prefetch Bundles, log PHI."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import pytest
import responses
from cdshelpers import (
    FHIR,
    SCENARIOS,
    TokenFactory,
    call_service,
    card_topics,
    fake_for,
    full_prefetch,
    hook_request,
    patient_of,
    post,
)
from fakefhir import FakeFhir

from ptguard.errors import InputError
from ptguard.fhir.client import FhirClient, http_url_problem
from ptguard.fhir.load import r5_reason

SIGN = "ptguard-97530-signing"
UNITS = "units.billed-vs-supported"
NO_MINUTES = "No minutes are recorded"


def _setup(ident: str = "cigna-01") -> tuple[FakeFhir, str, str]:
    s = next(x for x in SCENARIOS if x["id"] == ident)
    fake = fake_for(ident)
    return fake, patient_of(fake, s["encounter"]), s["encounter"]


def _ctx(pid: str, enc: str) -> dict[str, Any]:
    return {"userId": "Practitioner/prac-okafor", "patientId": pid, "encounterId": enc}


def _dq(response: Any) -> dict[str, Any]:
    return next(c for c in response.json["cards"] if c["source"]["topic"]["code"] == "data-quality")


# ---------------------------------------------------------------------------------------------- 1. fhirServer URLs


BAD_URLS = [
    "http://[::1",
    "http://[::1/fhir",
    "http://[not-an-ip]/fhir",
    "http://host:99999/fhir",
    "http://host:port/fhir",
    "http:///fhir",
    "http://user@/fhir",
    "http://ho st/fhir",
    "http://host/fh\nir",
    "http://host\x00/fhir",
    "ftp://host/fhir",
    "https:fhir",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_unparsable_fhir_server_is_400(client: Any, token: TokenFactory, url: str) -> None:
    body = hook_request(SIGN, patient="pat-1", encounter="enc-1", server=url)
    response = post(client, token, SIGN, body)
    assert response.status_code == 400, (url, response.status_code)
    outcome = response.json
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["fhirServer"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_the_client_refuses_the_same_urls_with_an_input_error(url: str) -> None:
    assert http_url_problem(url) is not None
    with pytest.raises(InputError):
        FhirClient(url)


@pytest.mark.parametrize(
    "url", ["https://ehr.test/fhir", "http://127.0.0.1:8080/fhir/R4/", "http://[::1]:9/fhir", "https://EHR.test"]
)
def test_good_urls_are_accepted(url: str) -> None:
    assert http_url_problem(url) is None
    FhirClient(url).close()


# ---------------------------------------------------------------------------------------------- 2. R5 data


def _r5(encounter: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(encounter)
    out["class"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}]}]
    out["actualPeriod"] = out.pop("period", {"start": "2026-01-05T09:00:00-05:00"})
    return out


def _r5_fake(ident: str = "cigna-01") -> tuple[FakeFhir, str, str]:
    fake, pid, enc = _setup(ident)
    fake.resources = [_r5(r) if r["resourceType"] == "Encounter" else r for r in fake.resources]
    return fake, pid, enc


def _assert_r5_412(response: Any) -> None:
    assert response.status_code == 412
    issue = response.json["issue"][0]
    assert issue["expression"] == ["context.encounterId"]
    assert "FHIR R5" in issue["diagnostics"] and "R4" in issue["diagnostics"]
    assert "neither in the prefetch nor readable" not in issue["diagnostics"]


def test_r5_encounter_from_the_fhir_server_is_refused_like_r5_in_prefetch(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _r5_fake()
    fetched = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc))
    assert f"Encounter/{enc}" in fake.paths
    _assert_r5_412(fetched)
    # the same Encounter in the prefetch, with or without a server to fall back on (which has it as R5 too)
    r5_enc = next(r for r in fake.resources if r["resourceType"] == "Encounter" and r["id"] == enc)
    for server in (FHIR, None):
        body = hook_request(SIGN, patient=pid, encounter=enc, prefetch={"encounter": r5_enc}, server=server)
        prefetched = call_service(client, token, fake if server else None, SIGN, body)
        _assert_r5_412(prefetched)
        assert prefetched.json == fetched.json


def test_r5_encounter_status_completed_is_detected() -> None:
    assert r5_reason({"resourceType": "Encounter", "id": "e", "status": "completed"}) is not None
    assert r5_reason({"resourceType": "Encounter", "id": "e", "status": "finished"}) is None
    assert r5_reason({"resourceType": "Procedure", "id": "p", "status": "completed"}) is None


def test_r5_encounter_with_only_status_completed_from_the_server_is_412(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup()
    for r in fake.resources:
        if r["resourceType"] == "Encounter" and r["id"] == enc:
            r["status"] = "completed"
    _assert_r5_412(call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc)))


def test_r5_resources_in_a_fetched_search_are_skipped_with_a_note(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup()
    for r in fake.resources:
        if r["resourceType"] == "Claim":
            r["traceNumber"] = [{"value": "t-1"}]  # R5-only element
    prefetch = {k: v for k, v in full_prefetch(fake, SIGN, _ctx(pid, enc)).items() if k != "claims"}
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert response.status_code == 200
    assert any(p.startswith("Claim?") for p in fake.paths)
    dq = _dq(response)
    assert "claims" in dq["detail"] and "FHIR R5" in dq["detail"]
    assert UNITS not in card_topics(response)  # the claims were not read, so the billed units are not compared


# ---------------------------------------------------------------------------------------------- 3. broken Bundles


BROKEN_BUNDLES: list[Any] = [
    {"resourceType": "Bundle", "type": "searchset", "entry": "x"},
    {"resourceType": "Bundle", "type": "searchset", "entry": [5, None, {"resource": "x"}]},
    {"resourceType": "Bundle", "type": "searchset", "entry": {"resource": {"resourceType": "Procedure"}}},
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"id": "no-type"}}]},
    {"resourceType": "Bundle", "type": "searchset", "entry": [{}]},
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": None}]},
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": "x"}]},
]


@pytest.mark.parametrize("broken", BROKEN_BUNDLES)
def test_unusable_prefetch_bundle_is_fetched_instead(client: Any, token: TokenFactory, broken: Any) -> None:
    fake, pid, enc = _setup()
    prefetch = full_prefetch(fake, SIGN, _ctx(pid, enc))
    prefetch["procedures"] = broken
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert response.status_code == 200
    assert any(p.startswith("Procedure?") for p in fake.paths), fake.paths
    assert card_topics(response) == [UNITS]
    assert NO_MINUTES not in response.get_data(as_text=True)


@pytest.mark.parametrize("broken", BROKEN_BUNDLES)
def test_unusable_prefetch_bundle_without_a_server_is_not_read_as_no_data(
    client: Any, token: TokenFactory, broken: Any
) -> None:
    fake, pid, enc = _setup()
    prefetch = full_prefetch(fake, SIGN, _ctx(pid, enc))
    prefetch["procedures"] = broken
    body = hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch, server=None)
    response = call_service(client, token, None, SIGN, body)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert NO_MINUTES not in text and "data-quality.no-minutes" not in card_topics(response)
    dq = _dq(response)
    assert "prefetch.procedures" in dq["detail"] and "procedures" in dq["detail"].split("**Not checked**")[0]


def test_bad_entries_of_a_good_bundle_are_skipped_with_a_note(client: Any, token: TokenFactory) -> None:
    fake, pid, enc = _setup()
    prefetch = full_prefetch(fake, SIGN, _ctx(pid, enc))
    good = prefetch["procedures"]["entry"]
    assert good
    prefetch["procedures"] = {**prefetch["procedures"], "entry": [5, *good, None, {"resource": "x"}]}
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert response.status_code == 200
    assert not any(p.startswith("Procedure?") for p in fake.paths)  # the good entries were kept, not refetched
    assert UNITS in card_topics(response)
    units = next(c for c in response.json["cards"] if c["source"]["topic"]["code"] == UNITS)
    assert units["indicator"] == "critical"
    detail = _dq(response)["detail"]
    assert "prefetch.procedures entry[0]" in detail and "entry[5]" not in detail
    assert f"prefetch.procedures entry[{len(good) + 1}]" in detail
    assert f"prefetch.procedures entry[{len(good) + 2}]" in detail


# ---------------------------------------------------------------------------------------------- 4. no ids in logs


def test_no_patient_or_encounter_id_in_the_logs_of_a_failing_fetch(
    client: Any, token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    pid, enc = "pat-nakamura", "enc-nakamura-secret"
    with caplog.at_level(logging.DEBUG), responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(re.compile(re.escape(FHIR) + ".*"), status=404, json={"resourceType": "OperationOutcome"})
        response = post(client, token, SIGN, hook_request(SIGN, patient=pid, encounter=enc))
    assert response.status_code == 412
    fhir_logs = [r.getMessage() for r in caplog.records if r.name == "ptguard.fhir"]
    assert "GET Patient/{id} 404" in " | ".join(fhir_logs), fhir_logs
    assert any(m.startswith("GET Procedure 404") for m in fhir_logs), fhir_logs
    for leak in ("nakamura", "secret", pid, enc):
        assert leak not in caplog.text, leak


# ---------------------------------------------------------------------------------------------- 5. card wording


@pytest.mark.parametrize("kind", ["html", "500", "bad-json"])
def test_incomplete_card_does_not_claim_a_timeout(client: Any, token: TokenFactory, kind: str) -> None:
    fake, pid, enc = _setup()
    keep = {"patient", "encounter", "procedures", "claims", "coverage"}
    prefetch = {k: v for k, v in full_prefetch(fake, SIGN, _ctx(pid, enc)).items() if k in keep}
    body = hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch)
    url = re.compile(re.escape(FHIR) + ".*")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if kind == "html":
            rsps.get(url, body="<html>Gateway error</html>", content_type="text/html")
        elif kind == "500":
            rsps.get(url, status=500, json={"resourceType": "OperationOutcome", "issue": []})
        else:
            rsps.get(url, body='{"resourceType": "Bundle", ', content_type="application/fhir+json")
        response = post(client, token, SIGN, body)
    assert response.status_code == 200
    dq = _dq(response)
    text = (dq["summary"] + dq["detail"]).lower()
    assert "in time" not in text and "time" not in dq["summary"].lower()
    assert dq["summary"] == "Check incomplete: part of the chart could not be read; re-check before billing"
    assert "notes: could not be read from the FHIR server" in dq["detail"]
    assert "gateway" not in text and "500" not in text and "json" not in text


def test_fetch_logs_name_the_interaction_not_ids_or_search_values(caplog: pytest.LogCaptureFixture) -> None:
    from ptguard.fhir.fetch import encounter_queries, fetch

    base = "https://ehr.test/fhir"
    with caplog.at_level(logging.DEBUG), responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{base}/Patient/pat-okonkwo", status=404, json={"resourceType": "OperationOutcome"})
        rsps.get(f"{base}/Encounter/enc-okonkwo-7", status=500, body="<html>oops</html>")
        page2 = f"{base}/Procedure?encounter=Encounter/enc-okonkwo-7&page=2"
        first = {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": page2}]}
        rsps.get(page2, json={"resourceType": "Bundle", "type": "searchset"})
        rsps.get(re.compile(re.escape(base) + r"/Procedure\?encounter=[^&]*$"), json=first)
        rsps.get(re.compile(re.escape(base) + r"/\w+\?.*"), status=503, json={"resourceType": "OperationOutcome"})
        with FhirClient(base, retries=0) as c:
            result = fetch(c, encounter_queries("pat-okonkwo", "enc-okonkwo-7"), budget_seconds=5)
    assert result.findings  # the server failed
    messages = [r.getMessage() for r in caplog.records if r.name == "ptguard.fhir"]
    joined = " | ".join(messages)
    for shape in ("GET Patient/{id} 404", "GET Encounter/{id} 500", "GET Procedure 200", "GET Procedure (link) 200"):
        assert shape in joined, messages
    for leak in ("okonkwo", "enc-", "pat-", "ehr.test", "page=2", "encounter="):
        assert leak not in caplog.text, leak


@pytest.mark.parametrize(
    ("broken", "expect"),
    [
        (BROKEN_BUNDLES[0], "prefetch.procedures: Bundle.entry is not a list; nothing usable, fetched instead"),
        (BROKEN_BUNDLES[1], "prefetch.procedures entry[0]: Bundle entry is not an object; nothing usable, fetched instead"),
        (BROKEN_BUNDLES[3], "prefetch.procedures entry[0]: entry has no resourceType; nothing usable, fetched instead"),
    ],
)
def test_an_unusable_prefetch_bundle_note_gives_the_loaders_reason(broken: Any, expect: str) -> None:
    from ptguard.cds import CdsRequest, read_prefetch

    request = CdsRequest(SIGN, "i-1", {}, FHIR, None, {"procedures": broken})
    read = read_prefetch(request)
    assert "procedures" not in read.satisfied
    assert [n.message for n in read.notes if n.id == "data-quality.prefetch-unusable"] == [expect]


@pytest.mark.parametrize("meta", ["x", ["x"], 5])
def test_a_meta_that_is_not_an_object_is_no_500(client: Any, token: TokenFactory, meta: Any) -> None:
    fake, pid, enc = _setup()
    prefetch = full_prefetch(fake, SIGN, _ctx(pid, enc))
    prefetch["encounter"] = {**prefetch["encounter"], "meta": meta}
    entries = prefetch["procedures"]["entry"]
    prefetch["procedures"] = {**prefetch["procedures"],
                              "entry": [{**entries[0], "resource": {**entries[0]["resource"], "meta": meta}},
                                        *entries[1:]]}
    response = call_service(client, token, fake, SIGN, hook_request(SIGN, patient=pid, encounter=enc, prefetch=prefetch))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert UNITS in card_topics(response)
