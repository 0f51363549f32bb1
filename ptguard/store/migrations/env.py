"""Alembic environment: runs on the connection ptguard hands it (or DATABASE_URL from the command line)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from ptguard.config import default_database_url
from ptguard.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.attributes.get("connection_url") or os.environ.get("DATABASE_URL") or default_database_url()
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
