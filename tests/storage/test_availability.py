"""Database trouble becomes StoreUnavailable (a temporary failure), and
concurrent writers never share a UID, on both backends."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from storage import migrate, open_store
from storage.interface import (
    AccountClass,
    Delivery,
    FlagMode,
    MailboxType,
    StoreError,
    StoreUnavailable,
)


def _inbox(store: Any) -> tuple[Any, Any]:
    acc = store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    return mb, store.get_folder(mb.id, "INBOX")


def test_sqlite_locked_past_timeout(store: Any, tmp_path: Path) -> None:
    mb, inbox = _inbox(store)
    quick = open_store(f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "keys", busy_timeout=0.2)
    try:
        # Another program holding SQLite's write lock (outside our gate).
        other = sqlite3.connect(tmp_path / "mss.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        t = time.monotonic()
        with pytest.raises(StoreUnavailable):
            quick.append(inbox.id, b"Subject: x\r\n\r\ny\r\n")
        assert time.monotonic() - t < 5
        assert len(quick.index(inbox.id)) == 0  # reads still work (WAL)
        other.execute("ROLLBACK")
        other.close()
        # A writer of another process stuck inside our gate.
        fd = os.open(tmp_path / "mss.db-writelock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StoreUnavailable):
            quick.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Seen"])
        os.close(fd)  # released: writes go through again
        assert quick.append(inbox.id, b"Subject: x\r\n\r\ny\r\n").uid == 1
    finally:
        quick.close()


def test_sqlite_writer_waits_for_another_process_and_goes_on_at_its_release(
    store: Any, tmp_path: Path
) -> None:
    mb, inbox = _inbox(store)
    # Another process's writer holding the gate (another open file: flock
    # treats it as another owner, as it would another process).
    fd = os.open(tmp_path / "mss.db-writelock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done: list[Any] = []
    writer = threading.Thread(
        target=lambda: done.append(store.append(inbox.id, b"Subject: x\r\n\r\ny\r\n")))
    writer.start()
    time.sleep(0.3)
    assert done == [] and writer.is_alive()  # waiting, not failed
    released = time.monotonic()
    os.close(fd)
    writer.join(10)
    assert done and done[0].uid == 1
    assert time.monotonic() - released < 1.0  # woken by the release, not a timeout


def test_sqlite_writer_that_gave_up_leaves_the_gate_free(store: Any, tmp_path: Path) -> None:
    mb, inbox = _inbox(store)
    quick = open_store(f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "keys", busy_timeout=0.2)
    try:
        fd = os.open(tmp_path / "mss.db-writelock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StoreUnavailable):
            quick.append(inbox.id, b"Subject: x\r\n\r\ny\r\n")
        os.close(fd)
        # The gate's locker obtained the flock for the writer that gave up,
        # and let it go: other processes are not locked out.
        probe = os.open(tmp_path / "mss.db-writelock", os.O_RDWR)
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "abandoned flock never released"
                    time.sleep(0.01)
            fcntl.flock(probe, fcntl.LOCK_UN)
        finally:
            os.close(probe)
        assert quick.append(inbox.id, b"Subject: x\r\n\r\ny\r\n").uid == 1
    finally:
        quick.close()


def test_sqlite_gate_after_a_give_up_still_excludes_other_processes(tmp_path: Path) -> None:
    from storage.engine import WriteGate

    db = tmp_path / "g.db"
    other = os.open(f"{db}-writelock", os.O_RDWR | os.O_CREAT)  # another owner
    fcntl.flock(other, fcntl.LOCK_EX)
    gate = WriteGate(db, timeout=0.3)
    with pytest.raises(StoreUnavailable), gate.hold():
        pass
    # The locker still waits for the writer that gave up; a new writer comes
    # at once. The lock the locker drops must not be the new writer's.
    gate._timeout = 5
    fcntl.flock(other, fcntl.LOCK_UN)
    with gate.hold():
        time.sleep(0.1)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the writer is done
    os.close(other)
    gate.close()


def test_sqlite_gate_closed_while_its_locker_waits_for_a_writer_that_gave_up(
        tmp_path: Path) -> None:
    """Closing a gate (the server stopping) while its locker thread still
    waits for a writer that gave up: the locker gets the lock later, lets it
    go on a descriptor that is still its own, and ends nothing in error."""
    import threading

    from storage.engine import WriteGate

    db = tmp_path / "g.db"
    other = os.open(f"{db}-writelock", os.O_RDWR | os.O_CREAT)  # another owner
    fcntl.flock(other, fcntl.LOCK_EX)
    gate = WriteGate(db, timeout=0.2)
    errors: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    try:
        with pytest.raises(StoreUnavailable), gate.hold():
            pass
        gate.close()
        fcntl.flock(other, fcntl.LOCK_UN)
        deadline = time.monotonic() + 5
        while gate._inflight:  # the locker takes the lock and drops it
            assert time.monotonic() < deadline
            time.sleep(0.01)  # polling with a deadline, not synchronising
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # dropped: free
    finally:
        threading.excepthook = hook
        os.close(other)
    assert errors == []


def test_unreachable_database(tmp_path: Path, key_file: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(StoreUnavailable):
        open_store(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x", key_file, busy_timeout=2)
    with pytest.raises(StoreUnavailable):
        migrate(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x")
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{tmp_path / 'nothing-here.db'}", key_file)
    assert not (tmp_path / "nothing-here.db").exists()


@pytest.mark.postgres
def test_postgres_connection_loss(pg_cluster: Any, key_file: Path) -> None:
    url = pg_cluster.url(pg_cluster.new_database())
    store = open_store(url, key_file, busy_timeout=2)
    try:
        store.add_domain("hopital.test")
        mb, inbox = _inbox(store)
        dbname = url.rsplit("/", 1)[1]
        # Server-side kill of every pooled connection: pre-ping reconnects.
        pg_cluster.admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"
        )
        assert store.append(inbox.id, b"Subject: a\r\n\r\nb\r\n").uid == 1
        # The database goes away altogether: a temporary failure, not a crash.
        pg_cluster.admin(f'DROP DATABASE "{dbname}" WITH (FORCE)')
        with pytest.raises(StoreUnavailable):
            store.append(inbox.id, b"Subject: a\r\n\r\nb\r\n")
        with pytest.raises(StoreUnavailable):
            store.index(inbox.id)
    finally:
        store.close()


def test_concurrent_writers_get_distinct_uids(open_any: Any) -> None:
    """Threads on two store instances (two pools: as two processes would)
    appending, delivering and flagging at once."""
    first = open_any()
    first.add_domain("hopital.test")
    mb, inbox = _inbox(first)
    second = open_any()
    uids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(store: Any, n: int) -> None:
        try:
            for i in range(n):
                if i % 3 == 2:
                    got = store.deliver(Delivery(b"Subject: d\r\n\r\nx\r\n", (mb.id,)))[0].uid
                else:
                    got = store.append(inbox.id, b"Subject: a\r\n\r\nx\r\n").uid
                store.store_flags(inbox.id, [got], FlagMode.ADD, ["\\Seen"])
                with lock:
                    uids.append(got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, 10)) for s in (first, second) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(uids) == list(range(1, 61))
    index = first.index(inbox.id)
    assert [e.uid for e in index] == list(range(1, 61))
    assert all(e.flags == frozenset({"\\Seen"}) for e in index)
    assert len({e.modseq for e in index}) == 60  # each flag change had its own MODSEQ
    assert first.mailbox_usage(mb.id)[1] == 60
    assert first.get_folder_by_id(inbox.id).uidnext == 61


@pytest.mark.postgres
def test_queue_workers_never_share_an_entry(pg_cluster: Any, key_file: Path) -> None:
    from datetime import UTC, datetime, timedelta

    url = pg_cluster.url(pg_cluster.new_database())
    stores = [open_store(url, key_file) for _ in range(3)]
    try:
        for i in range(30):
            stores[0].enqueue("a@hopital.test", [f"r{i}@ext.test"], b"x")
        now = datetime.now(UTC) + timedelta(seconds=1)
        taken: list[list[int]] = [[] for _ in stores]

        def take(k: int) -> None:
            for _ in range(5):
                taken[k].extend(e.id for e in stores[k].due_entries(now, limit=3))

        threads = [threading.Thread(target=take, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        flat = [i for t in taken for i in t]
        assert len(flat) == len(set(flat)) == 30
    finally:
        for s in stores:
            s.close()


def test_claim_recent_driver_error_is_unavailable(tmp_path: Path, key_file: Path) -> None:
    # claim_recent reads at the DB-API cursor: a failure of the driver there
    # must come out as StoreUnavailable, not as sqlite3.OperationalError.
    url = f"sqlite:///{tmp_path / 'mss.db'}"
    migrate(url)
    store = open_store(url, key_file)
    try:
        store.add_domain("hopital.test")
        _, inbox = _inbox(store)
        other = sqlite3.connect(tmp_path / "mss.db", isolation_level=None)
        other.execute("PRAGMA foreign_keys = OFF")
        other.execute("ALTER TABLE messages RENAME TO messages_gone")
        other.close()
        with pytest.raises(StoreUnavailable):
            store.claim_recent(inbox.id)
    finally:
        store.close()
