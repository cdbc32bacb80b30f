"""Audit events name the mailbox their target is in (`audit.mailbox`, indexed
with the time), so that `mssctl audit query --mailbox` is an index lookup and
not a scan of six months of events. Existing events are filled in.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000


def _mailbox_of(target: str) -> str | None:
    # A frozen copy of storage.interface.audit_mailbox: a migration must not
    # change meaning when the code it was written with changes.
    head = target.split("/", 1)[0].strip().lower()
    if "@" not in head or "," in head or len(head) > 320:
        return None
    return head


def upgrade() -> None:
    op.add_column("audit", sa.Column("mailbox", sa.String(length=320), nullable=True))
    op.create_index(op.f("ix_audit_mailbox_time"), "audit", ["mailbox", "time"], unique=False)
    bind = op.get_bind()
    audit = sa.table(
        "audit", sa.column("id", sa.Integer()), sa.column("target", sa.String()),
        sa.column("mailbox", sa.String()),
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(audit.c.id, audit.c.target)
            .where(audit.c.id > last, audit.c.target.like("%@%"))
            .order_by(audit.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        values = [
            {"row_id": r.id, "mailbox": m} for r in rows if (m := _mailbox_of(r.target))
        ]
        if values:
            bind.execute(
                audit.update()
                .where(audit.c.id == sa.bindparam("row_id"))
                .values(mailbox=sa.bindparam("mailbox")),
                values,
            )


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_mailbox_time"), table_name="audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("mailbox")
