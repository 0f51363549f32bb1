"""SMART sessions live in the database, encrypted, so every gunicorn worker (every app instance) shares them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select

from ptguard.store.db import session_scope
from smart_app import smart
from smart_app.sessions import SmartSession, TokenStore
from smart_app.smart import IdentityCheck, SmartConfiguration
from webapp import create_app


def _ts(**token: Any) -> smart.TokenSet:
    base = {
        "access_token": "secret-access-token-123",
        "refresh_token": "secret-refresh-token-456",
        "expires_in": 3600,
        "scope": "launch user/*.rs",
        "patient": "pat-1",
        "fhirContext": [{"reference": "ClaimResponse/cr-1"}],
    }
    base.update(token)
    cfg = smart.IssuerConfig(fhir_base="https://ehr.example/fhir", client_id="c")
    return smart.token_set(
        base, cfg, SmartConfiguration("a", "t"), ["launch"], IdentityCheck(False, "Practitioner/1", None, "")
    )


def _app(db: str, secret: str = "shared-secret") -> Flask:
    return create_app({"TESTING": True, "DATABASE_URL": db, "SECRET_KEY": secret, "SESSION_COOKIE_SECURE": False})


def _sign_in(app: Flask) -> tuple[str, str]:
    """A session as the callback makes one, through this app instance: (session id, csrf)."""
    with app.test_request_context():
        from smart_app.views import _tokens

        return _tokens().put(_ts())


def test_a_session_made_by_one_worker_is_usable_from_another(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    worker1, worker2 = _app(db), _app(db)
    sid, csrf = _sign_in(worker1)
    c1, c2 = worker1.test_client(), worker2.test_client()
    for c in (c1, c2):
        with c.session_transaction() as sess:
            sess["sid"] = sid
    for c in (c1, c2, c2, c1):
        r = c.get("/app/")
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        html = r.get_data(as_text=True)
        assert "Denial worklist" in html and csrf in html
    # signing out through worker 2 ends the session for worker 1 too
    r = c2.post("/app/logout", data={"csrf": csrf})
    assert r.status_code == 302
    assert c1.get("/app/").status_code == 401


def test_tokens_are_encrypted_at_rest_and_tied_to_the_secret_key(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.sqlite3'}"
    store = TokenStore(db, "shared-secret")
    ts = _ts()
    sid, csrf = store.put(ts)
    with session_scope(db) as s:
        rows = s.scalars(select(SmartSession)).all()
        assert len(rows) == 1
        blob, row_id = rows[0].blob, rows[0].id
    for plain in (b"secret-access-token-123", b"secret-refresh-token-456", b"pat-1", b"ehr.example", sid.encode()):
        assert plain not in blob
    assert row_id != sid  # the cookie's id is not the key: a copy of the table gives no usable session id
    got = TokenStore(db, "shared-secret").get(sid)
    assert got is not None and got[0] == ts and got[1] == csrf
    assert got[0].context.reference("ClaimResponse") == "cr-1" and got[0].scope == "launch user/*.rs"
    assert TokenStore(db, "another-secret").get(sid) is None  # another key cannot read it


def test_refresh_is_saved_and_expired_rows_are_cleaned_up(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.sqlite3'}"
    store = TokenStore(db, "k")
    ts = _ts()
    sid, csrf = store.put(ts)
    ts.update({"access_token": "new-access", "expires_in": 60, "refresh_token": "new-refresh"})
    store.save(sid, ts, csrf)
    other = TokenStore(db, "k").get(sid)
    assert other is not None and other[0].access_token == "new-access" and other[0].refresh_token == "new-refresh"
    old_sid, _ = store.put(_ts())
    with session_scope(db) as s:
        for row in s.scalars(select(SmartSession)).all():
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert store.get(old_sid) is None
    store.put(_ts())  # a new sign-in sweeps the expired rows
    with session_scope(db) as s:
        assert len(s.scalars(select(SmartSession)).all()) == 1


def test_launch_with_an_invalid_port_is_unknown_ehr(tmp_path: Path) -> None:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}",
            "SECRET_KEY": "k",
            "PTGUARD_SMART_ISSUERS": '{"issuers": [{"fhir_base": "http://127.0.0.1:8090/fhir", "client_id": "c"}]}',
        }
    )
    client = app.test_client()
    for iss in ("http://127.0.0.1:99999/fhir", "http://127.0.0.1:-1/fhir", "http://[::1/fhir"):
        r = client.get("/app/launch", query_string={"iss": iss, "launch": "x"})
        html = r.get_data(as_text=True)
        assert r.status_code == 400, (iss, r.status_code)
        assert "Unknown EHR" in html and "Something went wrong" not in html
