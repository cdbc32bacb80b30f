"""Second factors of accounts: the one-time code (TOTP) secret, encrypted
with the store's keys, and the last time step accepted (shared by every
worker process, so that a code cannot be replayed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_factors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("totp_secret", sa.LargeBinary(), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_auth_factors_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_factors")),
        sa.UniqueConstraint("account_id", name=op.f("uq_auth_factors_account_id")),
    )
    op.create_index(op.f("ix_auth_factors_key_id"), "auth_factors", ["key_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_factors_key_id"), table_name="auth_factors")
    op.drop_table("auth_factors")
