"""Initial schema: directory, folders, messages, shared encrypted bodies,
expunge log, grants, outbound queue, audit.

Written to match storage/models.py; the migration test checks that
`alembic check` finds no difference on SQLite and PostgreSQL.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=320), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("idnat", sa.String(length=64), nullable=True),
        sa.Column(
            "account_class",
            sa.Enum(
                "PRACTITIONER",
                "STAFF",
                "SYSTEM",
                "ADMIN",
                name="account_class",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("cert_subject", sa.String(length=1024), nullable=True),
        sa.Column("password_hash", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("login", name=op.f("uq_accounts_login")),
    )
    op.create_index(op.f("ix_accounts_cert_subject"), "accounts", ["cert_subject"], unique=False)
    op.create_index(op.f("ix_accounts_idnat"), "accounts", ["idnat"], unique=False)

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=1024), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("result", sa.String(length=64), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index(op.f("ix_audit_actor_time"), "audit", ["actor", "time"], unique=False)
    op.create_index(op.f("ix_audit_time"), "audit", ["time"], unique=False)

    op.create_table(
        "bodies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bodies")),
    )
    op.create_index(op.f("ix_bodies_key_id"), "bodies", ["key_id"], unique=False)

    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("name", name=op.f("uq_domains_name")),
    )
    op.create_table(
        "queue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("dsn", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("next_attempt", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue")),
    )
    op.create_index(op.f("ix_queue_key_id"), "queue", ["key_id"], unique=False)
    op.create_index(op.f("ix_queue_next_attempt"), "queue", ["next_attempt"], unique=False)

    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column(
            "mailbox_type",
            sa.Enum("PER", "ORG", "APP", name="mailbox_type", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("owner_account_id", sa.Integer(), nullable=True),
        sa.Column("responsible", sa.String(length=512), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_messages", sa.Integer(), nullable=False),
        sa.Column("last_uidvalidity", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_mailboxes_domain_id_domains")
        ),
        sa.ForeignKeyConstraint(
            ["owner_account_id"],
            ["accounts.id"],
            name=op.f("fk_mailboxes_owner_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailboxes")),
        sa.UniqueConstraint("address", name=op.f("uq_mailboxes_address")),
    )
    op.create_index(op.f("ix_mailboxes_domain_id"), "mailboxes", ["domain_id"], unique=False)
    op.create_index(
        op.f("ix_mailboxes_owner_account_id"), "mailboxes", ["owner_account_id"], unique=False
    )

    op.create_table(
        "folders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column(
            "special_use",
            sa.Enum(
                "SENT",
                "DRAFTS",
                "TRASH",
                "JUNK",
                "ARCHIVE",
                name="special_use",
                native_enum=False,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_folders_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_folders")),
        sa.UniqueConstraint("mailbox_id", "name", name=op.f("uq_folders_mailbox_id_name")),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("rights", sa.String(length=64), nullable=False),
        sa.Column("valid_from", sa.DateTime(), nullable=True),
        sa.Column("valid_until", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_grants_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_grants_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.UniqueConstraint(
            "account_id", "mailbox_id", name=op.f("uq_grants_account_id_mailbox_id")
        ),
    )
    op.create_index(op.f("ix_grants_mailbox_id"), "grants", ["mailbox_id"], unique=False)

    op.create_table(
        "expunged",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["folders.id"],
            name=op.f("fk_expunged_folder_id_folders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expunged")),
    )
    op.create_index(
        op.f("ix_expunged_folder_modseq"), "expunged", ["folder_id", "modseq"], unique=False
    )

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("internal_date", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("recent", sa.Boolean(), nullable=False),
        sa.Column("body_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["body_id"], ["bodies.id"], name=op.f("fk_messages_body_id_bodies")
        ),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["folders.id"],
            name=op.f("fk_messages_folder_id_folders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("folder_id", "uid", name=op.f("uq_messages_folder_id_uid")),
    )
    op.create_index(op.f("ix_messages_body_id"), "messages", ["body_id"], unique=False)
    op.create_index(
        op.f("ix_messages_folder_modseq"), "messages", ["folder_id", "modseq"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_folder_modseq"), table_name="messages")
    op.drop_index(op.f("ix_messages_body_id"), table_name="messages")

    op.drop_table("messages")
    op.drop_index(op.f("ix_expunged_folder_modseq"), table_name="expunged")

    op.drop_table("expunged")
    op.drop_index(op.f("ix_grants_mailbox_id"), table_name="grants")

    op.drop_table("grants")
    op.drop_table("folders")
    op.drop_index(op.f("ix_mailboxes_owner_account_id"), table_name="mailboxes")
    op.drop_index(op.f("ix_mailboxes_domain_id"), table_name="mailboxes")

    op.drop_table("mailboxes")
    op.drop_index(op.f("ix_queue_next_attempt"), table_name="queue")
    op.drop_index(op.f("ix_queue_key_id"), table_name="queue")

    op.drop_table("queue")
    op.drop_table("domains")
    op.drop_index(op.f("ix_bodies_key_id"), table_name="bodies")

    op.drop_table("bodies")
    op.drop_index(op.f("ix_audit_time"), table_name="audit")
    op.drop_index(op.f("ix_audit_actor_time"), table_name="audit")

    op.drop_table("audit")
    op.drop_index(op.f("ix_accounts_idnat"), table_name="accounts")
    op.drop_index(op.f("ix_accounts_cert_subject"), table_name="accounts")

    op.drop_table("accounts")
