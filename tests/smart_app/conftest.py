"""SMART app test fixtures: the web app on a fresh SQLite store, without HTTPS-only cookies."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from webapp import create_app


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'a.sqlite3'}",
            "SECRET_KEY": "k",
            "SESSION_COOKIE_SECURE": False,
        }
    )
