"""Server-side SMART state: launch state in the database (keyed by `state`), token sets in process memory."""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ptguard.store.db import session_scope
from ptguard.store.models import OAuthState
from smart_app.smart import TokenSet

STATE_LIFETIME = timedelta(minutes=10)
SESSION_IDLE = 8 * 3600


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


class TokenStore:
    """Signed-in sessions by opaque id (the only thing in the cookie). Tokens never leave the server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[TokenSet, float, str]] = {}

    def put(self, ts: TokenSet) -> tuple[str, str]:
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        with self._lock:
            self._gc()
            self._items[sid] = (ts, time.time(), csrf)
        return sid, csrf

    def get(self, sid: str | None) -> tuple[TokenSet, str] | None:
        if not sid:
            return None
        with self._lock:
            item = self._items.get(sid)
            if item is None:
                return None
            ts, _, csrf = item
            self._items[sid] = (ts, time.time(), csrf)
            return ts, csrf

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)

    def _gc(self) -> None:
        cutoff = time.time() - SESSION_IDLE
        for key in [k for k, (_, seen, _) in self._items.items() if seen < cutoff]:
            del self._items[key]
