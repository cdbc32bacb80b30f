"""Engines and transactions for the store, per backend.

SQLite (one file shared by the SMTP and IMAP daemons and their worker
processes): WAL journal, ``synchronous=FULL`` (a commit is on disk when it
returns), a busy timeout, and ``BEGIN IMMEDIATE`` for every write transaction,
so that reading ``uidnext`` and bumping it happen under the database write lock
across processes. Reads use a plain ``BEGIN`` (a consistent WAL snapshot that
never blocks writers).

PostgreSQL: READ COMMITTED, with ``SELECT ... FOR UPDATE`` on the rows a write
depends on (done by the store), and pre-ping so a restarted server does not
fail the first call of every pooled connection.

Any failure of the database itself (locked past the timeout, connection lost,
disk full) becomes `StoreUnavailable`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from storage.interface import StoreUnavailable

_WRITE = "mss_write"

log = logging.getLogger(__name__)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, busy_timeout: float = 30.0, pool_size: int = 8) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            u,
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        _sqlite_events(engine, busy_timeout)
        return engine
    engine = create_engine(
        u,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=busy_timeout,
    )
    if u.get_backend_name() == "postgresql":
        _postgresql_events(engine)
    return engine


def begin_pg_read(dbapi_conn: Any) -> None:
    """The next transaction of this psycopg2 connection (taken from the pool,
    so in none) is a read: REPEATABLE READ (one snapshot for every statement:
    SELECT's EXISTS and UIDNEXT must agree, as SQLite's WAL read gives
    anyway), READ ONLY (a write slipping in fails). psycopg2 then opens it
    with one ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``, where
    ``BEGIN`` and then ``SET TRANSACTION`` cost two round trips. The pool
    puts the defaults back when the connection returns (see
    `_postgresql_events`)."""
    dbapi_conn.set_session(isolation_level="REPEATABLE READ", readonly=True)


def _postgresql_events(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
        # Back to the server's defaults (READ COMMITTED, read-write) for the
        # next user, writers included, whatever `begin_pg_read` set: the
        # pool has rolled back, so no transaction is open (psycopg2 sends
        # nothing for this; it applies at the next BEGIN).
        if dbapi_conn is None:
            return
        try:
            dbapi_conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT")
        except Exception:  # noqa: BLE001 - a broken connection: the pool's check finds it
            log.debug("could not reset a connection's session", exc_info=True)


def _sqlite_events(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: it would
        # otherwise BEGIN (deferred) lazily and we could not ask for IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


class _Waiter:
    """One blocked flock request handed to the gate's locker thread."""

    __slots__ = ("abandoned", "done", "error", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = threading.Event()
        self.abandoned = False
        self.error: OSError | None = None


class WriteGate:
    """Queues the writers of one SQLite file before they ask SQLite for its lock.

    SQLite makes a blocked writer sleep and retry (up to 100 ms per nap), so a
    process that writes in a loop can starve the others for seconds. Writers
    first take a thread lock (writers of this process) and then an flock on
    ``<db>-writelock`` (writers of other processes). A writer that finds the
    flock taken waits for it in the kernel, which wakes it the moment the
    holder lets go (BEGIN IMMEDIATE then succeeds at once): polling with naps
    left the lock idle for most of a nap at every hand-over between
    processes. The blocking flock runs on a locker thread so that the writer
    can stop waiting after `timeout` (then StoreUnavailable); a lock the
    locker obtains for a writer that gave up is released at once. The flock
    goes away with its process, so a crashed writer never blocks the others.
    The gate is about order and wake-ups; exclusion itself is SQLite's.
    """

    def __init__(self, db_path: Path, timeout: float) -> None:
        self._path = db_path.with_name(db_path.name + "-writelock")
        self._timeout = timeout
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = os.getpid()
        self._state = threading.Lock()  # guards _Waiter.abandoned / done, _inflight
        self._inflight = 0  # requests handed to the locker and not finished
        self._requests: queue.SimpleQueue[_Waiter] = queue.SimpleQueue()
        self._locker: threading.Thread | None = None
        # Told (seconds waited for the lock, seconds held) after each hold;
        # `policy.metrics.Metrics.store_write_lock`. Called on the writer's
        # thread once the lock is let go.
        self.observer: Callable[[float, float], None] | None = None

    def _file(self) -> int:
        if self._fd is not None and self._pid != os.getpid():
            # Forked: an inherited descriptor shares its lock with the parent,
            # and the parent's locker thread and its requests stayed there.
            self._fd = None
            self._locker = None
            self._inflight = 0
        if self._fd is None:
            try:
                # Group-writable like a shared database file may be; flock
                # itself only needs a descriptor, so read-only will do.
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
            except PermissionError:
                fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            self._fd, self._pid = fd, os.getpid()
        return self._fd

    @contextmanager
    def hold(self) -> Iterator[None]:
        observer = self.observer
        if observer is None:
            with self._hold():
                yield
            return
        asked = time.perf_counter()
        got = held = -1.0
        try:
            with self._hold():
                got = time.perf_counter()
                try:
                    yield
                finally:
                    held = time.perf_counter() - got
        finally:
            # Also when the body raised (a write undone): its hold kept the
            # other writers waiting all the same. Not when the lock was never
            # had (StoreUnavailable from _hold).
            if held >= 0:
                try:
                    observer(got - asked, held)
                except Exception:  # noqa: BLE001 - a metric never fails a write
                    log.exception("write lock not measured")

    @contextmanager
    def _hold(self) -> Iterator[None]:
        deadline = time.monotonic() + self._timeout
        if not self._thread_lock.acquire(timeout=self._timeout):
            raise StoreUnavailable("database busy")
        try:
            try:
                fd = self._file()
            except OSError as exc:
                raise StoreUnavailable("database lock file unavailable") from exc
            with self._state:
                # While the locker still works for a writer that gave up, it
                # may hold (and will drop) the lock on this same descriptor:
                # trying it directly would "succeed" on a lock about to go.
                direct = self._inflight == 0
            try:
                if direct:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    self._wait_for_flock(fd, deadline)
            except BlockingIOError:
                self._wait_for_flock(fd, deadline)
            except OSError as exc:
                raise StoreUnavailable("database lock file unavailable") from exc
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _wait_for_flock(self, fd: int, deadline: float) -> None:
        waiter = _Waiter(fd)
        self._start_locker()
        with self._state:
            self._inflight += 1
        self._requests.put(waiter)
        got = waiter.done.wait(max(0.0, deadline - time.monotonic()))
        with self._state:
            if not got and not waiter.done.is_set():
                waiter.abandoned = True  # the locker lets go if it ever gets it
                raise StoreUnavailable("database busy")
        if waiter.error is not None:
            raise StoreUnavailable("database lock file unavailable") from waiter.error

    def _start_locker(self) -> None:
        if self._locker is not None and self._locker.is_alive():
            return
        self._requests = queue.SimpleQueue()
        self._locker = threading.Thread(target=self._lock_for_waiters, args=(self._requests,),
                                        name="sqlite-writelock", daemon=True)
        self._locker.start()

    def _lock_for_waiters(self, requests: queue.SimpleQueue[_Waiter]) -> None:
        while True:
            waiter = requests.get()
            with self._state:
                if waiter.abandoned:  # gave up before its turn came
                    self._inflight -= 1
                    continue
            try:
                fcntl.flock(waiter.fd, fcntl.LOCK_EX)  # the GIL is released meanwhile
            except OSError as exc:
                waiter.error = exc
            with self._state:
                self._inflight -= 1
                if waiter.abandoned:
                    if waiter.error is None:
                        fcntl.flock(waiter.fd, fcntl.LOCK_UN)
                    continue
                waiter.done.set()

    def close(self) -> None:
        with self._thread_lock:
            with self._state:
                # The locker may still wait, on this descriptor, for a writer
                # that gave up (it lets the lock go when it gets it): closing
                # under it would have it unlock a closed, or reused, number.
                # The descriptor is left to it and to the process's end.
                busy = self._inflight > 0
            if self._fd is not None and not busy:
                os.close(self._fd)
            self._fd = None


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return False


@contextmanager
def transaction(
    engine: Engine, *, write: bool, gate: WriteGate | None = None
) -> Iterator[Connection]:
    """One transaction; committed when the block ends normally (durably: see
    the module docstring), rolled back on any exception. Writers on SQLite
    pass the file's `WriteGate`."""
    try:
        with (
            gate.hold() if (write and gate is not None) else nullcontext(),
            engine.connect() as conn,
        ):
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if not write and conn.dialect.name == "postgresql":
                    # One snapshot for every statement of a read (SELECT's
                    # EXISTS and UIDNEXT must agree), as SQLite's WAL read
                    # gives anyway; READ ONLY guards against a write slipping in.
                    conn.exec_driver_sql(
                        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                    )
                yield conn
    except sa_exc.SQLAlchemyError as exc:
        if _unavailable(exc):
            raise StoreUnavailable("database unavailable") from exc
        raise


def translate(exc: BaseException) -> BaseException:
    """The exception to raise for a database error met outside `transaction`."""
    if isinstance(exc, sa_exc.SQLAlchemyError) and _unavailable(exc):
        return StoreUnavailable("database unavailable")
    return exc
