"""Login throttling state shared by every process (`login_failures`), and
certificates pinned to accounts by fingerprint (`cert_pins`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "scope",
            sa.Enum("ACCOUNT", "ADDRESS", name="throttle_scope", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("last_failure", sa.DateTime(), nullable=False),
        sa.Column("recent", sa.Text(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
        sa.UniqueConstraint("scope", "subject", name=op.f("uq_login_failures_scope_subject")),
    )
    op.create_table(
        "cert_pins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_cert_pins_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cert_pins")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_cert_pins_fingerprint")),
    )
    op.create_index(op.f("ix_cert_pins_account_id"), "cert_pins", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_cert_pins_account_id"), table_name="cert_pins")
    op.drop_table("cert_pins")
    op.drop_table("login_failures")
