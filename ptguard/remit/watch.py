"""A watched drop folder: import each settled file, then move it to processed/ or quarantine/ (never delete)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from ptguard.fhir.client import FhirClient
from ptguard.fhir.refs import ResourceIndex
from ptguard.remit.intake import ImportResult, import_835

log = logging.getLogger("ptguard.remit")

PROCESSED = "processed"
QUARANTINE = "quarantine"
SETTLE_SECONDS = 2.0
MAX_FILE_BYTES = 100 * 1024 * 1024


def pending_files(folder: Path, *, settle_seconds: float = SETTLE_SECONDS, now: float | None = None) -> list[Path]:
    """Regular, non-hidden files directly in `folder` that nobody has written to for `settle_seconds`."""
    now = time.time() if now is None else now
    out = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.endswith((".part", ".tmp", ".errors.txt")) or not path.is_file():
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        if now - stat.st_mtime < settle_seconds:
            continue  # still being written (or just dropped): next round
        out.append(path)
    return out


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists():
        target = folder / f"{Path(name).stem}.{n}{Path(name).suffix}"
        n += 1
    return target


def move_to(path: Path, folder: Path) -> Path:
    """Move a file into `folder` without overwriting anything there; returns the new path."""
    folder.mkdir(exist_ok=True)
    target = _free_name(folder, path.name)
    path.replace(target)
    return target


def scan_once(
    folder: Path,
    *,
    db_url: str,
    fhir: FhirClient | None = None,
    index: ResourceIndex | None = None,
    today: date,
    settle_seconds: float = SETTLE_SECONDS,
    claim_id_systems: tuple[str, ...] = (),
    report: Callable[[Path, ImportResult, Path | None], None] | None = None,
) -> list[ImportResult]:
    """Import every settled file once. Imported or already-imported → processed/; quarantined or rejected →
    quarantine/ (with NAME.errors.txt beside it); failed (e.g. FHIR server down) → left in place for the next round.
    """
    results: list[ImportResult] = []
    for path in pending_files(folder, settle_seconds=settle_seconds):
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise OSError("too large")
            data = path.read_bytes()
        except OSError:
            log.warning("drop folder: a file could not be read; left in place")
            continue
        result = import_835(data, filename=path.name, db_url=db_url, fhir=fhir, index=index, today=today,
                            claim_id_systems=claim_id_systems)
        results.append(result)
        moved: Path | None = None
        if result.status in ("imported", "already-imported"):
            moved = move_to(path, folder / PROCESSED)
        elif result.status in ("quarantined", "rejected"):
            moved = move_to(path, folder / QUARANTINE)
            notes = "\n".join([result.message or result.status, *result.errors]) + "\n"
            moved.with_name(moved.name + ".errors.txt").write_text(notes, encoding="utf-8")
        if report is not None:
            report(path, result, moved)
    return results
