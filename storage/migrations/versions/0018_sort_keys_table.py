"""The SORT / THREAD keys move from `bodies.sort_keys` (revision 0013) to a
table of their own, `sort_keys` (body_id, key_id, data), issue 11. SQLite
stores a row's columns in order, and the keys came after the body: reading
them walked each body's overflow pages, so the first SORT of a folder of
64 KB messages read the whole folder (0.19 s per 10,000 rows against
0.004-0.007 s from a table of their own, before decryption). The table has
its own `key_id`, so the read never touches `bodies`.

Upgrade: every stored blob is copied with its body's key id, then the
column is dropped. On SQLite the drop rewrites every row of `bodies` (the
native ALTER TABLE DROP COLUMN of SQLite >= 3.35, in place: no second copy
of the table, as batch mode would make; an older SQLite gets batch mode);
its time is that of reading and writing the store once: 94 s (75 s CPU)
for 98,696 messages of 64 KB, 6.6 GB, of which the copy took 1.3 s and the
drop with its commit about 80 s, holding the write lock. PostgreSQL drops
the column without a rewrite.

Downgrade: the blobs go back to `bodies.sort_keys` where they are under
their body's key (a key row written under another key, after a rotation,
cannot be re-encrypted here: there is no key file in a migration); the
others stay NULL, which the code of revision 0013 computes again when a
SORT needs them.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sort_keys",
        sa.Column("body_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["body_id"], ["bodies.id"],
            name=op.f("fk_sort_keys_body_id_bodies"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("body_id", name=op.f("pk_sort_keys")),
    )
    op.execute(
        "INSERT INTO sort_keys (body_id, key_id, data)"
        " SELECT id, key_id, sort_keys FROM bodies WHERE sort_keys IS NOT NULL"
    )
    # After the copy: one sorted build instead of an insert per row.
    op.create_index(op.f("ix_sort_keys_key_id"), "sort_keys", ["key_id"], unique=False)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        # No DROP COLUMN before SQLite 3.35: the table is copied (batch mode).
        with op.batch_alter_table("bodies") as batch:
            batch.drop_column("sort_keys")
        return
    # Not in batch mode: on SQLite that would copy all of `bodies` into a
    # new table (twice the disk for a while) where DROP COLUMN rewrites it
    # in place.
    op.execute("ALTER TABLE bodies DROP COLUMN sort_keys")


def downgrade() -> None:
    with op.batch_alter_table("bodies") as batch:
        batch.add_column(sa.Column("sort_keys", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE bodies SET sort_keys = (SELECT k.data FROM sort_keys k"
        " WHERE k.body_id = bodies.id AND k.key_id = bodies.key_id)"
        " WHERE EXISTS (SELECT 1 FROM sort_keys k"
        " WHERE k.body_id = bodies.id AND k.key_id = bodies.key_id)"
    )
    op.drop_index(op.f("ix_sort_keys_key_id"), table_name="sort_keys")
    op.drop_table("sort_keys")
