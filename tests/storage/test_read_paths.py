"""Read paths the IMAP server leans on, against SQLite and PostgreSQL:
`folder_versions` (the folder watcher's one query a tick) and
`claim_recent` (read-first, and "the recent messages are the newest ones")."""

from __future__ import annotations

from typing import Any

import pytest

from storage.interface import AccountClass, Delivery, FlagMode, MailboxType, NotFound


def msg(n: int) -> bytes:
    return f"From: <a@b.test>\r\nSubject: {n}\r\nMessage-ID: <m{n}@b.test>\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def box(any_store: Any) -> tuple[Any, Any]:
    acc = any_store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = any_store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    return any_store, mb


def test_folder_versions_tracks_changes_and_deletions(box: Any) -> None:
    store, mb = box
    inbox = store.get_folder(mb.id, "INBOX")
    extra = store.create_folder(mb.id, "Projets")
    before = store.folder_versions([inbox.id, extra.id, 999_999])
    assert before == {inbox.id: (inbox.uidnext, inbox.highestmodseq),
                      extra.id: (extra.uidnext, extra.highestmodseq)}
    store.deliver(Delivery(raw=msg(1), mailbox_ids=(mb.id,)))
    after = store.folder_versions([inbox.id, extra.id])
    assert after[inbox.id][0] == inbox.uidnext + 1 and after[inbox.id][1] > inbox.highestmodseq
    assert after[extra.id] == before[extra.id]
    store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Flagged"])
    assert store.folder_versions([inbox.id])[inbox.id][1] > after[inbox.id][1]
    store.delete_folder(mb.id, "Projets")
    assert store.folder_versions([inbox.id, extra.id]).keys() == {inbox.id}
    assert store.folder_versions([]) == {}


def test_claim_recent_after_expunges_and_copies(box: Any) -> None:
    store, mb = box
    inbox = store.get_folder(mb.id, "INBOX")
    other = store.create_folder(mb.id, "Archives")
    assert store.claim_recent(inbox.id) == frozenset()  # empty folder
    for i in range(4):
        store.deliver(Delivery(raw=msg(i), mailbox_ids=(mb.id,)))
    assert store.claim_recent(inbox.id) == frozenset({1, 2, 3, 4})
    assert store.claim_recent(inbox.id) == frozenset()
    store.deliver(Delivery(raw=msg(5), mailbox_ids=(mb.id,)))
    store.deliver(Delivery(raw=msg(6), mailbox_ids=(mb.id,)))
    store.store_flags(inbox.id, [6], FlagMode.ADD, ["\\Deleted"])
    assert store.expunge(inbox.id, [6]) == [6]  # the newest recent one goes: 5 is still recent
    assert store.claim_recent(inbox.id) == frozenset({5})
    store.deliver(Delivery(raw=msg(7), mailbox_ids=(mb.id,)))
    store.store_flags(inbox.id, [7], FlagMode.ADD, ["\\Deleted"])
    assert store.expunge(inbox.id, [7]) == [7]  # every recent one gone
    assert store.claim_recent(inbox.id) == frozenset()
    store.copy(inbox.id, [1, 2], other.id)
    assert store.claim_recent(other.id) == frozenset({1, 2})
    store.delete_folder(mb.id, "Archives")
    with pytest.raises(NotFound):
        store.claim_recent(other.id)


def test_read_bodies_in_uid_order_within_a_budget(box: Any) -> None:
    store, mb = box
    inbox = store.get_folder(mb.id, "INBOX")
    for i in range(1, 6):
        store.deliver(Delivery(raw=msg(i), mailbox_ids=(mb.id,)))
    size = len(msg(1))
    assert store.read_bodies(inbox.id, [3, 1, 2, 99, 1], 10 * size) == (
        {1: msg(1), 2: msg(2), 3: msg(3)}, None)  # unknown UIDs skipped, no repeats
    # The budget: as many whole messages as fit, then where it stopped.
    assert store.read_bodies(inbox.id, [1, 2, 3, 4, 5], 2 * size + 1) == (
        {1: msg(1), 2: msg(2)}, 3)
    # One message larger than the budget still comes, alone.
    assert store.read_bodies(inbox.id, [4, 5], 1) == ({4: msg(4)}, 5)
    assert store.read_bodies(inbox.id, [], 100) == ({}, None)
    assert store.read_bodies(inbox.id, [77], 100) == ({}, None)


def test_a_read_scope_is_one_snapshot_and_ends_clean(box: Any) -> None:
    """Reads within `read_scope` share one transaction: a message delivered
    by another connection after the scope's first read is not seen by its
    later reads (one snapshot), and is seen once the scope is over; a scope
    left by an exception gives its connection back (nothing leaks, the next
    reads go on)."""
    store, mb = box
    inbox = store.get_folder(mb.id, "INBOX")
    store.deliver(Delivery(raw=msg(1), mailbox_ids=(mb.id,)))
    with store.read_scope():
        assert store.folder_status(inbox.id).messages == 1
        store.deliver(Delivery(raw=msg(2), mailbox_ids=(mb.id,)))  # its own transaction
        assert store.folder_status(inbox.id).messages == 1
        assert [e.uid for e in store.index(inbox.id)] == [1]
        with store.read_scope():  # nested: the same snapshot
            assert store.folder_status(inbox.id).messages == 1
    assert store.folder_status(inbox.id).messages == 2
    for _ in range(40):  # more than the pool holds
        with pytest.raises(NotFound), store.read_scope():
            store.access_epoch()
            store.get_folder(mb.id, "Nowhere")
    assert store.folder_status(inbox.id).messages == 2
    # Inside a write batch the batch's transaction serves (SQLite batches).
    if store.batches_writes:
        with store.write_batch() as batch, store.read_scope():
            batch.call(store.append, inbox.id, msg(3))
            assert store.folder_status(inbox.id).messages == 3
        assert store.folder_status(inbox.id).messages == 3


def test_reads_are_one_read_only_snapshot_and_leave_the_connection_writable(
        open_any: Any, backend: str) -> None:
    """A read is one snapshot and may not write; the pooled connection it used
    is read-write again for the next user. One connection in the pool, so
    every call below takes the same one (on PostgreSQL the read's isolation
    level and READ ONLY go with the connection's session until it returns:
    see `storage.engine.begin_pg_read`)."""
    store = open_any(pool_size=1)
    store.add_domain("hopital.test")
    acc = store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    inbox = store.get_folder(mb.id, "INBOX")
    other = open_any()  # another process's connection, writing between two reads
    with store.read_scope():
        before = store.folder_status(inbox.id)
        other.deliver(Delivery(raw=msg(1), mailbox_ids=(mb.id,)))
        assert store.folder_status(inbox.id) == before  # the scope's snapshot
        if backend == "postgres":  # (SQLite: a read takes no write lock, READ ONLY or not)
            with store._dbapi(write=False) as cur:
                with pytest.raises(Exception, match="read-only transaction"):
                    cur.execute("UPDATE folders SET uidnext = uidnext WHERE id = 1")
    for _ in range(3):  # read, write, read, write on the one connection
        assert store.folder_status(inbox.id).messages >= 1
        changes, _ = store.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Flagged"])
        store.store_flags(inbox.id, [1], FlagMode.REMOVE, ["\\Flagged"])
    with store.write_batch() as batch:
        batch.call(store.store_flags, inbox.id, [1], FlagMode.ADD, ["\\Seen"])
    assert "\\Seen" in store.index(inbox.id)[0].flags
