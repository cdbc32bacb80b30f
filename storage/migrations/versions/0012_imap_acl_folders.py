"""RFC 4314 rights per folder, and UIDVALIDITY unique across the server.

- `grants.folder`: "" (every existing grant) is a grant on the whole mailbox;
  a folder name makes a grant on that folder only, adding to the mailbox's.
  The unique key becomes (account, mailbox, folder).
- `uidvalidity`: one row, the last UIDVALIDITY handed out to any folder,
  started above every value in use. Folders made before keep their values:
  two mailboxes made in the same second may still share one, until the
  folder is made again (changing it would make every client download the
  folder again).

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(
            sa.Column("folder", sa.String(length=1024), server_default="", nullable=False)
        )
        batch.drop_constraint("uq_grants_account_id_mailbox_id", type_="unique")
        batch.create_unique_constraint(
            "uq_grants_account_id_mailbox_id_folder", ["account_id", "mailbox_id", "folder"]
        )
    table = op.create_table(
        "uidvalidity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uidvalidity")),
    )
    bind = op.get_bind()
    last = bind.execute(
        sa.text(
            "SELECT MAX(v) FROM (SELECT MAX(uidvalidity) AS v FROM folders"
            " UNION ALL SELECT MAX(last_uidvalidity) AS v FROM mailboxes) AS t"
        )
    ).scalar()
    op.bulk_insert(table, [{"id": 1, "last": int(last or 0)}])


def downgrade() -> None:
    op.drop_table("uidvalidity")
    with op.batch_alter_table("grants") as batch:
        batch.drop_constraint("uq_grants_account_id_mailbox_id_folder", type_="unique")
    # Folder grants have no place in the old schema.
    op.execute(sa.text("DELETE FROM grants WHERE folder <> ''"))
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("folder")
        batch.create_unique_constraint(
            "uq_grants_account_id_mailbox_id", ["account_id", "mailbox_id"]
        )
