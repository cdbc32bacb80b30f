"""Subscriptions become a table of names: they outlive deleted folders
(RFC 3501 6.3.6). The subscribed flags of existing folders are carried over.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_subscriptions_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("mailbox_id", "name", name=op.f("uq_subscriptions_mailbox_id_name")),
    )
    op.execute(
        "INSERT INTO subscriptions (mailbox_id, name) "
        "SELECT mailbox_id, name FROM folders WHERE subscribed"
    )
    with op.batch_alter_table("folders") as batch:
        batch.drop_column("subscribed")


def downgrade() -> None:
    with op.batch_alter_table("folders") as batch:
        batch.add_column(
            sa.Column("subscribed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        "UPDATE folders SET subscribed = EXISTS (SELECT 1 FROM subscriptions s "
        "WHERE s.mailbox_id = folders.mailbox_id AND s.name = folders.name)"
    )
    with op.batch_alter_table("folders") as batch:
        batch.alter_column("subscribed", server_default=None)
    op.drop_table("subscriptions")
