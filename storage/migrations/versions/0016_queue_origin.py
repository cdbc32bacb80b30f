"""Where a queued message came from (listener, client address, account and
login method, peer certificate DN), so that the flow matrix can decide its
recipients again when the queue relays it (the matrix may have changed since
the message was accepted). Entries queued before have none: they are relayed
on the decision taken when they were accepted.

Revision ID: 0016
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("queue", sa.Column("origin", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("queue") as batch:
        batch.drop_column("origin")
