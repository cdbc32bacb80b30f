"""`SqlStore`: the SQLAlchemy implementation of `storage.interface.MessageStore`.

This module holds folders, messages and key rotation; the directory (domains,
accounts, mailboxes, grants) is in `storage.directory`, the outbound queue and
audit in `storage.outbound`, the shared plumbing in `storage.sqlbase`.

Queries are SQLAlchemy Core over the tables of `storage.models` (no ORM
session): the hot paths (`index`, `message_infos`) must turn 100,000 rows into
records in a fraction of a second. The hottest paths (SMTP delivery, and what
every IMAP session does: store_flags, expunge, append, get_folder,
changes_since, message_infos, bodies, claim_recent) talk to the DB-API cursor
with the fixed SQL of `_Sql` instead: SQLAlchemy's per-statement building was
most of their CPU, spent holding the write lock. Every public method runs in one transaction
(`storage.engine.transaction`); writes take the locks their invariants need
(`BEGIN IMMEDIATE` on SQLite, ``FOR UPDATE`` on PostgreSQL) before reading the
counters they bump (``uidnext``, ``highestmodseq``, quota totals). Lock order,
to stay deadlock-free on PostgreSQL: folders by ascending id, then mailboxes by
ascending id.

Encryption and MIME parsing happen before the transaction starts, so the
database write lock is held only for the inserts.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    LargeBinary,
    Row,
    String,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from storage import crypto, sortkeys
from storage.directory import DirectoryMixin, _bump_access_epoch
from storage.dirsync import DirectorySyncMixin
from storage.index import (
    ColumnsCache,
    IndexCache,
    SortKeysCache,
    apply_changes,
    apply_column_changes,
    columns_from_text,
    copy_columns,
    index_entries,
)
from storage.interface import (
    NO_WAIT_BODY_BYTES,
    NO_WAIT_ROWS,
    AlreadyExists,
    AppendItem,
    AppendResult,
    CopyResult,
    Delivery,
    Expunged,
    FlagChange,
    FlagMode,
    Folder,
    FolderChanges,
    FolderStatus,
    IndexColumns,
    IndexEntry,
    InvalidName,
    MessageInfo,
    NotFound,
    PreparedMessage,
    QuotaExceeded,
    SortKeys,
    SpecialUse,
    StoreError,
    StoreUnavailable,
    WouldWait,
)
from storage.jobs import JobLeaseMixin
from storage.names import NameEventsMixin
from storage.outbound import OutboundMixin
from storage.sqlbase import (
    AF,
    CHUNK,
    DELETED,
    FOLDER_COLUMNS,
    INBOX,
    MSG,
    PS,
    SEEN,
    SEP,
    B,
    E,
    F,
    G,
    K,
    M,
    Q,
    S,
    check_folder_name,
    chunks,
    dbapi_failure,
    flags_text,
    folder_record,
    from_epoch,
    insert_id,
    normalise_flags,
    normalise_folder_name,
    parent_names,
    parse_flags,
    take_uidvalidity,
    to_epoch,
)
from storage.throttle import ThrottleMixin

log = logging.getLogger(__name__)

# Decoded message metadata kept per process (see `SqlStore._metadata`): a few
# KB each, so some tens of MB at most.
META_CACHE = 8192

# Blobs re-encrypted per write transaction by reencrypt().
REENCRYPT_STEP = 50


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A delivery parsed and encrypted, ready for the transaction."""

    mailbox_ids: tuple[int, ...]  # de-duplicated, in the caller's order
    sealed: dict[str, Any]  # the bodies row, and its "sort_keys" blob
    flags: str
    internal_date: int
    size: int


@dataclass(frozen=True, slots=True)
class _Sql:
    """The delivery path's statements for one DB-API parameter style."""

    mark: str
    returning: bool  # PostgreSQL: ids by RETURNING (SQLite: cursor.lastrowid)
    insert_body: str
    insert_sort_keys: str
    insert_message: str
    update_folder: str
    update_usage: str
    select_inboxes: str  # {} = the IN list of placeholders
    inbox_ids: str = ""
    lock_folders: str = ""
    lock_mailboxes: str = ""
    # The IMAP write paths (store_flags, expunge, append): {} = an IN list.
    lock_folder: str = ""  # id, mailbox_id, uidvalidity, uidnext, highestmodseq
    select_flags: str = ""
    update_flags: str = ""
    update_modseq: str = ""
    select_deleted: str = ""  # {} = " AND uid IN (...)" or ""
    delete_messages: str = ""
    insert_expunged: str = ""
    lock_quota: str = ""
    gc_bodies: str = ""
    # Hot reads of every IMAP session.
    folder_by_name: str = ""
    folder_counters: str = ""
    folder_version: str = ""
    folder_versions: str = ""  # {} = the IN list
    folders_of: str = ""  # folder_by_name's columns, every folder of a mailbox
    folder_by_id: str = ""
    subscriptions_of: str = ""
    mailbox_exists: str = ""
    folder_status_row: str = ""
    folder_totals: str = ""  # count, unseen, recent, size; first ? = the \\Seen LIKE
    seen_count: str = ""  # account, folder: how many messages it has read
    changed_since: str = ""
    expunged_since: str = ""
    infos: str = ""  # {} = the IN list
    metas: str = ""  # {} = the IN list
    body_of: str = ""
    bodies_of: str = ""
    sort_keys_all: str = ""  # folder
    sort_keys_of: str = ""  # folder, {} = the IN list
    claim_recent: str = ""
    claim_recent_below: str = ""
    # Private \\Seen (see `storage.interface`): an account's read messages.
    seen_in_folder: str = ""  # account, folder (+ " AND m.modseq > ?" / an IN list)
    seen_of_ids: str = ""  # account, {} = the IN list of message row ids
    insert_seen: str = ""
    delete_seen: str = ""
    message_row_id: str = ""
    sizes_of: str = ""  # {} = the IN list of UIDs
    sizes_dates_in: str = ""  # {} = the IN list of UIDs
    sizes_dates_range: str = ""


_RETURNING_ID = {True: " RETURNING id", False: ""}
# A folder as `_folder_from_row` reads it.
_FOLDER_SELECT = (
    "SELECT f.id, f.mailbox_id, f.name, f.special_use, f.uidvalidity, f.uidnext,"
    " f.highestmodseq, EXISTS (SELECT 1 FROM subscriptions s"
    " WHERE s.mailbox_id = f.mailbox_id AND s.name = f.name)"
    " FROM folders f"
)
_FOR_UPDATE = {True: " FOR UPDATE", False: ""}


def _make_sql(mark: str, pg: bool) -> _Sql:
    def q(text: str) -> str:
        return text.replace("?", mark)

    return _Sql(
        mark=mark,
        returning=pg,
        insert_body=q(
            "INSERT INTO bodies (key_id, size, body, meta) VALUES (?, ?, ?, ?)"
        )
        + _RETURNING_ID[pg],
        insert_sort_keys=q("INSERT INTO sort_keys (body_id, key_id, data) VALUES (?, ?, ?)"),
        insert_message=q(
            "INSERT INTO messages (folder_id, uid, modseq, flags, internal_date, size, recent,"
            " body_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        update_folder=q("UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?"),
        update_usage=q(
            "UPDATE mailboxes SET used_bytes = used_bytes + ?,"
            " used_messages = used_messages + ? WHERE id = ?"
        ),
        select_inboxes=(
            "SELECT f.mailbox_id, f.id, f.uidvalidity, f.uidnext, f.highestmodseq,"
            " m.quota_bytes, m.used_bytes FROM folders f JOIN mailboxes m ON m.id = f.mailbox_id"
            " WHERE f.name = 'INBOX' AND f.mailbox_id IN ({})"
        ),
        inbox_ids="SELECT id FROM folders WHERE name = 'INBOX' AND mailbox_id IN ({})",
        lock_folders="SELECT id FROM folders WHERE id IN ({}) ORDER BY id FOR UPDATE",
        lock_mailboxes="SELECT id FROM mailboxes WHERE id IN ({}) ORDER BY id FOR UPDATE",
        lock_folder=q(
            "SELECT id, mailbox_id, uidvalidity, uidnext, highestmodseq FROM folders WHERE id = ?"
        )
        + _FOR_UPDATE[pg],
        select_flags=q(
            "SELECT id, uid, modseq, flags FROM messages WHERE folder_id = ? AND uid IN ({})"
        ),
        update_flags=q("UPDATE messages SET flags = ?, modseq = ? WHERE id = ?"),
        update_modseq=q("UPDATE folders SET highestmodseq = ? WHERE id = ?"),
        # '!' as the LIKE escape: PostgreSQL would read the flag's backslash
        # as its default escape character.
        select_deleted=q(
            "SELECT id, uid, size, body_id, flags FROM messages WHERE folder_id = ?"
            " AND flags LIKE ? ESCAPE '!'{}"
        ),
        delete_messages="DELETE FROM messages WHERE id IN ({})",
        insert_expunged=q("INSERT INTO expunged (folder_id, uid, modseq) VALUES (?, ?, ?)"),
        lock_quota=q("SELECT quota_bytes, used_bytes FROM mailboxes WHERE id = ?")
        + _FOR_UPDATE[pg],
        gc_bodies=(
            "DELETE FROM bodies WHERE id IN ({}) AND NOT EXISTS"
            " (SELECT 1 FROM messages WHERE messages.body_id = bodies.id)"
        ),
        folder_by_name=q(_FOLDER_SELECT + " WHERE f.mailbox_id = ? AND f.name = ?"),
        folders_of=q(_FOLDER_SELECT + " WHERE f.mailbox_id = ?"),
        folder_by_id=q(_FOLDER_SELECT + " WHERE f.id = ?"),
        subscriptions_of=q("SELECT name FROM subscriptions WHERE mailbox_id = ?"),
        mailbox_exists=q("SELECT id FROM mailboxes WHERE id = ?"),
        folder_status_row=q(
            "SELECT id, uidvalidity, uidnext, highestmodseq FROM folders WHERE id = ?"
        ),
        folder_totals=q(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN flags LIKE ? ESCAPE '!' THEN 0 ELSE 1 END), 0),"
            " COALESCE(SUM(CASE WHEN recent THEN 1 ELSE 0 END), 0), COALESCE(SUM(size), 0)"
            " FROM messages WHERE folder_id = ?"
        ),
        seen_count=q(
            "SELECT COUNT(*) FROM private_seen p JOIN messages m ON m.id = p.message_id"
            " WHERE p.account_id = ? AND m.folder_id = ?"
        ),
        folder_counters=q("SELECT highestmodseq, uidnext FROM folders WHERE id = ?"),
        folder_versions="SELECT id, uidnext, highestmodseq FROM folders WHERE id IN ({})",
        folder_version=q(
            "SELECT mailbox_id, uidvalidity, highestmodseq, uidnext FROM folders WHERE id = ?"
        ),
        changed_since=q(
            "SELECT uid, modseq, flags, size, internal_date FROM messages"
            " WHERE folder_id = ? AND modseq > ? ORDER BY uid"
        ),
        expunged_since=q("SELECT DISTINCT uid FROM expunged WHERE folder_id = ? AND modseq > ?"),
        infos=q(
            "SELECT m.uid, m.modseq, m.flags, m.size, m.internal_date, b.key_id, b.meta"
            " FROM messages m JOIN bodies b ON b.id = m.body_id"
            " WHERE m.folder_id = ? AND m.uid IN ({})"
        ),
        metas=q(
            "SELECT m.uid, b.key_id, b.meta FROM messages m JOIN bodies b ON b.id = m.body_id"
            " WHERE m.folder_id = ? AND m.uid IN ({})"
        ),
        # Never `bodies`: the keys' own table and key id (revision 0018).
        sort_keys_all=q(
            "SELECT m.uid, m.size, m.internal_date, m.body_id, k.key_id, k.data"
            " FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
            " WHERE m.folder_id = ?"
        ),
        sort_keys_of=q(
            "SELECT m.uid, m.size, m.internal_date, m.body_id, k.key_id, k.data"
            " FROM messages m LEFT JOIN sort_keys k ON k.body_id = m.body_id"
            " WHERE m.folder_id = ? AND m.uid IN ({})"
        ),
        body_of=q(
            "SELECT b.key_id, b.body FROM bodies b JOIN messages m ON m.body_id = b.id"
            " WHERE m.folder_id = ? AND m.uid = ?"
        ),
        bodies_of=q(
            "SELECT m.uid, b.key_id, b.body FROM bodies b JOIN messages m ON m.body_id = b.id"
            " WHERE m.folder_id = ? AND m.uid IN ({})"
        ),
        claim_recent=q(
            "UPDATE messages SET recent = ? WHERE folder_id = ? AND recent = ? RETURNING uid"
        ),
        claim_recent_below=q(
            "UPDATE messages SET recent = ? WHERE folder_id = ? AND recent = ? AND uid < ?"
            " RETURNING uid"
        ),
        seen_in_folder=q(
            "SELECT m.uid FROM private_seen p JOIN messages m ON m.id = p.message_id"
            " WHERE p.account_id = ? AND m.folder_id = ?{}"
        ),
        seen_of_ids=q("SELECT message_id FROM private_seen WHERE account_id = ? AND message_id IN ({})"),
        insert_seen=q("INSERT INTO private_seen (message_id, account_id) VALUES (?, ?)"),
        delete_seen=q("DELETE FROM private_seen WHERE message_id = ? AND account_id = ?"),
        message_row_id=q("SELECT id FROM messages WHERE folder_id = ? AND uid = ?"),
        sizes_of=q("SELECT uid, size FROM messages WHERE folder_id = ? AND uid IN ({})"),
        sizes_dates_in=q(
            "SELECT uid, size, internal_date FROM messages WHERE folder_id = ? AND uid IN ({})"
        ),
        sizes_dates_range=q(
            "SELECT uid, size, internal_date FROM messages WHERE folder_id = ?"
            " AND uid >= ? AND uid <= ?"
        ),
    )


_SQL_SQLITE = _make_sql("?", pg=False)
_SQL_PG = _make_sql("%s", pg=True)


def _marks(sql: _Sql, n: int) -> str:
    return ",".join([sql.mark] * n)


# LIKE pattern for "the flags text holds \\Deleted" ('!' is the escape).
_DELETED_LIKE = "%" + DELETED + "%"
_SEEN_LIKE = "%" + SEEN + "%"


def _folder_from_row(r: Sequence[Any]) -> Folder:
    """A `Folder` from a row of `_FOLDER_SELECT`."""
    return Folder(
        id=r[0],
        mailbox_id=r[1],
        name=r[2],
        special_use=None if r[3] is None else SpecialUse[r[3]],
        uidvalidity=r[4],
        uidnext=r[5],
        highestmodseq=r[6],
        subscribed=bool(r[7]),
        message_count=0,
    )

_SEEN_SET = frozenset({SEEN})


class _SeenOverlay:
    """Flag sets with their \\Seen replaced by one account's private state,
    equal results shared (a folder holds a handful of distinct sets)."""

    def __init__(self, seen_uids: set[int]) -> None:
        self.seen_uids = seen_uids
        self._memo: dict[tuple[frozenset[str], bool], frozenset[str]] = {}

    def __call__(self, uid: int, flags: frozenset[str]) -> frozenset[str]:
        seen = uid in self.seen_uids
        key = (flags, seen)
        out = self._memo.get(key)
        if out is None:
            out = self._memo[key] = (flags | _SEEN_SET) if seen else (flags - _SEEN_SET)
        return out

    def columns(self, cols: IndexColumns) -> IndexColumns:
        flags = cols.flags
        for i, uid in enumerate(cols.uids):
            flags[i] = self(uid, flags[i])
        return cols

    def entries(self, entries: Iterable[IndexEntry]) -> list[IndexEntry]:
        out = []
        for e in entries:
            fl = self(e.uid, e.flags)
            out.append(e if fl == e.flags else
                       IndexEntry(e.uid, e.modseq, fl, e.size, e.internal_date))
        return out


class SqlStore(DirectoryMixin, DirectorySyncMixin, OutboundMixin, ThrottleMixin, JobLeaseMixin,
               NameEventsMixin):
    """See `storage.interface.MessageStore` for the contract of every method."""

    def __init__(self, engine: Engine, key_file: Path, **kwargs: Any) -> None:
        super().__init__(engine, key_file, **kwargs)
        self._index_cache = IndexCache()
        self._columns_cache = ColumnsCache()
        self._meta_cache: dict[bytes, dict[str, Any]] = {}
        self._sort_cache = SortKeysCache()
        self._origin = secrets.token_hex(16)  # before any thread asks (storage.names)

    # -- folders -----------------------------------------------------------

    def _mailbox_exists(self, c: Connection, mailbox_id: int) -> None:
        if c.execute(select(M.c.id).where(M.c.id == mailbox_id)).first() is None:
            raise NotFound(str(mailbox_id))

    def _folder_row(
        self, c: Connection, mailbox_id: int, name: str, *, lock: bool = False
    ) -> Row[Any]:
        q = select(*FOLDER_COLUMNS).where(
            F.c.mailbox_id == mailbox_id, F.c.name == normalise_folder_name(name)
        )
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
        if c.execute(select(M.c.id).where(M.c.id == mailbox_id)).first() is None:
            raise NotFound(str(mailbox_id))
        first = take_uidvalidity(c, count)
        c.execute(update(M).where(M.c.id == mailbox_id).values(last_uidvalidity=first + count - 1))
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
        folder_id = insert_id(
            c.execute(
                insert(F).values(
                    mailbox_id=mailbox_id,
                    name=name,
                    special_use=special_use,
                    uidvalidity=uidvalidity,
                    uidnext=uidnext,
                    highestmodseq=highestmodseq,
                )
            )
        )
        if subscribed:
            self._subscribe(c, mailbox_id, name)
        return folder_id

    def _create_parents(self, c: Connection, mailbox_id: int, name: str) -> None:
        existing = set(c.execute(select(F.c.name).where(F.c.mailbox_id == mailbox_id)).scalars())
        for parent in parent_names(name):
            if parent not in existing:
                self._insert_folder(c, mailbox_id, parent, None, subscribed=False)

    def list_folders(self, mailbox_id: int) -> list[Folder]:
        # Every LIST asks: fixed SQL at the driver.
        with self._raw_read() as (cur, sql):
            cur.execute(sql.folders_of, (mailbox_id,))
            rows = self._rows(cur)
            if not rows:  # every mailbox has an INBOX: none, or no such mailbox?
                self._mailbox_exists_raw(cur, sql, mailbox_id)
        # Sorted here, not in SQL: collations differ between SQLite and PostgreSQL.
        return sorted((_folder_from_row(r) for r in rows), key=lambda f: f.name)

    def _rows(self, cur: Any) -> list[Any]:
        """`cur.fetchall()`; inside `no_waiting`, at most NO_WAIT_ROWS rows
        (then WouldWait, without reading the rest)."""
        if not getattr(self._ambient, "no_wait", False):
            return list(cur.fetchall())
        rows = list(cur.fetchmany(NO_WAIT_ROWS + 1))
        if len(rows) > NO_WAIT_ROWS:
            raise WouldWait("too many rows inside no_waiting")
        return rows

    def _scan_fits(self, uidnext: int) -> None:
        """Inside `no_waiting`, a scan of a folder whose UIDs reach past
        NO_WAIT_ROWS (at most that many messages, usually about as many)
        raises WouldWait before it starts."""
        if uidnext - 1 > NO_WAIT_ROWS and getattr(self._ambient, "no_wait", False):
            raise WouldWait("a large folder inside no_waiting")

    @staticmethod
    def _mailbox_exists_raw(cur: Any, sql: _Sql, mailbox_id: int) -> None:
        cur.execute(sql.mailbox_exists, (mailbox_id,))
        if cur.fetchone() is None:
            raise NotFound(str(mailbox_id))

    def get_folder(self, mailbox_id: int, name: str) -> Folder:
        # Every SELECT and APPEND asks: fixed SQL at the driver.
        with self._raw_read() as (cur, sql):
            cur.execute(sql.folder_by_name, (mailbox_id, normalise_folder_name(name)))
            r = cur.fetchone()
        if r is None:
            raise NotFound(name)
        return _folder_from_row(r)

    def get_folder_by_id(self, folder_id: int) -> Folder:
        with self._raw_read() as (cur, sql):
            cur.execute(sql.folder_by_id, (folder_id,))
            r = cur.fetchone()
        if r is None:
            raise NotFound(f"folder {folder_id}")
        return _folder_from_row(r)

    def create_folder(
        self, mailbox_id: int, name: str, special_use: SpecialUse | None = None
    ) -> Folder:
        name = check_folder_name(name)
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
                row = c.execute(select(*FOLDER_COLUMNS).where(F.c.id == fid)).one()
                self._record_name_event(c, mailbox_id, name)
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(name) from exc
        return folder_record(row)

    def delete_folder(self, mailbox_id: int, name: str) -> None:
        if normalise_folder_name(name) == INBOX:
            raise InvalidName("INBOX cannot be deleted")
        with self._write() as c:
            folder = self._folder_row(c, mailbox_id, name, lock=True)
            self._remove_all_messages(c, folder)
            c.execute(delete(E).where(E.c.folder_id == folder.id))
            c.execute(delete(F).where(F.c.id == folder.id))
            # Its ACL goes with it: a folder made again under the name starts
            # with the mailbox's grants only (as Dovecot's per-folder ACLs).
            dropped = c.execute(
                delete(G).where(G.c.mailbox_id == mailbox_id, G.c.folder == folder.name))
            if dropped.rowcount:
                # Sessions holding those grants check again (access epoch).
                _bump_access_epoch(c)
            self._record_name_event(c, mailbox_id, folder.name, deleted=True)

    def rename_folder(self, mailbox_id: int, old: str, new: str) -> None:
        old = normalise_folder_name(old)
        new = check_folder_name(new)
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
                self._record_name_event(c, mailbox_id, new, old_name=old)
                if old == INBOX:
                    self._rename_inbox(c, mailbox_id, source, new)
                    return
                # The folder and its inferiors, but not INBOX's (RFC 3501 6.3.5).
                moving = [r for r in all_rows if r.name == old or r.name.startswith(old + SEP)]
                targets = {r.id: new + r.name[len(old) :] for r in moving}
                if set(targets.values()) & (names - {r.name for r in moving}):
                    raise AlreadyExists(new)
                moved_grants = 0
                for r in moving:
                    target = targets[r.id]
                    c.execute(update(F).where(F.c.id == r.id).values(name=target))
                    # The subscription follows the folder, unless the new name
                    # was subscribed already (a name left by a deleted folder).
                    c.execute(delete(S).where(S.c.mailbox_id == mailbox_id, S.c.name == target))
                    c.execute(
                        update(S)
                        .where(S.c.mailbox_id == mailbox_id, S.c.name == r.name)
                        .values(name=target)
                    )
                    # Folder grants (RFC 4314 ACL) follow their folder.
                    moved_grants += c.execute(
                        update(G)
                        .where(G.c.mailbox_id == mailbox_id, G.c.folder == r.name)
                        .values(folder=target)
                    ).rowcount
                self._create_parents(c, mailbox_id, new)
                if moved_grants:
                    # Open sessions judge their folder's grants again: by the
                    # folder's new name (the grant went with it), never by
                    # the old one, which a new folder may take.
                    _bump_access_epoch(c)
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

    def _subscribe(self, c: Connection, mailbox_id: int, name: str) -> None:
        known = c.execute(
            select(S.c.id).where(S.c.mailbox_id == mailbox_id, S.c.name == name)
        ).first()
        if known is None:
            c.execute(insert(S).values(mailbox_id=mailbox_id, name=name))

    def set_subscribed(self, mailbox_id: int, name: str, subscribed: bool) -> None:
        name = normalise_folder_name(name)
        with self._write() as c:
            if subscribed:
                self._folder_row(c, mailbox_id, name)  # NotFound
                self._subscribe(c, mailbox_id, name)
            else:
                gone = c.execute(
                    delete(S).where(S.c.mailbox_id == mailbox_id, S.c.name == name)
                ).rowcount
                if gone == 0:
                    self._folder_row(c, mailbox_id, name)  # NotFound unless it exists
            self._record_name_event(c, mailbox_id, name, subscribed=subscribed)

    def list_subscriptions(self, mailbox_id: int) -> list[str]:
        # Every LIST asks: fixed SQL at the driver.
        with self._raw_read() as (cur, sql):
            cur.execute(sql.subscriptions_of, (mailbox_id,))
            names = [r[0] for r in cur.fetchall()]
            if not names:
                self._mailbox_exists_raw(cur, sql, mailbox_id)
        return sorted(names)

    def folder_versions(self, folder_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        # The watcher polls this for every selected folder: fixed SQL.
        with self._raw_read() as (cur, sql):
            for chunk in chunks(folder_ids):
                cur.execute(sql.folder_versions.format(_marks(sql, len(chunk))), chunk)
                for fid, uidnext, highest in cur.fetchall():
                    out[fid] = (uidnext, highest)
        return out

    def folder_status(self, folder_id: int, *, seen_account: int | None = None) -> FolderStatus:
        # Every STATUS (and LIST-STATUS entry) asks: fixed SQL at the driver.
        with self._raw_read() as (cur, sql):
            cur.execute(sql.folder_status_row, (folder_id,))
            f = cur.fetchone()
            if f is None:
                raise NotFound(f"folder {folder_id}")
            self._scan_fits(int(f[2]))
            cur.execute(sql.folder_totals, (_SEEN_LIKE, folder_id))
            messages, unseen, recent, size = (int(v) for v in cur.fetchone())
            if seen_account is not None:
                # The account's rows are removed with their messages: they
                # count exactly the messages of the folder it has read.
                cur.execute(sql.seen_count, (seen_account, folder_id))
                unseen = messages - int(cur.fetchone()[0])
        return FolderStatus(
            folder_id=f[0],
            uidvalidity=f[1],
            uidnext=f[2],
            highestmodseq=f[3],
            messages=messages,
            unseen=unseen,
            recent=recent,
            size=size,
        )

    # -- messages: writing -------------------------------------------------

    def _seal(self, raw: bytes) -> dict[str, Any]:
        """Parses and encrypts a message once, outside any transaction."""
        meta = self._parse(raw)
        meta_json = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        ring = self._keys.ring()
        key_id, body_blob = ring.encrypt(raw, crypto.AAD_BODY)
        meta_blob = ring.encrypt_with(key_id, meta_json, crypto.AAD_META)
        keys_blob = ring.encrypt_with(
            key_id, sortkeys.encode(sortkeys.sort_keys(raw, meta)), crypto.AAD_SORT_KEYS)
        return {"key_id": key_id, "size": len(raw), "body": body_blob, "meta": meta_blob,
                "sort_keys": keys_blob}

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
        recent: bool = True,
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
                    "flags": flags_text(flags),
                    "internal_date": idate,
                    "size": size,
                    "recent": recent,
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

    def prepare(self, raw: bytes) -> PreparedMessage:
        return PreparedMessage(len(raw), self._seal(raw))

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
        [result] = self.append_many(
            folder_id, [AppendItem(raw, tuple(flags), internal_date)], recent=recent,
            seen_account=seen_account)
        return result

    def append_many(
        self,
        folder_id: int,
        items: Sequence[AppendItem],
        *,
        recent: bool = True,
        seen_account: int | None = None,
    ) -> list[AppendResult]:
        if not items:
            return []
        rows = []
        for item in items:
            raw = item.message
            prepared = raw if isinstance(raw, PreparedMessage) else self.prepare(raw)
            wanted = normalise_flags(item.flags)
            rows.append((
                prepared,
                seen_account is not None and SEEN in wanted,
                flags_text(wanted if seen_account is None else wanted - _SEEN_SET),
                to_epoch(item.internal_date),
            ))
        total = sum(p.size for p, _, _, _ in rows)
        with self._raw_write() as (cur, sql):
            folder_id, mailbox_id, uidvalidity, uidnext, highest = self._lock_folder_raw(
                cur, sql, folder_id
            )
            # Lock order: the folder, then its mailbox (quota counters).
            cur.execute(sql.lock_quota, (mailbox_id,))
            mb = cur.fetchone()
            if mb is None:
                raise NotFound(str(mailbox_id))
            # All the messages or none: the quota is checked on their sum.
            if total > 0 and mb[0] is not None and mb[1] + total > mb[0]:
                raise QuotaExceeded(str(mailbox_id))
            cur.execute(sql.update_usage, (total, len(rows), mailbox_id))
            modseq = highest + 1  # one MODSEQ for the command, as one delivery
            results = []
            uid = uidnext
            for prepared, private_seen, fl, idate in rows:
                sealed = prepared.sealed
                cur.execute(sql.insert_body,
                            (sealed["key_id"], sealed["size"], sealed["body"], sealed["meta"]))
                body_id = cur.fetchone()[0] if sql.returning else cur.lastrowid
                cur.execute(sql.insert_sort_keys,
                            (body_id, sealed["key_id"], sealed["sort_keys"]))
                cur.execute(
                    sql.insert_message,
                    (folder_id, uid, modseq, fl, idate, prepared.size, recent, body_id),
                )
                if private_seen:
                    cur.execute(sql.message_row_id, (folder_id, uid))
                    cur.execute(sql.insert_seen, (cur.fetchone()[0], seen_account))
                results.append(AppendResult(folder_id, uidvalidity, uid, modseq))
                uid += 1
            cur.execute(sql.update_folder, (uid, modseq, folder_id))
        return results

    def _raw_write(self) -> AbstractContextManager[tuple[Any, _Sql]]:
        """A write transaction worked at the DB-API cursor with the fixed SQL
        of `_Sql` (the IMAP write paths: building SQLAlchemy statements was
        most of their CPU, and it was spent holding the write lock)."""
        return self._dbapi_transaction(write=True)

    def _raw_read(self) -> AbstractContextManager[tuple[Any, _Sql]]:
        """A read transaction at the DB-API cursor (see `_raw_write`)."""
        return self._dbapi_transaction(write=False)

    @contextmanager
    def _dbapi_transaction(self, *, write: bool) -> Iterator[tuple[Any, _Sql]]:
        """`StoreBase._dbapi` with this dialect's fixed statements."""
        with self._dbapi(write=write) as cur:
            yield cur, _SQL_PG if self._pg else _SQL_SQLITE

    @staticmethod
    def _lock_folder_raw(cur: Any, sql: _Sql, folder_id: int) -> tuple[int, int, int, int, int]:
        """(id, mailbox_id, uidvalidity, uidnext, highestmodseq) of a folder,
        read under the write lock (PostgreSQL: the row locked FOR UPDATE)."""
        cur.execute(sql.lock_folder, (folder_id,))
        r = cur.fetchone()
        if r is None:
            raise NotFound(f"folder {folder_id}")
        return (int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))

    def _prepare(self, delivery: Delivery) -> _Prepared:
        """Everything a delivery needs that does not touch the database."""
        mailbox_ids = tuple(dict.fromkeys(delivery.mailbox_ids))
        sealed = self._seal(delivery.raw) if mailbox_ids else {}
        return _Prepared(
            mailbox_ids,
            sealed,
            flags_text(normalise_flags(delivery.flags)),
            to_epoch(delivery.internal_date),
            len(delivery.raw),
        )

    def deliver(self, delivery: Delivery) -> list[AppendResult]:
        prepared = self._prepare(delivery)
        if not prepared.mailbox_ids:
            return []
        with self._write() as c:
            [result] = self._deliver_locked(c, [prepared], isolate=False)
        assert not isinstance(result, StoreError)
        return result

    def deliver_many(
        self, deliveries: Sequence[Delivery]
    ) -> list[list[AppendResult] | StoreError]:
        prepared = [self._prepare(d) for d in deliveries]
        if not any(p.mailbox_ids for p in prepared):
            return [[] for _ in prepared]
        with self._write(len(prepared)) as c:
            return self._deliver_locked(c, prepared, isolate=True)

    def _deliver_locked(
        self, c: Connection, prepared: Sequence[_Prepared], *, isolate: bool
    ) -> list[list[AppendResult] | StoreError]:
        """The deliveries in the current write transaction. Folder and mailbox
        counters are read once (under the write lock / FOR UPDATE), advanced
        in memory delivery by delivery, and written back once at the end.
        `isolate`: each delivery in its own SAVEPOINT, its failure returned in
        its slot; otherwise the first failure is raised (all or nothing).

        This is the SMTP ingest hot path: it talks to the DB-API cursor with
        fixed SQL (SQLAlchemy's per-statement overhead was most of the CPU of
        a delivery); `_Sql` holds the statements for each backend."""
        sql = _SQL_PG if self._pg else _SQL_SQLITE
        dbapi = c.dialect.dbapi
        cur = c.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            try:
                return self._deliver_rows(cur, sql, dbapi, prepared, isolate)
            except dbapi.Error as exc:  # type: ignore[union-attr]
                raise dbapi_failure(exc, dbapi) from exc
        finally:
            cur.close()

    def _deliver_rows(
        self, cur: Any, sql: _Sql, dbapi: Any, prepared: Sequence[_Prepared], isolate: bool
    ) -> list[list[AppendResult] | StoreError]:
        wanted = sorted({m for p in prepared for m in p.mailbox_ids})
        # mailbox id -> [folder id, uidvalidity, uidnext, modseq, quota, used bytes]
        state = self._lock_inboxes(cur, sql, wanted)
        charged: dict[int, list[int]] = {}  # mailbox id -> [bytes, messages] added
        out: list[list[AppendResult] | StoreError] = []
        for p in prepared:
            if not p.mailbox_ids:
                out.append([])
                continue
            problem: StoreError | None = None
            missing = [m for m in p.mailbox_ids if m not in state]
            if missing:
                problem = NotFound(f"mailbox {missing[0]}")
            else:
                for m in p.mailbox_ids:
                    quota, used = state[m][4], state[m][5]
                    if quota is not None and used + p.size > quota:
                        problem = QuotaExceeded(str(m))
                        break
            if problem is not None:
                if not isolate:
                    raise problem
                out.append(problem)
                continue
            sealed = p.sealed
            if isolate:
                cur.execute("SAVEPOINT mss_delivery")
            try:
                cur.execute(sql.insert_body, (sealed["key_id"], sealed["size"], sealed["body"],
                                              sealed["meta"]))
                body_id = cur.fetchone()[0] if sql.returning else cur.lastrowid
                cur.execute(sql.insert_sort_keys,
                            (body_id, sealed["key_id"], sealed["sort_keys"]))
                rows = [
                    (state[m][0], state[m][2], state[m][3] + 1, p.flags, p.internal_date,
                     p.size, True, body_id)
                    for m in p.mailbox_ids
                ]
                if len(rows) == 1:
                    cur.execute(sql.insert_message, rows[0])
                else:
                    cur.executemany(sql.insert_message, rows)
            except (dbapi.IntegrityError, dbapi.DataError) as exc:
                # This delivery alone was refused (a constraint): undo it.
                if not isolate:
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT mss_delivery")
                cur.execute("RELEASE SAVEPOINT mss_delivery")
                ref = secrets.token_hex(6)
                log.error("delivery refused by the database ref=%s: %s", ref, exc)
                out.append(StoreError(f"delivery refused (ref {ref})"))
                continue
            if isolate:
                cur.execute("RELEASE SAVEPOINT mss_delivery")
            # Part of the transaction now: advance the counters in memory.
            results = []
            for m in p.mailbox_ids:
                st = state[m]
                st[2] += 1
                st[3] += 1
                st[5] += p.size
                results.append(AppendResult(st[0], st[1], st[2] - 1, st[3]))
                add = charged.setdefault(m, [0, 0])
                add[0] += p.size
                add[1] += 1
            out.append(results)
        if charged:
            touched = sorted(charged, key=lambda m: state[m][0])  # folder id order
            cur.executemany(
                sql.update_folder, [(state[m][2], state[m][3], state[m][0]) for m in touched]
            )
            cur.executemany(
                sql.update_usage, [(charged[m][0], charged[m][1], m) for m in sorted(charged)]
            )
        return out

    def _lock_inboxes(self, cur: Any, sql: _Sql, mailbox_ids: list[int]) -> dict[int, list[Any]]:
        """INBOX counters and quota of these mailboxes, read under the write
        lock. SQLite: BEGIN IMMEDIATE already holds the database write lock.
        PostgreSQL: folder rows locked in ascending id, then mailbox rows in
        ascending id (the store's lock order), and read after locking (READ
        COMMITTED: the next statement sees the latest committed values)."""
        out: dict[int, list[Any]] = {}
        for i in range(0, len(mailbox_ids), CHUNK):
            chunk = mailbox_ids[i : i + CHUNK]
            marks = ",".join([sql.mark] * len(chunk))
            if sql.returning:  # PostgreSQL
                cur.execute(sql.inbox_ids.format(marks), chunk)
                folder_ids = sorted(r[0] for r in cur.fetchall())
                if folder_ids:
                    fmarks = ",".join([sql.mark] * len(folder_ids))
                    cur.execute(sql.lock_folders.format(fmarks), folder_ids)
                cur.execute(sql.lock_mailboxes.format(marks), chunk)
            cur.execute(sql.select_inboxes.format(marks), chunk)
            for r in cur.fetchall():
                out[r[0]] = list(r[1:])
        return out

    def _gc_bodies(self, c: Connection, body_ids: Iterable[int]) -> None:
        """Deletes the bodies no message points at any more."""
        for chunk in chunks(list(body_ids)):
            orphan = ~select(MSG.c.id).where(MSG.c.body_id == B.c.id).exists()
            c.execute(delete(B).where(B.c.id.in_(chunk), orphan))

    def _remove_all_messages(self, c: Connection, folder: Row[Any]) -> None:
        """Deletes every message of a locked folder that is being deleted (no
        expunge records: the folder goes), releases quota and bodies."""
        rows = list(
            c.execute(
                select(MSG.c.id, MSG.c.size, MSG.c.body_id).where(MSG.c.folder_id == folder.id)
            )
        )
        if not rows:
            return
        for i in range(0, len(rows), CHUNK):
            c.execute(delete(MSG).where(MSG.c.id.in_([r.id for r in rows[i : i + CHUNK]])))
        self._charge(c, {folder.mailbox_id: (-sum(r.size for r in rows), -len(rows))}, False)
        self._gc_bodies(c, {r.body_id for r in rows})

    def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        return list(self.expunge_traced(folder_id, uids, max_ids=0).uids)

    def expunge_traced(
        self, folder_id: int, uids: Sequence[int] | None = None, *, max_ids: int = 100
    ) -> Expunged:
        with self._raw_write() as (cur, sql):
            _, mailbox_id, _, _, highest = self._lock_folder_raw(cur, sql, folder_id)
            rows: list[Any] = []
            if uids is None:
                cur.execute(sql.select_deleted.format(""), (folder_id, _DELETED_LIKE))
                rows.extend(cur.fetchall())
            else:
                for chunk in chunks(uids):
                    cur.execute(
                        sql.select_deleted.format(f" AND uid IN ({_marks(sql, len(chunk))})"),
                        (folder_id, _DELETED_LIKE, *chunk),
                    )
                    rows.extend(cur.fetchall())
            # LIKE found the candidates; the flag itself decides.
            rows = [r for r in rows if DELETED in parse_flags(r[4])]
            if not rows:
                return Expunged(())
            rows.sort(key=lambda r: r[1])
            removed = [int(r[1]) for r in rows]
            # Read before the rows (and maybe their bodies) go.
            traced = self._message_ids_raw(cur, sql, folder_id, removed[: max(0, max_ids)])
            for i in range(0, len(rows), CHUNK):
                ids = [r[0] for r in rows[i : i + CHUNK]]
                cur.execute(sql.delete_messages.format(_marks(sql, len(ids))), ids)
            modseq = highest + 1
            cur.executemany(sql.insert_expunged, [(folder_id, u, modseq) for u in removed])
            cur.execute(sql.update_modseq, (modseq, folder_id))
            cur.execute(sql.lock_quota, (mailbox_id,))
            if cur.fetchone() is None:
                raise NotFound(str(mailbox_id))
            cur.execute(sql.update_usage, (-sum(int(r[2]) for r in rows), -len(rows), mailbox_id))
            for chunk in chunks([int(r[3]) for r in rows]):
                cur.execute(sql.gc_bodies.format(_marks(sql, len(chunk))), chunk)
            return Expunged(tuple(removed), traced)

    def _copy(
        self, c: Connection, folder_id: int, uids: Sequence[int], dest_folder_id: int, move: bool,
        seen_account: int | None = None, dest_seen_account: int | None = None,
    ) -> CopyResult:
        folders = self._lock_folders(c, [folder_id, dest_folder_id])
        src, dest = folders[folder_id], folders[dest_folder_id]
        rows: list[Row[Any]] = []
        q = select(
            MSG.c.id, MSG.c.uid, MSG.c.flags, MSG.c.internal_date, MSG.c.size, MSG.c.body_id
        ).where(MSG.c.folder_id == folder_id)
        for chunk in chunks(uids):
            rows.extend(c.execute(q.where(MSG.c.uid.in_(chunk))))
        if not rows:
            return CopyResult(dest.uidvalidity, (), ())
        rows.sort(key=lambda r: r.uid)
        # The flags as the copier sees them in the source.
        flag_sets = [parse_flags(r.flags) for r in rows]
        if seen_account is not None:
            read: set[int] = set()
            for chunk in chunks([r.id for r in rows]):
                read.update(c.execute(select(PS.c.message_id).where(
                    PS.c.account_id == seen_account, PS.c.message_id.in_(chunk))).scalars())
            flag_sets = [(fs | _SEEN_SET) if r.id in read else (fs - _SEEN_SET)
                         for r, fs in zip(rows, flag_sets, strict=True)]
        dest_seen = [SEEN in fs for fs in flag_sets]
        if dest_seen_account is not None:
            flag_sets = [fs - _SEEN_SET for fs in flag_sets]
        total = sum(r.size for r in rows)
        same_mailbox = src.mailbox_id == dest.mailbox_id
        # One _charge call: it locks the mailboxes in id order (no deadlock).
        if not move:
            self._charge(c, {dest.mailbox_id: (total, len(rows))}, check=True)
        elif not same_mailbox:
            deltas = {dest.mailbox_id: (total, len(rows)), src.mailbox_id: (-total, -len(rows))}
            self._charge(c, deltas, check=True)
        new_uids, _ = self._add_messages(
            c,
            dest,
            [(r.body_id, fs, r.internal_date, r.size)
             for r, fs in zip(rows, flag_sets, strict=True)],
        )
        if dest_seen_account is not None and any(dest_seen):
            # The copier's \\Seen becomes her private \\Seen on the copy.
            read_uids = [u for u, s in zip(new_uids, dest_seen, strict=True) if s]
            new_ids: list[int] = []
            for chunk in chunks(read_uids):
                new_ids.extend(c.execute(select(MSG.c.id).where(
                    MSG.c.folder_id == dest_folder_id, MSG.c.uid.in_(chunk))).scalars())
            c.execute(insert(PS), [{"message_id": i, "account_id": dest_seen_account}
                                   for i in new_ids])
        if move:
            src_now = c.execute(select(F).where(F.c.id == folder_id)).one()
            source_ids = [r.uid for r in rows]
            # Remove exactly the copied rows (by UID, not the new copies).
            removed_rows = self._select_ids(c, folder_id, source_ids)
            for i in range(0, len(removed_rows), CHUNK):
                c.execute(delete(MSG).where(MSG.c.id.in_(removed_rows[i : i + CHUNK])))
            modseq = src_now.highestmodseq + 1
            c.execute(
                insert(E),
                [{"folder_id": folder_id, "uid": u, "modseq": modseq} for u in source_ids],
            )
            c.execute(update(F).where(F.c.id == folder_id).values(highestmodseq=modseq))
        return CopyResult(dest.uidvalidity, tuple(r.uid for r in rows), tuple(new_uids))

    def _select_ids(self, c: Connection, folder_id: int, uids: Sequence[int]) -> list[int]:
        out: list[int] = []
        for chunk in chunks(uids):
            out.extend(
                c.execute(
                    select(MSG.c.id).where(MSG.c.folder_id == folder_id, MSG.c.uid.in_(chunk))
                ).scalars()
            )
        return out

    def copy(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int, *,
        seen_account: int | None = None, dest_seen_account: int | None = None,
    ) -> CopyResult:
        with self._write() as c:
            return self._copy(c, folder_id, uids, dest_folder_id, False,
                              seen_account, dest_seen_account)

    def move(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int, *,
        seen_account: int | None = None, dest_seen_account: int | None = None,
    ) -> CopyResult:
        with self._write() as c:
            return self._copy(c, folder_id, uids, dest_folder_id, True,
                              seen_account, dest_seen_account)

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
        wanted = normalise_flags(flags)
        changes: list[FlagChange] = []
        failed: list[int] = []
        with self._raw_write() as (cur, sql):
            highest = self._lock_folder_raw(cur, sql, folder_id)[4]
            modseq = highest + 1
            rows: list[Any] = []
            for chunk in chunks(uids):
                cur.execute(sql.select_flags.format(_marks(sql, len(chunk))), (folder_id, *chunk))
                rows.extend(cur.fetchall())
            rows.sort(key=lambda r: r[1])
            seen_rows: set[int] = set()
            if seen_account is not None and rows:
                seen_rows = self._seen_row_ids(cur, sql, seen_account, [r[0] for r in rows])
            updates: list[tuple[str, int, int]] = []
            seen_added: list[tuple[int, int]] = []
            seen_removed: list[tuple[int, int]] = []
            for row_id, uid, row_modseq, text in rows:
                if unchanged_since is not None and row_modseq > unchanged_since:
                    failed.append(uid)
                    continue
                old = parse_flags(text)
                if seen_account is not None:  # \\Seen is the account's, not the message's
                    old = (old | _SEEN_SET) if row_id in seen_rows else (old - _SEEN_SET)
                if mode is FlagMode.ADD:
                    new = old | wanted
                elif mode is FlagMode.REMOVE:
                    new = old - wanted
                else:
                    new = wanted
                if new == old:
                    continue
                changes.append(FlagChange(uid, new, modseq))
                if seen_account is None:
                    updates.append((flags_text(new), modseq, row_id))
                    continue
                # The shared flags (without \\Seen) and a new MODSEQ, even when
                # only the private \\Seen changed: other sessions of the account
                # learn of it through the MODSEQ, like any change.
                updates.append((flags_text(new - _SEEN_SET), modseq, row_id))
                if SEEN in new and SEEN not in old:
                    seen_added.append((row_id, seen_account))
                elif SEEN in old and SEEN not in new:
                    seen_removed.append((row_id, seen_account))
            if updates:
                if len(updates) == 1:
                    cur.execute(sql.update_flags, updates[0])
                else:
                    cur.executemany(sql.update_flags, updates)
                if seen_added:
                    cur.executemany(sql.insert_seen, seen_added)
                if seen_removed:
                    cur.executemany(sql.delete_seen, seen_removed)
                cur.execute(sql.update_modseq, (modseq, folder_id))
        return changes, failed

    @staticmethod
    def _newest_is_recent(cur: Any, sql: _Sql, folder_id: int) -> bool:
        """Does the folder exist (NotFound otherwise), and is its newest
        message recent? One fixed statement at the driver, through the
        (folder_id, uid) index (every SELECT and every sync of a writable
        view asks)."""
        cur.execute(
            "SELECT f.id, (SELECT m.recent FROM messages m"  # noqa: S608 - constant
            " WHERE m.folder_id = f.id ORDER BY m.uid DESC LIMIT 1)"
            f" FROM folders f WHERE f.id = {sql.mark}",
            (folder_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"folder {folder_id}")
        return bool(row[1])

    def claim_recent(self, folder_id: int, *, below: int | None = None) -> frozenset[int]:
        # Most SELECTs find nothing to claim: a read transaction says so
        # without queueing behind writers for the write lock. A message that
        # turns recent just after is claimed at the session's next sync.
        # Every insert takes a UID above all others (uidnext, under the
        # folder's lock) with recent set, and a claim clears the whole folder:
        # the recent messages are always the newest ones. So "is the newest
        # recent?" answers through the (folder_id, uid) index, where "is any
        # recent?" would scan a 100,000-message folder (~15 ms).
        with self._raw_read() as (cur, sql):
            if not self._newest_is_recent(cur, sql, folder_id):
                return frozenset()
        # One statement, so the write lock is held briefly. Row locks make it
        # atomic on PostgreSQL too: a concurrent claimer re-checks `recent`
        # after our commit, so each UID is claimed by exactly one session.
        with self._raw_write() as (cur, sql):
            if below is None:
                cur.execute(sql.claim_recent, (False, folder_id, True))
            else:
                cur.execute(sql.claim_recent_below, (False, folder_id, True, below))
            return frozenset(r[0] for r in cur.fetchall())

    def recent_uids(self, folder_id: int) -> frozenset[int]:
        # What `claim_recent` would claim, read only: nothing when the newest
        # message is not recent (the same first question, through the index,
        # so that EXAMINE of a 100,000-message folder costs no scan).
        with self._raw_read() as (cur, sql):
            if not self._newest_is_recent(cur, sql, folder_id):
                return frozenset()
            cur.execute(
                f"SELECT uid FROM messages WHERE folder_id = {sql.mark}"  # noqa: S608 - constant
                f" AND recent = {sql.mark}",
                (folder_id, True),
            )
            return frozenset(int(r[0]) for r in self._rows(cur))

    # -- messages: reading -------------------------------------------------

    @staticmethod
    def _folder_version(cur: Any, sql: _Sql, folder_id: int) -> tuple[int, int, int, int]:
        """(mailbox_id, uidvalidity, highestmodseq, uidnext): what the index
        caches are keyed on. Fixed SQL at the driver (every SELECT asks)."""
        cur.execute(sql.folder_version, (folder_id,))
        r = cur.fetchone()
        if r is None:
            raise NotFound(f"folder {folder_id}")
        return (int(r[0]), int(r[1]), int(r[2]), int(r[3]))

    @staticmethod
    def _expunged_since(cur: Any, sql: _Sql, folder_id: int, modseq: int) -> set[int]:
        cur.execute(sql.expunged_since, (folder_id, modseq))
        return {int(r[0]) for r in cur.fetchall()}

    @staticmethod
    def _seen_uids(
        cur: Any, sql: _Sql, folder_id: int, account_id: int, *,
        since: int | None = None, uids: Sequence[int] | None = None,
    ) -> set[int]:
        """UIDs of the folder that the account has read (private \\Seen):
        all, those changed after MODSEQ `since`, or those among `uids`. One
        indexed read (per chunk of `uids`)."""
        if uids is not None:
            out: set[int] = set()
            for chunk in chunks(uids):
                cur.execute(
                    sql.seen_in_folder.format(f" AND m.uid IN ({_marks(sql, len(chunk))})"),
                    (account_id, folder_id, *chunk),
                )
                out.update(int(r[0]) for r in cur.fetchall())
            return out
        if since is not None:
            cur.execute(sql.seen_in_folder.format(f" AND m.modseq > {sql.mark}"),
                        (account_id, folder_id, since))
        else:
            cur.execute(sql.seen_in_folder.format(""), (account_id, folder_id))
        return {int(r[0]) for r in cur.fetchall()}

    @staticmethod
    def _seen_row_ids(cur: Any, sql: _Sql, account_id: int, row_ids: Sequence[int]) -> set[int]:
        """The message rows among `row_ids` the account has read."""
        out: set[int] = set()
        for chunk in chunks(list(row_ids)):
            cur.execute(sql.seen_of_ids.format(_marks(sql, len(chunk))), (account_id, *chunk))
            out.update(int(r[0]) for r in cur.fetchall())
        return out

    def index(self, folder_id: int, *, seen_account: int | None = None) -> list[IndexEntry]:
        with self._raw_read() as (cur, sql):
            version = self._folder_version(cur, sql, folder_id)
            self._scan_fits(version[3])
            overlay = None
            if seen_account is not None:
                overlay = _SeenOverlay(self._seen_uids(cur, sql, folder_id, seen_account))
            # (mailbox, UIDVALIDITY) names this folder's UID space even if SQLite
            # reuses the id of a deleted folder.
            cached = self._index_cache.get(folder_id)
            if cached is not None and cached[0] == version:
                return list(cached[1]) if overlay is None else overlay.entries(cached[1])
            if cached is not None and cached[0][:2] == version[:2]:
                # Every change to a folder bumps its HIGHESTMODSEQ in the same
                # transaction, so what changed since the cached copy is exactly
                # what changes_since would report.
                since = cached[0][2]
                changed = index_entries(self._raw_index(cur, folder_id, since))
                gone = self._expunged_since(cur, sql, folder_id, since)
                entries = apply_changes(cached[1], changed, gone)
            else:
                entries = index_entries(self._raw_index(cur, folder_id, None))
        if not self._in_write_batch():  # uncommitted: may never be what the folder holds
            self._index_cache.put(folder_id, version, entries)
        return list(entries) if overlay is None else overlay.entries(entries)

    def index_columns(self, folder_id: int, *, seen_account: int | None = None) -> IndexColumns:
        with self._raw_read() as (cur, sql):
            version = self._folder_version(cur, sql, folder_id)
            self._scan_fits(version[3])
            overlay = None
            if seen_account is not None:
                overlay = _SeenOverlay(self._seen_uids(cur, sql, folder_id, seen_account))
            cached = self._columns_cache.get(folder_id)
            if cached is not None and cached[0] == version:
                out = copy_columns(cached[1])
                return out if overlay is None else overlay.columns(out)
            if cached is not None and cached[0][:2] == version[:2]:
                since = cached[0][2]
                changed = [(r[0], r[1], r[2]) for r in self._raw_index(cur, folder_id, since)]
                gone = self._expunged_since(cur, sql, folder_id, since)
                cols = apply_column_changes(cached[1], changed, gone)
            else:
                cols = self._raw_columns(cur, folder_id)
        if not self._in_write_batch():  # uncommitted: may never be what the folder holds
            self._columns_cache.put(folder_id, version, cols)
        out = copy_columns(cols)
        return out if overlay is None else overlay.columns(out)

    def _raw_columns(self, cursor: Any, folder_id: int) -> IndexColumns:
        """Three concatenated strings from the database, not one row per message."""
        if not self._pg:
            sql = (
                "SELECT group_concat(uid), group_concat(modseq), group_concat(flags, char(10))"
                " FROM (SELECT uid, modseq, flags FROM messages WHERE folder_id = ?"
                " ORDER BY uid)"
            )
        else:
            sql = (
                "SELECT string_agg(uid::text, ',' ORDER BY uid),"
                " string_agg(modseq::text, ',' ORDER BY uid),"
                " string_agg(flags, chr(10) ORDER BY uid)"
                " FROM messages WHERE folder_id = %s"
            )
        cursor.execute(sql, (folder_id,))
        row: Any = cursor.fetchone()
        return columns_from_text(row[0], row[1], row[2])

    def sizes_and_dates(
        self, folder_id: int, uids: Sequence[int]
    ) -> dict[int, tuple[int, datetime]]:
        # Thunderbird's opening of a message (UID RFC822.SIZE BODY[]) asks:
        # fixed SQL at the driver.
        out: dict[int, tuple[int, datetime]] = {}
        if not uids:
            return out
        fromts = datetime.fromtimestamp
        with self._raw_read() as (cur, sql):
            lo, hi = min(uids), max(uids)
            if len(uids) > 200 and hi - lo < 4 * len(uids):
                # A dense range (FETCH 1:*): one range scan, not many IN lists.
                wanted = set(uids)
                cur.execute(sql.sizes_dates_range, (folder_id, lo, hi))
                for uid, size, idate in cur.fetchall():
                    if uid in wanted:
                        out[uid] = (size, fromts(idate, UTC))
                return out
            for chunk in chunks(uids):
                cur.execute(sql.sizes_dates_in.format(_marks(sql, len(chunk))), (folder_id, *chunk))
                for uid, size, idate in cur.fetchall():
                    out[uid] = (size, fromts(idate, UTC))
        return out

    def _raw_index(self, cursor: Any, folder_id: int, since: int | None) -> list[Any]:
        """(uid, modseq, flags, size, internal_date) tuples straight from the
        driver: SQLAlchemy's row objects would double the cost for 100,000 rows."""
        mark = "%s" if self._pg else "?"
        sql = (
            "SELECT uid, modseq, flags, size, internal_date FROM messages"  # noqa: S608 - constant
            f" WHERE folder_id = {mark}"
        )
        params: tuple[int, ...] = (folder_id,)
        if since is not None:
            sql += f" AND modseq > {mark}"
            params = (folder_id, since)
        sql += " ORDER BY uid"
        cursor.execute(sql, params)
        return list(cursor.fetchall())

    def changes_since(
        self, folder_id: int, modseq: int, *, seen_account: int | None = None
    ) -> FolderChanges:
        # Every sync of every session asks: fixed SQL at the driver.
        with self._raw_read() as (cur, sql):
            cur.execute(sql.folder_counters, (folder_id,))
            f = cur.fetchone()
            if f is None:
                raise NotFound(f"folder {folder_id}")
            cur.execute(sql.changed_since, (folder_id, modseq))
            rows = self._rows(cur)
            cur.execute(sql.expunged_since, (folder_id, modseq))
            expunged = sorted({r[0] for r in self._rows(cur)})
            changed = index_entries(rows)
            if seen_account is not None and changed:
                seen = self._seen_uids(cur, sql, folder_id, seen_account, since=modseq)
                changed = _SeenOverlay(seen).entries(changed)
        return FolderChanges(
            highestmodseq=f[0],
            uidnext=f[1],
            changed=tuple(changed),
            expunged=tuple(expunged),
        )

    def message_infos(
        self, folder_id: int, uids: Sequence[int], *, seen_account: int | None = None
    ) -> list[MessageInfo]:
        rows: list[Any] = []
        overlay = None
        with self._raw_read() as (cur, sql):
            for chunk in chunks(uids):
                cur.execute(sql.infos.format(_marks(sql, len(chunk))), (folder_id, *chunk))
                rows.extend(cur.fetchall())
            if seen_account is not None and rows:
                overlay = _SeenOverlay(
                    self._seen_uids(cur, sql, folder_id, seen_account, uids=uids))
        rows.sort(key=lambda r: r[0])
        out = []
        for uid, modseq, flags, size, idate, key_id, meta in rows:
            fl = parse_flags(flags)
            out.append(
                MessageInfo(
                    uid,
                    modseq,
                    fl if overlay is None else overlay(uid, fl),
                    size,
                    from_epoch(idate),
                    self._metadata(key_id, bytes(meta)),
                )
            )
        return out

    def sort_keys(self, folder_id: int, uids: Sequence[int]) -> dict[int, SortKeys]:
        with sortkeys.paused_gc():  # 100,000 rows, blobs and keys built at once
            return self._sort_keys(folder_id, uids)

    def _sort_keys(self, folder_id: int, uids: Sequence[int]) -> dict[int, SortKeys]:
        with self._raw_read() as (cur, sql):
            cur.execute(sql.folder_version, (folder_id,))
            f = cur.fetchone()
            if f is None:
                raise NotFound(f"folder {folder_id}")
            known = self._sort_cache.get(folder_id, int(f[1]))
            if all(map(known.__contains__, uids)):
                return known  # the usual case once a folder was sorted: no query
            rows: list[Any] = []
            if not known:
                # The first read of the folder: all of it, unfiltered when
                # that is about what was asked for (a few keys of UIDs not
                # asked for are as good, and filtering cost more than they
                # do); a part of a large folder does not fill the cache
                cur.execute(sql.sort_keys_all, (folder_id,))
                rows = cur.fetchall()
                if len(rows) > len(uids) + len(uids) // 8:
                    wanted = set(uids)
                    rows = [r for r in rows if r[0] in wanted]
            else:
                missing = [u for u in uids if u not in known]
                if len(missing) > len(uids) // 2:
                    # Most of the folder: one scan (the ids not asked for are cheap)
                    wanted = set(missing)
                    cur.execute(sql.sort_keys_all, (folder_id,))
                    rows = [r for r in cur.fetchall() if r[0] in wanted]
                else:
                    for chunk in chunks(missing):
                        cur.execute(sql.sort_keys_of.format(_marks(sql, len(chunk))),
                                    (folder_id, *chunk))
                        rows.extend(cur.fetchall())
        # rows: uid, size, internal date, body id, key id, sort keys blob
        # (key id and blob NULL: no keys row, a message stored before 0013)
        legacy = [(r[0], r[3], r[1], r[2]) for r in rows if r[5] is None]
        if legacy:
            rows = [r for r in rows if r[5] is not None]
        # one pass per column: a loop over the rows building tuples, and
        # freeing them, cost as much as decrypting
        key_ids = [r[4] for r in rows]
        ring = self._keys.ring()
        if not ring.keys.keys() >= set(key_ids):  # a key added by another process just now
            ring = self._keys.ring(force=True)
        decoded = sortkeys.decode_many(
            ring.decrypt_many(key_ids, [r[5] for r in rows], crypto.AAD_SORT_KEYS),
            [r[1] for r in rows], [r[2] for r in rows])
        by_uid = dict(zip([r[0] for r in rows], decoded, strict=True))
        if None in decoded:  # of another version: computed again below
            for r, keys in zip(rows, decoded, strict=True):
                if keys is None:
                    del by_uid[r[0]]
                    legacy.append((r[0], r[3], r[1], r[2]))
        found = cast("dict[int, SortKeys]", by_uid)  # no None left
        if legacy:
            # computed from the message only for the UIDs asked for: the
            # first read took the whole folder, a SORT of ten messages of an
            # old folder must not read all of its messages
            wanted = set(uids)
            legacy = [row for row in legacy if row[0] in wanted]
            found.update(self._backfill_sort_keys(folder_id, legacy))
        self._sort_cache.add(folder_id, int(f[1]), found)
        if not known:
            return found  # the cache keeps its own copy
        known.update(found)
        return known

    def _backfill_sort_keys(
        self, folder_id: int, legacy: list[tuple[int, int, int, int]]
    ) -> dict[int, SortKeys]:
        """Keys of messages stored without them (before revision 0013, or of
        an older `sortkeys.VERSION`): computed from the message once and
        written back under the current key. `legacy`: (uid, body id, size,
        internal date)."""
        out: dict[int, SortKeys] = {}
        ring = self._keys.ring()
        computed: list[tuple[int, str, bytes]] = []
        for uid, body_id, size, idate in legacy:
            try:
                raw = self.message_body(folder_id, uid)
            except NotFound:
                continue  # expunged meanwhile
            keys = sortkeys.sort_keys(raw, self._parse(raw))
            out[uid] = keys._replace(size=size, arrival=idate)
            computed.append((body_id, ring.current_id, ring.encrypt_with(
                ring.current_id, sortkeys.encode(keys), crypto.AAD_SORT_KEYS)))
        if computed and not self._in_write_batch():
            try:
                with self._write() as c:
                    self._put_sort_keys(c, computed, replace=True)
            except StoreUnavailable:
                log.warning("sort keys of %d messages not written back", len(computed))
        return out

    def _put_sort_keys(
        self, c: Connection, rows: Sequence[tuple[int, str, bytes]], *, replace: bool
    ) -> None:
        """Writes (body id, key id, blob) keys rows; a body gone meanwhile
        gets none. `replace`: a row already there (keys of an older
        `sortkeys.VERSION`) is overwritten; else it is left as it is (filled
        meanwhile by a SORT's write-back or another `fill_sort_keys`)."""
        if not rows:
            return
        insert_of = postgresql.insert if self._pg else sqlite.insert
        body_id = bindparam("b", type_=Integer())
        stmt = insert_of(K).from_select(
            ["body_id", "key_id", "data"],
            select(body_id, bindparam("k", type_=String()), bindparam("d", type_=LargeBinary()))
            .where(exists().where(B.c.id == body_id)),
        )
        c.execute(  # one statement, executemany
            stmt.on_conflict_do_update(
                index_elements=[K.c.body_id],
                set_={"key_id": stmt.excluded.key_id, "data": stmt.excluded.data})
            if replace else stmt.on_conflict_do_nothing(index_elements=[K.c.body_id]),
            [{"b": b, "k": k, "d": d} for b, k, d in rows],
        )

    def message_ids(self, folder_id: int, uids: Sequence[int]) -> dict[int, str]:
        if not uids:
            return {}
        with self._raw_read() as (cur, sql):
            return self._message_ids_raw(cur, sql, folder_id, uids)

    def _message_ids_raw(
        self, cur: Any, sql: _Sql, folder_id: int, uids: Sequence[int]
    ) -> dict[int, str]:
        """uid -> Message-ID from the stored metadata, through the
        decoded-metadata cache, also inside a write batch (STORE and EXPUNGE
        name the messages in their audit events while holding the write
        lock): the cache is keyed by the encrypted blob itself, so an entry
        made from a row that is then rolled back is still the right decoding
        of those bytes, and no other row can have them."""
        rows: list[Any] = []
        for chunk in chunks(list(uids)):
            cur.execute(sql.metas.format(_marks(sql, len(chunk))), (folder_id, *chunk))
            rows.extend(cur.fetchall())
        out: dict[int, str] = {}
        for uid, key_id, meta in sorted(rows, key=lambda r: r[0]):
            decoded = self._metadata(key_id, bytes(meta))
            value = (decoded.get("envelope") or {}).get("message_id")
            if isinstance(value, str) and value.strip():
                out[int(uid)] = " ".join(value.split())
        return out

    def _metadata(self, key_id: str, blob: bytes) -> dict[str, Any]:
        """The decoded metadata of an encrypted blob, from a per-process cache
        (clients fetch the same envelopes over and over: decrypting and
        decoding them was a tenth of a session's CPU). The key is the blob's
        random nonce and its tag: unique to that one encryption, so a row
        rewritten (key rotation) or an id reused after an expunge can never
        be served another message's metadata. Shared between callers: the
        dict is read-only."""
        key = blob[: crypto.NONCE_SIZE] + blob[-crypto.TAG_SIZE :]
        found = self._meta_cache.get(key)
        if found is None:
            found = json.loads(self._decrypt(key_id, blob, crypto.AAD_META))
            cache = self._meta_cache
            while len(cache) >= META_CACHE:
                try:
                    del cache[next(iter(cache))]  # the oldest entry
                except (StopIteration, KeyError, RuntimeError):
                    pass  # another thread changed it meanwhile: look again
            cache[key] = found
        return found

    def _body_of(self, cur: Any, sql: _Sql, folder_id: int, uid: int) -> bytes | None:
        cur.execute(sql.body_of, (folder_id, uid))
        r = cur.fetchone()
        return None if r is None else self._decrypt(r[0], bytes(r[1]), crypto.AAD_BODY)

    def message_body(self, folder_id: int, uid: int) -> bytes:
        with self._raw_read() as (cur, sql):
            raw = self._body_of(cur, sql, folder_id, uid)
        if raw is None:
            raise NotFound(f"uid {uid}")
        return raw

    def iter_bodies(self, folder_id: int, uids: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        # One short read transaction per body: a transaction must not stay open
        # across the caller's work between items (it would pin the WAL).
        for uid in sorted(set(uids)):
            with self._raw_read() as (cur, sql):
                raw = self._body_of(cur, sql, folder_id, uid)
            if raw is not None:
                yield uid, raw

    def read_bodies(
        self, folder_id: int, uids: Sequence[int], max_bytes: int
    ) -> tuple[dict[int, bytes], int | None]:
        # A FETCH of headers or bodies of small messages asks: one transaction
        # for them all, and the sizes first, so no blob past the budget is read.
        wanted = sorted(set(uids))
        out: dict[int, bytes] = {}
        if not wanted:
            return out, None
        with self._raw_read() as (cur, sql):
            sizes: dict[int, int] = {}
            for chunk in chunks(wanted):
                cur.execute(sql.sizes_of.format(_marks(sql, len(chunk))), (folder_id, *chunk))
                sizes.update((int(u), int(n)) for u, n in cur.fetchall())
            total = 0
            if getattr(self._ambient, "no_wait", False):
                # On the reactor thread (`no_waiting`): a large body is read
                # on a thread instead, and a batch stops sooner.
                if sizes and sizes[min(sizes)] > NO_WAIT_BODY_BYTES:
                    raise WouldWait("a large body inside no_waiting")
                max_bytes = min(max_bytes, NO_WAIT_BODY_BYTES)
            # The bodies within the budget (at least one), in one statement
            # per chunk rather than one each (ten headers of a FETCH 1:10).
            chosen: list[int] = []
            stopped: int | None = None
            for uid in sorted(sizes):
                if chosen and total + sizes[uid] > max_bytes:
                    stopped = uid
                    break
                chosen.append(uid)
                total += sizes[uid]
            for chunk in chunks(chosen):
                cur.execute(sql.bodies_of.format(_marks(sql, len(chunk))), (folder_id, *chunk))
                for uid, key_id, blob in cur.fetchall():
                    out[int(uid)] = self._decrypt(key_id, bytes(blob), crypto.AAD_BODY)
        return out, stopped

    # -- keys --------------------------------------------------------------

    def check_keys(self) -> list[str]:
        ring = self._keys.ring(force=True)
        kinds = (
            (B, "meta", crypto.AAD_META, "messages"),
            (K, "data", crypto.AAD_SORT_KEYS, "sort keys"),
            (Q, "body", crypto.AAD_QUEUE, "queued messages"),
            (AF, "totp_secret", crypto.AAD_TOTP, "one-time code secrets"),
        )
        problems: list[str] = []
        # Index lookups only (no scan of a large table): one row per key id
        # of the file, then the key ids outside the file, found as ranges
        # between the known ids.
        with self._read() as c:
            for table, column, aad, what in kinds:
                key_col = table.c.key_id
                for key_id in sorted(ring.keys):
                    blob = c.execute(
                        select(table.c[column]).where(key_col == key_id).limit(1)).scalar()
                    if blob is None:
                        continue
                    try:
                        ring.decrypt(key_id, bytes(blob), aad)
                    except crypto.DecryptionError:
                        problems.append(f"key {key_id} of the key file does not decrypt the "
                                        f"stored {what} (another key under the same id)")
                known = sorted(ring.keys)
                while True:
                    gaps = [key_col < known[0], key_col > known[-1]]
                    gaps += [and_(key_col > a, key_col < b)
                             for a, b in itertools.pairwise(known)]
                    stranger = c.execute(select(key_col).where(or_(*gaps)).limit(1)).scalar()
                    if stranger is None:
                        break
                    problems.append(f"key {stranger} of the stored {what} is not in the key file")
                    known = sorted([*known, stranger])
        return problems

    def reencrypt(self, batch: int = 500) -> int:
        """Moves up to `batch` blobs (bodies with their metadata, then sort
        keys, then queued messages, then one-time code secrets) to the
        current key, a few per transaction so that writers are never held up
        for long."""
        ring = self._keys.ring(force=True)  # the key just added by `mssctl keys rotate`
        done = 0
        kinds = (
            (B, {"body": crypto.AAD_BODY, "meta": crypto.AAD_META}),
            (K, {"data": crypto.AAD_SORT_KEYS}),
            (Q, {"body": crypto.AAD_QUEUE}),
            (AF, {"totp_secret": crypto.AAD_TOTP}),
        )
        for table, blobs in kinds:
            while done < batch:
                moved = self._reencrypt_some(ring, table, blobs, min(REENCRYPT_STEP, batch - done))
                if moved == 0:
                    break
                done += moved
        return done

    def fill_sort_keys(self, batch: int = 500) -> int:
        # Read and computed outside any write transaction, one body in
        # memory at a time; then written in one short transaction (found by
        # review: decrypting and parsing 500 whole bodies under the write
        # lock made deliveries and IMAP writes wait, and held them all in
        # memory). A row filled meanwhile (a SORT's write-back) is left as is.
        ring = self._keys.ring(force=True)
        with self._read() as c:
            ids = list(c.execute(
                select(B.c.id).where(~exists().where(K.c.body_id == B.c.id)).order_by(B.c.id)
                .limit(max(1, batch))
            ).scalars())
        computed: list[tuple[int, str, bytes]] = []
        for body_id in ids:
            with self._read() as c:
                row = c.execute(
                    select(B.c.key_id, B.c.body, B.c.meta).where(B.c.id == body_id)
                ).first()
            if row is None:  # expunged meanwhile
                continue
            key_id, body, meta = row
            raw = ring.decrypt(key_id, bytes(body), crypto.AAD_BODY)
            parsed = json.loads(ring.decrypt(key_id, bytes(meta), crypto.AAD_META))
            del row, body
            computed.append((body_id, ring.current_id, ring.encrypt_with(
                ring.current_id, sortkeys.encode(sortkeys.sort_keys(raw, parsed)),
                crypto.AAD_SORT_KEYS)))
        if not computed:
            return 0
        with self._write() as c:
            self._put_sort_keys(c, computed, replace=False)
        return len(computed)

    def _reencrypt_some(
        self, ring: crypto.KeyRing, table: Any, blobs: dict[str, bytes], limit: int
    ) -> int:
        """Re-encrypts up to `limit` rows of `table`; `blobs`: column -> AAD."""
        current = ring.current_id
        blob_columns = [table.c[name] for name in blobs]
        [row_key] = table.primary_key.columns  # id; body_id of sort_keys
        moved = 0
        with self._write() as c:
            ids = list(
                c.execute(
                    select(row_key)
                    .where(table.c.key_id != current)
                    .order_by(row_key)
                    .limit(limit)
                ).scalars()
            )
            for row_id in ids:  # one blob in memory at a time
                r = c.execute(
                    select(table.c.key_id, *blob_columns)
                    .where(row_key == row_id)
                    .with_for_update()
                ).first()
                if r is None:  # expunged meanwhile (PostgreSQL)
                    continue
                values: dict[str, Any] = {"key_id": current}
                for (name, aad), blob in zip(blobs.items(), r[1:], strict=True):
                    plain = ring.decrypt(r.key_id, blob, aad)
                    values[name] = ring.encrypt_with(current, plain, aad)
                c.execute(update(table).where(row_key == row_id).values(**values))
                moved += 1
        return moved
