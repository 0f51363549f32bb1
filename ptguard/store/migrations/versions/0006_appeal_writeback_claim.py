"""Appeal write-back claim: when a request began writing a case back to the chart (one write-back at a time).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("appeal_case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("writeback_claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("appeal_case", schema=None) as batch_op:
        batch_op.drop_column("writeback_claimed_at")
