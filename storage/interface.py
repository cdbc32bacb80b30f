"""The typed contract of the message store.

Both daemons (and `mssctl`) talk to storage only through `MessageStore`. The
SQLAlchemy implementation (`storage.store.SqlStore`) is the real one; the same
contract tests run against SQLite and PostgreSQL (`tests/storage/`).

Every method is synchronous and may block (database, fsync). Twisted code calls
it from a thread pool (`storage.threaded.deferToStore`), never on the reactor
thread for writes.

Errors: every method may raise `StoreUnavailable` when the database cannot
answer (connection lost, locked past the timeout, disk full). Protocols map it to
a *temporary* failure (SMTP 4xx, IMAP ``NO [UNAVAILABLE]``). Other errors are the
subclasses of `StoreError` named in each docstring. Nothing here knows SMTP or
IMAP; flags are plain strings as IMAP spells them (``\\Seen``, ``$Label1``).

A write method returns only after its transaction is durably committed.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeVar

T = TypeVar("T")

# ---------------------------------------------------------------- errors


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot answer now; retrying later may succeed."""


class WouldWait(BaseException):  # noqa: N818 - a signal to the runner, not an error
    """A store call made inside `MessageStore.no_waiting` reached a write
    (it would queue for the database's write lock), a body larger than
    NO_WAIT_BODY_BYTES or a read of more than NO_WAIT_ROWS rows. Raised
    before the write, the body or the rest of the rows; the caller runs the
    call again where waiting is allowed (see
    `storage.threaded.StoreRunner.run_quick`). A BaseException, so that no
    ``except Exception`` on the way swallows it."""


# The largest body a store call inside `no_waiting` reads (and what a batch
# of bodies read there stops at): about 1 ms of reading and decrypting.
NO_WAIT_BODY_BYTES = 256 * 1024
# The most rows a store call inside `no_waiting` reads or scans (a folder's
# index or counts, its changes, a mailbox's folders): about 5 ms.
NO_WAIT_ROWS = 5000


class NotFound(StoreError):
    """The named domain, account, mailbox, folder or message does not exist."""


class AlreadyExists(StoreError):
    """A unique name (domain, login, address, folder name) is taken."""


class InvalidName(StoreError):
    """A folder name that cannot be created (empty, INBOX children rules, bad chars)."""


class QuotaExceeded(StoreError):
    """Storing the message would put the mailbox over its quota."""


class FolderNotEmpty(StoreError):
    """Reserved: deleting a folder that has inferiors is refused (RFC 3501 6.3.4)."""


# ---------------------------------------------------------------- enums
# Stored by *name* (STYLE rule 8).


class MailboxType(enum.Enum):
    PER = "PER"  # personal: one practitioner
    ORG = "ORG"  # organisational / functional: shared by agents
    APP = "APP"  # applicative: a system


class AccountClass(enum.Enum):
    PRACTITIONER = "practitioner"
    STAFF = "staff"
    SYSTEM = "system"
    ADMIN = "admin"


class ThrottleScope(enum.Enum):
    """What a count of failed logins is about (`LoginFailures`)."""

    ACCOUNT = "account"  # a login name as typed, lower-cased (existing or not)
    ADDRESS = "address"  # a client IP address


class FlagMode(enum.Enum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


class SpecialUse(enum.Enum):
    """RFC 6154 attributes of the folders made for every mailbox."""

    SENT = "\\Sent"
    DRAFTS = "\\Drafts"
    TRASH = "\\Trash"
    JUNK = "\\Junk"
    ARCHIVE = "\\Archive"


# Folders created with every mailbox, with their special use.
DEFAULT_FOLDERS: tuple[tuple[str, SpecialUse | None], ...] = (
    ("INBOX", None),
    ("Sent", SpecialUse.SENT),
    ("Drafts", SpecialUse.DRAFTS),
    ("Trash", SpecialUse.TRASH),
    ("Junk", SpecialUse.JUNK),
    ("Archive", SpecialUse.ARCHIVE),
)

HIERARCHY_SEPARATOR = "/"

# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Domain:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Account:
    """Someone (or some system) who logs in."""

    id: int
    login: str  # e.g. "dr.martin@hopital.test"; lower-cased
    display_name: str
    account_class: AccountClass
    active: bool
    idnat: str | None = None  # IdNat_PS from a CPS card, e.g. "810002813839"
    # Subject DN or organisation id of the certificate allowed to log in as this
    # account (APP boxes, employee cards without IdNat_PS), or None.
    cert_subject: str | None = None
    password_hash: str | None = None  # opaque to the store; policy hashes/verifies
    # The directory entry (LDAP DN) the account is synchronised from; None
    # for an account made by hand (the directory sync never touches it).
    directory_dn: str | None = None
    # Disabled by the directory sync (which enables again only such accounts).
    directory_disabled: bool = False


@dataclass(frozen=True, slots=True)
class TotpFactor:
    """An account's one-time code secret (decrypted) and the last time step
    a code was accepted for (None: never)."""

    account_id: int
    secret: bytes = field(repr=False)
    last_step: int | None
    created: datetime


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An address that receives mail: PER, ORG or APP."""

    id: int
    address: str  # lower-cased "local@domain"
    mailbox_type: MailboxType
    display_name: str
    owner_account_id: int | None  # the holder (PER/APP); None for ORG
    responsible: str  # legal entity / person responsible (ORG), free text
    quota_bytes: int | None  # None: unlimited
    active: bool
    # \Seen kept per reading account, not on the message (see "Private
    # \Seen" in `MessageStore`); False: shared by everyone, as other flags.
    private_seen: bool = False
    # Published in the national directory (`directory_entries`): a free
    # description, the service the box belongs to (e.g. "Cardiologie"), and
    # whether it is unlisted ("liste rouge": the national side hides it).
    description: str = ""
    service: str = ""
    unlisted: bool = False


# Longest text of each directory field of a mailbox (the columns' lengths).
DIRECTORY_FIELD_LENGTHS: dict[str, int] = {
    "display_name": 255,
    "description": 1024,
    "service": 255,
    "responsible": 512,
}


@dataclass(frozen=True, slots=True)
class DirectoryFields:
    """A change to what the national directory publishes of a mailbox
    (`MessageStore.set_directory_fields`): None leaves a field as it is."""

    display_name: str | None = None
    description: str | None = None
    service: str | None = None
    responsible: str | None = None
    unlisted: bool | None = None

    def changed(self) -> dict[str, str | bool]:
        """The fields this change sets, by name."""
        return {name: value for name in ("display_name", "description", "service",
                                         "responsible", "unlisted")
                if (value := getattr(self, name)) is not None}


def check_directory_text(name: str, value: str) -> str:
    """A directory field as stored: at most DIRECTORY_FIELD_LENGTHS[name]
    characters, one line of printable text (the directory's files are CSV
    and JSON lines read by other programs). Raises ValueError naming the
    field."""
    limit = DIRECTORY_FIELD_LENGTHS[name]
    if len(value) > limit:
        raise ValueError(f"{name}: at most {limit} characters, got {len(value)}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{name}: control characters (line breaks, tabs) are not allowed")
    return value


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One mailbox as the national directory publishes it: the box, and for
    a box with an owner (PER, APP) the owning account's login and IdNat_PS
    (None when the account has none)."""

    mailbox: Mailbox
    owner_login: str | None
    owner_idnat: str | None


@dataclass(frozen=True, slots=True)
class Grant:
    """RFC 4314 rights of an account on a mailbox: on all its folders when
    `folder` is "", else on that folder only, in addition to the account's
    grant on the whole mailbox (if any)."""

    id: int
    account_id: int
    mailbox_id: int
    rights: str  # RFC 4314 letters, e.g. "lrswipkxtea"
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    # May submit mail with this mailbox in From: (a Sender: header then names
    # the agent). Separate from RFC 4314's "p" (posting to a folder). Only
    # on a grant of the whole mailbox.
    send_as: bool = False
    # "ldap": made by the directory sync, which may change or revoke it;
    # None: made by an admin or an ACL command, never touched by the sync.
    managed_by: str | None = None
    folder: str = ""  # "" = every folder of the mailbox


@dataclass(frozen=True, slots=True)
class MailboxAccess:
    """The mailboxes an account owns, and those granted to it (with the
    grant), read in one transaction: what a LOGIN builds its namespaces from.
    Inactive mailboxes and grants outside their validity are included; the
    policy decides what they mean."""

    owned: list[Mailbox]
    shared: list[tuple[Grant, Mailbox]]


@dataclass(frozen=True, slots=True)
class Folder:
    id: int
    mailbox_id: int
    name: str  # full hierarchical name with "/" separator, "INBOX" for the inbox
    special_use: SpecialUse | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool
    message_count: int = 0  # filled by folder_status; 0 elsewhere unless stated


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """What STATUS / SELECT need, in one query."""

    folder_id: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    recent: int  # messages with the \Recent marker (not yet claimed by a session)
    size: int  # total bytes


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One message as the per-session view sees it. Cheap: no body, no metadata."""

    uid: int
    modseq: int
    flags: frozenset[str]
    size: int
    internal_date: datetime


@dataclass(slots=True)
class IndexColumns:
    """A folder's index as columns, in UID order (position i = sequence i+1):
    what a 100,000-message SELECT reads, without one object per message.
    `flags` holds a handful of shared frozensets (one per distinct flag
    combination). Sizes and internal dates are not here: `sizes_and_dates`
    reads them for the few messages that need them. The caller owns it."""

    uids: array[int]  # array("I")
    modseqs: array[int]  # array("Q")
    flags: list[frozenset[str]]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """IndexEntry plus the metadata parsed once at delivery (decrypted)."""

    uid: int
    modseq: int
    flags: frozenset[str]
    size: int
    internal_date: datetime
    # JSON-able structure produced by `storage.mime.parse_message` at delivery:
    # envelope fields, body structure with byte offsets of every part.
    # Read-only: the store may hand the same dict to several callers.
    metadata: dict[str, Any]


class SortKeys(NamedTuple):
    """What SORT and THREAD (RFC 5256, RFC 5957) need of one message: the
    keys computed at delivery (`storage.sortkeys`) and the message row's
    size and internal date, none of which ever changes. Strings are decoded
    text, "" when absent; comparing them (i;ascii-casemap) is the caller's
    business. A tuple: a 100,000-message folder builds 100,000 of them."""

    sent: int | None  # the Date: header in Unix seconds (UTC); None: unreadable
    subject: str  # the base subject (RFC 5256 2.1)
    reply: bool  # the subject marks a reply or forward
    from_: str  # addr-mailbox of the first From address
    to: str
    cc: str
    display_from: str  # RFC 5957: display name, else mailbox@host
    display_to: str
    message_id: str | None  # "<id>", white space removed
    references: tuple[str, ...]  # References (In-Reply-To when none), oldest first
    size: int = 0  # RFC822.SIZE (from the message row, not stored with the keys)
    arrival: int = 0  # INTERNALDATE in Unix seconds (idem)


@dataclass(frozen=True, slots=True)
class AppendResult:
    folder_id: int
    uidvalidity: int
    uid: int
    modseq: int


@dataclass(frozen=True, slots=True)
class CopyResult:
    uidvalidity: int  # of the destination
    source_uids: tuple[int, ...]
    dest_uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FlagChange:
    uid: int
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True, slots=True)
class NameEvent:
    """A folder created, deleted, renamed or (un)subscribed (RFC 5465
    MailboxName, SubscriptionChange), by whichever process: `name` is the
    folder's name after the change."""

    id: int  # grows with every event (commit order on one database)
    mailbox_id: int
    name: str
    old_name: str | None  # renamed from
    deleted: bool
    subscribed: bool | None  # a subscription change: subscribed now?
    origin: str  # `MessageStore.origin` of the store object that made it


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What changed in a folder since a MODSEQ (for other sessions and CONDSTORE)."""

    highestmodseq: int
    uidnext: int
    changed: tuple[IndexEntry, ...]  # new or flag-changed messages, modseq > since
    expunged: tuple[int, ...]  # UIDs expunged with modseq > since


@dataclass(frozen=True, slots=True)
class DSNParams:
    """RFC 3461 parameters kept with a message and honoured by the relay."""

    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None
    # per recipient: address -> (NOTIFY set such as "SUCCESS,FAILURE", ORCPT or None)
    notify: dict[str, str] = field(default_factory=dict)
    orcpt: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueOrigin:
    """Where a queued message came from, as the flow matrix's source facts:
    the listener's name, the client's address, the authenticated account's
    login and how it logged in (the matrix's method name: "card",
    "password", ...), and the sending MTA's certificate DN (mx). Kept so the
    matrix can decide again when the queue relays."""

    listener: str
    client_ip: str | None = None
    account: str | None = None
    auth_method: str | None = None
    peer_dn: str | None = None
    # The message's size as the client sent it (what the matrix's max_size
    # was decided on after DATA), without the trace headers we add.
    size: int | None = None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: int
    sender: str  # envelope sender ("" for the null sender)
    recipients: tuple[str, ...]  # still to deliver
    created: datetime
    next_attempt: datetime
    attempts: int
    last_error: str | None
    size: int
    dsn: DSNParams
    origin: QueueOrigin | None = None  # None: queued before origins were kept


@dataclass(frozen=True, slots=True)
class Expunged:
    """What `MessageStore.expunge_traced` removed."""

    uids: tuple[int, ...]  # ascending
    # uid -> Message-ID of the first `max_ids` removed messages that have one.
    message_ids: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One decision or action, as stored. Never message content."""

    time: datetime
    actor: str  # account login, certificate subject, peer MTA, or "-" before auth
    action: str  # e.g. "login", "rcpt", "select", "relay"
    target: str  # mailbox, address, folder ...
    result: str  # "allow" | "deny" | "ok" | "fail" | ...
    details: dict[str, Any] = field(default_factory=dict)
    # `details` as JSON when the recorder made it already (the audit file's
    # line): the database mirror stores it rather than encoding it again.
    details_json: str | None = field(default=None, compare=False, repr=False)


def audit_mailbox(target: str) -> str | None:
    """The mailbox an audit target names: "box@domain" for the targets
    "box@domain" and "box@domain/Folder/Sub", None for targets that are not
    addresses (a listener, a file) or name several ("a@x,b@y": a delivery
    to several boxes, whose "rcpt" events name each). Stored beside each
    event, so that `audit_events(mailbox=...)` finds a box's events
    through an index."""
    head = target.split("/", 1)[0].strip().lower()
    if "@" not in head or "," in head or len(head) > 320:
        return None
    return head


# Longest `LoginFailures.subject` (a login column's length): the policy cuts
# longer names (which name no account) to it.
MAX_THROTTLE_SUBJECT = 320


@dataclass(frozen=True, slots=True)
class LoginFailures:
    """Failed logins of one account or one client address: the state of the
    login throttle (`policy.throttle`), kept in the store so that every worker
    process and node shares it. The store keeps it; the policy decides what
    the numbers mean."""

    scope: ThrottleScope
    subject: str  # lower-cased login, or the client IP address
    last_failure: datetime
    # Times of the failures the policy still counts (its sliding window),
    # oldest first; the policy keeps only as many as it needs.
    recent: tuple[datetime, ...] = ()
    level: int = 0  # locks in a row (0: none since the state was last forgotten)
    locked_until: datetime | None = None
    refused: int = 0  # logins refused while locked


ThrottleKey = tuple[ThrottleScope, str]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to put into the INBOX of several local mailboxes at once."""

    raw: bytes
    mailbox_ids: tuple[int, ...]
    internal_date: datetime | None = None  # default: now
    flags: frozenset[str] = frozenset()


# ---------------------------------------------------------------- contract


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message parsed and encrypted by `MessageStore.prepare`, ready to be
    appended without that work inside the write transaction."""

    size: int
    sealed: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One message of `MessageStore.append_many`."""

    message: bytes | PreparedMessage = field(repr=False)
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None  # default: now


class WriteBatch(Protocol):
    """What `MessageStore.write_batch` yields."""

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs ``fn(*args, **kwargs)`` (store calls) as part of the batch's
        transaction; if it raises, its writes are undone and it raises."""
        ...


@dataclass(frozen=True, slots=True)
class DirectorySyncStatus:
    """A directory synchronisation's lease and last result
    (`MessageStore.directory_sync_status`)."""

    name: str
    lease_holder: str | None = None
    lease_until: datetime | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_duration: float | None = None  # seconds
    last_result: str | None = None  # "ok" or "fail"
    last_counts: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_holder: str | None = None


# The account fields `update_account` may change.
ACCOUNT_FIELDS = frozenset({"display_name", "idnat", "account_class", "directory_dn",
                            "active", "directory_disabled"})


class ChangeListener(Protocol):
    """What a `ChangeFeed` tells, always on its own thread: the receiver
    hands the news to its event loop (IMAP: `imapd.watcher`)."""

    def folders_changed(self, folder_ids: frozenset[int]) -> None:
        """These folders changed (new, changed or expunged messages, renamed,
        deleted); committed before this is called."""

    def names_changed(self, last_id: int) -> None:
        """Name events (`MessageStore.name_events_since`) up to `last_id`
        were committed."""

    def access_changed(self, epoch: int) -> None:
        """The access epoch (`MessageStore.access_epoch`) is now `epoch`."""

    def feed_state(self, live: bool) -> None:
        """True: the feed listens (again); what changed while it did not is
        not reported: read the state once. False: the feed lost its
        connection, changes are not reported until it says True again."""


class ChangeFeed(Protocol):
    """Changes committed by any process or node, pushed as they commit
    (PostgreSQL LISTEN/NOTIFY: `storage.notify`). One per process."""

    def start(self, listener: ChangeListener) -> None:
        """Starts listening on a thread of its own; returns at once. The
        listener's `feed_state(True)` says when it listens."""

    def stop(self) -> None:
        """Stops listening and joins the thread."""

    @property
    def live(self) -> bool:
        """Whether the feed listens now."""
        ...


class MessageStore(Protocol):
    # -- directory ---------------------------------------------------------

    def add_domain(self, name: str) -> Domain:
        """Raises AlreadyExists."""

    def list_domains(self) -> list[Domain]: ...

    def add_account(
        self,
        login: str,
        display_name: str,
        account_class: AccountClass,
        *,
        idnat: str | None = None,
        cert_subject: str | None = None,
        password_hash: str | None = None,
        cert_pins: Sequence[str] = (),
        directory_dn: str | None = None,
    ) -> Account:
        """With `cert_pins` pinned to it (see `add_cert_pin`), in the same
        transaction. Raises AlreadyExists (login taken, a pin already given,
        or the IdNat_PS or certificate subject already another account's),
        ValueError (a malformed pin)."""

    def get_account(self, login: str) -> Account:
        """Case-insensitive. Raises NotFound."""

    def get_account_by_id(self, account_id: int) -> Account:
        """Raises NotFound."""

    def find_account_by_idnat(self, idnat: str) -> Account | None:
        """The one account with that IdNat_PS; None when none or several
        (a card must not log in as either of two)."""

    def find_account_by_cert_subject(self, subject: str) -> Account | None:
        """The one account with that certificate subject; None when none or
        several."""

    def list_accounts(self) -> list[Account]: ...

    def add_cert_pin(self, login: str, fingerprint: str) -> None:
        """Pins a certificate (its SHA-256 fingerprint, 64 lower-case hex
        digits) to the account: once an account has pins, only those
        certificates log in as it. Raises NotFound (login), AlreadyExists
        (the fingerprint is pinned already, to this or another account),
        ValueError (not 64 lower-case hex digits)."""

    def remove_cert_pins(self, login: str, fingerprint: str | None = None) -> int:
        """Removes that pin (all the account's pins when None); returns how
        many were removed. Raises NotFound (login)."""

    def cert_pins(self, account_id: int) -> list[str]:
        """The account's pinned fingerprints, sorted."""

    def find_account_by_cert_pin(self, fingerprint: str) -> Account | None:
        """The account this certificate fingerprint is pinned to."""

    def set_password_hash(self, login: str, password_hash: str | None) -> None:
        """Raises NotFound."""

    def update_account(self, login: str, **fields: Any) -> Account:
        """Changes the given fields (names in ACCOUNT_FIELDS), in one
        transaction, and returns the account as it is now. Disabling bumps
        the access epoch. Raises NotFound, ValueError (another field)."""

    def directory_accounts(self) -> list[Account]:
        """The accounts synchronised from a directory (`directory_dn` set),
        by login."""

    def set_account_active(self, login: str, active: bool) -> None:
        """Raises NotFound. Disabling bumps the access epoch."""

    def access_epoch(self) -> int:
        """A counter that grows, in the same transaction, with every change
        that can withdraw access: an account or a mailbox disabled, a grant
        changed or removed (`set_grant`). Sessions compare it with the value
        their access was last checked at."""

    def set_totp_secret(self, account_id: int, secret: bytes | None) -> None:
        """Stores the account's one-time code secret, encrypted (replacing
        any, and forgetting the last step used), or removes it (None).
        Raises NotFound (account)."""

    def totp_factor(self, account_id: int) -> TotpFactor | None:
        """The account's one-time code secret (decrypted), or None."""

    def claim_totp_step(self, account_id: int, step: int) -> bool:
        """Records `step` as the last time step used by the account if it is
        later than the recorded one, atomically (every worker process shares
        it); False when it is not (a replayed code) or there is no secret."""

    def add_mailbox(
        self,
        address: str,
        mailbox_type: MailboxType,
        *,
        display_name: str = "",
        owner_account_id: int | None = None,
        responsible: str = "",
        quota_bytes: int | None = None,
        private_seen: bool = False,
        description: str = "",
        service: str = "",
        unlisted: bool = False,
    ) -> Mailbox:
        """Creates the mailbox and its DEFAULT_FOLDERS (\\Seen private per
        reading account with `private_seen`).

        Raises AlreadyExists, NotFound (owner account or the address's domain
        is not a served domain), ValueError (a directory field too long or
        with control characters: `check_directory_text`).
        """

    def get_mailbox(self, address: str) -> Mailbox:
        """Case-insensitive. Raises NotFound."""

    def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox:
        """Raises NotFound."""

    def find_mailbox(self, address: str) -> Mailbox | None:
        """Active or not; None when absent."""

    def list_mailboxes(self) -> list[Mailbox]: ...

    def mailboxes_owned_by(self, account_id: int) -> list[Mailbox]: ...

    def set_mailbox_active(self, address: str, active: bool) -> None:
        """Raises NotFound. Disabling bumps the access epoch."""

    def set_quota(self, mailbox_id: int, quota_bytes: int | None) -> None:
        """Raises NotFound."""

    def set_private_seen(self, address: str, private: bool) -> None:
        """Keeps \\Seen per reading account in this mailbox (True) or on the
        message, shared (False). Nothing is migrated: the private states
        start empty (every message unread for every agent) and the shared
        \\Seen left on messages is what a switch back shows. Raises NotFound."""

    def set_directory_fields(self, address: str, fields: DirectoryFields) -> Mailbox:
        """Changes what the national directory publishes of the mailbox
        (the fields of `fields` that are not None); returns the mailbox as
        it was BEFORE the change (what the audit event records). Raises
        NotFound, ValueError (`check_directory_text`)."""

    def directory_entries(self) -> list[DirectoryEntry]:
        """Every mailbox with its owner's login and IdNat_PS, by address, in
        one read: what `mssctl directory export` publishes."""

    def mailbox_usage(self, mailbox_id: int) -> tuple[int, int]:
        """(bytes used, message count) over all folders. Raises NotFound."""

    # -- grants (RFC 4314) -------------------------------------------------

    def set_grant(
        self,
        account_id: int,
        mailbox_id: int,
        rights: str,
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        send_as: bool | None = None,
        managed_by: str | None = None,
        folder: str = "",
    ) -> Grant:
        """Replaces any grant of that account on that mailbox (on that
        folder only, when `folder` is a folder name: the grant does not
        touch the mailbox's grant); empty rights and no send-as right
        removes it (then returns a Grant with rights "" and send_as False).
        `send_as` None keeps the send-as right the grant had (an ACL change
        does not touch it); a folder grant never has it. `managed_by` names
        who manages the new grant ("ldap": the directory sync; None: an
        admin, so an admin's change takes a grant over from the sync).
        Replacing or removing a grant bumps the access epoch. The folder
        need not exist (a grant follows its folder on RENAME and goes with it
        on DELETE). Raises NotFound (account, mailbox), InvalidName (folder)."""

    def list_grants(self) -> list[Grant]:
        """Every grant, by id."""

    def grants_for_account(self, account_id: int) -> list[Grant]:
        """Every grant of the account, whole-mailbox and folder ones."""

    def mailbox_access(self, account_id: int) -> MailboxAccess:
        """Owned mailboxes (by address) and granted ones (by grant id), in
        one read transaction."""

    def grants_for_mailbox(self, mailbox_id: int) -> list[Grant]:
        """Every grant on the mailbox, whole-mailbox and folder ones, by id."""

    # -- directory synchronisation -------------------------------------------

    def take_directory_lease(self, name: str, holder: str, now: datetime, until: datetime,
                             *, not_started_after: datetime | None = None) -> bool:
        """Takes the lease of synchronisation `name` for `holder` until
        `until`, in one conditional UPDATE (atomic on every backend): only
        when no lease is held (or it has lapsed, or `holder` holds it) and,
        with `not_started_after`, no run started after that time. Records
        `now` as the run's start. False when another holder has it."""

    def release_directory_lease(self, name: str, holder: str) -> None:
        """Ends `holder`'s lease (nothing when another holds it)."""

    def record_directory_sync(self, name: str, *, holder: str, started: datetime,
                              finished: datetime, result: str, counts: dict[str, int],
                              error: str | None) -> None:
        """Keeps the result of the last run of synchronisation `name`."""

    def directory_sync_status(self, name: str) -> DirectorySyncStatus | None:
        """The lease and the last result; None when it never ran."""

    # -- folders -----------------------------------------------------------

    def list_folders(self, mailbox_id: int) -> list[Folder]:
        """All folders of a mailbox, sorted by name. Raises NotFound."""

    def get_folder(self, mailbox_id: int, name: str) -> Folder:
        """``INBOX`` is case-insensitive; other names exact. Raises NotFound."""

    def get_folder_by_id(self, folder_id: int) -> Folder:
        """Raises NotFound."""

    def create_folder(
        self, mailbox_id: int, name: str, special_use: SpecialUse | None = None
    ) -> Folder:
        """Creates missing parents too (RFC 3501 6.3.3). New UIDVALIDITY.

        Raises AlreadyExists, InvalidName, NotFound (mailbox).
        """

    def delete_folder(self, mailbox_id: int, name: str) -> None:
        """Deletes the folder and its messages. INBOX cannot be deleted
        (InvalidName). Raises NotFound."""

    def rename_folder(self, mailbox_id: int, old: str, new: str) -> None:
        """Renames the folder and its inferiors; renaming INBOX moves its
        messages to the new folder and leaves INBOX empty (RFC 3501 6.3.5).
        Raises NotFound, AlreadyExists, InvalidName."""

    def set_subscribed(self, mailbox_id: int, name: str, subscribed: bool) -> None:
        """Subscribing needs the folder to exist; unsubscribing works on any
        subscribed name, even of a deleted folder (RFC 3501 6.3.6: deleting a
        folder does not remove its subscription). Raises NotFound."""

    def list_subscriptions(self, mailbox_id: int) -> list[str]:
        """Subscribed folder names (LSUB, LIST (SUBSCRIBED)), sorted, including
        names whose folder no longer exists. Raises NotFound (mailbox)."""

    def folder_status(self, folder_id: int, *, seen_account: int | None = None) -> FolderStatus:
        """`unseen` counts the messages `seen_account` has not read when
        given. Raises NotFound."""

    def folder_versions(self, folder_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(uidnext, highestmodseq) of each of these folders that exists, in
        one read: what the IMAP folder watcher polls."""

    # -- messages ----------------------------------------------------------
    #
    # Private \Seen: for a mailbox with `Mailbox.private_seen`, callers pass
    # `seen_account` (the account acting or reading) to the methods below
    # that take it. Then \Seen is that account's own state: read from and
    # written to the per-account rows, never to the message's flags (whose
    # \Seen, if any was left there, is ignored); every other flag stays
    # shared. A private \Seen change gives the message a new MODSEQ, seen by
    # everyone (as Dovecot does): other accounts' sessions find the same
    # flags at a higher MODSEQ. The per-account rows go with the message
    # (expunge, MOVE away, folder deletion). `seen_account` None (the
    # default, and what a shared-seen mailbox uses): \Seen is a flag like
    # the others, at no extra cost.

    def prepare(self, raw: bytes) -> PreparedMessage:
        """Parses and encrypts a message for `append` (no database access)."""

    def append(
        self,
        folder_id: int,
        raw: bytes | PreparedMessage,
        *,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
        recent: bool = True,
        seen_account: int | None = None,
    ) -> AppendResult:
        """Stores one message, durably. With `seen_account`, a \\Seen among
        `flags` is that account's private \\Seen. The new message is
        \\Recent, unless `recent` is False: the appending session has the folder selected and
        reports it as recent itself (RFC 3501 2.3.2), so no session needs to
        claim it (a write transaction saved). Given a `PreparedMessage`, the
        parsing and encryption are already done (a writer lane's transaction
        need not wait for them).

        Raises NotFound (folder), QuotaExceeded.
        """

    def append_many(
        self,
        folder_id: int,
        items: Sequence[AppendItem],
        *,
        recent: bool = True,
        seen_account: int | None = None,
    ) -> list[AppendResult]:
        """Stores several messages in ONE transaction, durably: all of them or
        none (RFC 3502 MULTIAPPEND). They get consecutive UIDs in the order
        given and one new MODSEQ; the quota is checked on their total size.
        `recent` and `seen_account` as in `append`. An empty list stores
        nothing and returns [].

        Raises NotFound (folder), QuotaExceeded (then nothing was stored).
        """

    def deliver(self, delivery: Delivery) -> list[AppendResult]:
        """Puts one message into the INBOX of every listed mailbox in ONE
        transaction (all or nothing), durably. The body is parsed and encrypted
        once. Raises NotFound, QuotaExceeded (any mailbox over quota)."""

    def deliver_many(self, deliveries: Sequence[Delivery]) -> list[list[AppendResult] | StoreError]:
        """Group commit: several `deliver` calls in ONE transaction (one
        durable commit, so one fsync serves many SMTP clients).

        Each delivery is all-or-nothing on its own (a SAVEPOINT per delivery):
        one that fails (a mailbox over quota or missing) does not fail the
        others. Returns, in the order given, the delivery's results (as
        `deliver` would return them) or the StoreError it would have raised
        (NotFound, QuotaExceeded, or a plain StoreError for an unexpected
        database refusal of that delivery alone). Everything returned as a
        success is durably committed when this returns. Deliveries to the same
        mailbox get increasing UIDs in list order. Raises StoreUnavailable
        (then nothing was committed)."""

    def index(self, folder_id: int, *, seen_account: int | None = None) -> list[IndexEntry]:
        """Every message of the folder in UID order: the SELECT view.
        Must stay fast for 100,000 messages (no body, no metadata).
        Raises NotFound."""

    def index_columns(self, folder_id: int, *, seen_account: int | None = None) -> IndexColumns:
        """`index` as columns (UIDs, MODSEQs, flags), the cheap form SELECT
        uses. Raises NotFound."""

    def sizes_and_dates(
        self, folder_id: int, uids: Sequence[int]
    ) -> dict[int, tuple[int, datetime]]:
        """RFC822.SIZE and INTERNALDATE of these UIDs (unknown ones skipped)."""

    def claim_recent(self, folder_id: int, *, below: int | None = None) -> frozenset[int]:
        """UIDs that were \\Recent, now no longer so for other sessions
        (RFC 3501: one session sees a message as recent). `below`: only
        UIDs under it (the UIDNEXT of the snapshot a SELECT read: what
        came after is left for the session's next sync, which sees it).
        Raises NotFound."""

    def recent_uids(self, folder_id: int) -> frozenset[int]:
        """UIDs that are \\Recent (not claimed by any session yet), left so:
        what EXAMINE reports (RFC 3501 6.3.2: it must not make messages lose
        \\Recent). Raises NotFound."""

    def message_infos(
        self, folder_id: int, uids: Sequence[int], *, seen_account: int | None = None
    ) -> list[MessageInfo]:
        """Metadata (decrypted) for these UIDs, in UID order; unknown UIDs are
        skipped."""

    def sort_keys(self, folder_id: int, uids: Sequence[int]) -> dict[int, SortKeys]:
        """uid -> the SORT / THREAD keys kept at delivery (with each
        message's size and internal date), for every one of these UIDs that
        exists (and maybe others of the folder). Fast for a whole 100,000-message folder (a per-process cache;
        messages stored before the keys were kept get them computed once,
        from the message, and written back). Raises NotFound."""

    def message_ids(self, folder_id: int, uids: Sequence[int]) -> dict[int, str]:
        """uid -> Message-ID (as stored in the metadata parsed at delivery;
        nothing is re-parsed) of those UIDs that exist and have one. For the
        audit trail: callers pass a bounded number of UIDs."""

    def message_body(self, folder_id: int, uid: int) -> bytes:
        """The full raw message (decrypted). Raises NotFound."""

    def iter_bodies(self, folder_id: int, uids: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        """(uid, raw) one at a time, never holding more than one body."""

    def read_bodies(
        self, folder_id: int, uids: Sequence[int], max_bytes: int
    ) -> tuple[dict[int, bytes], int | None]:
        """The raw messages of `uids` in UID order, in one read, up to
        `max_bytes` in all (at least one message, whatever its size): uid ->
        raw, and the first UID left out for the budget (None: all were
        read). UIDs that do not exist are skipped."""

    def store_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
        seen_account: int | None = None,
    ) -> tuple[list[FlagChange], list[int]]:
        """Changes flags of existing UIDs (others skipped), each changed
        message gets a new MODSEQ (a private \\Seen change too; the returned
        flags are as `seen_account` sees them). Returns (changes actually made, UIDs that
        failed the UNCHANGEDSINCE test, RFC 7162)."""

    def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Removes messages flagged \\Deleted (only those among `uids` when
        given: UID EXPUNGE). Returns the UIDs removed, ascending. Each removal
        is recorded with a MODSEQ so other sessions learn of it."""

    def expunge_traced(
        self, folder_id: int, uids: Sequence[int] | None = None, *, max_ids: int = 100
    ) -> Expunged:
        """`expunge`, also returning the Message-IDs of (at most `max_ids` of)
        the removed messages, read in the same transaction before they go."""

    def copy(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int, *,
        seen_account: int | None = None, dest_seen_account: int | None = None,
    ) -> CopyResult:
        """Copies with flags (\\Recent set in the destination), new UIDs in
        order. \\Seen is copied as the copier sees it in the source (her
        private \\Seen with `seen_account`) and becomes, in the destination,
        her private \\Seen with `dest_seen_account` (nobody else's: other
        agents find the copy unread), else the shared flag.
        Raises NotFound (destination), QuotaExceeded."""

    def move(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int, *,
        seen_account: int | None = None, dest_seen_account: int | None = None,
    ) -> CopyResult:
        """Copy then expunge of the source messages, in one transaction
        (\\Seen as `copy` carries it; the source's private states go)."""

    def changes_since(
        self, folder_id: int, modseq: int, *, seen_account: int | None = None
    ) -> FolderChanges:
        """Messages added or changed, and UIDs expunged, with MODSEQ > modseq."""

    # -- outbound queue ----------------------------------------------------

    def enqueue(
        self, sender: str, recipients: Sequence[str], raw: bytes, dsn: DSNParams | None = None,
        origin: QueueOrigin | None = None,
    ) -> QueueEntry:
        """Durably queues a message for remote delivery (body encrypted),
        with where it came from (`origin`, for the flow matrix at relay)."""

    def due_entries(self, now: datetime, limit: int = 100) -> list[QueueEntry]:
        """Entries whose next attempt is due, oldest first, leased so that
        another worker process does not take them for a while (lease is
        released by record_attempt / remove_entry)."""

    def queue_body(self, entry_id: int) -> bytes:
        """Raises NotFound."""

    def record_attempt(
        self,
        entry_id: int,
        *,
        delivered: Sequence[str],
        failed: Sequence[str],
        error: str | None,
        next_attempt: datetime | None,
    ) -> None:
        """Removes delivered and permanently failed recipients; deletes the
        entry when none remain; else schedules next_attempt. Raises NotFound."""

    def remove_entry(self, entry_id: int) -> None:
        """Raises NotFound."""

    def retry_entry(self, entry_id: int) -> None:
        """Makes the entry due now. Raises NotFound."""

    def list_queue(self) -> list[QueueEntry]: ...

    def queue_stats(self) -> tuple[int, datetime | None]:
        """(entries in the queue, when the oldest was queued, None when
        empty): one aggregate read, for the metrics."""

    # -- audit -------------------------------------------------------------

    def record_audit(self, events: Sequence[AuditEvent]) -> None: ...

    def audit_events(
        self,
        *,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        until: datetime | None = None,
        actions: Sequence[str] = (),
        mailbox: str | None = None,
        actor_prefix: bool = False,
        newest: bool = False,
    ) -> list[AuditEvent]:
        """Stored events, oldest first, at most `limit`: the oldest matching
        ones, or with `newest` the most recent ones (still returned oldest
        first). Filters: `actor` (exact, or a prefix with `actor_prefix`),
        `since` <= time < `until`, `actions` (any of), `mailbox` (events whose
        target is that mailbox or one of its folders: `audit_mailbox`)."""

    def purge_audit(self, before: datetime) -> int:
        """Deletes older events; returns how many."""

    # -- periodic jobs -----------------------------------------------------

    def claim_job(self, job: str, holder: str, now: datetime, until: datetime) -> bool:
        """Takes the lease of the periodic job `job` (at most 64 characters)
        for `holder` (who, for the logs: host and pid) until `until`, when no
        lease of it runs at `now`; True when taken. Of concurrent callers
        (any process, any node) at most one gets it. Leases are never renewed
        or given back: one lapses at its end, whoever held it. Raises
        ValueError for an empty or long name or `until <= now`."""

    def job_lease(self, job: str) -> tuple[str, datetime] | None:
        """(holder, lease end) of the job's last lease, or None."""

    def put_shared_file(self, name: str, data: bytes, fetched_at: datetime) -> str:
        """Keeps `data` as the shared file `name` (at most 64 characters),
        replacing the one before, for every worker and node (what the holder
        of a fetching job fetched); returns its SHA-256, hex."""

    def shared_file(self, name: str, unless_digest: str | None = None) -> Any:
        """The shared file `name` (`storage.jobs.SharedFile`: data, digest,
        fetched_at), or None when there is none or its digest is
        `unless_digest` (what the caller already has: then the data is not
        read)."""

    # -- change notification ----------------------------------------------

    @property
    def origin(self) -> str:
        """A token of this store object (one per process), unique across the
        processes and nodes: the name events it records carry it."""
        ...

    def name_events_since(self, after: int | None) -> tuple[int, list[NameEvent]]:
        """The folder name events recorded after event `after` by any process
        (`create_folder`, `delete_folder`, `rename_folder`, `set_subscribed`
        record one each, in their transaction), oldest first, at most
        `storage.names.BATCH`, and the id to ask after next time; with them,
        those recorded in the last `storage.names.GRACE` whatever their id
        (one may commit after a larger id was read): the caller skips the
        ids it has seen. `after` None: no events, and the id to start from
        (the newest). Events are kept `storage.names.KEEP`."""

    def change_feed(self) -> ChangeFeed | None:
        """A new feed of committed folder and access changes, for the one
        listener of a process; None where the database pushes nothing (SQLite:
        poll `folder_versions` and `access_epoch`)."""

    # -- login throttling --------------------------------------------------

    def login_failures(self, keys: Sequence[ThrottleKey]) -> list[LoginFailures]:
        """The states of these (scope, subject) keys that exist, in one read
        (every password login asks)."""

    def update_login_failures(
        self,
        keys: Sequence[ThrottleKey],
        update: Callable[[ThrottleKey, LoginFailures | None], LoginFailures | None],
    ) -> list[LoginFailures | None]:
        """In ONE write transaction: for each key (in the order given), reads
        its state (None when absent) with the row locked against every other
        writer, of any process or node, and stores what ``update(key,
        state)`` returns (None deletes); returns the new states in the order
        given. `update` is called once per key, inside the transaction: it
        must be quick and touch no store. The subjects of what it returns
        must be its key's; subjects are at most MAX_THROTTLE_SUBJECT long
        (ValueError otherwise). Rows are locked in one fixed order, whatever
        the order given, so concurrent callers cannot deadlock."""

    def clear_login_failures(self, key: ThrottleKey) -> LoginFailures | None:
        """Deletes the state; returns what it was (None when there was none)."""

    def list_login_failures(self, scope: ThrottleScope | None = None) -> list[LoginFailures]:
        """Every state (of one scope), by scope then subject."""

    def purge_login_failures(self, before: datetime) -> int:
        """Deletes the states whose last failure and lock both ended before
        `before`; returns how many."""

    # -- keys --------------------------------------------------------------

    def check_keys(self) -> list[str]:
        """Whether the key file reads the stored data: for each key id in use
        (bodies, sort keys, queued messages, one-time code secrets), one blob of each
        kind is decrypted. Returns one line per key id it cannot read (absent
        from the key file, or another key under the same id: a database
        restored without its own key file); [] when all read. Cheap (an
        index scan per table): `serve` asks before it starts."""

    def reencrypt(self, batch: int = 500) -> int:
        """Re-encrypts up to `batch` blobs not under the current key (bodies
        with their metadata, sort keys, queued messages, one-time code
        secrets); returns how many rows (0 when done)."""

    def read_scope(self) -> AbstractContextManager[None]:
        """Within the block, the reads this thread makes through the store's
        fixed-SQL paths share one read transaction (one snapshot, one
        BEGIN/COMMIT), opened by the first of them: a command's access
        check and its reads cost one transaction, not one each. Writes go
        on as without it (on SQLite, WAL lets them commit beside the open
        snapshot; reads of the block after them still see the snapshot).
        Inside another scope or a write batch it adds nothing. Keep it
        short: the snapshot pins the WAL while it is open."""

    def no_waiting(self) -> AbstractContextManager[None]:
        """Within the block, this thread must not wait for the database nor
        be held long: a write (which would queue for the write lock), the
        read of a body larger than NO_WAIT_BODY_BYTES, or of more than
        NO_WAIT_ROWS rows (a folder's index or counts, its changes since a
        MODSEQ, a mailbox's folders), raises `WouldWait` before it is done. Other reads go on (on SQLite in WAL mode a read
        takes no lock). For calls run on the reactor thread
        (`storage.threaded.StoreRunner.run_quick`)."""

    def fill_sort_keys(self, batch: int = 500) -> int:
        """Computes and stores the SORT / THREAD keys of up to `batch`
        messages stored without them (before revision 0013), under the
        current key, in one transaction; returns how many (0 when none is
        left)."""

    @property
    def batches_writes(self) -> bool:
        """Whether `write_batch` pays on this backend (group commit)."""
        ...

    def bulk_writes(self) -> AbstractContextManager[None]:
        """The store calls this thread makes in the block share one write
        transaction, committed once at its end (rolled back when it raises;
        StoreUnavailable when the commit fails): each call in a SAVEPOINT of
        its own, so a failing call is undone alone and raises as usual.
        Holds the write lock for the whole block: keep it short."""

    def write_batch(self) -> AbstractContextManager[WriteBatch]:
        """Group commit for this thread's write calls made through the
        yielded batch: one transaction, each call in its own savepoint,
        durable when the block returns (see `storage.sqlbase`)."""
        ...

    def close(self) -> None: ...
