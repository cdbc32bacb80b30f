"""A mailbox may keep \\Seen per reading account (`mailboxes.private_seen`,
off for every existing mailbox); the per-account state lives in
`private_seen`, one row per (message, account) that has read it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.add_column(
            sa.Column("private_seen", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "private_seen",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"],
            name=op.f("fk_private_seen_message_id_messages"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"],
            name=op.f("fk_private_seen_account_id_accounts"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "account_id", name=op.f("pk_private_seen")),
    )
    op.create_index(
        "ix_private_seen_account_message", "private_seen", ["account_id", "message_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_private_seen_account_message", table_name="private_seen")
    op.drop_table("private_seen")
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("private_seen")
