"""The sandbox FHIR server over real HTTP, driven by FhirClient and the fixture loader."""

from __future__ import annotations

import io
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ptguard.errors import FhirServerError, NotFoundError
from ptguard.fhir.client import FhirClient
from ptguard.fixtures_load import load_fixtures
from ptguard.serving import PortInUseError
from sandbox.fhir_server import FhirServerProcess

pytestmark = pytest.mark.integration

FIXTURE_SYSTEM = "https://ptguard.dev/fixture-id"
REPO_FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"


@pytest.fixture
def client(fhir_server: str) -> Iterator[FhirClient]:
    with FhirClient(fhir_server, timeout=10.0) as c:
        yield c


def conditional_entry(resource_type: str, slug: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A transaction entry that creates the resource unless one with its fixture identifier exists."""
    full_url = f"urn:uuid:{uuid.uuid4()}"
    resource = {
        "resourceType": resource_type,
        "identifier": [{"system": FIXTURE_SYSTEM, "value": slug}],
        **body,
    }
    entry = {
        "fullUrl": full_url,
        "resource": resource,
        "request": {
            "method": "POST",
            "url": resource_type,
            "ifNoneExist": f"identifier={FIXTURE_SYSTEM}|{slug}",
        },
    }
    return full_url, entry


def clinic_bundle(tag: str, procedures: int = 5) -> dict[str, Any]:
    """A tiny clinic: patient, encounter, coverage, claim, claim response and some procedures."""
    entries = []
    patient, e = conditional_entry("Patient", f"{tag}-patient", {"name": [{"family": "Fixture", "given": ["Pat"]}]})
    entries.append(e)
    ref = {"reference": patient}
    encounter, e = conditional_entry(
        "Encounter",
        f"{tag}-encounter",
        {"status": "finished", "class": {"code": "AMB"}, "subject": ref},
    )
    entries.append(e)
    _, e = conditional_entry(
        "Coverage", f"{tag}-coverage", {"status": "active", "beneficiary": ref, "payor": [{"display": "Payer"}]}
    )
    entries.append(e)
    claim, e = conditional_entry(
        "Claim",
        f"{tag}-claim",
        {"status": "active", "use": "claim", "patient": ref, "created": "2024-05-01", "priority": {"text": "normal"}},
    )
    entries.append(e)
    _, e = conditional_entry(
        "ClaimResponse",
        f"{tag}-claimresponse",
        {
            "status": "active",
            "use": "claim",
            "outcome": "complete",
            "patient": ref,
            "request": {"reference": claim},
            "created": "2024-05-20",
        },
    )
    entries.append(e)
    for i in range(procedures):
        _, e = conditional_entry(
            "Procedure",
            f"{tag}-procedure-{i}",
            {
                "status": "completed",
                "subject": ref,
                "encounter": {"reference": encounter},
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97530"}]},
            },
        )
        entries.append(e)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def status_codes(response: dict[str, Any]) -> list[int]:
    return [int(str(e["response"]["status"])[:3]) for e in response["entry"]]


def one_id(client: FhirClient, resource_type: str, slug: str) -> str:
    found = client.search(resource_type, {"identifier": f"{FIXTURE_SYSTEM}|{slug}"})
    assert len(found) == 1, f"{resource_type} {slug}: {len(found)} matches"
    return str(found[0]["id"])


# ------------------------------------------------------------------ server basics


def test_ready_health_and_metadata(fhir_server: str, fhir_server_process: FhirServerProcess) -> None:
    assert fhir_server.startswith("http://127.0.0.1:")
    assert fhir_server.endswith("/fhir/R4")
    root = fhir_server.removesuffix("/fhir/R4")
    with requests.get(f"{root}/healthz", timeout=5) as health:
        assert health.status_code == 200
    with FhirClient(fhir_server) as c:
        capability = c.capabilities()
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"].startswith("4.0")
    assert fhir_server_process.startup_seconds is not None


def test_bad_json_is_400_operation_outcome(fhir_server: str) -> None:
    with requests.post(
        f"{fhir_server}/Task", data=b"{not json", headers={"Content-Type": "application/fhir+json"}, timeout=5
    ) as response:
        assert response.status_code == 400
        body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "JSON" in body["issue"][0]["diagnostics"]


def test_unknown_resource_and_missing_id(client: FhirClient) -> None:
    with pytest.raises(NotFoundError):
        client.read("Patient", "does-not-exist")
    with pytest.raises(NotFoundError):
        client.search("NotAType", {})


def test_logs_have_no_bodies_or_queries(fhir_server_process: FhirServerProcess, client: FhirClient) -> None:
    client.search("Patient", {"name": "Secretname"})
    client.create({"resourceType": "Patient", "name": [{"family": "Bodyname"}]})
    time.sleep(0.1)
    log = fhir_server_process.read_log()
    assert "GET /fhir/R4/Patient 200" in log
    assert "POST /fhir/R4/Patient 201" in log
    assert "Secretname" not in log
    assert "Bodyname" not in log


# ------------------------------------------------------------------ transactions, reads, searches


def test_transaction_twice_creates_nothing_new(client: FhirClient) -> None:
    tag = f"tx-{uuid.uuid4().hex[:8]}"
    bundle = clinic_bundle(tag)
    first = client.transaction(bundle)
    assert first["type"] == "transaction-response"
    assert status_codes(first) == [201] * len(bundle["entry"])
    second = client.transaction(bundle)
    assert status_codes(second) == [200] * len(bundle["entry"])
    assert [e["response"]["location"] for e in first["entry"]] != []
    first_ids = sorted(e["resource"]["id"] for e in first["entry"])
    second_ids = sorted(e["resource"]["id"] for e in second["entry"])
    assert first_ids == second_ids
    patient_id = one_id(client, "Patient", f"{tag}-patient")
    assert len(client.search("Procedure", {"subject": f"Patient/{patient_id}"})) == 5


def test_reference_searches(client: FhirClient) -> None:
    tag = f"refs-{uuid.uuid4().hex[:8]}"
    client.transaction(clinic_bundle(tag, procedures=2))
    encounter_id = one_id(client, "Encounter", f"{tag}-encounter")
    claim_id = one_id(client, "Claim", f"{tag}-claim")
    patient_id = one_id(client, "Patient", f"{tag}-patient")

    procedures = client.search("Procedure", {"encounter": f"Encounter/{encounter_id}"})
    assert len(procedures) == 2
    assert all(p["encounter"]["reference"] == f"Encounter/{encounter_id}" for p in procedures)
    # a bare id matches nothing on this server: reference searches need Type/id
    assert client.search("Procedure", {"encounter": encounter_id}) == []

    responses_ = client.search("ClaimResponse", {"request": f"Claim/{claim_id}"})
    assert [r["request"]["reference"] for r in responses_] == [f"Claim/{claim_id}"]

    coverage = client.search("Coverage", {"patient": f"Patient/{patient_id}", "status": "active"})
    assert len(coverage) == 1
    assert client.search("Coverage", {"patient": f"Patient/{patient_id}", "status": "cancelled"}) == []

    claim = client.read("Claim", claim_id)
    assert claim["patient"]["reference"] == f"Patient/{patient_id}"


def test_paging_with_count_2_over_5(client: FhirClient, fhir_server: str) -> None:
    tag = f"page-{uuid.uuid4().hex[:8]}"
    client.transaction(clinic_bundle(tag, procedures=5))
    encounter_id = one_id(client, "Encounter", f"{tag}-encounter")
    params = {"encounter": f"Encounter/{encounter_id}", "_count": 2}

    pages = list(client.search_pages("Procedure", params))
    assert [len(p.get("entry", [])) for p in pages] == [2, 2, 1]
    for bundle in pages:
        for link in bundle["link"]:
            assert link["url"].startswith(fhir_server + "/Procedure?")
        for entry in bundle.get("entry", []):
            assert entry["fullUrl"] == f"{fhir_server}/Procedure/{entry['resource']['id']}"
    found = client.search("Procedure", params)
    assert len(found) == 5
    assert len({p["id"] for p in found}) == 5
    first = client.search_bundle("Procedure", params)
    assert first["total"] == 5


def test_create_document_reference_and_task_and_update(client: FhirClient) -> None:
    document = client.create(
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "application/pdf", "title": "Appeal letter"}}],
        }
    )
    assert document["id"]
    assert client.read("DocumentReference", document["id"])["status"] == "current"
    task = client.create(
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "focus": {"reference": f"DocumentReference/{document['id']}"},
        }
    )
    task["status"] = "completed"
    updated = client.update(task)
    assert updated["status"] == "completed"
    assert updated["meta"]["versionId"] != task["meta"]["versionId"]
    assert client.read("Task", task["id"])["status"] == "completed"


def test_conditional_create_header(client: FhirClient) -> None:
    slug = f"cc-{uuid.uuid4().hex[:8]}"
    body = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": FIXTURE_SYSTEM, "value": slug}],
    }
    first = client.create(body, if_none_exist=f"identifier={FIXTURE_SYSTEM}|{slug}")
    second = client.create(body, if_none_exist=f"identifier={FIXTURE_SYSTEM}|{slug}")
    assert first["id"] == second["id"]


# ------------------------------------------------------------------ slow and dead servers


def test_closed_port_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    closed = f"http://127.0.0.1:{port}/fhir/R4"
    with FhirClient(closed, timeout=2.0, retries=1, backoff=0.05) as c, pytest.raises(FhirServerError) as info:
        c.read("Patient", "p1")
    assert "cannot connect" in str(info.value)
    assert time.monotonic() - started < 1.5


def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # the kernel completes the handshake; nobody ever reads or answers
        port = listener.getsockname()[1]
        started = time.monotonic()
        silent = f"http://127.0.0.1:{port}/fhir/R4"
        with FhirClient(silent, timeout=0.5, retries=2) as c, pytest.raises(FhirServerError) as info:
            c.read("Patient", "p1")
        elapsed = time.monotonic() - started
    assert "no answer within 0.5 s" in str(info.value)
    assert 0.4 < elapsed < 1.5


# ------------------------------------------------------------------ token mode and process hygiene


def test_required_token_and_clean_stop(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    with FhirServerProcess(require_token=token, log_path=tmp_path / "log") as server:
        assert server.base_url is not None
        pid = server.pid
        assert pid is not None
        with FhirClient(server.base_url) as anonymous:
            anonymous.capabilities()  # /metadata stays public
            with pytest.raises(FhirServerError) as info:
                anonymous.search("Patient")
            assert info.value.status == 401
        with FhirClient(server.base_url, token="wrong") as wrong, pytest.raises(FhirServerError):
            wrong.search("Patient")
        with FhirClient(server.base_url, token=token) as authorised:
            assert authorised.search("Patient") == []
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert token not in (tmp_path / "log").read_text()


def test_port_in_use_is_a_clear_error(fhir_server_process: FhirServerProcess, tmp_path: Path) -> None:
    server = FhirServerProcess(port=fhir_server_process.port, log_path=tmp_path / "log", startup_timeout=10)
    port = fhir_server_process.port
    with pytest.raises(PortInUseError) as info:  # checked before Node starts: a setting error, exit 5
        server.start()
    assert str(info.value) == (
        f"port {port} on 127.0.0.1 (the sandbox FHIR server) is already in use; choose another with --port"
    )
    assert info.value.exit_code == 5
    assert not server.running and server.pid is None


# ------------------------------------------------------------------ fixture loader


def write_fixture_dir(directory: Path, tag: str) -> Path:
    directory.mkdir()
    (directory / "01-clinic.json").write_text(json.dumps(clinic_bundle(tag, procedures=3)))
    second = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            conditional_entry("Organization", f"{tag}-payer", {"name": "Fixture Payer"})[1],
            conditional_entry("Practitioner", f"{tag}-therapist", {"name": [{"family": "Therapist"}]})[1],
        ],
    }
    (directory / "02-people.json").write_text(json.dumps(second))
    (directory / "README.txt").write_text("not a fixture")
    return directory


def test_fixture_loader_is_idempotent(client: FhirClient, tmp_path: Path) -> None:
    tag = f"load-{uuid.uuid4().hex[:8]}"
    directory = write_fixture_dir(tmp_path / "fixtures", tag)
    seen: list[str] = []
    first = load_fixtures(client, directory, progress=lambda f: seen.append(f.path.name))
    assert seen == ["01-clinic.json", "02-people.json"]
    assert first.ok, [f.error for f in first.files]
    assert first.created_count == 8 + 2
    assert first.existing_count == 0
    assert first.files[0].created["Procedure"] == 3
    assert first.files[0].warnings == []

    second = load_fixtures(client, directory)
    assert second.ok
    assert second.created_count == 0
    assert second.existing_count == 10
    assert "0 created, 8 already present" in second.files[0].summary()
    assert len(client.search("Procedure", {"identifier": f"{FIXTURE_SYSTEM}|{tag}-procedure-0"})) == 1


def test_fixture_loader_reports_bad_files(client: FhirClient, tmp_path: Path) -> None:
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "a.json").write_text("{broken")
    (directory / "b.json").write_text(json.dumps({"resourceType": "Patient"}))
    (directory / "c.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {"resourceType": "Basic", "code": {"text": "x"}},
                        "request": {"method": "POST", "url": "Basic"},
                    }
                ],
            }
        )
    )
    report = load_fixtures(client, directory)
    assert [f.ok for f in report.files] == [False, False, True]
    assert "not valid JSON" in (report.files[0].error or "")
    assert "not a FHIR Bundle" in (report.files[1].error or "")
    assert report.files[2].warnings and "not idempotent" in report.files[2].warnings[0]


def test_fixture_loader_against_dead_server(tmp_path: Path) -> None:
    directory = write_fixture_dir(tmp_path / "fixtures", "dead")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FhirClient(f"http://127.0.0.1:{port}/fhir/R4", retries=0) as c, pytest.raises(FhirServerError):
        load_fixtures(c, directory)


def test_repository_fixtures_load_twice(client: FhirClient) -> None:
    bundles = sorted(REPO_FIXTURES.glob("*.json"))
    assert len(bundles) >= 13, bundles  # the synthetic clinic is committed: an empty folder is a failure, not a skip
    first = load_fixtures(client, REPO_FIXTURES)
    assert first.ok, [f.summary() for f in first.files if not f.ok]
    assert len(first.files) == len(bundles)
    second = load_fixtures(client, REPO_FIXTURES)
    assert second.ok
    assert second.created_count == 0, [f.summary() for f in second.files if f.created_count]


def test_identifier_search_follows_updates_and_deletes(client: FhirClient, fhir_server: str) -> None:
    old, new = f"old-{uuid.uuid4().hex[:8]}", f"new-{uuid.uuid4().hex[:8]}"
    task = client.create(
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "identifier": [{"system": FIXTURE_SYSTEM, "value": old}],
        }
    )
    assert [t["id"] for t in client.search("Task", {"identifier": f"{FIXTURE_SYSTEM}|{old}"})] == [task["id"]]
    task["identifier"] = [{"system": FIXTURE_SYSTEM, "value": new}]
    client.update(task)
    assert client.search("Task", {"identifier": f"{FIXTURE_SYSTEM}|{old}"}) == []
    assert len(client.search("Task", {"identifier": f"{FIXTURE_SYSTEM}|{new}"})) == 1
    assert len(client.search("Task", {"identifier": new})) == 1  # value only: the unindexed path
    with requests.delete(f"{fhir_server}/Task/{task['id']}", timeout=5) as response:
        assert response.status_code == 200
    assert client.search("Task", {"identifier": f"{FIXTURE_SYSTEM}|{new}"}) == []


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
def test_fixture_loader_refused_by_the_server_says_so_once(
    tmp_path: Path, token: str | None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptguard.cli import main

    monkeypatch.delenv("PTGUARD_FHIR_TOKEN", raising=False)
    with FhirServerProcess(log_path=tmp_path / "fhir.log", require_token="s3cret") as server:
        assert server.base_url
        args = ["load-fixtures", "--fhir", server.base_url, *(["--token", token] if token else [])]
        code = main(args, out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 6 and err.count("\n") == 1 and "401" in err and "--token" in err
