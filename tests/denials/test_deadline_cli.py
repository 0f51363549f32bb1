"""`ptguard deadline`: every level name the issue lists, the JSON schema, contract limits and bad input."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from ptguard.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Draft202012Validator(orjson.loads((ROOT / "schemas" / "deadline-output.schema.json").read_bytes()))
NOTICE = "2026-11-20"
TODAY = "2026-12-03"

# (payer type, level as the issue names it, level in deadlines.yaml, due date worked by hand, words of the rule)
LEVELS = [
    ("medicare", "redetermination", "redetermination", date(2027, 3, 25), "405.942"),  # 5-day receipt + 120
    ("medicare", "reconsideration", "reconsideration", date(2027, 5, 24), "405.962"),  # 5 + 180
    ("medicare", "alj", "alj", date(2027, 1, 24), "405.1014"),  # 5 + 60
    ("medicare", "council", "appeals-council", date(2027, 1, 24), "405.1102"),
    ("medicare", "court", "federal-court", date(2027, 1, 24), "405.1136"),
    ("medicare-advantage", "plan-reconsideration", "plan-reconsideration", date(2027, 1, 24), "422.582"),  # 65
    ("medicare-advantage", "alj", "alj", date(2027, 1, 19), "422.602"),
    ("commercial", "internal", "internal-appeal", date(2027, 5, 19), "2560.503-1"),  # 180 days
    ("commercial", "external-review", "external-review", date(2027, 3, 20), "147.136(d)"),  # 4 months, not 60 days
    ("medicaid-mco", "plan-appeal", "plan-appeal", date(2027, 1, 19), "438.402"),  # 60 days
    ("medicaid-mco", "fair-hearing", "state-fair-hearing", date(2027, 3, 20), "438.408"),  # 120 days
]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(["deadline", *args], out=out)
    return code, out.getvalue(), capsys.readouterr().err


@pytest.mark.parametrize(("ptype", "given", "level", "due", "rule"), LEVELS, ids=[f"{p}-{g}" for p, g, *_ in LEVELS])
def test_every_level_of_the_issue(
    ptype: str, given: str, level: str, due: date, rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--payer-type", ptype, "--level", given, "--notice-date", NOTICE, "--today", TODAY, "--format", "json"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    value = orjson.loads(out)
    SCHEMA.validate(value)
    assert value["level"] == level
    assert value["due_date"] == due.isoformat()
    assert value["days_left"] == (due - date.fromisoformat(TODAY)).days
    assert rule in value["rule"]
    assert value["payer_type"] == ptype and value["overdue"] is False


def test_default_level_text_and_all_levels(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--payer-type", "medicare", "--notice-date", NOTICE, "--today", TODAY], capsys)
    assert code == 0
    assert "redetermination" in out and "2027-03-25" in out and "112 days left" in out and "405.942" in out
    assert "receipt presumed 5 days" in out
    code, out, _ = run(["--payer-type", "medicare", "--all", "--notice-date", NOTICE, "--format", "json"], capsys)
    value = orjson.loads(out)
    SCHEMA.validate(value)
    assert [d["level"] for d in value["deadlines"]] == [
        "reopening", "redetermination", "reconsideration", "alj", "appeals-council", "federal-court",
    ]
    first, later = value["deadlines"][1], value["deadlines"][2]
    # Only the first level (and reopening) run from this notice; a later one from the decision before it.
    assert first["due_date"] == "2027-03-25" and first["runs_from"] == "the notice"
    assert later["due_date"] is None and later["days_left"] is None
    assert later["runs_from"] == "the redetermination decision" and "180 days from receipt of" in later["basis"]
    code, out, _ = run(["--payer-type", "medicare", "--all", "--notice-date", NOTICE, "--today", TODAY], capsys)
    assert "alj                    runs from the reconsideration decision" in out


def test_overdue_and_non_utc_notice(capsys: pytest.CaptureFixture[str]) -> None:
    # 22:30 on 31 Dec at UTC-8 is 1 Jan in UTC; the notice keeps the date it was written with.
    args = ["--payer-type", "commercial", "--notice-date", "2026-12-31T22:30:00-08:00", "--today", "2027-07-01",
            "--format", "json"]
    code, out, _ = run(args, capsys)
    value = orjson.loads(out)
    assert code == 0 and value["notice_date"] == "2026-12-31" and value["due_date"] == "2027-06-29"
    assert value["overdue"] is True and value["days_left"] == -2


def test_contract_limit_applies_to_a_payer_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text("aetna: {internal-appeal: 90}\n")
    args = ["--payer", "aetna", "--notice-date", NOTICE, "--today", TODAY, "--contract", str(contract),
            "--format", "json"]
    value = orjson.loads(run(args, capsys)[1])
    assert value["due_date"] == "2027-02-18" and value["contract_override"] is True and "aetna" in value["rule"]
    # The regulatory floor for another commercial payer is untouched by aetna's contract.
    args[1] = "cigna"
    value = orjson.loads(run(args, capsys)[1])
    assert value["due_date"] == "2027-05-19" and value["contract_override"] is False


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--payer-type", "commercial", "--level", "alj", "--notice-date", NOTICE], 3, "levels: internal-appeal"),
        (["--payer-type", "medicare", "--notice-date", "2026-13-01"], 2, "is not a date"),
        (["--payer-type", "medicare", "--notice-date", "2026"], 2, "YYYY-MM-DD"),
        (["--payer-type", "medicare", "--notice-date", "2026-11-20T25:00:00Z"], 2, "is not a date"),
        (["--payer-type", "medicare", "--notice-date", "2026-11-20T10:00:00"], 2, "with its offset"),
        (["--payer-type", "medicare", "--notice-date", "2026-11-20T no such time"], 2, "is not a date"),
        (["--payer-type", "medicare", "--notice-date", "\uff12\uff10\uff12\uff16-11-20"], 2, "is not a date"),
        (["--notice-date", NOTICE], 2, "name the payer"),
        (["--payer", "aetna", "--payer-type", "medicare", "--notice-date", NOTICE], 2, "commercial payer"),
        (["--payer", "nobody", "--notice-date", NOTICE], 3, "known payers: aetna"),
    ],
)
def test_bad_input_is_one_line(args: list[str], code: int, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    got, out, err = run(args, capsys)
    assert got == code and out == ""
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_configured_contract_reaches_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text("aetna: {internal: 60}\n")  # a short level name is accepted in the file too
    monkeypatch.setenv("PTGUARD_CONTRACT_DEADLINES", str(contract))
    value = orjson.loads(run(["--payer", "aetna", "--notice-date", NOTICE, "--today", TODAY, "--format", "json"], capsys)[1])
    assert value["due_date"] == "2027-01-19" and value["contract_override"] is True
    out = io.StringIO()
    bundle = ROOT / "fhir_fixtures" / "patient-aetna-whitfield.json"
    assert main(["denial", str(bundle), "--format", "json"], out=out) == 0
    denial = orjson.loads(out.getvalue())
    assert denial["deadline"]["contract_override"] is True and "contract" in denial["deadline"]["rule"]
    out = io.StringIO()
    assert main(["appeal", "cr-aetna-01", "--bundle", str(ROOT / "fhir_fixtures"), "--format", "json"], out=out) == 0
    assert orjson.loads(out.getvalue())["deadline"]["contract_override"] is True
    # The file is re-read when it changes.
    contract.write_text("aetna: {internal-appeal: 30}\n")
    value = orjson.loads(run(["--payer", "aetna", "--notice-date", NOTICE, "--today", TODAY, "--format", "json"], capsys)[1])
    assert value["due_date"] == "2026-12-20"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "not a readable file"),
        (b"\xff\xfe\x00binary", "cannot be read"),
        (b"a: " + b"[" * 100_000, "cannot be read"),
        (b"aetna: {internal-appeal: 99999999999}", "from 1 to 3650"),
        (b"aetna: {internal-appeal: true}", "from 1 to 3650"),
        (b"aetna: {second-look: 30}", "'second-look' is not an appeal level of commercial payers"),
        (b"aetna: {plan-appeal: 30}", "'plan-appeal' is not an appeal level of commercial payers"),
        (b"Aetna: {internal: 30}", "unknown payer id 'Aetna'"),
        (b"aetna: {internal: 60}\naetna: {internal: 90}", "name aetna twice"),
        (b"aetna: {internal: 60, internal-appeal: 50}", "a level is given twice"),
        (b"- aetna", "must map payer id"),
    ],
)
def test_bad_contract_file_is_a_setting_error(
    content: bytes | None, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "contract.yaml"
    if content is not None:
        path.write_bytes(content)
    else:
        path = tmp_path  # a folder, not a file
    monkeypatch.setenv("PTGUARD_CONTRACT_DEADLINES", str(path))
    code, out, err = run(["--payer", "aetna", "--notice-date", NOTICE], capsys)
    assert code == 5 and out == "" and words in err and err.count("\n") == 1
    code, _, err = run(["--payer", "aetna", "--notice-date", NOTICE, "--contract", str(path)], capsys)
    assert code == 5 and words in err


def test_notice_date_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--payer-type", "medicare", "--notice-date", "9999-12-31"], capsys)
    assert code == 2 and out == "" and "out of range" in err


def test_serve_refuses_to_start_with_a_bad_contract_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PTGUARD_CONTRACT_DEADLINES", str(tmp_path / "missing.yaml"))
    assert main(["serve", "--port", "0"], out=io.StringIO()) == 5
    assert "PTGUARD_CONTRACT_DEADLINES" in capsys.readouterr().err


def test_contract_days_count_from_the_notice_and_a_payer_type_keeps_the_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text("medicare: {redetermination: 30}\n")
    monkeypatch.setenv("PTGUARD_CONTRACT_DEADLINES", str(contract))
    by_id = orjson.loads(run(["--payer", "medicare", "--notice-date", NOTICE, "--today", TODAY, "--format", "json"],
                             capsys)[1])
    # 30 days from the notice itself (no 5-day receipt presumption for a contract), as the basis says.
    assert by_id["due_date"] == "2026-12-20" and "30 days from the notice dated 2026-11-20" in by_id["basis"]
    by_type = orjson.loads(run(["--payer-type", "medicare", "--notice-date", NOTICE, "--today", TODAY,
                                "--format", "json"], capsys)[1])
    assert by_type["due_date"] == "2027-03-25" and by_type["contract_override"] is False


def test_unknown_payer_type_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["--payer-type", "tricare", "--notice-date", NOTICE], capsys)
    assert code == 2 and "is not one of: medicare" in err
