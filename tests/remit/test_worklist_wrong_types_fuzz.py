"""Fuzz: a wrong JSON type at one element of a ClaimResponse/EOB file; `worklist add` reads it, and a bad file in a
folder does not keep the good ones off the worklist.

Run with PTGUARD_DEBUG=1 (the per-resource safety net re-raises), so a pass means the readers themselves cope.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from wrong_types import mutate

from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fhir_fixtures"
ADJUDICATIONS = ("ClaimResponse", "ExplanationOfBenefit")
PATIENTS = [p for p in sorted(FIXTURES.glob("patient-*.json")) if '"ClaimResponse"' in p.read_text()]
CASES_PER_SEED = 80


def _adjudications(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"].get("resourceType") in ADJUDICATIONS]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(argv, out)
    return code, out.getvalue(), capsys.readouterr().err


@pytest.mark.parametrize("seed", range(4))
def test_a_wrong_json_type_in_a_claim_response_is_added_without_failing(
    seed: int, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PTGUARD_DEBUG", "1")
    rng = random.Random(seed)
    for n in range(CASES_PER_SEED):
        source = rng.choice(PATIENTS)
        bundle = json.loads(source.read_text())
        entries = bundle["entry"]
        # Mostly the ClaimResponse itself; sometimes the Claim, Organization or Patient it is resolved against.
        resource = rng.choice(_adjudications(bundle)) if rng.random() < 0.8 else rng.choice(entries)["resource"]
        change = mutate(resource, rng)
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        (folder / "clinic-shared.json").write_text((FIXTURES / "clinic-shared.json").read_text())
        (folder / source.name).write_text(json.dumps(bundle))
        code, out, err = _run(["worklist", "add", str(folder), "--format", "json"], capsys)
        what = (source.name, resource.get("resourceType"), change)
        assert code == 0, (what, code, err)
        assert "internal error" not in err and "Traceback" not in err, (what, err)
        assert orjson.loads(out)["unreadable"] == 0, what
    code, _, err = _run(["worklist", "--status", "all"], capsys)  # what was stored lists without failing
    assert code == 0, err


def test_identifier_of_the_wrong_type_is_read_as_absent(db: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Was: TypeError at intake._identifier (`for ident in resource.get("identifier") or []`) on identifier: true."""
    monkeypatch.setenv("PTGUARD_DEBUG", "1")
    bundle = json.loads((FIXTURES / "patient-aetna-whitfield.json").read_text())
    cr = _adjudications(bundle)[0]
    cr["identifier"] = True
    cr["request"]["identifier"] = {"value": ["not", "a", "string"]}
    cr["insurer"]["display"] = 5
    (tmp_path / "clinic-shared.json").write_text((FIXTURES / "clinic-shared.json").read_text())
    (tmp_path / "chart.json").write_text(json.dumps(bundle))
    code, out, err = _run(["worklist", "add", str(tmp_path), "--format", "json"], capsys)
    assert code == 0, err
    assert orjson.loads(out)["work_items_created"] == 1
    _, listed, _ = _run(["worklist", "--format", "json"], capsys)
    item = orjson.loads(listed)["items"][0]
    assert item["payer"]["id"] == "aetna" and item["claim"]["control_number"] is None


def test_a_bad_file_among_good_ones_is_reported_and_the_good_ones_are_added(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: the unreadable ClaimResponse was reported as "not a therapy denial", and a file whose data tripped the
    loader stopped the whole run; now it is one `ptguard:` line and the other files still go on the worklist."""
    import ptguard.remit.native as native

    monkeypatch.delenv("PTGUARD_DEBUG", raising=False)
    for f in ["clinic-shared.json", *(p.name for p in PATIENTS)]:
        (tmp_path / f).write_text((FIXTURES / f).read_text())
    real_ingest = native.ingest_claim_response

    def trips_on_uhc(resource: dict[str, Any], **kwargs: Any) -> Any:
        if resource.get("id") == "cr-uhc-01":
            raise TypeError("an element no reader foresaw")
        return real_ingest(resource, **kwargs)

    monkeypatch.setattr(native, "ingest_claim_response", trips_on_uhc)
    import ptguard.check

    real_load = ptguard.check.load_path

    def bcbs_unloadable(path: Path) -> Any:
        if "bcbs" in path.name:
            raise KeyError("entry")
        return real_load(path)

    monkeypatch.setattr(ptguard.check, "load_path", bcbs_unloadable)
    code, out, err = _run(["worklist", "add", str(tmp_path), "--format", "json"], capsys)
    assert code == 0, err
    summary = orjson.loads(out)
    assert summary["work_items_created"] == 1 and summary["unreadable"] == 2, summary
    problems = [r["problem"] for r in summary["results"] if "problem" in r]
    assert any("cr-uhc-01" in p for p in problems) and any("patient-bcbs" in p for p in problems), problems
    assert err.count("ptguard: ") >= 2 and "Traceback" not in err
    code, text_out, _ = _run(["worklist", "add", str(tmp_path)], capsys)
    assert code == 0 and "could not be read" in text_out and "not a therapy denial" not in text_out
    code, _, err = _run(["worklist", "add", str(tmp_path / "patient-uhc-delgado.json")], capsys)
    assert code == 2 and "could not be read" in err  # the only file named, and nothing of it readable
