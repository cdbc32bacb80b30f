"""Queue ids are never reused: on SQLite the `queue` table gets AUTOINCREMENT
(without it a new entry takes the highest freed rowid, and audit events of two
messages share one `queue_id`). PostgreSQL's sequence already never goes back.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild_queue(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # SQLite cannot alter a table's AUTOINCREMENT: batch mode copies it into
    # a new table made with the flag, keeping ids and rows.
    with op.batch_alter_table(
        "queue", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild_queue(True)


def downgrade() -> None:
    _rebuild_queue(False)
