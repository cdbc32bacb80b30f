"""Grants carry a separate send-as right (submitting with the mailbox in
From:, the agent then named in Sender:), no longer implied by RFC 4314 "p".
Existing grants holding "p" keep the power they had: they get send-as.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(
            sa.Column("send_as", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    grants = sa.table("grants", sa.column("rights", sa.String()), sa.column("send_as", sa.Boolean()))
    op.execute(grants.update().where(grants.c.rights.like("%p%")).values(send_as=True))


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("send_as")
