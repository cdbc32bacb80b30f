"""What the national directory publishes of a mailbox: `mailboxes.description`,
`mailboxes.service` (empty for every existing box) and `mailboxes.unlisted`
(off: existing boxes stay listed).

Revision ID: 0011
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.add_column(
            sa.Column("description", sa.String(length=1024), server_default="", nullable=False)
        )
        batch.add_column(
            sa.Column("service", sa.String(length=255), server_default="", nullable=False)
        )
        batch.add_column(
            sa.Column("unlisted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("unlisted")
        batch.drop_column("service")
        batch.drop_column("description")
