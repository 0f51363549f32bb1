"""Fuzz: one element of a fixture chart given a wrong JSON type; check, denial and appeal read it without failing.

Run with PTGUARD_DEBUG=1, so the per-encounter / per-adjudication safety nets re-raise: a pass means the readers
themselves cope (a wrong-typed element is skipped or becomes a data-quality note), not that a net caught a crash.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from wrong_types import mutate

from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fhir_fixtures"
PATIENTS = sorted(FIXTURES.glob("patient-*.json"))
MUTATIONS_PER_SEED = 150


def _claim_response_id(bundle: dict[str, Any]) -> str | None:
    for entry in bundle["entry"]:
        res = entry.get("resource")
        if isinstance(res, dict) and res.get("resourceType") == "ClaimResponse" and isinstance(res.get("id"), str):
            return str(res["id"])
    return None


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv, io.StringIO())
    return code, capsys.readouterr().err


@pytest.mark.parametrize("seed", range(4))
def test_a_wrong_json_type_anywhere_is_read_without_failing(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PTGUARD_DEBUG", "1")
    rng = random.Random(seed)
    folder = tmp_path / "chart"  # the chart: the clinic's shared resources and one patient's
    folder.mkdir()
    (folder / "clinic-shared.json").write_text((FIXTURES / "clinic-shared.json").read_text())
    chart = folder / "patient.json"
    ran: dict[str, int] = {"check": 0, "denial": 0, "appeal": 0}
    for _ in range(MUTATIONS_PER_SEED):
        source = rng.choice(PATIENTS)
        bundle = json.loads(source.read_text())
        cr_id = _claim_response_id(bundle)  # before the mutation, which may hit the id itself
        resource = rng.choice(bundle["entry"])["resource"]
        change = mutate(resource, rng)
        chart.write_text(json.dumps(bundle))
        what = f"{source.name}: {resource['resourceType']}.{change}"
        commands = [["check", str(folder), "--format", "json"]]
        if cr_id is not None:
            commands += [
                ["denial", str(chart), "--format", "json"],
                ["appeal", str(folder), "--claim-response", cr_id, "--format", "json"],
            ]
        for argv in commands:
            # PTGUARD_DEBUG re-raises anything unexpected, which fails the test with its traceback.
            code, err = _run(argv, capsys)
            ran[argv[0]] += 1
            assert code in (0, 1, 2, 3, 4), (what, argv[0], code, err)
            assert "internal error" not in err and "Traceback" not in err, (what, err)
    assert ran["check"] == MUTATIONS_PER_SEED and ran["denial"] > 10 and ran["appeal"] > 10, ran


def test_a_folder_file_that_trips_the_loader_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` on a folder: such a file is a data-quality note and the others are checked (was exit 70)."""
    import ptguard.check

    monkeypatch.delenv("PTGUARD_DEBUG", raising=False)
    for source in (FIXTURES / "clinic-shared.json", FIXTURES / "patient-cigna-nakamura.json", PATIENTS[0]):
        (tmp_path / source.name).write_text(source.read_text())
    real_load = ptguard.check.load_path

    def trips(path: Path) -> Any:
        if path.name == PATIENTS[0].name:
            raise KeyError("entry")
        return real_load(path)

    monkeypatch.setattr(ptguard.check, "load_path", trips)
    out = io.StringIO()
    assert main(["check", str(tmp_path), "--format", "json"], out) == 0, capsys.readouterr().err
    report = json.loads(out.getvalue())
    assert any(e["encounter"] == "Encounter/enc-cigna-01" for e in report["encounters"])
    notes = [f for f in report["data_quality"] if f["id"] == "data-quality.unreadable-file"]
    assert notes and "unexpected shape (KeyError)" in notes[0]["message"], report["data_quality"]
    # named on the command line, the same file is an input error (exit 2), never a crash
    assert main(["check", str(tmp_path / PATIENTS[0].name)], io.StringIO()) == 2
    assert "unexpected shape" in capsys.readouterr().err
