"""Duplicate resources (same Type/id or fullUrl) are read once, and differing copies are a data-quality finding."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import responses

from ptguard.appeals.gather import load_files
from ptguard.check import run_check
from ptguard.fhir.client import FhirClient
from ptguard.fhir.fetch import fetch, merge
from ptguard.fhir.load import LoadResult, load_json_value, load_many
from ptguard.fhir.refs import ResourceIndex
from tests.conftest import FIXTURES

NAKAMURA = FIXTURES / "patient-cigna-nakamura.json"
PROC = "Procedure/proc-cigna-01-97530"


def _bundle() -> dict[str, Any]:
    return dict(json.loads(NAKAMURA.read_text()))


def _units(report: Any) -> dict[str, Any]:
    (evaluation,) = report.evaluations
    return dict(evaluation.to_dict()["units"])


def _dup_findings(findings: Any) -> list[Any]:
    return [f for f in findings if f.id == "data-quality.duplicate-resource"]


def test_bundle_with_every_entry_twice_counts_each_once(tmp_path: Path) -> None:
    single = run_check([NAKAMURA])
    b = _bundle()
    b["entry"] += copy.deepcopy(b["entry"])
    doubled = tmp_path / "dup.json"
    doubled.write_text(json.dumps(b))
    report = run_check([doubled])
    assert _units(report) == _units(single)
    assert _units(report)["timed_minutes"] == 31
    assert _units(report)["billed"] == {"97530": 3}
    assert report.resource_count == single.resource_count
    assert not _dup_findings(report.data_quality), "identical copies are read once, silently"


def test_two_copies_of_one_file_in_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(NAKAMURA.read_text())
    (tmp_path / "b.json").write_text(NAKAMURA.read_text())
    report = run_check([tmp_path])
    assert _units(report)["timed_minutes"] == 31
    assert _units(report)["billed"] == {"97530": 3}
    assert not _dup_findings(report.data_quality)


def _with_changed_procedure(last_updated: str | None, minutes_note: str) -> dict[str, Any]:
    b = _bundle()
    for entry in b["entry"]:
        res = entry["resource"]
        if f"{res['resourceType']}/{res.get('id')}" == PROC:
            if last_updated:
                res["meta"] = {**res.get("meta", {}), "lastUpdated": last_updated}
            res["note"] = [{"text": minutes_note}]
    return b


def test_differing_copies_keep_the_later_last_updated_and_say_so(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(NAKAMURA.read_text())
    (tmp_path / "b.json").write_text(json.dumps(_with_changed_procedure("2026-11-01T00:00:00Z", "amended copy")))
    loaded = load_files([tmp_path])  # the path `ptguard appeal --bundle` takes
    procs = [r for r in loaded.resources if f"{r['resourceType']}/{r.get('id')}" == PROC]
    assert len(procs) == 1
    assert procs[0]["note"] == [{"text": "amended copy"}]
    (finding,) = _dup_findings(loaded.findings)
    assert PROC in finding.message
    assert "b.json" in finding.message.split("used")[1]
    assert "later meta.lastUpdated" in finding.message
    assert finding.severity == "warning"
    report = run_check([tmp_path])
    assert _units(report)["billed"] == {"97530": 3}
    assert len(_dup_findings(report.data_quality)) == 1


def test_differing_copies_without_timestamps_keep_the_first(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(NAKAMURA.read_text())
    (tmp_path / "b.json").write_text(json.dumps(_with_changed_procedure(None, "second copy")))
    loaded = load_many([tmp_path / "a.json", tmp_path / "b.json"])  # the path `ptguard remit --chart` takes
    procs = [r for r in loaded.resources if f"{r['resourceType']}/{r.get('id')}" == PROC]
    assert len(procs) == 1
    assert "note" not in procs[0] or procs[0]["note"] != [{"text": "second copy"}]
    (finding,) = _dup_findings(loaded.findings)
    assert "used the first copy" in finding.message and "a.json" in finding.message


def test_an_older_second_copy_does_not_replace_the_first() -> None:
    first = {"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2026-11-02T00:00:00Z"}, "gender": "male"}
    second = {"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2026-11-01T00:00:00Z"}, "gender": "other"}
    result = load_json_value([first, second], "x.json")
    assert result.resources == [first]
    (finding,) = _dup_findings(result.findings)
    assert "x.json[0]" in finding.message.split("used")[1]


def test_same_full_url_without_id_is_one_resource() -> None:
    entry = {"fullUrl": "urn:uuid:1b0a", "resource": {"resourceType": "Observation", "status": "final"}}
    other = {"fullUrl": "urn:uuid:2c0b", "resource": {"resourceType": "Observation", "status": "final"}}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [entry, copy.deepcopy(entry), other]}
    result = load_json_value(bundle, "b.json")
    assert result.full_urls == ["urn:uuid:1b0a", "urn:uuid:2c0b"]
    assert len(ResourceIndex.from_load(result).of_type("Observation")) == 2


def test_resources_without_id_or_full_url_are_never_merged() -> None:
    obs = {"resourceType": "Observation", "status": "final"}
    result = load_json_value([obs, dict(obs)], "x.json")
    assert len(result.resources) == 2


def test_resource_index_built_directly_reads_a_duplicate_once() -> None:
    a = {"resourceType": "Procedure", "id": "p", "status": "completed"}
    b = {"resourceType": "Procedure", "id": "p", "status": "completed"}
    index = ResourceIndex([a, b])
    assert index.of_type("Procedure") == [a]
    assert len(index) == 1
    assert index.get("Procedure", "p") is a


def test_extend_keeps_the_origin_of_each_part() -> None:
    merged = LoadResult(source="both")
    merged.extend(load_json_value({"resourceType": "Patient", "id": "p", "gender": "male"}, "one.json"))
    merged.extend(load_json_value({"resourceType": "Patient", "id": "p", "gender": "female"}, "two.json"))
    assert [r["gender"] for r in merged.resources] == ["male"]
    (finding,) = _dup_findings(merged.findings)
    assert "one.json" in finding.message and "two.json" in finding.message


def _patient(last_updated: str, gender: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p9", "meta": {"lastUpdated": last_updated}, "gender": gender}


def test_merge_keeps_a_newer_server_copy_over_an_older_prefetch_copy_and_says_so() -> None:
    prefetch = LoadResult(source="prefetch")
    prefetch.add(_patient("2026-11-01T00:00:00Z", "female"))
    fetched = LoadResult(source="https://ehr.test/fhir")
    fetched.add(_patient("2026-11-03T00:00:00Z", "other"), "https://ehr.test/fhir/Patient/p9")
    merged = merge(prefetch, fetched)
    assert [r["gender"] for r in merged.resources] == ["other"]
    assert merged.full_urls == ["https://ehr.test/fhir/Patient/p9"]
    (finding,) = _dup_findings(merged.findings)
    assert "Patient/p9" in finding.message
    assert "used the copy from https://ehr.test/fhir (later meta.lastUpdated)" in finding.message
    assert "prefetch" in finding.message.split("used")[0]


def test_merge_reads_identical_copies_once_without_a_finding() -> None:
    one, two = LoadResult(source="prefetch"), LoadResult(source="server")
    one.add(_patient("2026-11-01T00:00:00Z", "female"))
    two.add(_patient("2026-11-01T00:00:00Z", "female"))
    merged = merge(one, two)
    assert len(merged.resources) == 1
    assert not _dup_findings(merged.findings)


@responses.activate
def test_a_fetched_copy_of_a_resource_already_held_reaches_merge() -> None:
    base = "https://ehr.test/fhir"
    responses.get(f"{base}/Patient/p9", json=_patient("2026-11-03T00:00:00Z", "other"))
    have = LoadResult(source="prefetch")
    have.add(_patient("2026-11-01T00:00:00Z", "female"))
    with FhirClient(base, retries=0) as client:
        result = fetch(client, [("patient", "Patient/p9", None)], have=have, follow=False)
    assert result.complete and not result.findings
    merged = merge(have, result.load)
    assert [r["gender"] for r in merged.resources] == ["other"]
    assert len(_dup_findings(merged.findings)) == 1


def test_resource_index_from_a_load_indexes_what_the_loader_kept() -> None:
    result = load_json_value([_patient("2026-11-01T00:00:00Z", "female"), _patient("2026-11-02T00:00:00Z", "male")], "x")
    index = ResourceIndex.from_load(result)
    assert len(index) == 1
    patient = index.get("Patient", "p9")
    assert patient is not None and patient["gender"] == "male"


def test_a_shared_full_url_of_another_type_keeps_both() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    claim = {"resourceType": "Claim", "id": "c1"}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": patient}, {"fullUrl": "urn:uuid:1", "resource": claim}]}
    loaded = load_json_value(bundle, "b.json")
    assert [r["resourceType"] for r in loaded.resources] == ["Patient", "Claim"]


def test_entries_without_a_resource_are_noted_unless_they_are_requests() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {}, {"resource": None}, {"request": {"method": "DELETE", "url": "Patient/x"}}]}
    loaded = load_json_value(bundle, "b.json")
    notes = [f for f in loaded.findings if f.id == "data-quality.bad-entry"]
    assert len(notes) == 2 and all("has no resource" in f.message for f in notes)


def test_a_meta_that_is_not_an_object_does_not_stop_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a-meta.json").write_text('{"resourceType":"Patient","id":"x","meta":["x"]}')
    (tmp_path / "b.json").write_text(NAKAMURA.read_text())
    report = run_check([tmp_path])
    assert len(report.evaluations) == 1
