"""835 intake against the real sandbox FHIR server: match, write, decode, worklist, idempotency, HTTP endpoint."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ptguard.cli import main
from ptguard.fhir.client import FhirClient
from ptguard.fixtures_load import load_fixtures
from ptguard.remit.intake import import_835
from ptguard.remit.worklist import list_work_items

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REMIT_FIXTURES = ROOT / "tests" / "remit" / "fixtures"
TODAY = date(2026, 12, 3)
SOURCE_EXT = "https://ptguard.dev/fhir/StructureDefinition/source-remittance"


@pytest.fixture(scope="module")
def loaded(fhir_server: str) -> str:
    with FhirClient(fhir_server, timeout=30.0) as c:
        report = load_fixtures(c, ROOT / "fhir_fixtures")
        assert report.ok, report.as_dict()
    return fhir_server


@pytest.fixture
def client(loaded: str) -> Iterator[FhirClient]:
    with FhirClient(loaded, timeout=30.0) as c:
        yield c


def total(client: FhirClient, rtype: str, **params: str) -> int:
    bundle = client.search_bundle(rtype, {"_summary": "count", **params})
    return int(bundle.get("total") or 0)


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_aetna_835_round_trip(client: FhirClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'rt.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", db)
    data = (REMIT_FIXTURES / "aetna-01.835").read_bytes()
    claim = client.search("Claim", {"identifier": "https://ptguard.dev/fixture-id|claim-aetna-01"})[0]

    result = import_835(data, filename="aetna-01.835", db_url=db, fhir=client, today=TODAY)
    assert result.status == "imported" and result.matched == 1 and result.unmatched == []
    assert result.fhir is not None and result.fhir["document_reference"].startswith("DocumentReference/")

    # the raw file on the server, as a base64 DocumentReference
    doc_id = result.fhir["document_reference"].split("/", 1)[1]
    doc = client.read("DocumentReference", doc_id)
    attachment = doc["content"][0]["attachment"]
    assert attachment["contentType"] == "application/edi-x12" and base64.b64decode(attachment["data"]) == data

    # the ClaimResponse, linked to the Claim, the patient, the payer and the raw file
    responses = client.search("ClaimResponse", {"request": f"Claim/{claim['id']}"})
    mine = [r for r in responses if any(e.get("url") == SOURCE_EXT for e in r.get("extension") or [])]
    assert len(mine) == 1
    cr = mine[0]
    assert cr["request"]["reference"] == f"Claim/{claim['id']}"
    assert cr["patient"]["reference"] == claim["patient"]["reference"]
    assert cr["insurer"]["reference"].startswith("Organization/")
    source = next(e for e in cr["extension"] if e["url"] == SOURCE_EXT)
    assert source["valueReference"]["reference"] == result.fhir["document_reference"]

    # `ptguard denial` on it: appeal, line 97530, CARC 50 group CO, commercial 180-day deadline
    path = tmp_path / "cr.json"
    path.write_text(json.dumps(cr))
    code, out = cli("denial", str(path), "--format", "json")
    assert code == 0
    denial = json.loads(out)
    assert denial["denied"] and denial["path"] == "appeal" and denial["category"] == "medical-necessity"
    line = denial["lines"][0]
    assert line["code"] == "97530" and line["sequence"] == 1
    carc = line["reasons"][0]
    assert (carc["system"], carc["code"], carc["group"]) == (
        "https://x12.org/codes/claim-adjustment-reason-codes",
        "50",
        "CO",
    )
    assert denial["deadline"]["due"] == "2027-05-19" and denial["deadline"]["payer_type"] == "commercial"
    assert denial["claim"] == f"Claim/{claim['id']}"

    # the work item, with the chart's references and the right due date
    items = list_work_items(db, status="open", today=TODAY)
    assert len(items) == 1
    item = items[0]
    assert item["claim"]["reference"] == f"Claim/{claim['id']}" and item["matched"]
    assert item["claim_response"] == f"ClaimResponse/{cr['id']}"
    assert item["due_date"] == "2027-05-19" and item["carcs"] == ["CO-50"]
    assert item["lines"][0]["encounters"] and item["lines"][0]["encounters"][0].startswith("Encounter/")
    assert item["lines"][0]["procedures"], "the 97530 Procedure of the matched encounter"

    # `ptguard appeal` builds the packet against the matched chart on the server
    packet = tmp_path / "packet.pdf"
    code, out = cli("appeal", cr["id"], "--fhir", client.base_url, "--out", str(packet), "--format", "json")
    assert code == 0, out
    appeal = json.loads(out)
    from pypdf import PdfReader

    text = " ".join(page.extract_text() or "" for page in PdfReader(packet).pages)
    assert "CPB 0325" in text and "2 November 2026" in text and "19 May 2027" in text
    # The claim is named by the payer's own claim number (CLP07), never by a server-assigned id.
    icn = next(i["value"] for i in cr["identifier"] if i["system"] == "https://ptguard.dev/payer-claim-control-number")
    assert appeal["claim_number"] == icn and f"claim {icn}" in text
    # (The exhibits' source tags do cite Claim/<server id>: every sentence stays traceable to the chart. What must
    # not happen is the letter calling the claim by it. PDF text wraps at hyphens, so compare without whitespace.)
    flat = "".join(text.split()).lower()
    assert f"claim{icn.lower()}" in flat and f"claim{appeal['claim'].split('/')[-1].lower()}" not in flat
    cited = {ref for sentence in appeal["sentences"] for ref in sentence.get("sources", [])}
    assert any(ref.startswith("DocumentReference/") for ref in cited), "the letter quotes the daily note"

    # the same file twice: nothing new on the server or in the store
    before = (
        total(client, "ClaimResponse"),
        total(client, "DocumentReference"),
        total(client, "PaymentReconciliation"),
    )
    again = import_835(data, filename="aetna-01.835", db_url=db, fhir=client, today=TODAY)
    assert again.status == "already-imported"
    # even a fresh store (the server side is idempotent on its own, by conditional creates)
    other_db = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    fresh = import_835(data, filename="aetna-01.835", db_url=other_db, fhir=client, today=TODAY)
    assert fresh.status == "imported" and fresh.fhir is not None
    assert fresh.fhir["claim_responses"] == {"created": 0, "existing": 1}
    after = (total(client, "ClaimResponse"), total(client, "DocumentReference"), total(client, "PaymentReconciliation"))
    assert after == before
    assert len(list_work_items(db, today=TODAY)) == 1


def test_cli_import_against_the_server(
    loaded: str, client: FhirClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    code, out = cli(
        "remit",
        "import",
        str(REMIT_FIXTURES / "bcbs-97-236.835"),
        str(REMIT_FIXTURES / "uhc-151.835"),
        "--fhir",
        loaded,
        "--format",
        "json",
    )
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert data["summary"]["by_status"] == {"imported": 2}
    for f in data["files"]:
        assert f["fhir"]["claim_responses"]["created"] + f["fhir"]["claim_responses"]["existing"] == f["claims"]
    code, out = cli("worklist", "--format", "json")
    assert code == 0 and len(json.loads(out)["items"]) == 3


def test_http_endpoint_writes_to_the_server(loaded: str, client: FhirClient, tmp_path: Path) -> None:
    from webapp import create_app

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}",
            "PTGUARD_REMIT_API_KEYS": "k-123",
            "PTGUARD_REMIT_FHIR_BASE": loaded,
        }
    )
    try:
        web = app.test_client()
        data = (REMIT_FIXTURES / "medicare-ma130.835").read_bytes()
        headers = {"Authorization": "Bearer k-123", "Content-Type": "application/edi-x12"}
        job_ids = [web.post("/remit/835", data=data, headers=headers).get_json()["job_id"] for _ in range(2)]
        jobs = app.extensions["ptguard_remit_jobs"]
        results = [jobs.wait(j, timeout=60) for j in job_ids]
        assert all(r is not None and r.status == "done" for r in results)
        statuses = sorted(str(r.result["status"]) for r in results if r is not None and r.result)
        # the second post either joined the in-flight job (same body) or found the file already imported
        assert len(set(job_ids)) == 1 or statuses == ["already-imported", "imported"]
        first = results[0]
        assert first is not None and first.result is not None
        assert (
            first.result["fhir"]["claim_responses"]["created"] + first.result["fhir"]["claim_responses"]["existing"]
            == 1
        )
    finally:
        app.extensions["ptguard_remit_jobs"].close()
