"""Payer criteria files: every shipped file validates; a bad file fails with file, JSON path and reason."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ptguard.errors import NotFoundError, RuleFileError
from ptguard.rules.criteria_files import DEFAULT_CRITERIA_DIR, available_payers, load_payer, require_payer
from ptguard.rules.tables import effective_rows, table

EXPECTED_PAYERS = {
    "aetna",
    "anthem",
    "bcbs",
    "cigna",
    "humana",
    "medicare",
    "medicare-advantage",
    "medicaid-mco",
    "molina",
    "uhc",
    "default-commercial",
}


def test_every_payer_has_a_valid_file() -> None:
    assert set(available_payers()) == EXPECTED_PAYERS
    for payer in EXPECTED_PAYERS:
        crit = load_payer(payer)
        assert crit.criteria, payer
        for c in crit.criteria:
            assert c.citation.source and c.fix and c.effective_from is not None, (payer, c.id)


def test_payer_specific_emphasis() -> None:
    aetna = {c.id: c for c in load_payer("aetna").criteria}
    assert aetna["note.functional-goal"].severity == "critical"
    assert "ncci.payer-bypass-risk" in aetna
    assert "medicare.kx-threshold" not in {c.id for c in load_payer("medicare-advantage").criteria}
    assert load_payer("uhc").unit_method == "cms" and load_payer("aetna").unit_method == "per-code"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def test_bad_severity_names_file_and_path(tmp_path: Path) -> None:
    d = _write(
        tmp_path, "acme", "payer: acme\nname: Acme\ncriteria:\n  - id: x.y\n    check: units\n    severity: fatal\n"
    )
    with pytest.raises(RuleFileError) as err:
        load_payer("acme", d)
    text = str(err.value)
    assert "acme.yaml" in text and "$.criteria[0].severity" in text and "fatal" in text


def test_unknown_check_and_bad_date(tmp_path: Path) -> None:
    d = _write(tmp_path, "acme", "payer: acme\nname: Acme\ncriteria:\n  - id: x.y\n    check: telepathy\n")
    with pytest.raises(RuleFileError, match=r"\$\.criteria\[0\]\.check"):
        load_payer("acme", d)
    d = _write(tmp_path, "acme2", "payer: acme2\nname: Acme\ncriteria:\n  - id: x.y\n    effective_from: 2026-13-45x\n")
    with pytest.raises(RuleFileError, match="effective_from"):
        load_payer("acme2", d)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    d = _write(tmp_path, "acme", "payer: acme\nname: [unclosed\n")
    with pytest.raises(RuleFileError, match=r"acme\.yaml: line \d+"):
        load_payer("acme", d)


def test_incomplete_criterion_and_cycle(tmp_path: Path) -> None:
    d = _write(tmp_path, "acme", "payer: acme\nname: Acme\ncriteria:\n  - id: x.y\n    check: units\n")
    with pytest.raises(RuleFileError, match="lacks title"):
        load_payer("acme", d)
    _write(tmp_path, "a", "payer: a\nname: A\nextends: b\n")
    _write(tmp_path, "b", "payer: b\nname: B\nextends: a\n")
    with pytest.raises(RuleFileError, match="cycle"):
        load_payer("a", tmp_path)


def test_unknown_payer() -> None:
    with pytest.raises(NotFoundError, match="nobody"):
        load_payer("nobody", DEFAULT_CRITERIA_DIR)


@pytest.mark.parametrize(
    ("payer", "message"),
    [
        ("nobody", "unknown payer id 'nobody'; known payers: aetna, "),
        ("Not An Id", "'Not An Id' is not a payer id (lower-case letters, digits and '-'); known: aetna, "),
        ("../aetna", "'../aetna' is not a payer id (lower-case letters, digits and '-'); known: aetna, "),
    ],
)
def test_an_unknown_or_malformed_payer_id_is_the_same_error_loading_or_requiring(payer: str, message: str) -> None:
    with pytest.raises(NotFoundError) as required:
        require_payer(payer, DEFAULT_CRITERIA_DIR)
    with pytest.raises(NotFoundError) as loaded:
        load_payer(payer, DEFAULT_CRITERIA_DIR)
    assert loaded.value.message == required.value.message
    assert loaded.value.message.startswith(message)
    assert loaded.value.exit_code == 3


def test_a_criteria_folder_without_criteria_files_is_a_rule_file_error_naming_it(tmp_path: Path) -> None:
    """Was: exit 3, "unknown payer id 'default-commercial'; known payers: none" — the folder was the problem."""
    (tmp_path / "notes.txt").write_text("not criteria")
    with pytest.raises(RuleFileError) as info:
        load_payer("default-commercial", tmp_path)
    assert info.value.exit_code == 4 and info.value.where == str(tmp_path)
    assert "holds no payer criteria files" in info.value.message and "PTGUARD_CRITERIA_DIR" in info.value.message


def test_extends_naming_no_file_says_which_file(tmp_path: Path) -> None:
    _write(tmp_path, "acme", "payer: acme\nname: Acme\nextends: gone\n")
    with pytest.raises(NotFoundError, match=r"acme\.yaml \$\.extends: unknown payer id 'gone'; known payers: acme"):
        load_payer("acme", tmp_path)


def test_ncci_table_is_effective_dated() -> None:
    rows = table("ncci-pairs")["rows"]
    jan_2020 = {(r["column1"], r["column2"]) for r in effective_rows(rows, date(2020, 1, 15))}
    now = {(r["column1"], r["column2"]) for r in effective_rows(rows, date(2026, 11, 2))}
    assert ("97161", "97530") in jan_2020 and ("97161", "97530") not in now
    assert ("97140", "97530") in now
    for r in rows:
        assert r["source"], r
