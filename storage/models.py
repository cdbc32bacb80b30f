"""SQLAlchemy 2.0 models: the schema of the message store.

Every change here needs an Alembic revision in storage/migrations/versions
(`tests/storage/test_migrations.py` fails when the models and the migrations
differ). Enums are stored by NAME in plain strings (no native enum types), so
adding a member never needs a type migration and reordering never corrupts data.

Clear vs encrypted columns: only what the server must sort, count or route on
stays clear (addresses, sizes, dates, flags, UIDs). Message bodies, the metadata
parsed from them (subject, addresses of the header, part structure) and queued
bodies are AES-GCM blobs (`storage.crypto`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.interface import AccountClass, MailboxType, SpecialUse, ThrottleScope

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; stored naive UTC
    (SQLite has no time zones, and one convention for both backends keeps the
    migrations identical)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def _enum(cls: type[Any], name: str) -> Enum:
    # native_enum=False: a VARCHAR holding the member NAME.
    return Enum(cls, name=name, native_enum=False, length=32, create_constraint=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DomainRow(Base):
    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class AccountRow(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    display_name: Mapped[str] = mapped_column(String(255), default="")
    idnat: Mapped[str | None] = mapped_column(String(64), index=True)
    account_class: Mapped[AccountClass] = mapped_column(_enum(AccountClass, "account_class"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    cert_subject: Mapped[str | None] = mapped_column(String(1024), index=True)
    password_hash: Mapped[str | None] = mapped_column(String(512))
    # The directory entry (LDAP DN) this account is synchronised from
    # (`mssctl ldap sync`); None: made by hand, never touched by the sync.
    directory_dn: Mapped[str | None] = mapped_column(String(1024), index=True)
    # Disabled by the directory sync (gone from the directory, or disabled
    # there): the sync enables again only such an account, never one an
    # admin disabled.
    directory_disabled: Mapped[bool] = mapped_column(Boolean, default=False,
                                                     server_default=false())


class CertPinRow(Base):
    """A certificate (SHA-256 of its DER, lower-case hex) pinned to an
    account: an account with pins accepts only those certificates. One
    certificate is pinned to one account at most."""

    __tablename__ = "cert_pins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)


class LoginFailuresRow(Base):
    """Failed logins of an account or a client address (`policy.throttle`),
    shared by every process and node through the database."""

    __tablename__ = "login_failures"
    __table_args__ = (UniqueConstraint("scope", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[ThrottleScope] = mapped_column(_enum(ThrottleScope, "throttle_scope"))
    subject: Mapped[str] = mapped_column(String(320))
    last_failure: Mapped[datetime] = mapped_column(UTCDateTime())
    # The recent failure times, space-separated microseconds since the epoch.
    recent: Mapped[str] = mapped_column(Text, default="")
    level: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refused: Mapped[int] = mapped_column(Integer, default=0)
class AuthFactorRow(Base):
    """An account's second factor: the one-time code (TOTP) secret, encrypted
    (plaintext: the account id, 8 bytes, then the secret, so a row's secret
    cannot be moved to another account), and the last time step accepted,
    shared by every worker process so that a code is never used twice."""

    __tablename__ = "auth_factors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    totp_secret: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(id || secret)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created: Mapped[datetime] = mapped_column(UTCDateTime())


class MailboxRow(Base):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    mailbox_type: Mapped[MailboxType] = mapped_column(_enum(MailboxType, "mailbox_type"))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    owner_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), index=True
    )
    responsible: Mapped[str] = mapped_column(String(512), default="")
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Running totals over all folders, kept in the same transactions that add or
    # remove messages, so the quota check on delivery does not scan messages.
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    used_messages: Mapped[int] = mapped_column(Integer, default=0)
    # Last UIDVALIDITY handed out to a folder of this mailbox (the values
    # themselves come from `UidValidityRow`, unique across the server).
    last_uidvalidity: Mapped[int] = mapped_column(BigInteger, default=0)
    # \\Seen kept per reading account (`PrivateSeenRow`), not on the message:
    # each agent of a functional box has her own unread state.
    private_seen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What the national directory publishes of the box (`mssctl directory
    # export`): a free description, the service it belongs to, and whether
    # the box is unlisted ("liste rouge": exported flagged, hidden there).
    description: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    service: Mapped[str] = mapped_column(String(255), default="", server_default="")
    unlisted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class FolderRow(Base):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))
    special_use: Mapped[SpecialUse | None] = mapped_column(_enum(SpecialUse, "special_use"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)


class SubscriptionRow(Base):
    """A subscribed folder NAME (RFC 3501 6.3.6): it outlives the folder, so
    it is not a column of `folders`."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))


class BodyRow(Base):
    """One delivered message, stored once and shared by every copy (the
    recipients of one delivery, COPY, MOVE). Deleted when the last message row
    pointing at it goes (garbage collected in the same transaction)."""

    __tablename__ = "bodies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(raw message)
    # AES-GCM(JSON of storage.mime.parse_message(raw)): envelope, structure.
    meta: Mapped[bytes] = mapped_column(LargeBinary)


class SortKeysRow(Base):
    """The SORT / THREAD keys of one body (`storage.sortkeys`), AES-GCM like
    the metadata. A table of their own (revision 0018), not a column of
    `bodies`: SQLite keeps a row's columns in order, so a key column after
    a 64 KB body was reached by walking the body's overflow pages, and the
    first SORT of a large folder read all of its messages. With its own
    `key_id` the read never touches `bodies`; rotation moves it like any
    keyed row. No row: a message stored before revision 0013 (its keys are
    computed when first needed, or by `mssctl db sort-keys`). Goes with its
    body (ON DELETE CASCADE)."""

    __tablename__ = "sort_keys"

    body_id: Mapped[int] = mapped_column(
        ForeignKey("bodies.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(JSON of storage.sortkeys)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("folder_id", "uid"),
        Index("ix_messages_folder_modseq", "folder_id", "modseq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    # Space-separated, sorted; "" when none. \Recent is not a flag here.
    flags: Mapped[str] = mapped_column(Text, default="")
    internal_date: Mapped[int] = mapped_column(BigInteger)  # Unix seconds, UTC
    size: Mapped[int] = mapped_column(BigInteger)
    recent: Mapped[bool] = mapped_column(Boolean, default=True)
    body_id: Mapped[int] = mapped_column(ForeignKey("bodies.id"), index=True)


class PrivateSeenRow(Base):
    """\\Seen of one message for one account, in a mailbox whose \\Seen is
    private (`mailboxes.private_seen`): a row means "this account has read
    it". Keyed by the message row, so an expunge, a MOVE away or a folder
    deletion removes it with the message (ON DELETE CASCADE), and renaming
    INBOX (which moves the message rows) carries it along."""

    __tablename__ = "private_seen"
    __table_args__ = (Index("ix_private_seen_account_message", "account_id", "message_id"),)

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )


class ExpungedRow(Base):
    """UIDs expunged, with the MODSEQ of the expunge, so that other sessions
    (and QRESYNC-style resynchronisation) learn of them."""

    __tablename__ = "expunged"
    __table_args__ = (Index("ix_expunged_folder_modseq", "folder_id", "modseq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)


class GrantRow(Base):
    """RFC 4314 rights of an account on a mailbox: on all its folders
    (`folder` ""), or on one folder, adding to the mailbox's grant there."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("account_id", "mailbox_id", "folder"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    rights: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    send_as: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Who manages the grant: "ldap" for one the directory sync made (and may
    # revoke); None for one an admin or an ACL command made (never revoked
    # by the sync).
    managed_by: Mapped[str | None] = mapped_column(String(32))
    # "" = the whole mailbox; else a folder name of it ("INBOX", "a/b").
    folder: Mapped[str] = mapped_column(String(1024), default="", server_default="")


class DirectorySyncRow(Base):
    """One row per directory synchronisation (name "ldap"): the lease that
    lets one process of one node run it at a time (taken with a conditional
    UPDATE, lapsing at `lease_until` so that a dead node's lease expires),
    and the last run's result, as `mssctl ldap status` shows it."""

    __tablename__ = "directory_sync"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    lease_holder: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_started: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_finished: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_duration: Mapped[float | None] = mapped_column(Float)
    last_result: Mapped[str | None] = mapped_column(String(16))  # ok, fail
    last_counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    last_error: Mapped[str | None] = mapped_column(Text)
    last_holder: Mapped[str | None] = mapped_column(String(255))


class AccessEpochRow(Base):
    """One row whose value grows with every change that can withdraw access
    (an account disabled, a mailbox disabled, a grant changed or revoked):
    open sessions compare it with the value they last checked against, so a
    revocation made by any process or node reaches them without each command
    re-reading the grants."""

    __tablename__ = "access_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class NameEventRow(Base):
    """A folder name created, deleted, renamed or (un)subscribed, by any
    process (NOTIFY MailboxName / SubscriptionChange, RFC 5465 5.4, 5.5):
    written in the transaction that makes the change, read by the IMAP
    processes of every node after the last one they read (`storage.names`).
    Kept for `storage.names.KEEP` only."""

    __tablename__ = "name_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))  # the name after the change
    old_name: Mapped[str | None] = mapped_column(String(1024))  # renamed from
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    subscribed: Mapped[bool | None] = mapped_column(Boolean)  # a subscription change
    origin: Mapped[str] = mapped_column(String(64))  # the store object that wrote it
    created: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class UidValidityRow(Base):
    """One row: the last UIDVALIDITY handed out to any folder. Values are
    unique across the server (clients that cache by UIDVALIDITY, or share
    a cache between accounts, expect it) and grow, so a folder deleted and
    made again gets a new one (RFC 3501 2.3.1.1)."""

    __tablename__ = "uidvalidity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(BigInteger, default=0)


class JobLeaseRow(Base):
    """Who runs a periodic job (audit purge, login-throttle purge) until
    when: every worker of every node asks at each tick, and the one whose
    conditional UPDATE takes the row runs the job; a holder that dies stops
    renewing and its lease lapses (`SqlStore.claim_job`)."""

    __tablename__ = "job_leases"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime())


class SharedFileRow(Base):
    """A document that one worker of one node fetches for all of them (the
    agency's whitelist): the others take it from here instead of fetching it
    again (`SqlStore.put_shared_file`, `shared_file`). Public data, stored as
    fetched."""

    __tablename__ = "shared_files"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of data, hex
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime())
    data: Mapped[bytes] = mapped_column(LargeBinary)


class QueueRow(Base):
    """Outbound message awaiting remote delivery. The envelope (sender,
    recipients, DSN parameters) stays clear for routing and `mssctl queue`;
    the message itself is encrypted."""

    __tablename__ = "queue"
    # AUTOINCREMENT: SQLite would otherwise give a deleted entry's id to the
    # next one, and audit events of two messages would share a queue id
    # (PostgreSQL's sequence never goes back).
    __table_args__ = (
        Index("ix_queue_next_attempt", "next_attempt"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[str] = mapped_column(Text)  # JSON list, still to deliver
    dsn: Mapped[str] = mapped_column(Text)  # JSON of DSNParams
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM(raw message)
    # JSON of QueueOrigin: the flow's source, for the matrix at relay time.
    origin: Mapped[str | None] = mapped_column(Text)


class AuditRow(Base):
    """Who did what to what, and the outcome. Never message content."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_actor_time", "actor", "time"),
        Index("ix_audit_mailbox_time", "mailbox", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(1024))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(1024))
    result: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    # The mailbox the target names (`storage.interface.audit_mailbox`), kept
    # apart so that "everything done in this box" is an index lookup.
    mailbox: Mapped[str | None] = mapped_column(String(320))
