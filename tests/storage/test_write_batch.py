"""`write_batch` (group commit) and `prepare` + `append` of a prepared message.

The batch is what the daemons' writer lane runs IMAP writes in (see
storage/threaded.py): several sessions' calls, one transaction, one fsync;
each call undone alone if it fails; nothing visible, so nothing acknowledged,
before the batch commits."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import open_store
from storage.interface import (
    AccountClass,
    AppendItem,
    FlagMode,
    MailboxType,
    NotFound,
    PreparedMessage,
    QuotaExceeded,
    StoreUnavailable,
)


def msg(subject: str) -> bytes:
    return (f"From: a@hopital.test\r\nTo: b@hopital.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@hopital.test>\r\n\r\nbody {subject}\r\n").encode()


@pytest.fixture
def box(any_store: Any) -> Any:
    acc = any_store.add_account("sec@hopital.test", "Sec", AccountClass.STAFF)
    mb = any_store.add_mailbox("sec@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    return any_store, any_store.get_folder(mb.id, "INBOX"), any_store.get_folder(mb.id, "Sent")


def uids(store: Any, folder_id: int) -> list[int]:
    return [e.uid for e in store.index(folder_id)]


def elsewhere(fn: Any, *args: Any) -> Any:
    """What another thread (its own connection) sees."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join(10)
    return out[0]


def test_prepared_message_appends_like_raw(box: Any) -> None:
    store, inbox, _ = box
    prepared = store.prepare(msg("prepared"))
    assert isinstance(prepared, PreparedMessage) and prepared.size == len(msg("prepared"))
    assert b"body prepared" not in repr(prepared).encode()  # no content in reprs (logs)
    r = store.append(inbox.id, prepared, flags=["\\Seen"])
    [(uid, raw)] = list(store.iter_bodies(inbox.id, [r.uid]))
    assert raw == msg("prepared")
    assert store.message_infos(inbox.id, [r.uid])[0].metadata["envelope"]["subject"] == "prepared"


def test_batching_is_offered_on_both_backends(any_store: Any) -> None:
    assert any_store.batches_writes is True


@pytest.fixture
def sqlite_box(sqlite_template: Path, key_file: Path, tmp_path: Path) -> Iterator[Any]:
    """`box` on SQLite whatever the backend parameter (for a test that
    breaks SQLite's own COMMIT)."""
    shutil.copy(sqlite_template, tmp_path / "batch.db")
    store = open_store(f"sqlite:///{tmp_path / 'batch.db'}", key_file)
    store.add_domain("hopital.test")
    acc = store.add_account("sec@hopital.test", "Sec", AccountClass.STAFF)
    mb = store.add_mailbox("sec@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    yield store, store.get_folder(mb.id, "INBOX"), store.get_folder(mb.id, "Sent")
    store.close()


def test_calls_share_one_transaction_seen_by_others_only_after_commit(box: Any) -> None:
    store, inbox, sent = box
    with store.write_batch() as batch:
        a = batch.call(store.append, inbox.id, msg("one"))
        b = batch.call(store.append, sent.id, store.prepare(msg("two")))
        changes, _ = batch.call(store.store_flags, inbox.id, [a.uid], FlagMode.ADD, ["\\Flagged"])
        assert [c.uid for c in changes] == [a.uid]
        # Inside the batch its own reads see its writes...
        assert uids(store, inbox.id) == [a.uid]
        # ...another connection sees nothing yet: nothing is durable, so
        # nothing may be acknowledged, before the commit.
        assert elsewhere(uids, store, inbox.id) == []
    assert elsewhere(uids, store, inbox.id) == [a.uid]
    assert elsewhere(uids, store, sent.id) == [b.uid]
    assert "\\Flagged" in store.index(inbox.id)[0].flags


def test_a_failing_call_is_undone_alone(box: Any) -> None:
    store, inbox, _ = box

    def append_then_fail() -> None:
        store.append(inbox.id, msg("undone"))
        raise ValueError("after writing")

    with store.write_batch() as batch:
        kept = batch.call(store.append, inbox.id, msg("kept"))
        with pytest.raises(ValueError):
            batch.call(append_then_fail)
        with pytest.raises(NotFound):
            batch.call(store.append, 999_999, msg("nowhere"))
        later = batch.call(store.append, inbox.id, msg("later"))
    assert uids(store, inbox.id) == [kept.uid, later.uid]
    subjects = [i.metadata["envelope"]["subject"] for i in store.message_infos(inbox.id, uids(store, inbox.id))]
    assert subjects == ["kept", "later"]


def test_a_failing_append_many_is_undone_whole_in_a_batch(box: Any) -> None:
    """A MULTIAPPEND that fails midway (quota on the total) leaves nothing in
    the batch's transaction; the calls around it are kept."""
    store, inbox, _ = box
    usage = store.mailbox_usage(inbox.mailbox_id)
    store.set_quota(inbox.mailbox_id, usage[0] + 3 * len(msg("m")))
    with store.write_batch() as batch:
        kept = batch.call(store.append, inbox.id, msg("m"))
        with pytest.raises(QuotaExceeded):
            batch.call(store.append_many, inbox.id, [AppendItem(msg("n"))] * 3)
        both = batch.call(store.append_many, inbox.id, [AppendItem(msg("o"))] * 2)
    assert [r.uid for r in both] == [kept.uid + 1, kept.uid + 2]
    assert uids(store, inbox.id) == [kept.uid, kept.uid + 1, kept.uid + 2]


def test_a_failing_first_call_undoes_its_begun_transaction(box: Any) -> None:
    store, inbox, _ = box

    def append_then_fail() -> None:
        store.append(inbox.id, msg("first"))
        raise ValueError("after writing")

    with store.write_batch() as batch:
        with pytest.raises(ValueError):
            batch.call(append_then_fail)  # began the transaction, then failed
        # The write lock was let go: another writer is not blocked meanwhile.
        assert elsewhere(lambda: store.append(inbox.id, msg("other")).uid) == 1
        second = batch.call(store.append, inbox.id, msg("second"))
    assert uids(store, inbox.id) == [1, second.uid]


def test_an_exception_in_the_block_commits_nothing(box: Any) -> None:
    store, inbox, _ = box
    with pytest.raises(RuntimeError), store.write_batch() as batch:
        batch.call(store.append, inbox.id, msg("lost"))
        raise RuntimeError("caller gave up")
    assert uids(store, inbox.id) == []
    store.append(inbox.id, msg("after"))  # the write lock is free again
    assert len(uids(store, inbox.id)) == 1


def test_sqlalchemy_writes_and_nesting_refuse_instead_of_deadlocking(box: Any) -> None:
    store, inbox, _ = box
    with store.write_batch() as batch:
        batch.call(store.append, inbox.id, msg("one"))
        with pytest.raises(RuntimeError, match="inside a write batch"):
            batch.call(store.create_folder, inbox.mailbox_id, "Projets")
        with pytest.raises(RuntimeError, match="do not nest"), store.write_batch():
            pass
    assert len(uids(store, inbox.id)) == 1
    store.create_folder(inbox.mailbox_id, "Projets")  # fine outside a batch


def test_a_commit_that_fails_is_store_unavailable(sqlite_box: Any, monkeypatch: Any) -> None:
    store, inbox, _ = sqlite_box
    import storage.sqlbase as sqlbase

    real_end = sqlbase._Batch.end

    def failing_end(self: Any, *, commit: bool) -> None:
        if commit and self.cur is not None:
            self.cur.execute("ROLLBACK")  # COMMIT then finds no transaction
        real_end(self, commit=commit)

    monkeypatch.setattr(sqlbase._Batch, "end", failing_end)
    with pytest.raises(StoreUnavailable), store.write_batch() as batch:
        batch.call(store.append, inbox.id, msg("never"))
    monkeypatch.undo()
    assert uids(store, inbox.id) == []
    store.append(inbox.id, msg("after"))
    assert len(uids(store, inbox.id)) == 1


def test_a_batch_runs_on_the_threads_kept_connection_and_a_failed_one_is_replaced(
        sqlite_box: Any) -> None:
    # The writer lane's batches, and the reads its calls make before their
    # first write, use one connection the thread keeps (SQLite): no pool
    # checkout each, and its page cache stays valid over its own commits.
    store, inbox, sent = sqlite_box
    pool = store.engine.pool

    def batch_of(subject: str) -> Any:
        with store.write_batch() as batch:
            batch.call(store.folder_status, inbox.id)  # a read before the first write...
            assert pool.checkedout() == 1 and store._ambient.kept is not None  # ... on it
            batch.call(store.append, inbox.id, msg(subject))
        return store._ambient.kept

    kept = batch_of("one")
    raw = kept.dbapi_connection
    assert pool.checkedout() == 1 and not raw.in_transaction
    assert batch_of("two") is kept and kept.dbapi_connection is raw
    assert pool.checkedout() == 1

    # A failing first call rolls back and leaves the connection usable.
    def append_then_fail() -> None:
        store.append(inbox.id, msg("undone"))
        raise ValueError("after writing")

    with store.write_batch() as batch:
        with pytest.raises(ValueError):
            batch.call(append_then_fail)
    assert store._ambient.kept is kept and not raw.in_transaction

    # A commit that fails drops the connection: back to the pool,
    # invalidated; the next batch takes a fresh one.
    with pytest.raises(sqlite3.ProgrammingError), store.write_batch() as batch:
        batch.call(store.append, inbox.id, msg("lost"))
        raw.close()  # broken under the batch's feet: COMMIT fails
    assert pool.checkedout() == 0 and store._ambient.kept is None
    assert batch_of("three") is not kept
    assert pool.checkedout() == 1
    assert [store.message_ids(inbox.id, [u])[u] for u in uids(store, inbox.id)] == [
        "<one@hopital.test>", "<two@hopital.test>", "<three@hopital.test>"]
    assert uids(store, sent.id) == []


def test_metadata_is_never_served_for_another_message(box: Any) -> None:
    """message_infos caches decoded metadata per process; a body row id
    reused after an expunge (SQLite reuses the highest rowid) must not bring
    back the old message's envelope."""
    store, inbox, _ = box
    first = store.append(inbox.id, msg("first"), flags=["\\Deleted"])
    assert store.message_infos(inbox.id, [first.uid])[0].metadata["envelope"]["subject"] == "first"
    assert store.expunge(inbox.id, None) == [first.uid]
    second = store.append(inbox.id, msg("second"))
    [info] = store.message_infos(inbox.id, [second.uid])
    assert info.metadata["envelope"]["subject"] == "second"
    # Again, from the cache this time: still the right one.
    assert store.message_infos(inbox.id, [second.uid])[0].metadata == info.metadata


def test_reads_inside_a_batch_never_fill_the_shared_index_caches(sqlite_box: Any) -> None:
    """A batch reads its own uncommitted writes; if it is rolled back, a
    later commit can reach the same folder version, and a cached copy of
    the rolled-back index would then be served as the folder's. (SQLite
    only: 2,000 savepoints in one PostgreSQL transaction overflow its
    subtransaction cache and take a minute; the daemons' batches hold 32
    calls at most, and the cache guard is the same code on both.)"""
    store, inbox, _ = sqlite_box
    with store.write_batch() as batch:  # big enough for the caches (2,000+)
        for _ in range(2000):
            batch.call(store.append, inbox.id, b"Subject: f\r\n\r\nf")
    store.index(inbox.id)
    store.index_columns(inbox.id)
    with pytest.raises(RuntimeError), store.write_batch() as batch:
        batch.call(store.append, inbox.id, b"Subject: a\r\n\r\naaaa", flags=["\\Flagged"])
        assert "\\Flagged" in batch.call(store.index, inbox.id)[-1].flags
        assert "\\Flagged" in batch.call(store.index_columns, inbox.id).flags[-1]
        raise RuntimeError("abandoned")
    store.append(inbox.id, b"Subject: b\r\n\r\nbbbbbbbbbbbbbbbb")  # same version as the lost one
    last = store.index(inbox.id)[-1]
    assert (last.uid, last.flags, last.size) == (2001, frozenset(), 30)
    assert store.index_columns(inbox.id).flags[-1] == frozenset()


def test_a_savepoint_that_fails_fails_the_whole_batch(box: Any) -> None:
    store, inbox, _ = box
    with pytest.raises(StoreUnavailable), store.write_batch() as batch:
        batch.call(store.append, inbox.id, msg("kept?"))
        live = batch.cur
        batch.cur = live.connection.cursor()
        batch.cur.close()  # the next SAVEPOINT statement fails
        with pytest.raises(StoreUnavailable):
            batch.call(store.append, inbox.id, msg("refused"))
        with pytest.raises(StoreUnavailable):  # and so does any later call
            batch.call(store.append, inbox.id, msg("later"))
        batch.cur = live
    assert uids(store, inbox.id) == []  # nothing of a broken batch is committed
    store.append(inbox.id, msg("after"))  # the lock was let go


@pytest.mark.postgres
def test_two_batches_locking_in_opposite_orders_both_finish(
    pg_cluster: Any, key_file: Path, caplog: Any
) -> None:
    """PostgreSQL locks rows, not the database: batch A appends to box one
    then box two while batch B (another process's connection) appends to two
    then one. Whichever waits past the lock timeout commits what it
    did, lets its locks go and retries the call alone: both batches finish,
    every call succeeds once, nothing is lost or doubled."""
    url = pg_cluster.url(pg_cluster.new_database())
    stores = [open_store(url, key_file) for _ in range(2)]
    try:
        s0 = stores[0]
        s0.add_domain("hopital.test")
        # Two boxes: an append locks its folder, then its mailbox (usage).
        boxes = [s0.add_mailbox(f"{n}@hopital.test", MailboxType.ORG) for n in ("one", "two")]
        inbox, sent = (s0.get_folder(mb.id, "INBOX") for mb in boxes)
        caplog.set_level("INFO", logger="storage.sqlbase")
        barrier = threading.Barrier(2)
        results: dict[str, list[Any]] = {}
        errors: list[BaseException] = []

        def run(name: str, store: Any, first: int, second: int) -> None:
            try:
                with store.write_batch() as batch:
                    a = batch.call(store.append, first, msg(f"{name}-1"))
                    barrier.wait(10)  # both hold their first folder's lock now
                    b = batch.call(store.append, second, msg(f"{name}-2"))
                    c = batch.call(store.append, first, msg(f"{name}-3"))
                results[name] = [a, b, c]
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=("a", stores[0], inbox.id, sent.id)),
                   threading.Thread(target=run, args=("b", stores[1], sent.id, inbox.id))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(results) == ["a", "b"]
        # The cycle happened and was broken by the retry (not by luck).
        assert "lock conflict" in caplog.text
        for fid in (inbox.id, sent.id):
            got = sorted(i.metadata["envelope"]["subject"]
                         for i in s0.message_infos(fid, uids(s0, fid)))
            assert len(got) == 3 and len(set(got)) == 3
        everything = sorted(
            i.metadata["envelope"]["subject"]
            for fid in (inbox.id, sent.id) for i in s0.message_infos(fid, uids(s0, fid)))
        assert everything == sorted(f"{n}-{k}" for n in "ab" for k in (1, 2, 3))
        # The UIDs each call was told are the ones it got.
        for name, (a, b, c) in results.items():
            first, second = (inbox.id, sent.id) if name == "a" else (sent.id, inbox.id)
            for res, fid, k in ((a, first, 1), (b, second, 2), (c, first, 3)):
                [info] = s0.message_infos(fid, [res.uid])
                assert info.metadata["envelope"]["subject"] == f"{name}-{k}"
    finally:
        for s in stores:
            s.close()
