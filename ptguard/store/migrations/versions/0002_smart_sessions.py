"""SMART app sessions: each signed-in session's token record, encrypted, shared by every worker.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "smart_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("smart_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_smart_session_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("smart_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_smart_session_expires_at"))
    op.drop_table("smart_session")
