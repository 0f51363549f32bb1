"""Unit tests of the FHIR client against mocked HTTP (responses): errors, retries, paging, token hygiene."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from ptguard.errors import FhirServerError, InputError, NotFoundError
from ptguard.fhir.client import FhirClient

BASE = "https://fhir.example.test/R4"
TOKEN = "s3cr3t-t0ken-value"


def oo(diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}],
    }


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> Any:
    c = FhirClient(BASE, token=TOKEN, timeout=2.0, retries=2, sleep=sleeps.append)
    yield c
    c.close()


@responses.activate
def test_read_sends_bearer_and_accept(client: FhirClient) -> None:
    responses.get(
        f"{BASE}/Patient/p1",
        json={"resourceType": "Patient", "id": "p1"},
        match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}", "Accept": "application/fhir+json"})],
    )
    assert client.read("Patient", "p1")["id"] == "p1"


@responses.activate
def test_404_is_not_found_error(client: FhirClient) -> None:
    responses.get(f"{BASE}/Claim/missing", status=404, json=oo("Claim/missing not found"))
    with pytest.raises(NotFoundError) as info:
        client.read("Claim", "missing")
    assert "GET Claim: HTTP 404" in str(info.value)
    assert "not found" in str(info.value)


@pytest.mark.parametrize(("status", "hint"), [(401, "token missing, invalid or expired"), (403, "lacks the scope")])
@responses.activate
def test_401_403(client: FhirClient, status: int, hint: str) -> None:
    responses.get(f"{BASE}/Patient/p1", status=status, json=oo(f"denied for token {TOKEN}"))
    with pytest.raises(FhirServerError) as info:
        client.read("Patient", "p1")
    message = str(info.value)
    assert info.value.status == status
    assert hint in message
    assert TOKEN not in message
    assert len(responses.calls) == 1  # 4xx is never retried


@responses.activate
def test_500_message_names_method_type_status_and_first_diagnostics(client: FhirClient) -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "exception", "diagnostics": "database\nexploded"},
            {"severity": "error", "code": "exception", "diagnostics": "second issue"},
        ],
    }
    responses.post(f"{BASE}/Task", status=500, json=body)
    with pytest.raises(FhirServerError) as info:
        client.create({"resourceType": "Task", "status": "requested", "intent": "order"})
    message = str(info.value)
    assert message == "POST Task: HTTP 500 Internal Server Error: database exploded"
    assert "\n" not in message
    assert len(responses.calls) == 1  # POST is never retried


@responses.activate
def test_error_body_that_is_not_an_outcome_is_not_echoed(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1", status=500, json={"resourceType": "Patient", "name": [{"family": "Doe"}]})
    with pytest.raises(FhirServerError) as info:
        client.read("Patient", "p1")
    assert "Doe" not in str(info.value)


@responses.activate
def test_get_retries_on_503_then_succeeds(client: FhirClient, sleeps: list[float]) -> None:
    responses.get(f"{BASE}/Patient/p1", status=503)
    responses.get(f"{BASE}/Patient/p1", status=502)
    responses.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    assert client.read("Patient", "p1")["id"] == "p1"
    assert len(responses.calls) == 3
    assert sleeps == [0.5, 1.0]


@responses.activate
def test_get_gives_up_after_retries(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1", status=504, json=oo("upstream timeout"))
    with pytest.raises(FhirServerError) as info:
        client.read("Patient", "p1")
    assert info.value.status == 504
    assert "upstream timeout" in str(info.value)
    assert len(responses.calls) == 3


@responses.activate
def test_retry_after_is_honoured_and_capped(sleeps: list[float]) -> None:
    with FhirClient(BASE, retries=2, max_retry_after=5.0, sleep=sleeps.append) as c:
        responses.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "3"})
        responses.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "120"})
        responses.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
        c.read("Patient", "p1")
    assert sleeps == [3.0, 5.0]


@responses.activate
def test_retry_after_http_date(sleeps: list[float]) -> None:
    with FhirClient(BASE, retries=1, max_retry_after=5.0, sleep=sleeps.append) as c:
        responses.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        responses.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
        c.read("Patient", "p1")
    assert sleeps == [0.0]  # a date in the past: retry at once


@responses.activate
def test_post_is_not_retried_on_503(client: FhirClient) -> None:
    responses.post(BASE, status=503)
    with pytest.raises(FhirServerError):
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": [{}]})
    assert len(responses.calls) == 1


@responses.activate
def test_connection_error_is_retried_on_get(client: FhirClient, sleeps: list[float]) -> None:
    responses.get(f"{BASE}/Patient/p1", body=requests.exceptions.ConnectionError("refused"))
    responses.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    assert client.read("Patient", "p1")["id"] == "p1"
    assert sleeps == [0.5]


@responses.activate
def test_connection_error_message(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1", body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(FhirServerError) as info:
        client.read("Patient", "p1")
    assert "cannot connect to fhir.example.test" in str(info.value)
    assert "3 attempt(s)" in str(info.value)


@responses.activate
def test_read_timeout_is_not_retried(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1", body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(FhirServerError) as info:
        client.read("Patient", "p1")
    assert "no answer within 2 s" in str(info.value)
    assert len(responses.calls) == 1


def test_timeout_is_passed_to_requests() -> None:
    seen: dict[str, Any] = {}

    class Recorder(requests.Session):
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            seen.update(kwargs)
            raise requests.exceptions.ReadTimeout("stop")

    with Recorder() as session:
        c = FhirClient(BASE, timeout=(1.5, 7.0), session=session)
        with pytest.raises(FhirServerError):
            c.capabilities()
    assert seen["timeout"] == (1.5, 7.0)


def page(ids: list[str], next_url: str | None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Procedure", "id": i}, "search": {"mode": "match"}} for i in ids],
        "link": [{"relation": "self", "url": "x"}],
    }
    if next_url:
        bundle["link"].append({"relation": "next", "url": next_url})
    return bundle


@responses.activate
def test_search_follows_next_links(client: FhirClient) -> None:
    responses.get(
        f"{BASE}/Procedure",
        json=page(["a", "b"], f"{BASE}/Procedure?encounter=Encounter/e1&_count=2&_offset=2"),
        match=[matchers.query_param_matcher({"encounter": "Encounter/e1", "_count": "2"})],
    )
    responses.get(
        f"{BASE}/Procedure",
        json=page(["c", "d"], "Procedure?encounter=Encounter/e1&_count=2&_offset=4"),  # relative link
        match=[matchers.query_param_matcher({"encounter": "Encounter/e1", "_count": "2", "_offset": "2"})],
    )
    included = page(["e"], None)
    included["entry"].append({"resource": {"resourceType": "Encounter", "id": "e1"}, "search": {"mode": "include"}})
    responses.get(
        f"{BASE}/Procedure",
        json=included,
        match=[matchers.query_param_matcher({"encounter": "Encounter/e1", "_count": "2", "_offset": "4"})],
    )
    found = client.search("Procedure", {"encounter": "Encounter/e1", "_count": 2})
    assert [r["id"] for r in found] == ["a", "b", "c", "d", "e"]
    for call in responses.calls:
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_search_page_cap(client: FhirClient) -> None:
    responses.get(f"{BASE}/Procedure", json=page(["a"], f"{BASE}/Procedure?_offset=1"))
    with pytest.raises(FhirServerError, match="more than 1 pages"):
        client.search("Procedure", max_pages=1)


@responses.activate
def test_search_repeated_next_link_stops(client: FhirClient) -> None:
    responses.get(f"{BASE}/Procedure", json=page(["a"], f"{BASE}/Procedure?_page=2"))
    with pytest.raises(FhirServerError, match="repeats"):
        client.search("Procedure")


@responses.activate
def test_next_link_to_another_host_is_refused(client: FhirClient) -> None:
    responses.get(f"{BASE}/Procedure", json=page(["a"], "https://evil.example/steal?x=1"))
    with pytest.raises(FhirServerError, match="another host"):
        client.search("Procedure")
    assert len(responses.calls) == 1  # the token never went to evil.example


@responses.activate
def test_search_multi_value_params(client: FhirClient) -> None:
    responses.get(
        f"{BASE}/Coverage",
        json=page([], None),
        match=[matchers.query_string_matcher("patient=Patient%2Fz&status=active&_tag=a&_tag=b")],
    )
    assert client.search("Coverage", {"patient": "Patient/z", "status": "active", "_tag": ["a", "b"]}) == []


@responses.activate
def test_create_with_if_none_exist_and_update(client: FhirClient) -> None:
    responses.post(
        f"{BASE}/DocumentReference",
        status=201,
        json={"resourceType": "DocumentReference", "id": "d1"},
        match=[matchers.header_matcher({"If-None-Exist": "identifier=s|v"})],
    )
    responses.put(f"{BASE}/Task/t1", json={"resourceType": "Task", "id": "t1", "status": "completed"})
    created = client.create({"resourceType": "DocumentReference", "status": "current"}, if_none_exist="identifier=s|v")
    assert created["id"] == "d1"
    assert client.update({"resourceType": "Task", "id": "t1", "status": "completed"})["status"] == "completed"


@responses.activate
def test_create_with_empty_body_reads_location(client: FhirClient) -> None:
    responses.post(f"{BASE}/Task", status=201, body="", headers={"Location": f"{BASE}/Task/t9/_history/1"})
    responses.get(f"{BASE}/Task/t9", json={"resourceType": "Task", "id": "t9"})
    assert client.create({"resourceType": "Task"})["id"] == "t9"


@responses.activate
def test_non_json_answer(client: FhirClient) -> None:
    responses.get(f"{BASE}/metadata", body="<html>proxy login</html>", content_type="text/html")
    with pytest.raises(FhirServerError, match="not JSON"):
        client.capabilities()


def test_input_validation() -> None:
    with FhirClient(BASE) as c:
        with pytest.raises(InputError):
            c.read("Patient", "../../admin")
        with pytest.raises(InputError):
            c.read("patient", "p1")
        with pytest.raises(InputError):
            c.update({"resourceType": "Task"})
        with pytest.raises(InputError):
            c.transaction({"resourceType": "Bundle", "type": "searchset"})
    with pytest.raises(InputError):
        FhirClient("fhir.example.test/R4")


@responses.activate
def test_token_never_in_logs_or_repr(client: FhirClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(f"{BASE}/Patient", json=page([], None), match=[matchers.query_param_matcher({"name": "Doe"})])
    responses.get(f"{BASE}/Patient/p1", status=401, json=oo(f"bad token {TOKEN}"))
    client.search("Patient", {"name": "Doe"})
    with pytest.raises(FhirServerError):
        client.read("Patient", "p1")
    text = caplog.text + repr(client)
    assert TOKEN not in text
    assert "Doe" not in text  # query strings (PHI) are not logged
    records = [r for r in caplog.records if r.name == "ptguard.fhir"]
    assert [r.getMessage().split(" ")[:3] for r in records] == [
        ["GET", "Patient", "200"],
        ["GET", "Patient/{id}", "401"],
    ]
    assert all(r.getMessage().endswith(" ms") for r in records)
    assert "p1" not in text  # nor ids (PHI): the log names the interaction, Patient/{id}
