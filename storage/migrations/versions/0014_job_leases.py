"""Several nodes on one PostgreSQL: the `job_leases` table (one runner per
periodic job across every worker and node), and, on PostgreSQL, triggers that
NOTIFY a folder's change (channel `mss_folder`, payload its id) and the access
epoch's (channel `mss_access`, payload the new value) in the transaction that
makes it, so that IMAP sessions on other nodes learn of it at its commit
(`storage.notify`). SQLite has no NOTIFY: its processes keep polling.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_UP = [
    """
    CREATE OR REPLACE FUNCTION mss_notify_folder() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('mss_folder', OLD.id::text);
            RETURN OLD;
        END IF;
        PERFORM pg_notify('mss_folder', NEW.id::text);
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER folders_notify AFTER DELETE OR UPDATE ON folders
    FOR EACH ROW EXECUTE FUNCTION mss_notify_folder()
    """,
    """
    CREATE OR REPLACE FUNCTION mss_notify_access() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('mss_access', NEW.value::text);
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER access_epoch_notify AFTER UPDATE ON access_epoch
    FOR EACH ROW EXECUTE FUNCTION mss_notify_access()
    """,
]

_PG_DOWN = [
    "DROP TRIGGER IF EXISTS access_epoch_notify ON access_epoch",
    "DROP FUNCTION IF EXISTS mss_notify_access()",
    "DROP TRIGGER IF EXISTS folders_notify ON folders",
    "DROP FUNCTION IF EXISTS mss_notify_folder()",
]


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_job_leases")),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_DOWN:
            op.execute(statement)
    op.drop_table("job_leases")
