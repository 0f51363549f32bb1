"""Server-side SMART state in the database: launch state (keyed by `state`) and signed-in sessions.

A session's token record (access and refresh tokens, expiry, granted scopes, launch context, FHIR base) is stored
encrypted (Fernet, key derived from the app's SECRET_KEY) in `smart_session`, keyed by a hash of the opaque session
id that the cookie carries, so every gunicorn worker (and every process on the same database) sees the same
sessions. Rows idle longer than SESSION_IDLE are deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import LargeBinary, String, delete
from sqlalchemy.orm import Mapped, mapped_column

from ptguard.store.db import session_scope
from ptguard.store.models import AwareDateTime, Base, OAuthState
from smart_app.smart import TokenSet

STATE_LIFETIME = timedelta(minutes=10)
SESSION_IDLE = 8 * 3600
TOUCH_EVERY = 60  # seconds: how stale `seen_at` may get before a read writes it again


class SmartSession(Base):
    """One signed-in SMART session: the encrypted token record, keyed by sha256 of the cookie's session id."""

    __tablename__ = "smart_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime())
    seen_at: Mapped[datetime] = mapped_column(AwareDateTime())
    expires_at: Mapped[datetime] = mapped_column(AwareDateTime(), index=True)


def new_state() -> str:
    """256 bits of randomness (SMART asks for at least 122)."""
    return secrets.token_urlsafe(32)


def save_state(db_url: str, state: str, data: dict[str, Any]) -> None:
    """Keep the PKCE verifier and launch data server-side: the cookie may not survive the EHR iframe."""
    now = datetime.now(UTC)
    with session_scope(db_url) as s:
        for old in s.query(OAuthState).filter(OAuthState.expires_at < now).limit(200):
            s.delete(old)
        s.add(OAuthState(state=state, data=data, created_at=now, expires_at=now + STATE_LIFETIME))


def take_state(db_url: str, state: str) -> tuple[dict[str, Any] | None, str]:
    """The launch data for `state`, consumed (single use): (data, "ok") or (None, "missing" | "expired")."""
    with session_scope(db_url) as s:
        row = s.get(OAuthState, state[:128])
        if row is None:
            return None, "missing"
        data, expired = dict(row.data), row.expires_at < datetime.now(UTC)
        s.delete(row)
    return (None, "expired") if expired else (data, "ok")


def session_key(secret_key: str | bytes) -> bytes:
    """The Fernet key of the session table: HKDF-SHA256 of SECRET_KEY (a key of its own, not the cookie's)."""
    raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ptguard smart_session v1").derive(raw)
    return base64.urlsafe_b64encode(derived)


def _row_id(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class TokenStore:
    """Signed-in sessions by opaque id (the only thing in the cookie). Tokens never leave the server.

    Stored in the database, encrypted at rest, so a session started through one worker is usable from another.
    """

    def __init__(self, db_url: str, secret_key: str | bytes) -> None:
        if not secret_key:
            raise ValueError("the session store needs SECRET_KEY")
        self.db_url = db_url
        self._fernet = Fernet(session_key(secret_key))

    def _seal(self, ts: TokenSet, csrf: str) -> bytes:
        return self._fernet.encrypt(json.dumps({"ts": ts.to_dict(), "csrf": csrf}).encode())

    def _open(self, blob: bytes) -> tuple[TokenSet, str] | None:
        try:
            data = json.loads(self._fernet.decrypt(blob))
            return TokenSet.from_dict(data["ts"]), str(data["csrf"])
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None  # another SECRET_KEY (restart without PTGUARD_SECRET_KEY) or a damaged row: launch again

    def put(self, ts: TokenSet) -> tuple[str, str]:
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = datetime.now(UTC)
        with session_scope(self.db_url) as s:
            s.execute(delete(SmartSession).where(SmartSession.expires_at < now))
            s.add(
                SmartSession(
                    id=_row_id(sid),
                    blob=self._seal(ts, csrf),
                    created_at=now,
                    seen_at=now,
                    expires_at=now + timedelta(seconds=SESSION_IDLE),
                )
            )
        return sid, csrf

    def get(self, sid: str | None) -> tuple[TokenSet, str] | None:
        if not sid or not isinstance(sid, str):
            return None
        now = datetime.now(UTC)
        with session_scope(self.db_url) as s:
            row = s.get(SmartSession, _row_id(sid))
            if row is None:
                return None
            if row.expires_at < now:
                s.delete(row)
                return None
            found = self._open(row.blob)
            if found is None:
                return None
            if (now - row.seen_at).total_seconds() > TOUCH_EVERY:
                row.seen_at = now
                row.expires_at = now + timedelta(seconds=SESSION_IDLE)
            return found

    def save(self, sid: str, ts: TokenSet, csrf: str) -> None:
        """Store the token record again after a refresh (new access and refresh tokens)."""
        now = datetime.now(UTC)
        with session_scope(self.db_url) as s:
            row = s.get(SmartSession, _row_id(sid))
            if row is None:
                return
            row.blob = self._seal(ts, csrf)
            row.seen_at = now
            row.expires_at = now + timedelta(seconds=SESSION_IDLE)

    def drop(self, sid: str | None) -> None:
        if not sid or not isinstance(sid, str):
            return
        with session_scope(self.db_url) as s:
            s.execute(delete(SmartSession).where(SmartSession.id == _row_id(sid)))

    def latest(self) -> TokenSet | None:
        """The most recently created session's tokens (tests and diagnostics)."""
        with session_scope(self.db_url) as s:
            row = s.query(SmartSession).order_by(SmartSession.created_at.desc()).first()
            found = self._open(row.blob) if row is not None else None
        return found[0] if found else None
