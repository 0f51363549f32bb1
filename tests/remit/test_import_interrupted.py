"""An interrupted `remit import` frees its file at once (the next run imports it) and exits 130 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ptguard.remit.intake import IN_PROGRESS, IN_PROGRESS_EXIT, ImportResult, import_exit_code
from ptguard.store.db import session_scope
from ptguard.store.models import RemitFile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.remit_bench import build_835  # noqa: E402


def _status(db: str) -> list[tuple[str, str | None]]:
    with session_scope(db) as s:
        return [(r.status, r.lease_owner) for r in s.scalars(select(RemitFile))]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_interrupted_import_releases_its_file(sig: signal.Signals, tmp_path: Path) -> None:
    big = tmp_path / "big.835"
    big.write_bytes(build_835(30_000))
    db = f"sqlite:///{tmp_path / 'i.sqlite3'}"
    env = {**os.environ, "DATABASE_URL": db}
    cmd = [sys.executable, "-m", "ptguard.cli", "remit", "import", str(big)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (tmp_path / "i.sqlite3").exists():
        time.sleep(0.05)
    while time.monotonic() < deadline:  # wait until the file is registered and being processed
        try:
            if _status(db) == [("processing", _status(db)[0][1])]:
                break
        except Exception:
            pass
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    rows = _status(db)
    assert len(rows) == 1 and rows[0][0] == "failed"  # freed, not left 'processing' under a 15-minute lease


def test_a_file_another_process_holds_is_not_success() -> None:
    held = ImportResult(filename="a.835", sha256="x", status=IN_PROGRESS)
    done = ImportResult(filename="b.835", sha256="y", status="imported", claims=1)
    assert import_exit_code([done, held]) == IN_PROGRESS_EXIT == 75
