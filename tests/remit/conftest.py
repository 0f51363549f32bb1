"""Fixtures shared by the remittance tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store for the test, also set as DATABASE_URL for the commands it runs."""
    url = f"sqlite:///{tmp_path / 'remit.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    return url
