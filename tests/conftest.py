"""Shared fixtures: repository paths, the public data, and a frozen clock at a non-UTC offset."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import time_machine

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
SHARED = ROOT.parent / "shared"
PUBLIC_FHIR = SHARED / "public-fhir"
SCHEMAS = ROOT / "schemas"
CHICAGO = timezone(timedelta(hours=-6))


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    """Every test runs at 2026-12-03 10:00 in a UTC-6 zone, to catch timezone slips."""
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "America/Chicago"
    time.tzset()
    with time_machine.travel(datetime(2026, 12, 3, 10, 0, tzinfo=CHICAGO), tick=True):
        yield
    if old_tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old_tz
    time.tzset()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
