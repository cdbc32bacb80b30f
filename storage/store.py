"""`SqlStore`: the SQLAlchemy implementation of `storage.interface.MessageStore`.

Queries are SQLAlchemy Core over the tables of `storage.models` (no ORM
session): the hot paths (`index`, `message_infos`) must turn 100,000 rows into
records in a fraction of a second. Every public method runs in one transaction
(`storage.engine.transaction`); writes take the locks their invariants need
(`BEGIN IMMEDIATE` on SQLite, ``FOR UPDATE`` on PostgreSQL) before reading the
counters they bump (``uidnext``, ``highestmodseq``, quota totals). Lock order,
to stay deadlock-free on PostgreSQL: folders by ascending id, then mailboxes by
ascending id.

Encryption and MIME parsing happen before the transaction starts, so the
database write lock is held only for the inserts.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from storage import crypto
from storage.engine import WriteGate, sqlite_path, transaction, translate
from storage.interface import (
    DEFAULT_FOLDERS,
    HIERARCHY_SEPARATOR,
    Account,
    AccountClass,
    AlreadyExists,
    AppendResult,
    AuditEvent,
    CopyResult,
    Delivery,
    Domain,
    DSNParams,
    FlagChange,
    FlagMode,
    Folder,
    FolderChanges,
    FolderStatus,
    Grant,
    IndexEntry,
    InvalidName,
    Mailbox,
    MailboxType,
    MessageInfo,
    NotFound,
    QueueEntry,
    QuotaExceeded,
    SpecialUse,
    StoreUnavailable,
)
from storage.models import (
    AccountRow,
    AuditRow,
    BodyRow,
    DomainRow,
    ExpungedRow,
    FolderRow,
    GrantRow,
    MailboxRow,
    MessageRow,
    QueueRow,
)

T = TypeVar("T")

A = AccountRow.__table__
AU = AuditRow.__table__
B = BodyRow.__table__
D = DomainRow.__table__
E = ExpungedRow.__table__
F = FolderRow.__table__
G = GrantRow.__table__
M = MailboxRow.__table__
MSG = MessageRow.__table__
Q = QueueRow.__table__

INBOX = "INBOX"
SEP = HIERARCHY_SEPARATOR
# Bound parameters per IN (...) list: well under SQLite's and PostgreSQL's limits.
CHUNK = 500
# How long a queue entry handed out by due_entries stays reserved to its worker.
DEFAULT_LEASE = timedelta(minutes=10)
MAX_NAME = 1024
_FORBIDDEN_NAME_CHARS = frozenset("*%") | {chr(c) for c in range(0x20)} | {"\x7f"}

_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
SEEN = "\\Seen"
DELETED = "\\Deleted"


# ---------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(dt: datetime | None) -> int:
    if dt is None:
        return int(time.time())
    if dt.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware datetime")
    return int(dt.timestamp())


_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_epoch(seconds: int) -> datetime:
    return _UTC_EPOCH + timedelta(seconds=seconds)


def normalise_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical spelling; \\Recent is session state,
    never stored."""
    out = set()
    for f in flags:
        if not f:
            continue
        canon = _SYSTEM_FLAGS.get(f.lower(), f)
        if canon.lower() == "\\recent":
            continue
        out.add(canon)
    return frozenset(out)


def _flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


@lru_cache(maxsize=8192)
def _parse_flags(text: str) -> frozenset[str]:
    # Most messages of a folder share a handful of flag combinations.
    return frozenset(text.split()) if text else frozenset()


def _has_flag(flag: str) -> Any:
    return MSG.c.flags.contains(flag, autoescape=True)


def normalise_folder_name(name: str) -> str:
    """INBOX (and the INBOX/ prefix) in upper case, whatever the client sent."""
    if name.upper() == INBOX:
        return INBOX
    if name.upper().startswith(INBOX + SEP):
        return INBOX + name[len(INBOX) :]
    return name


def _check_name(name: str) -> str:
    if name.endswith(SEP):  # RFC 3501 6.3.3: "foo/" creates "foo"
        name = name[:-1]
    name = normalise_folder_name(name)
    if not name or len(name) > MAX_NAME:
        raise InvalidName("empty or too long folder name")
    if any(part == "" for part in name.split(SEP)):
        raise InvalidName("empty hierarchy level in folder name")
    if any(ch in _FORBIDDEN_NAME_CHARS for ch in name):
        raise InvalidName("forbidden character in folder name")
    return name


def _parents(name: str) -> list[str]:
    parts = name.split(SEP)
    return [SEP.join(parts[:i]) for i in range(1, len(parts))]


def _chunks(seq: Sequence[int]) -> Iterator[list[int]]:
    items = sorted(set(seq))
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _account(r: Row[Any]) -> Account:
    return Account(
        id=r.id,
        login=r.login,
        display_name=r.display_name,
        account_class=r.account_class,
        active=r.active,
        idnat=r.idnat,
        cert_subject=r.cert_subject,
        password_hash=r.password_hash,
    )


def _mailbox(r: Row[Any]) -> Mailbox:
    return Mailbox(
        id=r.id,
        address=r.address,
        mailbox_type=r.mailbox_type,
        display_name=r.display_name,
        owner_account_id=r.owner_account_id,
        responsible=r.responsible,
        quota_bytes=r.quota_bytes,
        active=r.active,
    )


def _folder(r: Row[Any], message_count: int = 0) -> Folder:
    return Folder(
        id=r.id,
        mailbox_id=r.mailbox_id,
        name=r.name,
        special_use=r.special_use,
        uidvalidity=r.uidvalidity,
        uidnext=r.uidnext,
        highestmodseq=r.highestmodseq,
        subscribed=r.subscribed,
        message_count=message_count,
    )


def _grant(r: Row[Any]) -> Grant:
    return Grant(
        id=r.id,
        account_id=r.account_id,
        mailbox_id=r.mailbox_id,
        rights=r.rights,
        valid_from=r.valid_from,
        valid_until=r.valid_until,
    )


def _dsn_to_json(dsn: DSNParams) -> str:
    return json.dumps(
        {"ret": dsn.ret, "envid": dsn.envid, "notify": dsn.notify, "orcpt": dsn.orcpt},
        sort_keys=True,
    )


def _dsn_from_json(text: str) -> DSNParams:
    d = json.loads(text)
    return DSNParams(
        ret=d.get("ret"),
        envid=d.get("envid"),
        notify=dict(d.get("notify") or {}),
        orcpt=dict(d.get("orcpt") or {}),
    )


def _queue_entry(r: Row[Any]) -> QueueEntry:
    return QueueEntry(
        id=r.id,
        sender=r.sender,
        recipients=tuple(json.loads(r.recipients)),
        created=r.created,
        next_attempt=r.next_attempt,
        attempts=r.attempts,
        last_error=r.last_error,
        size=r.size,
        dsn=_dsn_from_json(r.dsn),
    )


_QUEUE_COLS = (
    Q.c.id,
    Q.c.sender,
    Q.c.recipients,
    Q.c.created,
    Q.c.next_attempt,
    Q.c.attempts,
    Q.c.last_error,
    Q.c.size,
    Q.c.dsn,
)


def _default_parser(raw: bytes) -> dict[str, Any]:
    from storage import mime  # the MIME engineer's module; imported late on purpose

    return mime.parse_message(raw)


class _Keys:
    """The key ring, reloaded when the key file changes (`mssctl keys rotate`
    adds a key while the daemons run; blobs moved to it must stay readable)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._mtime = path.stat().st_mtime_ns
        self._ring = crypto.KeyRing.load(path)

    def ring(self) -> crypto.KeyRing:
        try:
            mtime = self._path.stat().st_mtime_ns
        except OSError:
            return self._ring  # keep serving with the keys we have
        if mtime != self._mtime:
            with self._lock:
                if mtime != self._mtime:
                    self._ring = crypto.KeyRing.load(self._path)
                    self._mtime = mtime
        return self._ring


# ---------------------------------------------------------------- the store


class SqlStore:
    """See `storage.interface.MessageStore` for the contract of every method."""

    def __init__(
        self,
        engine: Engine,
        key_file: Path,
        *,
        parser: Callable[[bytes], dict[str, Any]] | None = None,
        lease: timedelta = DEFAULT_LEASE,
        busy_timeout: float = 30.0,
    ) -> None:
        self._engine = engine
        db_path = sqlite_path(engine.url.render_as_string(hide_password=False))
        self._gate = WriteGate(db_path, busy_timeout) if db_path is not None else None
        self._keys = _Keys(key_file)
        self._parse = parser or _default_parser
        self._lease = lease
        self._pg = engine.dialect.name == "postgresql"
        self._index_cache = _IndexCache()

    @property
    def engine(self) -> Engine:
        return self._engine

    def _read(self) -> Any:
        return transaction(self._engine, write=False)

    def _write(self) -> Any:
        return transaction(self._engine, write=True, gate=self._gate)

    # -- directory ---------------------------------------------------------

    def add_domain(self, name: str) -> Domain:
        name = name.lower().rstrip(".")
        try:
            with self._write() as c:
                new_id = c.execute(insert(D).values(name=name)).inserted_primary_key[0]
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(name) from exc
        return Domain(new_id, name)

    def list_domains(self) -> list[Domain]:
        with self._read() as c:
            rows = c.execute(select(D.c.id, D.c.name).order_by(D.c.name)).all()
        return [Domain(r.id, r.name) for r in rows]

    def add_account(
        self,
        login: str,
        display_name: str,
        account_class: AccountClass,
        *,
        idnat: str | None = None,
        cert_subject: str | None = None,
        password_hash: str | None = None,
    ) -> Account:
        login = login.lower()
        values = {
            "login": login,
            "display_name": display_name,
            "account_class": account_class,
            "active": True,
            "idnat": idnat,
            "cert_subject": cert_subject,
            "password_hash": password_hash,
        }
        try:
            with self._write() as c:
                new_id = c.execute(insert(A).values(**values)).inserted_primary_key[0]
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(login) from exc
        return Account(id=new_id, **values)  # type: ignore[arg-type]

    def _one_account(self, where: Any) -> Account | None:
        with self._read() as c:
            r = c.execute(select(A).where(where).order_by(A.c.id).limit(1)).first()
        return _account(r) if r is not None else None

    def get_account(self, login: str) -> Account:
        acc = self._one_account(A.c.login == login.lower())
        if acc is None:
            raise NotFound(login)
        return acc

    def get_account_by_id(self, account_id: int) -> Account:
        acc = self._one_account(A.c.id == account_id)
        if acc is None:
            raise NotFound(str(account_id))
        return acc

    def find_account_by_idnat(self, idnat: str) -> Account | None:
        return self._one_account(A.c.idnat == idnat)

    def find_account_by_cert_subject(self, subject: str) -> Account | None:
        return self._one_account(A.c.cert_subject == subject)

    def list_accounts(self) -> list[Account]:
        with self._read() as c:
            return [_account(r) for r in c.execute(select(A).order_by(A.c.login))]

    def _update_account(self, login: str, **values: Any) -> None:
        with self._write() as c:
            n = c.execute(update(A).where(A.c.login == login.lower()).values(**values)).rowcount
        if n == 0:
            raise NotFound(login)

    def set_password_hash(self, login: str, password_hash: str | None) -> None:
        self._update_account(login, password_hash=password_hash)

    def set_account_active(self, login: str, active: bool) -> None:
        self._update_account(login, active=active)

    def add_mailbox(
        self,
        address: str,
        mailbox_type: MailboxType,
        *,
        display_name: str = "",
        owner_account_id: int | None = None,
        responsible: str = "",
        quota_bytes: int | None = None,
    ) -> Mailbox:
        address = address.lower()
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            raise NotFound(f"no domain in {address!r}")
        try:
            with self._write() as c:
                domain_id = c.execute(select(D.c.id).where(D.c.name == domain)).scalar()
                if domain_id is None:
                    raise NotFound(domain)
                if owner_account_id is not None:
                    if c.execute(select(A.c.id).where(A.c.id == owner_account_id)).first() is None:
                        raise NotFound(str(owner_account_id))
                if c.execute(select(M.c.id).where(M.c.address == address)).first() is not None:
                    raise AlreadyExists(address)
                base = int(time.time())
                mailbox_id = c.execute(
                    insert(M).values(
                        address=address,
                        domain_id=domain_id,
                        mailbox_type=mailbox_type,
                        display_name=display_name,
                        owner_account_id=owner_account_id,
                        responsible=responsible,
                        quota_bytes=quota_bytes,
                        active=True,
                        used_bytes=0,
                        used_messages=0,
                        last_uidvalidity=base + len(DEFAULT_FOLDERS) - 1,
                    )
                ).inserted_primary_key[0]
                c.execute(
                    insert(F),
                    [
                        {
                            "mailbox_id": mailbox_id,
                            "name": name,
                            "special_use": use,
                            "uidvalidity": base + i,
                            "uidnext": 1,
                            "highestmodseq": 1,
                            "subscribed": True,
                        }
                        for i, (name, use) in enumerate(DEFAULT_FOLDERS)
                    ],
                )
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(address) from exc
        return Mailbox(
            id=mailbox_id,
            address=address,
            mailbox_type=mailbox_type,
            display_name=display_name,
            owner_account_id=owner_account_id,
            responsible=responsible,
            quota_bytes=quota_bytes,
            active=True,
        )

    def _mailboxes(self, where: Any) -> list[Mailbox]:
        with self._read() as c:
            return [_mailbox(r) for r in c.execute(select(M).where(where).order_by(M.c.address))]

    def get_mailbox(self, address: str) -> Mailbox:
        found = self._mailboxes(M.c.address == address.lower())
        if not found:
            raise NotFound(address)
        return found[0]

    def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox:
        found = self._mailboxes(M.c.id == mailbox_id)
        if not found:
            raise NotFound(str(mailbox_id))
        return found[0]

    def find_mailbox(self, address: str) -> Mailbox | None:
        found = self._mailboxes(M.c.address == address.lower())
        return found[0] if found else None

    def list_mailboxes(self) -> list[Mailbox]:
        return self._mailboxes(M.c.id.is_not(None))

    def mailboxes_owned_by(self, account_id: int) -> list[Mailbox]:
        return self._mailboxes(M.c.owner_account_id == account_id)

    def set_mailbox_active(self, address: str, active: bool) -> None:
        with self._write() as c:
            n = c.execute(
                update(M).where(M.c.address == address.lower()).values(active=active)
            ).rowcount
        if n == 0:
            raise NotFound(address)

    def set_quota(self, mailbox_id: int, quota_bytes: int | None) -> None:
        with self._write() as c:
            n = c.execute(
                update(M).where(M.c.id == mailbox_id).values(quota_bytes=quota_bytes)
            ).rowcount
        if n == 0:
            raise NotFound(str(mailbox_id))

    def mailbox_usage(self, mailbox_id: int) -> tuple[int, int]:
        with self._read() as c:
            r = c.execute(
                select(M.c.used_bytes, M.c.used_messages).where(M.c.id == mailbox_id)
            ).first()
        if r is None:
            raise NotFound(str(mailbox_id))
        return int(r.used_bytes), int(r.used_messages)

    # -- grants ------------------------------------------------------------

    def set_grant(
        self,
        account_id: int,
        mailbox_id: int,
        rights: str,
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
    ) -> Grant:
        # Canonical form: each right once, in the RFC 4314 order of appearance.
        rights = "".join(dict.fromkeys(rights))
        with self._write() as c:
            if c.execute(select(A.c.id).where(A.c.id == account_id)).first() is None:
                raise NotFound(str(account_id))
            if c.execute(select(M.c.id).where(M.c.id == mailbox_id)).first() is None:
                raise NotFound(str(mailbox_id))
            where = and_(G.c.account_id == account_id, G.c.mailbox_id == mailbox_id)
            c.execute(delete(G).where(where))
            if not rights:
                return Grant(0, account_id, mailbox_id, "", valid_from, valid_until)
            new_id = c.execute(
                insert(G).values(
                    account_id=account_id,
                    mailbox_id=mailbox_id,
                    rights=rights,
                    valid_from=valid_from,
                    valid_until=valid_until,
                )
            ).inserted_primary_key[0]
        return Grant(new_id, account_id, mailbox_id, rights, valid_from, valid_until)

    def grants_for_account(self, account_id: int) -> list[Grant]:
        with self._read() as c:
            rows = c.execute(select(G).where(G.c.account_id == account_id).order_by(G.c.id))
            return [_grant(r) for r in rows]

    def grants_for_mailbox(self, mailbox_id: int) -> list[Grant]:
        with self._read() as c:
            rows = c.execute(select(G).where(G.c.mailbox_id == mailbox_id).order_by(G.c.id))
            return [_grant(r) for r in rows]

    # -- folders -----------------------------------------------------------

    def _mailbox_exists(self, c: Connection, mailbox_id: int) -> None:
        if c.execute(select(M.c.id).where(M.c.id == mailbox_id)).first() is None:
            raise NotFound(str(mailbox_id))

    def _folder_row(
        self, c: Connection, mailbox_id: int, name: str, *, lock: bool = False
    ) -> Row[Any]:
        q = select(F).where(F.c.mailbox_id == mailbox_id, F.c.name == normalise_folder_name(name))
        if lock:
            q = q.with_for_update()
        r = c.execute(q).first()
        if r is None:
            raise NotFound(name)
        return r

    def _lock_folders(self, c: Connection, folder_ids: Iterable[int]) -> dict[int, Row[Any]]:
        """Locks the folder rows (ascending id); NotFound if one is missing."""
        out: dict[int, Row[Any]] = {}
        for fid in sorted(set(folder_ids)):
            r = c.execute(select(F).where(F.c.id == fid).with_for_update()).first()
            if r is None:
                raise NotFound(f"folder {fid}")
            out[fid] = r
        return out

    def _next_uidvalidity(self, c: Connection, mailbox_id: int, count: int = 1) -> int:
        """First of `count` fresh UIDVALIDITY values for folders of this mailbox."""
        last = c.execute(
            select(M.c.last_uidvalidity).where(M.c.id == mailbox_id).with_for_update()
        ).scalar()
        if last is None:
            raise NotFound(str(mailbox_id))
        first = max(int(last) + 1, int(time.time()))
        c.execute(
            update(M).where(M.c.id == mailbox_id).values(last_uidvalidity=first + count - 1)
        )
        return first

    def _insert_folder(
        self,
        c: Connection,
        mailbox_id: int,
        name: str,
        special_use: SpecialUse | None,
        *,
        subscribed: bool,
        uidnext: int = 1,
        highestmodseq: int = 1,
    ) -> int:
        uidvalidity = self._next_uidvalidity(c, mailbox_id)
        return int(
            c.execute(
                insert(F).values(
                    mailbox_id=mailbox_id,
                    name=name,
                    special_use=special_use,
                    uidvalidity=uidvalidity,
                    uidnext=uidnext,
                    highestmodseq=highestmodseq,
                    subscribed=subscribed,
                )
            ).inserted_primary_key[0]
        )

    def _create_parents(self, c: Connection, mailbox_id: int, name: str) -> None:
        existing = set(c.execute(select(F.c.name).where(F.c.mailbox_id == mailbox_id)).scalars())
        for parent in _parents(name):
            if parent not in existing:
                self._insert_folder(c, mailbox_id, parent, None, subscribed=False)

    def list_folders(self, mailbox_id: int) -> list[Folder]:
        with self._read() as c:
            self._mailbox_exists(c, mailbox_id)
            rows = c.execute(select(F).where(F.c.mailbox_id == mailbox_id)).all()
        # Sorted here, not in SQL: collations differ between SQLite and PostgreSQL.
        return sorted((_folder(r) for r in rows), key=lambda f: f.name)

    def get_folder(self, mailbox_id: int, name: str) -> Folder:
        with self._read() as c:
            return _folder(self._folder_row(c, mailbox_id, name))

    def get_folder_by_id(self, folder_id: int) -> Folder:
        with self._read() as c:
            r = c.execute(select(F).where(F.c.id == folder_id)).first()
        if r is None:
            raise NotFound(f"folder {folder_id}")
        return _folder(r)

    def create_folder(
        self, mailbox_id: int, name: str, special_use: SpecialUse | None = None
    ) -> Folder:
        name = _check_name(name)
        try:
            with self._write() as c:
                self._mailbox_exists(c, mailbox_id)
                if name == INBOX:
                    raise AlreadyExists(name)
                exists = c.execute(
                    select(F.c.id).where(F.c.mailbox_id == mailbox_id, F.c.name == name)
                ).first()
                if exists is not None:
                    raise AlreadyExists(name)
                self._create_parents(c, mailbox_id, name)
                fid = self._insert_folder(c, mailbox_id, name, special_use, subscribed=False)
                row = c.execute(select(F).where(F.c.id == fid)).one()
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(name) from exc
        return _folder(row)

    def delete_folder(self, mailbox_id: int, name: str) -> None:
        if normalise_folder_name(name) == INBOX:
            raise InvalidName("INBOX cannot be deleted")
        with self._write() as c:
            folder = self._folder_row(c, mailbox_id, name, lock=True)
            self._remove_messages(c, folder, None, log_expunge=False)
            c.execute(delete(E).where(E.c.folder_id == folder.id))
            c.execute(delete(F).where(F.c.id == folder.id))

    def rename_folder(self, mailbox_id: int, old: str, new: str) -> None:
        old = normalise_folder_name(old)
        new = _check_name(new)
        try:
            with self._write() as c:
                source = self._folder_row(c, mailbox_id, old, lock=True)
                if new == old:
                    raise AlreadyExists(new)
                if new.startswith(old + SEP):
                    raise InvalidName("cannot rename a folder into its own inferior")
                all_rows = c.execute(
                    select(F.c.id, F.c.name).where(F.c.mailbox_id == mailbox_id)
                ).all()
                names = {r.name for r in all_rows}
                if new == INBOX or new in names:
                    raise AlreadyExists(new)
                if old == INBOX:
                    self._rename_inbox(c, mailbox_id, source, new)
                    return
                # The folder and its inferiors, but not INBOX's (RFC 3501 6.3.5).
                moving = [r for r in all_rows if r.name == old or r.name.startswith(old + SEP)]
                targets = {r.id: new + r.name[len(old) :] for r in moving}
                if set(targets.values()) & (names - {r.name for r in moving}):
                    raise AlreadyExists(new)
                for fid, target in targets.items():
                    c.execute(update(F).where(F.c.id == fid).values(name=target))
                self._create_parents(c, mailbox_id, new)
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(new) from exc

    def _rename_inbox(self, c: Connection, mailbox_id: int, inbox: Row[Any], new: str) -> None:
        """Moves every INBOX message to a new folder named `new`, keeping their
        UIDs (the new folder has its own UIDVALIDITY); INBOX stays, empty, and
        sessions on it see the messages expunged."""
        self._create_parents(c, mailbox_id, new)
        new_id = self._insert_folder(
            c,
            mailbox_id,
            new,
            None,
            subscribed=False,
            uidnext=inbox.uidnext,
            highestmodseq=inbox.highestmodseq,
        )
        uids = list(c.execute(select(MSG.c.uid).where(MSG.c.folder_id == inbox.id)).scalars())
        c.execute(update(MSG).where(MSG.c.folder_id == inbox.id).values(folder_id=new_id))
        if uids:
            modseq = inbox.highestmodseq + 1
            c.execute(
                insert(E), [{"folder_id": inbox.id, "uid": u, "modseq": modseq} for u in uids]
            )
            c.execute(update(F).where(F.c.id == inbox.id).values(highestmodseq=modseq))

    def set_subscribed(self, mailbox_id: int, name: str, subscribed: bool) -> None:
        with self._write() as c:
            folder = self._folder_row(c, mailbox_id, name)
            c.execute(update(F).where(F.c.id == folder.id).values(subscribed=subscribed))

    def folder_status(self, folder_id: int) -> FolderStatus:
        seen = _has_flag(SEEN)
        with self._read() as c:
            f = c.execute(select(F).where(F.c.id == folder_id)).first()
            if f is None:
                raise NotFound(f"folder {folder_id}")
            agg = c.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((seen, 0), else_=1)), 0),
                    func.coalesce(func.sum(case((MSG.c.recent, 1), else_=0)), 0),
                    func.coalesce(func.sum(MSG.c.size), 0),
                ).where(MSG.c.folder_id == folder_id)
            ).one()
        return FolderStatus(
            folder_id=f.id,
            uidvalidity=f.uidvalidity,
            uidnext=f.uidnext,
            highestmodseq=f.highestmodseq,
            messages=int(agg[0]),
            unseen=int(agg[1]),
            recent=int(agg[2]),
            size=int(agg[3]),
        )

    # -- messages: writing -------------------------------------------------

    def _seal(self, raw: bytes) -> dict[str, Any]:
        """Parses and encrypts a message once, outside any transaction."""
        meta = self._parse(raw)
        meta_json = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        ring = self._keys.ring()
        key_id, body_blob = ring.encrypt(raw, crypto.AAD_BODY)
        meta_blob = ring.encrypt_with(key_id, meta_json, crypto.AAD_META)
        return {"key_id": key_id, "size": len(raw), "body": body_blob, "meta": meta_blob}

    def _charge(self, c: Connection, deltas: dict[int, tuple[int, int]], check: bool) -> None:
        """Adds (bytes, messages) to the mailboxes' totals, refusing to go over
        a quota when `check` and the mailbox grows."""
        for mailbox_id in sorted(deltas):
            nbytes, nmsgs = deltas[mailbox_id]
            mb = c.execute(
                select(M.c.quota_bytes, M.c.used_bytes)
                .where(M.c.id == mailbox_id)
                .with_for_update()
            ).first()
            if mb is None:
                raise NotFound(str(mailbox_id))
            if (
                check
                and nbytes > 0
                and mb.quota_bytes is not None
                and mb.used_bytes + nbytes > mb.quota_bytes
            ):
                raise QuotaExceeded(str(mailbox_id))
            c.execute(
                update(M)
                .where(M.c.id == mailbox_id)
                .values(
                    used_bytes=M.c.used_bytes + nbytes,
                    used_messages=M.c.used_messages + nmsgs,
                )
            )

    def _add_messages(
        self,
        c: Connection,
        folder: Row[Any],
        items: Sequence[tuple[int, frozenset[str], int, int]],
    ) -> tuple[list[int], int]:
        """Inserts (body_id, flags, internal_date, size) items as \\Recent
        messages with consecutive new UIDs and one new MODSEQ, and bumps the
        folder's counters (the folder row must be locked). (uids, modseq)."""
        modseq = folder.highestmodseq + 1
        uids = list(range(folder.uidnext, folder.uidnext + len(items)))
        c.execute(
            insert(MSG),
            [
                {
                    "folder_id": folder.id,
                    "uid": uid,
                    "modseq": modseq,
                    "flags": _flags_text(flags),
                    "internal_date": idate,
                    "size": size,
                    "recent": True,
                    "body_id": body_id,
                }
                for uid, (body_id, flags, idate, size) in zip(uids, items, strict=True)
            ],
        )
        c.execute(
            update(F)
            .where(F.c.id == folder.id)
            .values(uidnext=folder.uidnext + len(items), highestmodseq=modseq)
        )
        return uids, modseq

    def append(
        self,
        folder_id: int,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        sealed = self._seal(raw)
        fl = normalise_flags(flags)
        idate = _epoch(internal_date)
        with self._write() as c:
            folder = self._lock_folders(c, [folder_id])[folder_id]
            self._charge(c, {folder.mailbox_id: (len(raw), 1)}, check=True)
            body_id = c.execute(insert(B).values(**sealed)).inserted_primary_key[0]
            uids, modseq = self._add_messages(c, folder, [(body_id, fl, idate, len(raw))])
        return AppendResult(folder.id, folder.uidvalidity, uids[0], modseq)

    def deliver(self, delivery: Delivery) -> list[AppendResult]:
        mailbox_ids = list(dict.fromkeys(delivery.mailbox_ids))
        if not mailbox_ids:
            return []
        raw = delivery.raw
        sealed = self._seal(raw)
        fl = normalise_flags(delivery.flags)
        idate = _epoch(delivery.internal_date)
        with self._write() as c:
            inbox_ids = dict(
                c.execute(
                    select(F.c.mailbox_id, F.c.id).where(
                        F.c.mailbox_id.in_(mailbox_ids), F.c.name == INBOX
                    )
                ).all()
            )
            missing = [m for m in mailbox_ids if m not in inbox_ids]
            if missing:
                raise NotFound(f"mailbox {missing[0]}")
            folders = self._lock_folders(c, inbox_ids.values())
            self._charge(c, {m: (len(raw), 1) for m in mailbox_ids}, check=True)
            body_id = c.execute(insert(B).values(**sealed)).inserted_primary_key[0]
            results = []
            for m in mailbox_ids:
                folder = folders[inbox_ids[m]]
                uids, modseq = self._add_messages(c, folder, [(body_id, fl, idate, len(raw))])
                results.append(AppendResult(folder.id, folder.uidvalidity, uids[0], modseq))
        return results

    def _gc_bodies(self, c: Connection, body_ids: Iterable[int]) -> None:
        """Deletes the bodies no message points at any more."""
        for chunk in _chunks(list(body_ids)):
            orphan = ~select(MSG.c.id).where(MSG.c.body_id == B.c.id).exists()
            c.execute(delete(B).where(B.c.id.in_(chunk), orphan))

    def _remove_messages(
        self,
        c: Connection,
        folder: Row[Any],
        uids: Sequence[int] | None,
        *,
        only_deleted: bool = False,
        log_expunge: bool = True,
    ) -> list[int]:
        """Deletes messages of a locked folder (all, or those among `uids`),
        records the expunges with one new MODSEQ, releases quota and bodies."""
        base = select(MSG.c.id, MSG.c.uid, MSG.c.size, MSG.c.body_id).where(
            MSG.c.folder_id == folder.id
        )
        if only_deleted:
            base = base.where(_has_flag(DELETED))
        rows: list[Row[Any]] = []
        if uids is None:
            rows = list(c.execute(base))
        else:
            for chunk in _chunks(uids):
                rows.extend(c.execute(base.where(MSG.c.uid.in_(chunk))))
        if not rows:
            return []
        rows.sort(key=lambda r: r.uid)
        for i in range(0, len(rows), CHUNK):
            c.execute(delete(MSG).where(MSG.c.id.in_([r.id for r in rows[i : i + CHUNK]])))
        removed = [r.uid for r in rows]
        if log_expunge:
            modseq = folder.highestmodseq + 1
            c.execute(
                insert(E), [{"folder_id": folder.id, "uid": u, "modseq": modseq} for u in removed]
            )
            c.execute(update(F).where(F.c.id == folder.id).values(highestmodseq=modseq))
        self._charge(c, {folder.mailbox_id: (-sum(r.size for r in rows), -len(rows))}, False)
        self._gc_bodies(c, {r.body_id for r in rows})
        return removed

    def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        with self._write() as c:
            folder = self._lock_folders(c, [folder_id])[folder_id]
            return self._remove_messages(c, folder, uids, only_deleted=True)

    def _copy(
        self, c: Connection, folder_id: int, uids: Sequence[int], dest_folder_id: int, move: bool
    ) -> CopyResult:
        folders = self._lock_folders(c, [folder_id, dest_folder_id])
        src, dest = folders[folder_id], folders[dest_folder_id]
        rows: list[Row[Any]] = []
        q = select(
            MSG.c.uid, MSG.c.flags, MSG.c.internal_date, MSG.c.size, MSG.c.body_id
        ).where(MSG.c.folder_id == folder_id)
        for chunk in _chunks(uids):
            rows.extend(c.execute(q.where(MSG.c.uid.in_(chunk))))
        if not rows:
            return CopyResult(dest.uidvalidity, (), ())
        rows.sort(key=lambda r: r.uid)
        total = sum(r.size for r in rows)
        same_mailbox = src.mailbox_id == dest.mailbox_id
        if not (move and same_mailbox):
            self._charge(c, {dest.mailbox_id: (total, len(rows))}, check=True)
        new_uids, _ = self._add_messages(
            c,
            dest,
            [(r.body_id, _parse_flags(r.flags), r.internal_date, r.size) for r in rows],
        )
        if move:
            src_now = c.execute(select(F).where(F.c.id == folder_id)).one()
            source_ids = [r.uid for r in rows]
            # Remove exactly the copied rows (by UID, not the new copies).
            removed_rows = self._select_ids(c, folder_id, source_ids)
            for i in range(0, len(removed_rows), CHUNK):
                c.execute(delete(MSG).where(MSG.c.id.in_(removed_rows[i : i + CHUNK])))
            modseq = src_now.highestmodseq + 1
            c.execute(
                insert(E), [{"folder_id": folder_id, "uid": u, "modseq": modseq} for u in source_ids]
            )
            c.execute(update(F).where(F.c.id == folder_id).values(highestmodseq=modseq))
            if not same_mailbox:
                self._charge(c, {src.mailbox_id: (-total, -len(rows))}, check=False)
        return CopyResult(dest.uidvalidity, tuple(r.uid for r in rows), tuple(new_uids))

    def _select_ids(self, c: Connection, folder_id: int, uids: Sequence[int]) -> list[int]:
        out: list[int] = []
        for chunk in _chunks(uids):
            out.extend(
                c.execute(
                    select(MSG.c.id).where(MSG.c.folder_id == folder_id, MSG.c.uid.in_(chunk))
                ).scalars()
            )
        return out

    def copy(self, folder_id: int, uids: Sequence[int], dest_folder_id: int) -> CopyResult:
        with self._write() as c:
            return self._copy(c, folder_id, uids, dest_folder_id, move=False)

    def move(self, folder_id: int, uids: Sequence[int], dest_folder_id: int) -> CopyResult:
        with self._write() as c:
            return self._copy(c, folder_id, uids, dest_folder_id, move=True)

    def store_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> tuple[list[FlagChange], list[int]]:
        wanted = normalise_flags(flags)
        changes: list[FlagChange] = []
        failed: list[int] = []
        with self._write() as c:
            folder = self._lock_folders(c, [folder_id])[folder_id]
            modseq = folder.highestmodseq + 1
            q = select(MSG.c.id, MSG.c.uid, MSG.c.modseq, MSG.c.flags).where(
                MSG.c.folder_id == folder_id
            )
            rows: list[Row[Any]] = []
            for chunk in _chunks(uids):
                rows.extend(c.execute(q.where(MSG.c.uid.in_(chunk))))
            rows.sort(key=lambda r: r.uid)
            updates = []
            for r in rows:
                if unchanged_since is not None and r.modseq > unchanged_since:
                    failed.append(r.uid)
                    continue
                old = _parse_flags(r.flags)
                if mode is FlagMode.ADD:
                    new = old | wanted
                elif mode is FlagMode.REMOVE:
                    new = old - wanted
                else:
                    new = wanted
                if new != old:
                    updates.append({"b_id": r.id, "b_flags": _flags_text(new)})
                    changes.append(FlagChange(r.uid, new, modseq))
            if updates:
                c.execute(
                    update(MSG)
                    .where(MSG.c.id == bindparam("b_id"))
                    .values(flags=bindparam("b_flags"), modseq=modseq),
                    updates,
                )
                c.execute(update(F).where(F.c.id == folder_id).values(highestmodseq=modseq))
        return changes, failed

    def claim_recent(self, folder_id: int) -> frozenset[int]:
        with self._write() as c:
            self._lock_folders(c, [folder_id])
            uids = frozenset(
                c.execute(
                    select(MSG.c.uid).where(MSG.c.folder_id == folder_id, MSG.c.recent)
                ).scalars()
            )
            if uids:
                c.execute(
                    update(MSG)
                    .where(MSG.c.folder_id == folder_id, MSG.c.recent)
                    .values(recent=False)
                )
        return uids

    # -- messages: reading -------------------------------------------------

    def index(self, folder_id: int) -> list[IndexEntry]:
        with self._read() as c:
            f = c.execute(
                select(F.c.uidvalidity, F.c.highestmodseq, F.c.uidnext).where(F.c.id == folder_id)
            ).first()
            if f is None:
                raise NotFound(f"folder {folder_id}")
            version = (f.uidvalidity, f.highestmodseq, f.uidnext)
            cached = self._index_cache.get(folder_id)
            if cached is not None and cached[0] == version:
                return list(cached[1])
            if cached is not None and cached[0][0] == f.uidvalidity:
                # Every change to a folder bumps its HIGHESTMODSEQ in the same
                # transaction, so what changed since the cached copy is exactly
                # what changes_since would report.
                since = cached[0][1]
                changed = _index_entries(self._raw_index(c, folder_id, since))
                gone = set(
                    c.execute(
                        select(E.c.uid).where(E.c.folder_id == folder_id, E.c.modseq > since)
                    ).scalars()
                )
                gone.update(e.uid for e in changed)
                entries = [e for e in cached[1] if e.uid not in gone]
                entries.extend(changed)
                entries.sort(key=_uid_key)
            else:
                entries = _index_entries(self._raw_index(c, folder_id, None))
        self._index_cache.put(folder_id, version, entries)
        return list(entries)

    def _raw_index(self, c: Connection, folder_id: int, since: int | None) -> list[Any]:
        """(uid, modseq, flags, size, internal_date) tuples straight from the
        driver: SQLAlchemy's row objects would double the cost for 100,000 rows."""
        mark = "?" if c.dialect.paramstyle == "qmark" else "%s"
        sql = (
            "SELECT uid, modseq, flags, size, internal_date FROM messages"  # noqa: S608 - constant
            f" WHERE folder_id = {mark}"
        )
        params: tuple[int, ...] = (folder_id,)
        if since is not None:
            sql += f" AND modseq > {mark}"
            params = (folder_id, since)
        sql += " ORDER BY uid"
        cursor = c.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def changes_since(self, folder_id: int, modseq: int) -> FolderChanges:
        with self._read() as c:
            f = c.execute(select(F).where(F.c.id == folder_id)).first()
            if f is None:
                raise NotFound(f"folder {folder_id}")
            rows = self._raw_index(c, folder_id, modseq)
            expunged = sorted(
                set(
                    c.execute(
                        select(E.c.uid).where(E.c.folder_id == folder_id, E.c.modseq > modseq)
                    ).scalars()
                )
            )
        return FolderChanges(
            highestmodseq=f.highestmodseq,
            uidnext=f.uidnext,
            changed=tuple(_index_entries(rows)),
            expunged=tuple(expunged),
        )

    def message_infos(self, folder_id: int, uids: Sequence[int]) -> list[MessageInfo]:
        q = (
            select(
                MSG.c.uid,
                MSG.c.modseq,
                MSG.c.flags,
                MSG.c.size,
                MSG.c.internal_date,
                B.c.key_id,
                B.c.meta,
            )
            .join(B, B.c.id == MSG.c.body_id)
            .where(MSG.c.folder_id == folder_id)
        )
        rows: list[Row[Any]] = []
        with self._read() as c:
            for chunk in _chunks(uids):
                rows.extend(c.execute(q.where(MSG.c.uid.in_(chunk))))
        rows.sort(key=lambda r: r.uid)
        out = []
        for r in rows:
            meta = json.loads(self._decrypt(r.key_id, r.meta, crypto.AAD_META))
            out.append(
                MessageInfo(
                    r.uid,
                    r.modseq,
                    _parse_flags(r.flags),
                    r.size,
                    _from_epoch(r.internal_date),
                    meta,
                )
            )
        return out

    def _decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        return self._keys.ring().decrypt(key_id, blob, aad)

    def _body_of(self, c: Connection, folder_id: int, uid: int) -> bytes | None:
        r = c.execute(
            select(B.c.key_id, B.c.body)
            .join(MSG, MSG.c.body_id == B.c.id)
            .where(MSG.c.folder_id == folder_id, MSG.c.uid == uid)
        ).first()
        return None if r is None else self._decrypt(r.key_id, r.body, crypto.AAD_BODY)

    def message_body(self, folder_id: int, uid: int) -> bytes:
        with self._read() as c:
            raw = self._body_of(c, folder_id, uid)
        if raw is None:
            raise NotFound(f"uid {uid}")
        return raw

    def iter_bodies(self, folder_id: int, uids: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        # One short read transaction per body: a transaction must not stay open
        # across the caller's work between items (it would pin the WAL).
        for uid in sorted(set(uids)):
            try:
                with self._read() as c:
                    raw = self._body_of(c, folder_id, uid)
            except StoreUnavailable:
                raise
            if raw is not None:
                yield uid, raw

    # -- outbound queue ----------------------------------------------------

    def enqueue(
        self, sender: str, recipients: Sequence[str], raw: bytes, dsn: DSNParams | None = None
    ) -> QueueEntry:
        dsn = dsn or DSNParams()
        key_id, blob = self._keys.ring().encrypt(raw, crypto.AAD_QUEUE)
        now = _now().replace(microsecond=0)
        values = {
            "sender": sender,
            "recipients": json.dumps(list(recipients)),
            "dsn": _dsn_to_json(dsn),
            "created": now,
            "next_attempt": now,
            "lease_until": None,
            "attempts": 0,
            "last_error": None,
            "size": len(raw),
            "key_id": key_id,
            "body": blob,
        }
        with self._write() as c:
            new_id = c.execute(insert(Q).values(**values)).inserted_primary_key[0]
        return QueueEntry(new_id, sender, tuple(recipients), now, now, 0, None, len(raw), dsn)

    def due_entries(self, now: datetime, limit: int = 100) -> list[QueueEntry]:
        q = (
            select(*_QUEUE_COLS)
            .where(
                Q.c.next_attempt <= now,
                or_(Q.c.lease_until.is_(None), Q.c.lease_until <= now),
            )
            .order_by(Q.c.next_attempt, Q.c.id)
            .limit(limit)
        )
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        with self._write() as c:
            rows = c.execute(q).all()
            if rows:
                c.execute(
                    update(Q)
                    .where(Q.c.id.in_([r.id for r in rows]))
                    .values(lease_until=now + self._lease)
                )
        return [_queue_entry(r) for r in rows]

    def queue_body(self, entry_id: int) -> bytes:
        with self._read() as c:
            r = c.execute(select(Q.c.key_id, Q.c.body).where(Q.c.id == entry_id)).first()
        if r is None:
            raise NotFound(f"queue entry {entry_id}")
        return self._decrypt(r.key_id, r.body, crypto.AAD_QUEUE)

    def record_attempt(
        self,
        entry_id: int,
        *,
        delivered: Sequence[str],
        failed: Sequence[str],
        error: str | None,
        next_attempt: datetime | None,
    ) -> None:
        done = {a.lower() for a in (*delivered, *failed)}
        with self._write() as c:
            r = c.execute(
                select(Q.c.recipients, Q.c.next_attempt).where(Q.c.id == entry_id).with_for_update()
            ).first()
            if r is None:
                raise NotFound(f"queue entry {entry_id}")
            remaining = [a for a in json.loads(r.recipients) if a.lower() not in done]
            if not remaining:
                c.execute(delete(Q).where(Q.c.id == entry_id))
                return
            c.execute(
                update(Q)
                .where(Q.c.id == entry_id)
                .values(
                    recipients=json.dumps(remaining),
                    attempts=Q.c.attempts + 1,
                    last_error=error,
                    next_attempt=next_attempt or r.next_attempt,
                    lease_until=None,
                )
            )

    def remove_entry(self, entry_id: int) -> None:
        with self._write() as c:
            n = c.execute(delete(Q).where(Q.c.id == entry_id)).rowcount
        if n == 0:
            raise NotFound(f"queue entry {entry_id}")

    def retry_entry(self, entry_id: int) -> None:
        with self._write() as c:
            n = c.execute(
                update(Q)
                .where(Q.c.id == entry_id)
                .values(next_attempt=_now().replace(microsecond=0), lease_until=None)
            ).rowcount
        if n == 0:
            raise NotFound(f"queue entry {entry_id}")

    def list_queue(self) -> list[QueueEntry]:
        with self._read() as c:
            return [_queue_entry(r) for r in c.execute(select(*_QUEUE_COLS).order_by(Q.c.id))]

    # -- audit -------------------------------------------------------------

    def record_audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        with self._write() as c:
            c.execute(
                insert(AU),
                [
                    {
                        "time": e.time,
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "result": e.result,
                        "details": json.dumps(e.details, ensure_ascii=False, default=str),
                    }
                    for e in events
                ],
            )

    def audit_events(
        self, *, actor: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[AuditEvent]:
        """Oldest first (from `since` when given), at most `limit`."""
        q = select(AU).order_by(AU.c.time, AU.c.id).limit(limit)
        if actor is not None:
            q = q.where(AU.c.actor == actor)
        if since is not None:
            q = q.where(AU.c.time >= since)
        with self._read() as c:
            rows = c.execute(q).all()
        return [
            AuditEvent(r.time, r.actor, r.action, r.target, r.result, json.loads(r.details))
            for r in rows
        ]

    def purge_audit(self, before: datetime) -> int:
        with self._write() as c:
            return int(c.execute(delete(AU).where(AU.c.time < before)).rowcount)

    # -- keys --------------------------------------------------------------

    def reencrypt(self, batch: int = 500) -> int:
        ring = self._keys.ring()
        current = ring.current_id
        done = 0
        with self._write() as c:
            ids = list(
                c.execute(
                    select(B.c.id).where(B.c.key_id != current).order_by(B.c.id).limit(batch)
                ).scalars()
            )
            for body_id in ids:  # one body in memory at a time
                r = c.execute(select(B.c.key_id, B.c.body, B.c.meta).where(B.c.id == body_id)).one()
                body = ring.decrypt(r.key_id, r.body, crypto.AAD_BODY)
                meta = ring.decrypt(r.key_id, r.meta, crypto.AAD_META)
                c.execute(
                    update(B)
                    .where(B.c.id == body_id)
                    .values(
                        key_id=current,
                        body=ring.encrypt_with(current, body, crypto.AAD_BODY),
                        meta=ring.encrypt_with(current, meta, crypto.AAD_META),
                    )
                )
                done += 1
            if done < batch:
                qids = list(
                    c.execute(
                        select(Q.c.id)
                        .where(Q.c.key_id != current)
                        .order_by(Q.c.id)
                        .limit(batch - done)
                    ).scalars()
                )
                for qid in qids:
                    r = c.execute(select(Q.c.key_id, Q.c.body).where(Q.c.id == qid)).one()
                    body = ring.decrypt(r.key_id, r.body, crypto.AAD_QUEUE)
                    c.execute(
                        update(Q)
                        .where(Q.c.id == qid)
                        .values(key_id=current, body=ring.encrypt_with(current, body, crypto.AAD_QUEUE))
                    )
                    done += 1
        return done

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()
        try:
            self._engine.dispose()
        except Exception as exc:  # noqa: BLE001 - closing must not mask the caller's error
            raise translate(exc) from exc


_ENTRY_FIELDS = ("uid", "modseq", "flags", "size", "internal_date")
assert tuple(f.name for f in dataclasses.fields(IndexEntry)) == _ENTRY_FIELDS, (
    "storage.interface.IndexEntry changed: update _index_entries"
)
_ENTRY_SETTERS = tuple(getattr(IndexEntry, name).__set__ for name in _ENTRY_FIELDS)


def _uid_key(e: IndexEntry) -> int:
    return e.uid


def _index_entries(rows: Iterable[Any]) -> list[IndexEntry]:
    """IndexEntry records from (uid, modseq, flags, size, internal_date) rows.

    The hot path of SELECT: a frozen dataclass's __init__ goes through
    object.__setattr__ per field, twice the cost of setting the slots directly,
    which is what this does (the field list is checked at import above)."""
    new = object.__new__
    cls = IndexEntry
    set_uid, set_modseq, set_flags, set_size, set_date = _ENTRY_SETTERS
    parse = _parse_flags
    fromts = datetime.fromtimestamp
    utc = UTC
    out: list[IndexEntry] = []
    append = out.append
    for uid, modseq, flags, size, idate in rows:
        e = new(cls)
        set_uid(e, uid)
        set_modseq(e, modseq)
        set_flags(e, parse(flags))
        set_size(e, size)
        set_date(e, fromts(idate, utc))
        append(e)
    return out


class _IndexCache:
    """Recently built folder indexes, keyed by folder and validated against
    (UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT) on every use, so a change made by
    another process is never missed: a stale copy is brought up to date from
    the MODSEQ it was built at. Bounded by the total number of entries."""

    def __init__(self, max_entries: int = 400_000, min_size: int = 2_000) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[int, tuple[tuple[int, int, int], tuple[IndexEntry, ...]]] = (
            OrderedDict()
        )
        self._total = 0
        self._max = max_entries
        self._min = min_size  # small folders are cheap to read: not worth the memory

    def get(self, folder_id: int) -> tuple[tuple[int, int, int], tuple[IndexEntry, ...]] | None:
        with self._lock:
            item = self._data.get(folder_id)
            if item is not None:
                self._data.move_to_end(folder_id)
            return item

    def put(self, folder_id: int, version: tuple[int, int, int], entries: list[IndexEntry]) -> None:
        with self._lock:
            old = self._data.pop(folder_id, None)
            if old is not None:
                self._total -= len(old[1])
            if len(entries) < self._min or len(entries) > self._max:
                return
            self._data[folder_id] = (version, tuple(entries))
            self._total += len(entries)
            while self._total > self._max:
                _, (_, dropped) = self._data.popitem(last=False)
                self._total -= len(dropped)
