"""Where the third-party public data lives (shared/ beside the repo, or PTGUARD_SHARED_DIR) — required, never skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PTGUARD_SHARED_DIR") or ROOT.parent / "shared")
PUBLIC_FHIR = SHARED / "public-fhir"
PUBLIC_X12 = SHARED / "public-x12"


def require(path: Path) -> Path:
    """The path, or a failing test that says where the public data is expected and how to point at it."""
    if not path.exists():
        pytest.fail(
            f"public test data not found at {path}: these tests need the shared/ folder beside the repository "
            "(as CI lays it out) or PTGUARD_SHARED_DIR pointing at it",
            pytrace=False,
        )
    return path


def require_service(what: str, error: BaseException) -> None:
    """PostgreSQL and Redis run on every development and CI machine: their absence fails, it does not skip."""
    pytest.fail(f"{what} is not reachable ({type(error).__name__}); start it as docs describe", pytrace=False)
