"""`MessageStore.no_waiting`: what a store call may do on the reactor thread
(`storage.threaded.StoreRunner.run_quick`). Reads go on; a write, or the
read of a body larger than NO_WAIT_BODY_BYTES, raises `WouldWait` before it
begins, and nothing is changed. On SQLite and PostgreSQL (the store is the
same code; only SQLite's runner uses it)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from storage.interface import (
    NO_WAIT_BODY_BYTES,
    AccountClass,
    Delivery,
    FlagMode,
    MailboxType,
    WouldWait,
)


def msg(n: int, body: bytes = b"") -> bytes:
    return (f"From: <a@b.test>\r\nSubject: {n}\r\nMessage-ID: <m{n}@b.test>\r\n\r\n".encode()
            + (body or f"body {n}\r\n".encode()))


@pytest.fixture
def box(any_store: Any) -> tuple[Any, Any, Any]:
    acc = any_store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = any_store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    for i in range(3):
        any_store.deliver(Delivery(raw=msg(i), mailbox_ids=(mb.id,)))
    return any_store, mb, any_store.get_folder(mb.id, "INBOX")


def test_reads_go_on_and_every_kind_of_write_raises_before_it_begins(box: Any) -> None:
    store, mb, inbox = box
    before = store.folder_status(inbox.id)
    folders = [f.name for f in store.list_folders(mb.id)]
    with store.no_waiting():
        with store.read_scope():
            assert store.get_folder(mb.id, "INBOX").id == inbox.id
            assert store.folder_status(inbox.id) == before
        assert [i.uid for i in store.message_infos(inbox.id, [1, 2, 3])] == [1, 2, 3]
        bodies, stopped = store.read_bodies(inbox.id, [1, 2], 1 << 20)
        assert sorted(bodies) == [1, 2] and stopped is None
        with pytest.raises(WouldWait):  # the fixed-SQL write path
            store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Flagged"])
        with pytest.raises(WouldWait):  # claim_recent: its read, then its write
            store.claim_recent(inbox.id)
        with pytest.raises(WouldWait):  # a SQLAlchemy write transaction
            store.create_folder(mb.id, "Projets")
        with pytest.raises(WouldWait):
            with store.write_batch():
                pass
        with pytest.raises(WouldWait):
            with store.bulk_writes():
                pass
    # Nothing was written, and the store works as before afterwards.
    after = store.folder_status(inbox.id)
    assert after == before and after.recent == 3
    assert [f.name for f in store.list_folders(mb.id)] == folders
    assert "Projets" not in folders
    assert "\\Flagged" not in store.index(inbox.id)[0].flags
    assert store.claim_recent(inbox.id) == frozenset({1, 2, 3})
    store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Flagged"])
    assert "\\Flagged" in store.index(inbox.id)[0].flags


def test_no_waiting_is_this_threads_own_and_nests(box: Any) -> None:
    store, mb, inbox = box
    other: list[Any] = []
    with store.no_waiting():
        with store.no_waiting():
            pass
        with pytest.raises(WouldWait):  # still inside the outer block
            store.create_folder(mb.id, "A")
        # Another thread (a store thread) writes as usual meanwhile.
        t = threading.Thread(target=lambda: other.append(store.create_folder(mb.id, "B")))
        t.start()
        t.join()
    assert other and other[0].name == "B"
    store.create_folder(mb.id, "A")  # outside: a write goes on


def test_a_large_body_is_not_read_there_and_a_batch_stops_sooner(box: Any) -> None:
    store, mb, inbox = box
    big = b"x" * (NO_WAIT_BODY_BYTES + 10) + b"\r\n"
    half = b"y" * (NO_WAIT_BODY_BYTES // 2 + 10) + b"\r\n"
    store.deliver(Delivery(raw=msg(4, big), mailbox_ids=(mb.id,)))  # UID 4
    store.deliver(Delivery(raw=msg(5, half), mailbox_ids=(mb.id,)))  # UID 5
    store.deliver(Delivery(raw=msg(6, half), mailbox_ids=(mb.id,)))  # UID 6
    with store.no_waiting():
        with pytest.raises(WouldWait):
            store.read_bodies(inbox.id, [4, 5], 1 << 20)
        # Two bodies of half the limit: the batch stops before the second,
        # where a store thread (1 MB budget) reads both.
        bodies, stopped = store.read_bodies(inbox.id, [5, 6], 1 << 20)
        assert sorted(bodies) == [5] and stopped == 6
    bodies, stopped = store.read_bodies(inbox.id, [4, 5, 6], 4 << 20)
    assert sorted(bodies) == [4, 5, 6] and stopped is None
    assert bodies[4].endswith(big)


def test_a_read_of_many_rows_stops_there_and_goes_on_elsewhere(
        box: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A session's idea of a folder's size may be stale (another session
    # filled it): the store itself bounds what a call inside no_waiting
    # reads, before the scan or without reading the rest of the rows.
    from storage import store as store_module

    store, mb, inbox = box
    monkeypatch.setattr(store_module, "NO_WAIT_ROWS", 3)
    for i in range(3, 5):  # 5 messages now, all recent
        store.deliver(Delivery(raw=msg(i), mailbox_ids=(mb.id,)))
    for name in ("A", "B", "C"):
        store.create_folder(mb.id, name)
    modseq = store.get_folder(mb.id, "INBOX").highestmodseq
    store.store_flags(inbox.id, [1, 2, 3, 4], FlagMode.ADD, ["\\Flagged"])
    calls = [
        lambda: store.index_columns(inbox.id),
        lambda: store.index(inbox.id),
        lambda: store.folder_status(inbox.id),
        lambda: store.changes_since(inbox.id, modseq),
        lambda: store.recent_uids(inbox.id),
        lambda: store.list_folders(mb.id),
    ]
    with store.no_waiting():
        for call in calls:
            with pytest.raises(WouldWait):
                call()
        # Small answers still come: no change since the STORE.
        now = store.get_folder(mb.id, "INBOX").highestmodseq
        assert store.changes_since(inbox.id, now).changed == ()
    answers = [call() for call in calls]  # outside: every row
    assert len(answers[0].uids) == 5 and len(answers[1]) == 5 and answers[2].messages == 5
    assert len(answers[3].changed) == 4 and answers[4] == frozenset({1, 2, 3, 4, 5})
    assert len(answers[5]) > 3


def test_claim_recent_below_a_uid_leaves_the_newer_ones_recent(box: Any) -> None:
    # SELECT claims what its snapshot holds (UIDs under its UIDNEXT); what
    # came after stays recent for the sync that brings it into the view.
    store, mb, inbox = box
    uidnext = store.get_folder(mb.id, "INBOX").uidnext  # 4: UIDs 1-3 recent
    store.deliver(Delivery(raw=msg(9), mailbox_ids=(mb.id,)))  # UID 4, after the snapshot
    assert store.claim_recent(inbox.id, below=uidnext) == frozenset({1, 2, 3})
    assert store.recent_uids(inbox.id) == frozenset({4})
    assert store.claim_recent(inbox.id) == frozenset({4})
    assert store.claim_recent(inbox.id, below=100) == frozenset()


def _pool_out(store: Any) -> int:
    return int(store.engine.pool.checkedout())


def test_quick_reads_keep_one_connection_per_thread_on_sqlite(box: Any) -> None:
    # The reactor's reads inside no_waiting take no connection from the pool
    # and give none back each time: the thread keeps its own (SQLite; on
    # PostgreSQL every read goes through the pool, as it never reads there).
    store, mb, inbox = box
    sqlite = store.engine.dialect.name == "sqlite"
    assert _pool_out(store) == 0
    with store.no_waiting():
        store.folder_status(inbox.id)
        with store.read_scope():
            store.get_folder(mb.id, "INBOX")
        store.message_infos(inbox.id, [1])
    assert _pool_out(store) == (1 if sqlite else 0)
    store.folder_status(inbox.id)  # elsewhere: the pool's, given back
    assert _pool_out(store) == (1 if sqlite else 0)

    def elsewhere() -> None:
        with store.no_waiting():
            store.folder_status(inbox.id)

    other = threading.Thread(target=elsewhere)
    other.start()
    other.join()
    assert _pool_out(store) == (2 if sqlite else 0)
    with store.no_waiting():  # this thread's again: no third one
        store.list_folders(mb.id)
    assert _pool_out(store) == (2 if sqlite else 0)
    # A thread's first kept connection gives back those of ended threads.
    third = threading.Thread(target=elsewhere)
    third.start()
    third.join()
    assert _pool_out(store) == (2 if sqlite else 0)


@pytest.mark.parametrize("backend", ["sqlite"])  # connections are kept on SQLite only
def test_a_kept_connection_in_use_up_the_stack_is_not_handed_out_again(
        box: Any, monkeypatch: Any) -> None:
    import storage.sqlbase as sqlbase

    store, mb, inbox = box
    before = store.folder_status(inbox.id)
    with store.no_waiting():
        with store._dbapi(write=False) as cur:  # a read on the kept connection...
            kept = store._ambient.kept
            cur.execute("SELECT 1")
            # ... and another inside it, on a connection of the pool.
            assert store.folder_status(inbox.id) == before
            assert _pool_out(store) == 1
        assert store._ambient.kept is kept and _pool_out(store) == 1
        # A kept connection a read leaves in a transaction is given up.
        real_end = sqlbase._ReadScope.end

        def end_without_commit(self: Any, pg: bool, dbapi: Any) -> None:
            if self.cur is not None:
                self.cur.close()
                self.cur = self.conn = None  # the transaction stays open

        monkeypatch.setattr(sqlbase._ReadScope, "end", end_without_commit)
        with store.read_scope():
            store.get_folder(mb.id, "INBOX")
        monkeypatch.setattr(sqlbase._ReadScope, "end", real_end)
        assert store._ambient.kept is None and _pool_out(store) == 0
        assert store.folder_status(inbox.id) == before
    assert _pool_out(store) == 1


@pytest.mark.parametrize("backend", ["sqlite"])  # connections are kept on SQLite only
def test_a_kept_connection_that_fails_is_replaced_and_close_gives_them_back(
        box: Any) -> None:
    import sqlite3

    store, mb, inbox = box
    before = store.folder_status(inbox.id)
    with store.no_waiting():
        store.folder_status(inbox.id)
    store._ambient.kept.dbapi_connection.close()  # broken between two reads
    with store.no_waiting():
        assert store.folder_status(inbox.id) == before  # on a fresh one
    assert _pool_out(store) == 1  # the broken one went back, invalidated

    with store.no_waiting():
        with pytest.raises(sqlite3.ProgrammingError):
            with store._dbapi(write=False) as cur:  # broken during a read
                cur.connection.close()
        assert _pool_out(store) == 0 and store._ambient.kept is None
        assert store.folder_status(inbox.id) == before
        with pytest.raises(sqlite3.ProgrammingError):
            with store.read_scope():  # ... during a read scope
                store.get_folder(mb.id, "INBOX")
                store._ambient.kept.dbapi_connection.close()
        assert _pool_out(store) == 0 and store._ambient.kept is None
        with store.read_scope():
            assert store.get_folder(mb.id, "INBOX").id == inbox.id
    assert _pool_out(store) == 1
    raw = store._ambient.kept.dbapi_connection
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):  # closed with the store
        raw.execute("SELECT 1")
