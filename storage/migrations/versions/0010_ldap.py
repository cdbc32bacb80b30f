"""Directory (LDAP) synchronisation: the entry an account comes from
(`accounts.directory_dn`), which grants the sync manages
(`grants.managed_by`), and the sync's lease and last result
(`directory_sync`).

Revision ID: 0010
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("directory_dn", sa.String(length=1024), nullable=True))
    op.create_index(op.f("ix_accounts_directory_dn"), "accounts", ["directory_dn"], unique=False)
    op.add_column("accounts", sa.Column("directory_disabled", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.add_column("grants", sa.Column("managed_by", sa.String(length=32), nullable=True))
    op.create_table(
        "directory_sync",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("lease_holder", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_started", sa.DateTime(), nullable=True),
        sa.Column("last_finished", sa.DateTime(), nullable=True),
        sa.Column("last_duration", sa.Float(), nullable=True),
        sa.Column("last_result", sa.String(length=16), nullable=True),
        sa.Column("last_counts", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_holder", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_directory_sync")),
    )


def downgrade() -> None:
    op.drop_table("directory_sync")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("managed_by")
    op.drop_index(op.f("ix_accounts_directory_dn"), table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("directory_dn")
        batch.drop_column("directory_disabled")
