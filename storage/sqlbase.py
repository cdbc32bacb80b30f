"""Shared plumbing of `SqlStore`: table handles, row conversions, the key
ring, and `StoreBase` (engine, transactions, write gate). The store's methods
live in `storage.directory`, `storage.outbound` and `storage.store`."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import unicodedata
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Row,
    Table,
    exists,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect

from storage import crypto
from storage.engine import WriteGate, begin_pg_read, sqlite_path, transaction, translate
from storage.interface import (
    HIERARCHY_SEPARATOR,
    Account,
    ChangeFeed,
    DSNParams,
    Folder,
    Grant,
    InvalidName,
    LoginFailures,
    Mailbox,
    QueueEntry,
    QueueOrigin,
    StoreUnavailable,
    WouldWait,
)
from storage.models import (
    AccessEpochRow,
    AccountRow,
    AuditRow,
    AuthFactorRow,
    BodyRow,
    CertPinRow,
    DirectorySyncRow,
    DomainRow,
    ExpungedRow,
    FolderRow,
    GrantRow,
    JobLeaseRow,
    LoginFailuresRow,
    MailboxRow,
    MessageRow,
    NameEventRow,
    PrivateSeenRow,
    QueueRow,
    SharedFileRow,
    SortKeysRow,
    SubscriptionRow,
    UidValidityRow,
)

A = cast(Table, AccountRow.__table__)
AE = cast(Table, AccessEpochRow.__table__)
AF = cast(Table, AuthFactorRow.__table__)
AU = cast(Table, AuditRow.__table__)
B = cast(Table, BodyRow.__table__)
CP = cast(Table, CertPinRow.__table__)
D = cast(Table, DomainRow.__table__)
DS = cast(Table, DirectorySyncRow.__table__)
E = cast(Table, ExpungedRow.__table__)
F = cast(Table, FolderRow.__table__)
G = cast(Table, GrantRow.__table__)
JL = cast(Table, JobLeaseRow.__table__)
SF = cast(Table, SharedFileRow.__table__)
K = cast(Table, SortKeysRow.__table__)
LF = cast(Table, LoginFailuresRow.__table__)
M = cast(Table, MailboxRow.__table__)
MSG = cast(Table, MessageRow.__table__)
NE = cast(Table, NameEventRow.__table__)
PS = cast(Table, PrivateSeenRow.__table__)
Q = cast(Table, QueueRow.__table__)
S = cast(Table, SubscriptionRow.__table__)
UV = cast(Table, UidValidityRow.__table__)

log = logging.getLogger(__name__)
T = TypeVar("T")

# A folder row with its subscription state (a name in `subscriptions`).
FOLDER_COLUMNS = (
    *F.c,
    exists().where(S.c.mailbox_id == F.c.mailbox_id, S.c.name == F.c.name).label("subscribed"),
)

INBOX = "INBOX"
SEP = HIERARCHY_SEPARATOR
# Bound parameters per IN (...) list: well under SQLite's and PostgreSQL's limits.
CHUNK = 500
# How long a queue entry handed out by due_entries stays reserved to its worker.
DEFAULT_LEASE = timedelta(minutes=10)
MAX_NAME = 1024
# ... and in UTF-8 octets: a unique index entry of PostgreSQL holds about
# 2,700 bytes, and names of many distinct multibyte characters do not
# compress; the same bound on SQLite, so that a name one backend takes the
# other takes too.
MAX_NAME_OCTETS = 2000
# RFC 6855 3 (RFC 9755 3): names hold no C0 or C1 control, DEL, line or
# paragraph separator; "*" and "%" are LIST wildcards.
_FORBIDDEN_NAME_CHARS = (frozenset("*%\x7f\u2028\u2029") | {chr(c) for c in range(0x20)}
                         | {chr(c) for c in range(0x80, 0xA0)})

_SYSTEM_FLAGS = {
    f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
}
SEEN = "\\Seen"
DELETED = "\\Deleted"


# ---------------------------------------------------------------- helpers


def dbapi_failure(exc: BaseException, dbapi: Any) -> BaseException:
    """What a raw DB-API error on a fixed-SQL path becomes: the database
    being unreachable, locked or full is StoreUnavailable; anything else
    (a bug, a constraint in all-or-nothing mode) goes up unchanged."""
    if isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError):
        return StoreUnavailable("database unavailable")
    return exc


class FixedSelect:
    """``SELECT <every column of table> FROM table WHERE <where>`` as fixed
    SQL for one dialect, with SQLAlchemy's own result processing of each
    column (enums by name, booleans, SQLite's datetime text), so the rows
    it returns read like `Row`s (``r.login``) for the `*_record` helpers.
    The hot directory reads (every LOGIN and SELECT) use it: building the
    SQLAlchemy statement cost more than running it."""

    def __init__(self, table: Table, dialect: Dialect, where: str, tail: str = "",
                 alias: str = "t") -> None:
        mark = "%s" if dialect.paramstyle in ("format", "pyformat") else "?"
        self.columns = [c.name for c in table.columns]
        cols = ", ".join(f"{alias}.{name}" for name in self.columns)
        self.sql = f"SELECT {cols} FROM {table.name} {alias} WHERE {where}{tail}".replace(  # noqa: S608 - fixed text, no user input
            "?", mark)
        self.row = namedtuple(f"{table.name}_row", self.columns)  # type: ignore[misc]
        self.processors = [
            (i, proc) for i, c in enumerate(table.columns)
            if (proc := c.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]

    def convert(self, raw: Sequence[Any]) -> Any:
        values = list(raw)
        for i, proc in self.processors:
            values[i] = proc(values[i])
        return self.row(*values)

    def rows(self, cur: Any, params: Sequence[Any]) -> list[Any]:
        cur.execute(self.sql, tuple(params))
        return [self.convert(r) for r in cur.fetchall()]


def insert_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just made."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_epoch(dt: datetime | None) -> int:
    if dt is None:
        return int(time.time())
    if dt.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware datetime")
    return int(dt.timestamp())


_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_epoch(seconds: int) -> datetime:
    return _UTC_EPOCH + timedelta(seconds=seconds)


def normalise_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical spelling; \\Recent is session state,
    never stored."""
    out = set()
    for f in flags:
        if not f or any(ch.isspace() or ord(ch) < 0x20 for ch in f):
            continue  # not an IMAP atom; would also break the space-joined column
        canon = _SYSTEM_FLAGS.get(f.lower(), f)
        if canon.lower() == "\\recent":
            continue
        out.add(canon)
    return frozenset(out)


def flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


@lru_cache(maxsize=8192)
def parse_flags(text: str) -> frozenset[str]:
    # Most messages of a folder share a handful of flag combinations.
    return frozenset(text.split()) if text else frozenset()


def has_flag(flag: str) -> Any:
    return MSG.c.flags.contains(flag, autoescape=True)


def normalise_folder_name(name: str) -> str:
    """INBOX (and the INBOX/ prefix) in upper case, whatever the client sent."""
    if name.upper() == INBOX:
        return INBOX
    if name.upper().startswith(INBOX + SEP):
        return INBOX + name[len(INBOX) :]
    return name


def check_folder_name(name: str) -> str:
    if name.endswith(SEP):  # RFC 3501 6.3.3: "foo/" creates "foo"
        name = name[:-1]
    name = normalise_folder_name(name)
    if (not name or len(name) > MAX_NAME
            or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_OCTETS):
        raise InvalidName("empty or too long folder name")
    if any(part == "" for part in name.split(SEP)):
        raise InvalidName("empty hierarchy level in folder name")
    if any(ch in _FORBIDDEN_NAME_CHARS for ch in name):
        raise InvalidName("forbidden character in folder name")
    if not name.isascii() and not unicodedata.is_normalized("NFC", name):
        # Net-Unicode (RFC 5198), which RFC 6855 3 asks of names: a name is
        # made in NFC only, or "é" and "e" + U+0301 would be two folders
        # that look alike. Refused, not changed: the client would not find
        # the name it sent in LIST.
        raise InvalidName("folder name not in Unicode normalization form C")
    return name


def parent_names(name: str) -> list[str]:
    parts = name.split(SEP)
    return [SEP.join(parts[:i]) for i in range(1, len(parts))]


def chunks(seq: Sequence[int]) -> Iterator[list[int]]:
    items = sorted(set(seq))
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def account_record(r: Row[Any]) -> Account:
    return Account(
        id=r.id,
        login=r.login,
        display_name=r.display_name,
        account_class=r.account_class,
        active=r.active,
        idnat=r.idnat,
        cert_subject=r.cert_subject,
        password_hash=r.password_hash,
        directory_dn=r.directory_dn,
        directory_disabled=bool(r.directory_disabled),
    )


def mailbox_record(r: Row[Any]) -> Mailbox:
    return Mailbox(
        id=r.id,
        address=r.address,
        mailbox_type=r.mailbox_type,
        display_name=r.display_name,
        owner_account_id=r.owner_account_id,
        responsible=r.responsible,
        quota_bytes=r.quota_bytes,
        active=r.active,
        private_seen=r.private_seen,
        description=r.description,
        service=r.service,
        unlisted=r.unlisted,
    )


def folder_record(r: Row[Any], message_count: int = 0) -> Folder:
    return Folder(
        id=r.id,
        mailbox_id=r.mailbox_id,
        name=r.name,
        special_use=r.special_use,
        uidvalidity=r.uidvalidity,
        uidnext=r.uidnext,
        highestmodseq=r.highestmodseq,
        subscribed=bool(r.subscribed),
        message_count=message_count,
    )


def grant_record(r: Row[Any]) -> Grant:
    return Grant(
        id=r.id,
        account_id=r.account_id,
        mailbox_id=r.mailbox_id,
        rights=r.rights,
        valid_from=r.valid_from,
        valid_until=r.valid_until,
        send_as=bool(r.send_as),
        managed_by=r.managed_by,
        folder=r.folder,
    )


def take_uidvalidity(c: Connection, count: int = 1) -> int:
    """The first of `count` fresh UIDVALIDITY values, unique across the
    server (`UidValidityRow`, locked for the transaction): at least the
    current time, as RFC 3501 2.3.1.1 suggests, and above every value
    handed out before."""
    last = c.execute(select(UV.c.last).where(UV.c.id == 1).with_for_update()).scalar()
    if last is None:  # not made by the migration: a store made by hand
        c.execute(UV.insert().values(id=1, last=0))
        last = 0
    first = max(int(last) + 1, int(time.time()))
    c.execute(update(UV).where(UV.c.id == 1).values(last=first + count - 1))
    return first


_MICROSECOND = timedelta(microseconds=1)


def times_text(times: Iterable[datetime]) -> str:
    """Aware datetimes as space-separated microseconds since the epoch (exact)."""
    return " ".join(str((t - _UTC_EPOCH) // _MICROSECOND) for t in times)


def times_from_text(text: str) -> tuple[datetime, ...]:
    return tuple(_UTC_EPOCH + timedelta(microseconds=int(n)) for n in text.split())


def login_failures_record(r: Row[Any]) -> LoginFailures:
    return LoginFailures(
        scope=r.scope,
        subject=r.subject,
        last_failure=r.last_failure,
        recent=times_from_text(r.recent),
        level=int(r.level),
        locked_until=r.locked_until,
        refused=int(r.refused),
    )


def dsn_to_json(dsn: DSNParams) -> str:
    return json.dumps(
        {"ret": dsn.ret, "envid": dsn.envid, "notify": dsn.notify, "orcpt": dsn.orcpt},
        sort_keys=True,
    )


def dsn_from_json(text: str) -> DSNParams:
    d = json.loads(text)
    return DSNParams(
        ret=d.get("ret"),
        envid=d.get("envid"),
        notify=dict(d.get("notify") or {}),
        orcpt=dict(d.get("orcpt") or {}),
    )


def queue_entry_record(r: Row[Any]) -> QueueEntry:
    return QueueEntry(
        id=r.id,
        sender=r.sender,
        recipients=tuple(json.loads(r.recipients)),
        created=r.created,
        next_attempt=r.next_attempt,
        attempts=r.attempts,
        last_error=r.last_error,
        size=r.size,
        dsn=dsn_from_json(r.dsn),
        origin=origin_from_json(r.origin),
    )


def origin_to_json(origin: QueueOrigin | None) -> str | None:
    return None if origin is None else json.dumps(dataclasses.asdict(origin))


def origin_from_json(text: str | None) -> QueueOrigin | None:
    if not text:
        return None
    data = json.loads(text)
    fields = {f.name for f in dataclasses.fields(QueueOrigin)}
    return QueueOrigin(**{k: v for k, v in data.items() if k in fields})


QUEUE_COLUMNS = (
    Q.c.id,
    Q.c.sender,
    Q.c.recipients,
    Q.c.created,
    Q.c.next_attempt,
    Q.c.attempts,
    Q.c.last_error,
    Q.c.size,
    Q.c.dsn,
    Q.c.origin,
)


def default_parser(raw: bytes) -> dict[str, Any]:
    from storage import mime  # the MIME engineer's module; imported late on purpose

    return mime.parse_message(raw)


# How often the key file is looked at for a new key (a stat per message was a
# measurable part of a delivery). Until then a process keeps encrypting under
# the previous key, which stays valid; `reencrypt` and unknown key ids force a
# look at once.
KEY_FILE_CHECK_INTERVAL = 1.0


class KeyFileRing:
    """The key ring, reloaded when the key file changes (`mssctl keys rotate`
    adds a key while the daemons run; blobs moved to it must stay readable)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        # Signature taken before reading, so a change in between is seen later.
        self._signature = self._stat()
        self._ring = crypto.KeyRing.load(path)
        self._next_check = time.monotonic() + KEY_FILE_CHECK_INTERVAL

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = self._path.stat()
        except OSError as exc:
            raise crypto.KeyFileError(f"cannot read key file {self._path}") from exc
        # Size too: two writes within one timestamp tick share an mtime.
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def ring(self, *, force: bool = False) -> crypto.KeyRing:
        now = time.monotonic()
        if not force and now < self._next_check:
            return self._ring
        self._next_check = now + KEY_FILE_CHECK_INTERVAL
        try:
            signature = self._stat()
        except crypto.KeyFileError:
            return self._ring  # keep serving with the keys we have
        if force or signature != self._signature:
            with self._lock:
                if force or signature != self._signature:
                    self._ring = crypto.KeyRing.load(self._path)
                    self._signature = signature
        return self._ring

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        ring = self.ring()
        if key_id not in ring.keys:  # added by another process just now
            ring = self.ring(force=True)
        return ring.decrypt(key_id, blob, aad)


# ---------------------------------------------------------------- base


class _ReadScope:
    """The transaction of a `StoreBase.read_scope`, opened by its first read."""

    __slots__ = ("conn", "cur", "failed", "kept")

    def __init__(self) -> None:
        self.conn: Any = None
        self.cur: Any = None
        self.failed = False  # a statement failed: roll back rather than commit
        self.kept: Any = None  # conn is the thread's kept one: not given back

    def end(self, pg: bool, dbapi: Any) -> None:
        conn, cur = self.conn, self.cur
        self.conn = self.cur = None
        if conn is None:
            return
        try:
            if self.failed or cur is None:  # None: the cursor could not be made
                self.failed = True
                conn.rollback()
            elif pg:
                conn.commit()
            else:
                cur.execute("COMMIT")
        except dbapi.Error:
            # A read transaction: nothing is lost; the connection is reset
            # by the pool (rollback) on its way back, or, kept, dropped.
            self.failed = True
            log.warning("closing a read scope failed", exc_info=True)
        finally:
            try:
                if cur is not None:
                    cur.close()
            finally:
                if self.kept is None:
                    conn.close()  # back to the pool


# PostgreSQL: how long a call of a write batch waits for a row lock before
# the batch lets its own locks go (see `_Batch.call`).
BATCH_LOCK_TIMEOUT_MS = 200
# SQLSTATEs of a lock not granted: lock_not_available, deadlock_detected.
_LOCK_CONFLICTS = frozenset({"55P03", "40P01"})


def _lock_conflict(exc: BaseException) -> bool:
    """Whether a store call failed because PostgreSQL did not grant it a lock
    (the DB-API error is the StoreUnavailable's cause)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if getattr(seen, "pgcode", None) in _LOCK_CONFLICTS:
            return True
        seen = seen.__cause__
    return False


class _Batch:
    """The transaction of a `StoreBase.write_batch`: begun at its first
    write (BEGIN IMMEDIATE under the `WriteGate` on SQLite; on PostgreSQL a
    READ COMMITTED transaction whose writes lock their rows FOR UPDATE, with
    a short lock timeout), so what the first call does before writing
    (parsing, encrypting a message) is not done holding the write lock."""

    def __init__(self, store: StoreBase) -> None:
        self._store = store
        self._stack = ExitStack()
        self.conn: Any = None
        self.cur: Any = None
        self.kept = False  # conn is the thread's kept connection (SQLite)
        self.broken = False  # a savepoint could not be rolled back: commit nothing
        self.calls = 0  # store calls made in it (the group commit's size)
        self._untimed = False  # the next transaction runs without a lock timeout

    def begin(self) -> Any:
        store = self._store
        dbapi: Any = store._engine.dialect.dbapi
        if store._gate is not None:
            self._stack.enter_context(store._gate.hold())
        try:
            kept = store._kept_connection()
            self.kept = kept is not None
            self.conn = kept if kept is not None else store._engine.raw_connection()
            self.cur = self.conn.cursor()
            if store._pg:
                if not self._untimed:
                    self._set_lock_timeout()
                self._untimed = False
            else:
                self.cur.execute("BEGIN IMMEDIATE")
        except sa_exc.SQLAlchemyError as exc:
            self.end(commit=False)
            raise translate(exc) from exc
        except dbapi.Error as exc:
            self.end(commit=False)
            raise dbapi_failure(exc, dbapi) from exc
        return self.cur

    def _set_lock_timeout(self) -> None:
        # Starts psycopg2's transaction; SET LOCAL ends with it.
        self.cur.execute(f"SET LOCAL lock_timeout = {BATCH_LOCK_TIMEOUT_MS}")

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs one store call as part of the batch: in a SAVEPOINT once the
        transaction is open, so that its failure undoes it alone. Raises what
        the call raised.

        PostgreSQL locks rows, not the database: two batches of two processes
        may lock the same folders in opposite orders. A call that waits for a
        lock longer than BATCH_LOCK_TIMEOUT_MS is undone, the calls before it
        are committed (their locks let go), and it runs again at the start of
        a new transaction, without the timeout: holding no other lock, it can
        wait for its own without anyone waiting for it in a cycle."""
        try:
            return self._call(fn, *args, **kwargs)
        except BaseException as exc:
            if not (self._store._pg and not self.broken and _lock_conflict(exc)):
                raise
        log.info("write batch: lock conflict; committing the batch so far and retrying a call")
        if self.cur is not None:
            self._commit_so_far()
        else:  # it was the first call: `begin` must not set the timeout again
            self._untimed = True
        return self._call(fn, *args, **kwargs, _retry=True)

    def _commit_so_far(self) -> None:
        dbapi: Any = self._store._engine.dialect.dbapi
        try:
            self.conn.commit()
        except dbapi.Error as exc:
            self.broken = True
            raise StoreUnavailable("database unavailable") from exc

    def _call(self, fn: Callable[..., T], *args: Any, _retry: bool = False,
              **kwargs: Any) -> T:
        if self.broken:
            raise StoreUnavailable("database unavailable")
        self.calls += 1
        dbapi: Any = self._store._engine.dialect.dbapi
        savepoint = self.cur is not None and not _retry
        if savepoint:
            self._statement("SAVEPOINT mss_call")
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            if _retry and self.cur is not None:
                # Alone in its transaction: undoing it is undoing all.
                try:
                    self.conn.rollback()
                except dbapi.Error:
                    log.warning("rollback failed", exc_info=True)
                    self.broken = True
                raise
            if savepoint:
                try:
                    self.cur.execute("ROLLBACK TO SAVEPOINT mss_call")
                    self.cur.execute("RELEASE SAVEPOINT mss_call")
                except dbapi.Error:
                    log.warning("rollback to savepoint failed", exc_info=True)
                    self.broken = True
            elif self.cur is not None:
                # This call began the transaction: undoing it is undoing all.
                self.end(commit=False)
            raise
        if savepoint:
            self._statement("RELEASE SAVEPOINT mss_call")
        elif _retry:
            try:
                self._set_lock_timeout()  # for the calls that follow
            except dbapi.Error as exc:
                self.broken = True
                raise StoreUnavailable("database unavailable") from exc
        return result

    def _statement(self, text: str) -> None:
        """A savepoint statement; if it fails the batch can no longer tell
        its calls apart, so none of them is committed."""
        dbapi: Any = self._store._engine.dialect.dbapi
        try:
            self.cur.execute(text)
        except dbapi.Error as exc:
            self.broken = True
            raise StoreUnavailable("database unavailable") from exc

    def end(self, *, commit: bool) -> None:
        dbapi: Any = self._store._engine.dialect.dbapi
        failed = self.broken
        try:
            if self.cur is not None:
                try:
                    if commit and self._store._pg:
                        self.conn.commit()
                    elif commit:
                        self.cur.execute("COMMIT")
                    else:
                        self.conn.rollback()
                except dbapi.Error as exc:
                    failed = True
                    if commit:
                        try:
                            self.conn.rollback()
                        except dbapi.Error:
                            log.warning("rollback failed", exc_info=True)
                        raise dbapi_failure(exc, dbapi) from exc
                    log.warning("rollback failed", exc_info=True)
                finally:
                    self.cur.close()
        finally:
            try:
                if self.conn is not None:
                    self._store._release(self.conn, self.kept, failed)
            finally:
                self.cur = self.conn = None
                self._stack.close()  # the write gate


class StoreBase:
    """Engine, transactions and keys; the methods come from the mixins."""

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
        self._keys = KeyFileRing(key_file)
        self._parse = parser or default_parser
        self._lease = lease
        self._pg = engine.dialect.name == "postgresql"
        self._fixed_selects: dict[str, FixedSelect] = {}
        # .batch: this thread's open _Batch; .read: its open _ReadScope;
        # .bulk: its open bulk_writes transaction; .no_wait: in no_waiting;
        # .kept: its kept connection (`_kept_connection`)
        self._ambient = threading.local()
        self._kept: list[tuple[threading.Thread, Any]] = []  # (owner, its kept connection)
        self._kept_lock = threading.Lock()
        # Told of every committed write transaction: (seconds from asking
        # for the write lock to the commit, store calls it carried); the
        # server's metrics (`policy.metrics.Metrics.store_write`).
        self.write_observer: Callable[[float, int], None] | None = None

    @property
    def write_gate(self) -> WriteGate | None:
        """SQLite: the `WriteGate` of the database file (every process's
        writers queue at it; its `observer` hears each hold's wait and
        length); None on PostgreSQL."""
        return self._gate

    def _observe_write(self, started: float, calls: int) -> None:
        observer = self.write_observer
        if observer is not None:
            try:
                observer(time.perf_counter() - started, calls)
            except Exception:  # noqa: BLE001 - a metric never fails a committed write
                log.exception("store write not measured")

    @property
    def engine(self) -> Engine:
        return self._engine

    def _read(self) -> Any:
        bulk = getattr(self._ambient, "bulk", None)
        if bulk is not None:
            return self._in_bulk(bulk)
        return transaction(self._engine, write=False)

    @contextmanager
    def _in_bulk(self, conn: Any) -> Iterator[Any]:
        """A store call inside `bulk_writes`: the bulk's transaction, in a
        SAVEPOINT of its own (a failing call is undone alone)."""
        try:
            with conn.begin_nested():
                yield conn
        except sa_exc.SQLAlchemyError as exc:
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """The store calls this thread makes in the block share one write
        transaction, committed once when the block ends (rolled back when it
        raises): many small changes (a directory sync) cost one commit, not
        one each. Each call runs in its own SAVEPOINT, so a failing call is
        undone alone and raises as usual. Holds the database's write lock
        for the whole block: keep it short. Not inside a `write_batch`."""
        if getattr(self._ambient, "batch", None) is not None or getattr(
                self._ambient, "bulk", None) is not None:
            raise RuntimeError("bulk_writes does not nest, nor go inside a write batch")
        self._may_wait()
        with transaction(self._engine, write=True, gate=self._gate) as conn:
            self._ambient.bulk = conn
            try:
                yield
            finally:
                self._ambient.bulk = None

    @contextmanager
    def no_waiting(self) -> Iterator[None]:
        """See `storage.interface.MessageStore.no_waiting`."""
        ambient = self._ambient
        outer = getattr(ambient, "no_wait", False)
        ambient.no_wait = True
        try:
            yield
        finally:
            ambient.no_wait = outer

    def _kept_connection(self) -> Any:
        """On SQLite, inside `no_waiting` (the reactor's quick reads) or a
        `write_batch` (the writer lane: the reads of a call before its first
        write, and the batch's transaction): this thread's own connection,
        taken from the pool once and kept. A checkout and check-in of the
        pool cost about 19 us, and the pool hands its connections out in
        turn: each came with a page cache other transactions had made stale
        (a connection's own commits leave its cache valid). Measured
        in-process over a session's round of commands: 7.3-7.8 ms of CPU,
        6.5-7.1 ms with the reactor's reads on a kept connection. None
        elsewhere, and when the kept one is in use further up this thread's
        stack (in a transaction): the pool's.

        A thread's first kept connection gives back those of threads that
        have ended (a writer lane restarted, a runner stopped)."""
        ambient = self._ambient
        if self._pg or not (getattr(ambient, "no_wait", False)
                            or getattr(ambient, "batch", None) is not None):
            return None
        conn = getattr(ambient, "kept", None)
        if conn is not None:
            raw = conn.dbapi_connection
            if raw is None:
                ambient.kept = None  # given back meanwhile (the store closed)
            else:
                dbapi: Any = self._engine.dialect.dbapi
                try:
                    busy = raw.in_transaction
                except dbapi.Error:  # closed under us: a fresh one below
                    self._drop_kept(conn)
                else:
                    return None if busy else conn
        fresh = self._engine.raw_connection()
        me = threading.current_thread()
        with self._kept_lock:
            ended = [c for owner, c in self._kept if not owner.is_alive()]
            self._kept = [(o, c) for o, c in self._kept if o.is_alive()]
            self._kept.append((me, fresh))
        for c in ended:
            self._give_back(c)
        ambient.kept = fresh
        return fresh

    def _give_back(self, conn: Any) -> None:
        try:
            conn.close()  # back to the pool (which rolls back what is left)
        except Exception:  # noqa: BLE001 - the pool copes with a broken one
            log.debug("giving back a kept connection failed", exc_info=True)

    def _release(self, conn: Any, kept: bool, failed: bool) -> None:
        """Done with `conn` for now: back to the pool, or, kept, left with
        the thread unless a statement failed on it or it is still in a
        transaction (the pool's reset on check-in does not run for it)."""
        if not kept:
            conn.close()  # back to the pool
            return
        if failed or self._in_transaction(conn):
            self._drop_kept(conn)

    def _in_transaction(self, conn: Any) -> bool:
        """Whether a pooled SQLite connection is in a transaction (True when
        it cannot tell: closed under us)."""
        dbapi: Any = self._engine.dialect.dbapi
        raw = conn.dbapi_connection
        try:
            return raw is None or bool(raw.in_transaction)
        except dbapi.Error:
            return True

    def _drop_kept(self, conn: Any) -> None:
        """A kept connection in doubt goes back to the pool invalidated
        (closed; the pool opens another in its place); the thread takes a
        fresh one next time."""
        if getattr(self._ambient, "kept", None) is conn:
            self._ambient.kept = None
        with self._kept_lock:
            self._kept = [(o, c) for o, c in self._kept if c is not conn]
        if conn.dbapi_connection is None:
            return  # already given back (the store closed)
        try:
            conn.invalidate()
        except Exception:  # noqa: BLE001 - it is being thrown away
            log.debug("invalidating a kept connection failed", exc_info=True)

    def _may_wait(self) -> None:
        """Every write path asks first (see `no_waiting`)."""
        if getattr(self._ambient, "no_wait", False):
            raise WouldWait("a write inside no_waiting")

    @contextmanager
    def read_scope(self) -> Iterator[None]:
        """See `storage.interface.MessageStore.read_scope`."""
        ambient = self._ambient
        if getattr(ambient, "read", None) is not None or getattr(ambient, "batch", None) is not None:
            yield  # an outer scope, or a write batch: its transaction already serves
            return
        scope = _ReadScope()
        ambient.read = scope
        try:
            yield
        finally:
            ambient.read = None
            kept = scope.kept
            try:
                scope.end(self._pg, self._engine.dialect.dbapi)
            finally:
                if kept is not None:
                    self._release(kept, True, scope.failed)

    def _scope_cursor(self, scope: _ReadScope) -> Any:
        """The read scope's cursor, its transaction begun by the first read."""
        if scope.cur is None:
            try:
                scope.kept = self._kept_connection()
                scope.conn = (scope.kept if scope.kept is not None
                              else self._engine.raw_connection())
            except sa_exc.SQLAlchemyError as exc:
                raise translate(exc) from exc
            try:
                scope.cur = scope.conn.cursor()
                if self._pg:
                    begin_pg_read(scope.conn)
                else:
                    scope.cur.execute("BEGIN")
            except BaseException:
                scope.failed = True
                raise
        return scope.cur

    @contextmanager
    def _dbapi(self, *, write: bool) -> Iterator[Any]:
        """What `storage.engine.transaction` does, on a pooled DB-API
        connection without SQLAlchemy's Connection (its begin/commit machinery
        was a fifth of a session's CPU), for the fixed-SQL hot paths: writers
        on SQLite queue at the `WriteGate` and BEGIN IMMEDIATE; PostgreSQL
        reads run REPEATABLE READ, READ ONLY (one snapshot), writes READ
        COMMITTED with FOR UPDATE in the SQL. Yields a cursor; committed when
        the block ends normally, rolled back otherwise; a failure of the
        database itself becomes StoreUnavailable."""
        dbapi: Any = self._engine.dialect.dbapi
        if write:
            self._may_wait()
        bulk = getattr(self._ambient, "bulk", None)
        if bulk is not None:
            with self._in_bulk(bulk) as conn:
                cur = conn.connection.dbapi_connection.cursor()
                try:
                    yield cur
                except dbapi.Error as exc:
                    raise dbapi_failure(exc, dbapi) from exc
                finally:
                    cur.close()
            return
        batch: _Batch | None = getattr(self._ambient, "batch", None)
        if batch is not None and (write or batch.cur is not None):
            # Inside a write batch: its transaction (begun by the first write);
            # `_Batch.call` undoes this call's part if it fails.
            try:
                yield batch.cur if batch.cur is not None else batch.begin()
            except dbapi.Error as exc:
                raise dbapi_failure(exc, dbapi) from exc
            return
        scope: _ReadScope | None = None if write else getattr(self._ambient, "read", None)
        if scope is not None:
            # Inside a read scope: its transaction (begun by its first read).
            try:
                yield self._scope_cursor(scope)
            except dbapi.Error as exc:
                scope.failed = True
                raise dbapi_failure(exc, dbapi) from exc
            return
        gate = self._gate if write else None
        started = time.perf_counter()
        failed = False
        with gate.hold() if gate is not None else nullcontext():
            try:
                kept = None if write else self._kept_connection()
                conn = kept if kept is not None else self._engine.raw_connection()
            except sa_exc.SQLAlchemyError as exc:
                raise translate(exc) from exc
            except dbapi.Error as exc:  # the pool hands out the driver's own errors
                raise dbapi_failure(exc, dbapi) from exc
            try:
                if self._pg and not write:
                    begin_pg_read(conn)
                cur = conn.cursor()
                try:
                    if not self._pg:
                        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    yield cur
                    if self._pg:
                        conn.commit()
                    else:
                        cur.execute("COMMIT")
                    if write:
                        self._observe_write(started, 1)
                except BaseException:
                    try:
                        conn.rollback()
                    except dbapi.Error:
                        log.warning("rollback failed", exc_info=True)
                    raise
                finally:
                    cur.close()
            except dbapi.Error as exc:
                failed = True
                raise dbapi_failure(exc, dbapi) from exc
            finally:
                self._release(conn, kept is not None, failed)

    def _fixed(self, key: str, table: Table, where: str, tail: str = "") -> FixedSelect:
        """The `FixedSelect` named `key`, built once per store."""
        found = self._fixed_selects.get(key)
        if found is None:
            found = FixedSelect(table, self._engine.dialect, where, tail)
            self._fixed_selects[key] = found
        return found

    def _in_write_batch(self) -> bool:
        """True while this thread works inside an open write batch: what it
        reads may be rolled back, so it must not fill shared caches."""
        batch: _Batch | None = getattr(self._ambient, "batch", None)
        return batch is not None and batch.cur is not None

    def _write(self, calls: int = 1) -> Any:
        """A SQLAlchemy write transaction (inside `bulk_writes`, a savepoint
        of its transaction); `calls`: the writes it carries (deliver_many's
        deliveries), for the write metrics."""
        self._may_wait()
        bulk = getattr(self._ambient, "bulk", None)
        if bulk is not None:
            return self._in_bulk(bulk)
        if getattr(self._ambient, "batch", None) is not None:
            # Its own connection would wait for the batch's write lock forever.
            raise RuntimeError("a SQLAlchemy write transaction inside a write batch")
        if self.write_observer is None:
            return transaction(self._engine, write=True, gate=self._gate)
        return self._measured_write(calls)

    @contextmanager
    def _measured_write(self, calls: int) -> Iterator[Any]:
        started = time.perf_counter()
        with transaction(self._engine, write=True, gate=self._gate) as conn:
            yield conn
        self._observe_write(started, calls)

    @property
    def batches_writes(self) -> bool:
        """True: `write_batch` pays on both backends. SQLite: the calls share
        its one database write lock and the fsync of one commit. PostgreSQL:
        one commit (one WAL flush, one round trip) for the batch instead of
        one per call; row-lock cycles between batches are broken by a short
        lock timeout (`_Batch.call`)."""
        return True

    @contextmanager
    def write_batch(self) -> Iterator[_Batch]:
        """Group commit: the store calls made through ``batch.call(fn, ...)``
        in this thread share one write transaction, each in its own SAVEPOINT
        (a failing call is undone alone and raises), committed once when the
        block ends. Nothing is durable before that: a caller acknowledges a
        call only after the block has returned. If the commit fails, every
        call of the batch failed (StoreUnavailable). Only calls on the fixed-
        SQL paths belong in a batch: a SQLAlchemy write inside one raises."""
        if getattr(self._ambient, "batch", None) is not None:
            raise RuntimeError("write batches do not nest")
        self._may_wait()
        batch = _Batch(self)
        self._ambient.batch = batch
        started = time.perf_counter()
        try:
            try:
                yield batch
            except BaseException:
                batch.end(commit=False)
                raise
            if batch.broken:
                batch.end(commit=False)
                raise StoreUnavailable("database unavailable")
            began = batch.cur is not None
            batch.end(commit=True)
            if began:
                self._observe_write(started, batch.calls)
        finally:
            self._ambient.batch = None

    def change_feed(self) -> ChangeFeed | None:
        if not self._pg:
            return None
        from storage.notify import PgChangeFeed, pg_connector

        return PgChangeFeed(pg_connector(self._engine))

    def _decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        return self._keys.decrypt(key_id, blob, aad)

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()
        # The kept connections of this thread and of threads that ended go
        # back to the pool, which closes them below. Another live thread's
        # is left to it, as any connection checked out (a batch in flight
        # finishes whole, or fails); the daemons stop their threads first.
        me = threading.current_thread()
        with self._kept_lock:
            done = [c for o, c in self._kept if o is me or not o.is_alive()]
            self._kept = [(o, c) for o, c in self._kept if o is not me and o.is_alive()]
        for conn in done:
            self._give_back(conn)
        try:
            self._engine.dispose()
        except Exception as exc:  # noqa: BLE001 - closing must not mask the caller's error
            raise translate(exc) from exc
