"""Native ClaimResponses onto the worklist: `ptguard worklist add` from files and `worklist sync` from the FHIR server."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from ptguard.cli import main
from ptguard.fhir.client import FhirClient
from ptguard.fixtures_load import load_fixtures

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {("aetna", "CO-50"), ("uhc", "CO-50"), ("bcbs", "CO-97")}


def _items(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    out = io.StringIO()
    assert main(["worklist", "--status", "all", "--format", "json"], out=out) == 0
    return list(orjson.loads(out.getvalue())["items"])


def _run(args: list[str]) -> dict[str, object]:
    out = io.StringIO()
    assert main(args, out=out) == 0
    return dict(orjson.loads(out.getvalue()))


def test_add_from_files_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'w.sqlite3'}")
    first = _run(["worklist", "add", str(ROOT / "fhir_fixtures"), "--format", "json"])
    assert first["claim_responses"] == 3 and first["work_items_created"] == 3
    again = _run(["worklist", "add", str(ROOT / "fhir_fixtures"), "--format", "json"])
    assert again["work_items_created"] == 0 and again["work_items_existing"] == 3
    items = _items(capsys)
    assert {(i["payer"]["id"], i["carcs"][0]) for i in items} == EXPECTED  # type: ignore[index]
    assert all(i["matched"] and i["due_date"] for i in items)


def test_sync_from_the_fhir_server(
    fhir_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FhirClient(fhir_server) as client:
        load_fixtures(client, ROOT / "fhir_fixtures")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 's.sqlite3'}")
    first = _run(["worklist", "sync", "--fhir", fhir_server, "--format", "json"])
    assert int(first["work_items_created"]) >= 3  # type: ignore[call-overload]
    again = _run(["worklist", "sync", "--fhir", fhir_server, "--format", "json"])
    assert again["work_items_created"] == 0 and again["work_items_existing"] == first["work_items_created"]
    items = _items(capsys)
    got = {(i["payer"]["id"], i["carcs"][0]) for i in items if i["carcs"]}  # type: ignore[index]
    assert got >= EXPECTED  # the codes come from the Claim the server holds, read when _include is ignored
    aetna = next(i for i in items if i["payer"]["id"] == "aetna")  # type: ignore[index]
    assert aetna["fhir_server"] == fhir_server and aetna["due_date"] == "2027-05-19"
    assert aetna["lines"][0]["code"] == "97530"  # type: ignore[index]


def test_sync_against_a_dead_server_is_exit_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'd.sqlite3'}")
    assert main(["worklist", "sync", "--fhir", "http://127.0.0.1:9/fhir/R4"], out=io.StringIO()) == 6
    assert "cannot connect" in capsys.readouterr().err


def test_a_denial_is_listed_once_however_it_arrives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.fhir_server import FhirServerProcess

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'once.sqlite3'}")
    with FhirServerProcess(log_path=tmp_path / "fhir.log") as server:
        assert server.base_url
        with FhirClient(server.base_url) as client:
            load_fixtures(client, ROOT / "fhir_fixtures")
        remit = ROOT / "tests" / "remit" / "fixtures" / "uhc-151.835"
        out = io.StringIO()
        assert main(["remit", "import", str(remit), "--fhir", server.base_url, "--format", "json"], out=out) == 0
        imported = int(orjson.loads(out.getvalue())["summary"]["work_items_created"])
        assert imported >= 1
        first = _run(["worklist", "sync", "--fhir", server.base_url, "--format", "json"])
        # The 835's ClaimResponses on the server are the import's own items; only the 3 fixture denials are new.
        assert first["work_items_created"] == 3 and first["work_items_existing"] == imported
        # The same fixture denials read from the files are the ones synced from the server (server ids differ).
        again = _run(["worklist", "add", str(ROOT / "fhir_fixtures"), "--format", "json"])
        assert again["work_items_created"] == 0 and again["work_items_existing"] == 3
    assert len(_items(capsys)) == imported + 3
