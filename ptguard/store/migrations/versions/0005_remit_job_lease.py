"""Remittance job leases: the dedupe key stored as its SHA-256, an owner and lease, one in-flight job per key.

Revision ID: 0005
Revises: 0004
"""

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

IN_FLIGHT = "status IN ('queued', 'running')"
ABANDONED = "abandoned: the worker process holding this job stopped (its lease ran out); a later request took over"


def upgrade() -> None:
    with op.batch_alter_table("remit_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dedupe_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
    job = sa.table(
        "remit_job",
        sa.column("id", sa.String),
        sa.column("status", sa.String),
        sa.column("dedupe_key", sa.String),
        sa.column("dedupe_sha256", sa.String),
        sa.column("error", sa.String),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(job.c.id, job.c.dedupe_key).where(job.c.dedupe_key.is_not(None))).all()
    for row_id, key in rows:
        digest = hashlib.sha256(str(key).encode("utf-8", "surrogatepass")).hexdigest()
        conn.execute(job.update().where(job.c.id == row_id).values(dedupe_sha256=digest))
    # Jobs queued or running before this migration have no lease (no process renews one): they are abandoned,
    # which also clears any duplicate in-flight rows before the unique partial index is created.
    conn.execute(job.update().where(job.c.status.in_(("queued", "running")))
                 .values(status="error", error=ABANDONED, finished_at=datetime.now(UTC)))
    with op.batch_alter_table("remit_job", schema=None) as batch_op:
        batch_op.drop_index("ix_remit_job_dedupe_key")
        batch_op.drop_column("dedupe_key")
    op.create_index("uq_remit_job_in_flight", "remit_job", ["dedupe_sha256"], unique=True,
                    sqlite_where=sa.text(IN_FLIGHT), postgresql_where=sa.text(IN_FLIGHT))


def downgrade() -> None:
    # The keys themselves are gone (only their hashes were kept): old rows come back without one.
    op.drop_index("uq_remit_job_in_flight", table_name="remit_job")
    with op.batch_alter_table("remit_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dedupe_key", sa.String(length=600), nullable=True))
        batch_op.create_index("ix_remit_job_dedupe_key", ["dedupe_key"], unique=False)
        batch_op.drop_column("lease_expires")
        batch_op.drop_column("owner")
        batch_op.drop_column("dedupe_sha256")
