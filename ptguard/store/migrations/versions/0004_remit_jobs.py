"""Remittance background jobs in the database, so GET /remit/jobs/<id> answers from any worker process.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remit_job",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("dedupe_key", sa.String(length=600), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("remit_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_remit_job_dedupe_key"), ["dedupe_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("remit_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remit_job_dedupe_key"))
    op.drop_table("remit_job")
