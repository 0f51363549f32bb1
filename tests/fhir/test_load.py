"""FHIR reading: every public file loads; references resolve in all their forms; code systems normalise."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from ptguard.errors import InputError, UnsupportedVersionError
from ptguard.fhir import codes
from ptguard.fhir.load import load_bytes, load_path
from ptguard.fhir.refs import ResourceIndex
from tests.shared_data import PUBLIC_FHIR, require

PUBLIC = require(PUBLIC_FHIR)
PUBLIC_FILES = sorted(p for p in PUBLIC.rglob("*") if p.suffix in {".json", ".ndjson", ".xml"})


def test_public_data_is_there() -> None:
    assert len(PUBLIC_FILES) > 200


@pytest.mark.parametrize("path", PUBLIC_FILES, ids=[str(p.relative_to(PUBLIC)) for p in PUBLIC_FILES])
def test_every_public_file_loads(path: Path) -> None:
    result = load_path(path)
    index = ResourceIndex.from_load(result)
    assert len(index) == len(result.resources)
    assert result.resources or result.findings, "a file must yield resources or say why not"
    for f in result.findings:
        assert "\n" not in f.message


def test_public_xml_becomes_json() -> None:
    result = load_path(PUBLIC / "hl7-fhir-r4-examples-xml-via-fhir_models" / "encounter-example.xml")
    assert result.resources[0]["resourceType"] == "Encounter"


def test_cds_hooks_request_prefetch_is_read() -> None:
    fixtures = PUBLIC / "davinci-crd" / "inferno-test-kit-fixtures"
    signed = load_path(fixtures / "order_sign_hook_request.json")
    assert {r["resourceType"] for r in signed.resources} >= {"NutritionOrder"}
    bare = load_path(fixtures / "encounter_discharge_hook_request.json")
    assert not bare.resources and bare.findings[0].id == "data-quality.no-prefetch"


def _bundle(*resources: dict, full_urls: list[str] | None = None) -> bytes:
    entries = []
    for i, r in enumerate(resources):
        e: dict = {"resource": r}
        if full_urls:
            e["fullUrl"] = full_urls[i]
        entries.append(e)
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def test_references_in_every_form() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:x", "value": "42"}]}
    org = {"resourceType": "Organization", "name": "Payer"}
    cov = {
        "resourceType": "Coverage",
        "id": "c1",
        "contained": [{"resourceType": "Organization", "id": "inner", "name": "Inner"}],
        "beneficiary": {"reference": "Patient/p1"},
    }
    raw = _bundle(
        patient,
        org,
        cov,
        full_urls=["http://ehr.example/fhir/Patient/p1", "urn:uuid:7f0c", "http://ehr.example/fhir/Coverage/c1"],
    )
    result = load_bytes(raw, "test")
    ix = ResourceIndex.from_load(result)
    assert ix.resolve({"reference": "Patient/p1"}) is result.resources[0]
    assert ix.resolve("http://other.example/fhir/Patient/p1/_history/3") is result.resources[0]
    assert ix.resolve("urn:uuid:7f0c") is result.resources[1]
    assert ix.resolve("#inner", cov)["name"] == "Inner"
    assert ix.resolve("Patient?identifier=urn:x|42") is result.resources[0]
    assert ix.resolve("Patient/missing") is None
    assert ix.resolve({"display": "no reference"}) is None


def test_ndjson_bad_line_is_a_finding() -> None:
    raw = b'{"resourceType":"Patient","id":"a"}\n{oops\n{"resourceType":"Patient","id":"b"}\n'
    result = load_bytes(raw, "x.ndjson")
    assert [r["id"] for r in result.resources] == ["a", "b"]
    assert (
        result.findings[0].id == "data-quality.malformed-line" and "line 2" in result.findings[0].evidence[0].reference
    )


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"malformed JSON .* line 1"):
        load_bytes(b'{"resourceType": "Bundle",', "bad.json")
    with pytest.raises(InputError, match="empty"):
        load_bytes(b"  \n", "empty.json")
    with pytest.raises(UnsupportedVersionError, match="R5"):
        load_bytes(orjson.dumps({"resourceType": "Encounter", "id": "e", "actualPeriod": {}, "class": [{}]}), "r5.json")
    with pytest.raises(InputError, match="no such file"):
        load_path(tmp_path / "nope.json")
    result = load_bytes(orjson.dumps({"foo": 1}), "notfhir.json")
    assert not result.resources and result.findings[0].id == "data-quality.not-fhir"


def test_r5_entry_inside_bundle_is_skipped_with_a_finding() -> None:
    raw = _bundle({"resourceType": "Patient", "id": "p"}, {"resourceType": "Permission", "id": "x"})
    result = load_bytes(raw, "mixed.json")
    assert [r["resourceType"] for r in result.resources] == ["Patient"]
    assert result.findings[0].id == "data-quality.r5-resource"


def test_bom_is_tolerated() -> None:
    result = load_bytes(b"\xef\xbb\xbf" + orjson.dumps({"resourceType": "Patient", "id": "p"}), "bom.json")
    assert result.resources[0]["id"] == "p"


@pytest.mark.parametrize(
    ("system", "canonical"),
    [
        ("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", codes.HCPCS),
        ("https://bluebutton.cms.gov/resources/codesystem/hcpcs", codes.HCPCS),
        ("hhttps://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", codes.HCPCS),
        ("http://www.wpc-edi.com/reference/codelists/healthcare/claim-adjustment-reason-codes", codes.CARC),
        ("http://www.wpc-edi.com/reference/codelists/healthcare/remittance-advice-remark-codes/", codes.RARC),
        ("http://www.wpc-edi.com/reference/codelists/healthcare/claim-adjustment-group-codes", codes.GROUP),
        ("http://www.ama-assn.org/go/cpt", codes.CPT),
        ("http://example.org/other", "http://example.org/other"),
    ],
)
def test_code_systems_normalise(system: str, canonical: str) -> None:
    assert codes.normalise_system(system) == canonical


def test_note_attachment_forms_are_read() -> None:
    from ptguard.chart import AttachmentError, _attachment_text

    html = base64.b64encode(b"<p>Lifted a crate.</p><p>Tolerated well &amp; safe.</p>").decode()
    assert "Tolerated well & safe." in (_attachment_text({"contentType": "text/html", "data": html}) or "")
    plain = base64.b64encode("Reached overhead – 3/10 pain".encode()).decode()
    assert (
        _attachment_text({"contentType": "text/plain; charset=utf-8", "data": plain}) == "Reached overhead – 3/10 pain"
    )
    with pytest.raises(AttachmentError, match="application/pdf"):
        _attachment_text({"contentType": "application/pdf", "data": plain})
    with pytest.raises(AttachmentError, match="base64"):
        _attachment_text({"contentType": "text/plain", "data": "@@not base64@@"})
    script = base64.b64encode(b"<p>Lifted a box.</p><script>alert('tolerated well')</script><style>.x{}</style>").decode()
    text = _attachment_text({"contentType": "text/html", "data": script}) or ""
    assert "Lifted a box." in text and "alert" not in text and ".x" not in text
    assert _attachment_text({"contentType": "text/plain"}) is None
