"""The SORT / THREAD keys of each message (base subject, sent date, first
addresses, display names, Message-ID, References), kept at delivery so that
sorting or threading a large folder never parses a message: `bodies.sort_keys`,
AES-GCM like the metadata. Rows stored before this revision keep NULL; the
store computes their keys the first time a SORT or THREAD needs them and
writes them back (the key file, needed to read a message, is not available
to a migration).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bodies") as batch:
        batch.add_column(sa.Column("sort_keys", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bodies") as batch:
        batch.drop_column("sort_keys")
