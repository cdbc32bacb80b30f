"""Online backup of the SQLite store (`mssctl backup`).

SQLite's online backup API copies the database page by page from a read
transaction: in WAL mode writers go on meanwhile (readers never block them),
and the copy is the database as of the moment that transaction began, every
committed message in it, none half-written. The copy is made in one step,
so that a write landing mid-copy cannot make the API start over (it would,
endlessly, under a steady stream of deliveries).

PostgreSQL is not handled here: `pg_dump` and base backups do it better.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from storage.interface import StoreError, StoreUnavailable

# The tables whose rows carry the id of the key that encrypted them.
_KEYED_TABLES = ("bodies", "sort_keys", "queue", "auth_factors")


@dataclass(frozen=True, slots=True)
class SqliteBackup:
    """What `backup_sqlite` wrote."""

    path: Path
    size: int  # bytes
    schema_revision: str | None
    mailboxes: int
    messages: int
    # Ids of the keys the copy's blobs are encrypted with: the key file
    # restored with it must hold them (`MessageStore.check_keys`).
    key_ids: tuple[str, ...]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Locked(Exception):
    pass


def _deadline(source: Path, seconds: float) -> Callable[[int, int, int], None]:
    """A progress callback of `sqlite3.Connection.backup` that gives up
    once the source has been locked for `seconds`."""
    give_up = time.monotonic() + seconds

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and \
                time.monotonic() > give_up:
            raise _Locked(f"{source} stayed locked for {seconds:g} s")

    return progress


def backup_sqlite(source: Path, target: Path, *, busy_timeout: float = 30.0) -> SqliteBackup:
    """Copies the database `source` into the new file `target` (mode 0600,
    a single file in rollback-journal mode: nothing beside it is needed;
    the server puts it back in WAL mode when it opens it), while other
    processes may be writing to `source`. The copy is checked
    (``PRAGMA quick_check``) and made durable before it takes its name, so
    `target` is either complete or absent.

    Raises FileExistsError (`target` exists), StoreUnavailable (`source`
    missing, unreadable, or locked past `busy_timeout`), StoreError (the
    copy fails its check)."""
    if target.exists():
        raise FileExistsError(str(target))
    if not source.is_file():
        raise StoreUnavailable(f"no database at {source}")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        # mode=rw: never create an empty database where the real one is missing.
        src = sqlite3.connect(f"file:{quote(str(source))}?mode=rw", uri=True,
                              timeout=busy_timeout)
        try:
            dst = sqlite3.connect(partial)
            try:
                # pages=-1: one step, one consistent snapshot. The API retries a
                # locked source forever: the progress call ends the wait.
                src.backup(dst, progress=_deadline(source, busy_timeout), sleep=0.05)
                info = _describe(dst, target)
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, target)
        _fsync_dir(target.parent)
    except (sqlite3.OperationalError, _Locked) as exc:
        partial.unlink(missing_ok=True)
        raise StoreUnavailable(f"cannot read {source}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup of {source} failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return SqliteBackup(target, target.stat().st_size, info.schema_revision, info.mailboxes,
                        info.messages, info.key_ids)


def _describe(db: sqlite3.Connection, target: Path) -> SqliteBackup:
    check = db.execute("PRAGMA quick_check").fetchall()
    if check != [("ok",)]:
        raise StoreError(f"the copy fails its integrity check: {check[0][0]}")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    revision = (db.execute("SELECT version_num FROM alembic_version").fetchone()
                if "alembic_version" in tables else None)
    counts = {
        name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]  # noqa: S608 - fixed names
        for name in ("mailboxes", "messages") if name in tables
    }
    key_ids: set[str] = set()
    for name in _KEYED_TABLES:
        if name in tables:
            key_ids.update(r[0] for r in db.execute(f"SELECT DISTINCT key_id FROM {name}"))  # noqa: S608
    return SqliteBackup(target, 0, revision[0] if revision else None, counts.get("mailboxes", 0),
                        counts.get("messages", 0), tuple(sorted(key_ids)))
