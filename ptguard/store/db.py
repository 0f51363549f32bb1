"""Database engine and sessions: SQLite by default, PostgreSQL via DATABASE_URL; schema by Alembic migrations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session, sessionmaker

from ptguard.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _normalise(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@cache
def get_engine(url: str) -> Engine:
    """One engine per URL; SQLite files get their folder created and foreign keys switched on."""
    url = _normalise(url)
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError):
        raise ConfigError("DATABASE_URL is not a database URL ptguard can use (sqlite:/// or postgresql://)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _fk(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


_MIGRATE_LOCK = threading.Lock()
# PostgreSQL advisory lock key held while migrating, so processes starting at once take turns ("ptgd").
_PG_MIGRATE_LOCK_KEY = 0x70746764
# SQLite has no such lock: a process that loses the race (the other created the table first) tries again.
_MIGRATE_ATTEMPTS = 8


def migrate(url: str) -> None:
    """Bring the schema up to the latest migration (idempotent).

    Safe when several processes start on a fresh database at once: on PostgreSQL they queue on an advisory lock;
    on SQLite the one that finds the other's tables tries again once the other has finished. Alembic's context is
    process-wide, hence the thread lock too.
    """
    with _MIGRATE_LOCK:
        for attempt in range(_MIGRATE_ATTEMPTS):
            try:
                _migrate(url)
                return
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                if attempt == _MIGRATE_ATTEMPTS - 1 or not _lost_migration_race(exc):
                    raise
                time.sleep(0.1 * (attempt + 1))


def _lost_migration_race(exc: DBAPIError) -> bool:
    """True when the error is another process having created the same object first."""
    message = str(exc.orig).lower()
    return "already exists" in message or "duplicate" in message


def _migrate(url: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_url"] = _normalise(url)
    with get_engine(url).begin() as conn:
        if conn.dialect.name == "postgresql":  # released when this transaction ends
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATE_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@cache
def _factory(url: str) -> sessionmaker[Session]:
    try:
        migrate(url)
    except DBAPIError as exc:  # unreachable, refused, or a schema another process left half-made
        reason = str(exc.orig).splitlines()[0][:120] if exc.orig else type(exc).__name__
        raise ConfigError(f"the database at DATABASE_URL cannot be reached ({reason})") from None
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error; the schema is migrated on first use."""
    session = _factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
