"""`storage.backup.backup_sqlite`: a consistent copy taken while another
connection writes (SQLite's online backup API), complete or absent."""

from __future__ import annotations

import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from storage import open_store
from storage.backup import backup_sqlite
from storage.interface import AccountClass, Delivery, MailboxType, StoreUnavailable


def test_copy_while_a_write_transaction_is_open(store: Any, tmp_path: Path) -> None:
    acc = store.add_account("a@hopital.test", "A", AccountClass.STAFF)
    box = store.add_mailbox("a@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    raw = b"Subject: committed\r\nMessage-ID: <c@hopital.test>\r\n\r\nbody\r\n"
    store.deliver(Delivery(raw, (box.id,)))
    source = tmp_path / "mss.db"

    # Another process is in the middle of a write: the copy neither waits
    # for it nor sees any of it.
    writer = sqlite3.connect(source, timeout=1, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO domains (name) VALUES ('pending.test')")
    target = tmp_path / "backup" / "mss.db"
    target.parent.mkdir()
    began = time.monotonic()
    info = backup_sqlite(source, target, busy_timeout=5)
    assert time.monotonic() - began < 4  # not blocked by the writer
    writer.execute("COMMIT")
    writer.close()

    assert (info.path, info.mailboxes, info.messages, info.key_ids) == (target, 1, 1, ("k1",))
    assert info.schema_revision is not None and info.size == target.stat().st_size
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["mss.db"]  # one file
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert [r[0] for r in copy.execute("SELECT name FROM domains")] == ["hopital.test"]
    finally:
        copy.close()
    restored = open_store(f"sqlite:///{target}", tmp_path / "keys")
    try:
        folder = restored.get_folder(restored.get_mailbox("a@hopital.test").id, "INBOX")
        assert restored.message_body(folder.id, 1) == raw
        assert restored.check_keys() == []
    finally:
        restored.close()


def test_refusals_leave_nothing_behind(store: Any, tmp_path: Path) -> None:
    source = tmp_path / "mss.db"
    out = tmp_path / "out"
    out.mkdir()
    (out / "mss.db").write_text("an older copy")
    with pytest.raises(FileExistsError):
        backup_sqlite(source, out / "mss.db")
    assert (out / "mss.db").read_text() == "an older copy"
    with pytest.raises(StoreUnavailable, match="no database"):
        backup_sqlite(tmp_path / "missing.db", out / "other.db")
    assert not (tmp_path / "missing.db").exists()  # never created by the attempt

    # The source locked against readers past the timeout (an exclusive
    # rollback-journal lock, which WAL never takes): unavailable, no file.
    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (1)")
    try:
        with pytest.raises(StoreUnavailable, match="cannot read"):
            backup_sqlite(locked, out / "locked.db", busy_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(p.name for p in out.iterdir()) == ["mss.db"]
