"""Folder name events (`name_events`): a folder created, deleted, renamed or
(un)subscribed is recorded in the transaction that makes the change, so that
the IMAP processes of every node tell their NOTIFY sessions (RFC 5465
MailboxName, SubscriptionChange), not only those of the process that made
it. On PostgreSQL a trigger NOTIFYs each one (channel `mss_names`, payload
its id) at commit (`storage.notify`); SQLite processes poll.

Revision ID: 0017
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_UP = [
    """
    CREATE OR REPLACE FUNCTION mss_notify_names() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('mss_names', NEW.id::text);
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER name_events_notify AFTER INSERT ON name_events
    FOR EACH ROW EXECUTE FUNCTION mss_notify_names()
    """,
]

_PG_DOWN = [
    "DROP TRIGGER IF EXISTS name_events_notify ON name_events",
    "DROP FUNCTION IF EXISTS mss_notify_names()",
]


def upgrade() -> None:
    op.create_table(
        "name_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("old_name", sa.String(length=1024), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=True),
        sa.Column("origin", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"],
            name=op.f("fk_name_events_mailbox_id_mailboxes"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_name_events")),
    )
    op.create_index(op.f("ix_name_events_created"), "name_events", ["created"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_DOWN:
            op.execute(statement)
    op.drop_index(op.f("ix_name_events_created"), table_name="name_events")
    op.drop_table("name_events")
