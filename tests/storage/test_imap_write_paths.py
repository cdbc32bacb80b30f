"""The IMAP write and read paths in fixed SQL (store_flags, expunge, append,
get_folder, claim_recent, message_infos): the documented semantics, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from storage.interface import (
    AccountClass,
    AppendItem,
    FlagMode,
    MailboxType,
    NotFound,
    QuotaExceeded,
    SpecialUse,
)


def msg(subject: str) -> bytes:
    return f"Subject: {subject}\r\nFrom: a@hopital.test\r\n\r\nbody\r\n".encode()


@pytest.fixture
def box(any_store: Any) -> tuple[Any, Any, Any]:
    acc = any_store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = any_store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    return any_store, mb, any_store.get_folder(mb.id, "inbox")


def test_store_flags_bumps_modseq_only_for_changed_messages(box: Any) -> None:
    store, _, inbox = box
    for i in range(3):
        store.append(inbox.id, msg(str(i)), flags=["\\Seen"] if i == 0 else [])
    before = {e.uid: e.modseq for e in store.index(inbox.id)}
    top = store.get_folder_by_id(inbox.id).highestmodseq
    changes, failed = store.store_flags(inbox.id, [1, 2, 3, 99], FlagMode.ADD, ["\\seen"])
    assert failed == [] and [c.uid for c in changes] == [2, 3]
    assert {c.modseq for c in changes} == {top + 1}
    after = {e.uid: e.modseq for e in store.index(inbox.id)}
    assert after == {1: before[1], 2: top + 1, 3: top + 1}
    # Nothing changes: no new MODSEQ at all.
    assert store.store_flags(inbox.id, [1, 2], FlagMode.ADD, ["\\Seen"]) == ([], [])
    assert store.get_folder_by_id(inbox.id).highestmodseq == top + 1
    # UNCHANGEDSINCE: messages modified after it fail, the others change.
    changes, failed = store.store_flags(
        inbox.id, [1, 2], FlagMode.REPLACE, ["$Label1"], unchanged_since=before[1]
    )
    assert failed == [2] and [(c.uid, c.flags) for c in changes] == [(1, frozenset({"$Label1"}))]
    with pytest.raises(NotFound):
        store.store_flags(999_999, [1], FlagMode.ADD, ["\\Seen"])


def test_expunge_logs_releases_quota_and_keeps_shared_bodies(box: Any) -> None:
    store, mb, inbox = box
    other = store.create_folder(mb.id, "Archives")
    for i in range(3):
        store.append(inbox.id, msg(str(i)), flags=["$NotDeleted"])
    store.copy(inbox.id, [1], other.id)  # the copy shares the body of UID 1
    usage = store.mailbox_usage(mb.id)
    store.store_flags(inbox.id, [1, 2], FlagMode.ADD, ["\\Deleted"])
    top = store.get_folder_by_id(inbox.id).highestmodseq
    assert store.expunge(inbox.id) == [1, 2]
    assert store.get_folder_by_id(inbox.id).highestmodseq == top + 1
    ch = store.changes_since(inbox.id, top)
    assert ch.expunged == (1, 2) and ch.highestmodseq == top + 1
    size = len(msg("0"))
    assert store.mailbox_usage(mb.id) == (usage[0] - 2 * size, usage[1] - 2)
    assert store.message_body(other.id, 1) == msg("0")  # body still referenced
    assert [e.uid for e in store.index(inbox.id)] == [3]
    with pytest.raises(NotFound):
        store.expunge(999_999)


def test_append_counters_and_folder_lookup(box: Any) -> None:
    store, mb, inbox = box
    first = store.append(inbox.id, msg("a"), recent=False)
    second = store.append(inbox.id, msg("b"))
    assert (first.uid, second.uid) == (1, 2) and second.modseq == first.modseq + 1
    assert first.uidvalidity == inbox.uidvalidity
    assert store.claim_recent(inbox.id) == frozenset({2})
    assert store.claim_recent(inbox.id) == frozenset()
    folder = store.get_folder(mb.id, "INBOX")
    assert (folder.uidnext, folder.highestmodseq) == (3, second.modseq)
    sent = store.get_folder(mb.id, "Sent")
    assert sent.special_use is SpecialUse.SENT
    [info] = store.message_infos(inbox.id, [2, 7])
    assert info.uid == 2 and info.size == len(msg("b"))
    with pytest.raises(NotFound):
        store.get_folder(mb.id, "Nope")
    with pytest.raises(NotFound):
        store.append(999_999, msg("c"))


def test_append_many_is_all_or_nothing(box: Any) -> None:
    """RFC 3502 MULTIAPPEND: one transaction, consecutive UIDs in order, one
    MODSEQ, the quota checked on the total."""
    store, mb, inbox = box
    store.append(inbox.id, msg("before"))
    top = store.get_folder_by_id(inbox.id)
    items = [AppendItem(msg("a"), ("\\Seen",)), AppendItem(store.prepare(msg("b"))),
             AppendItem(msg("c"), internal_date=datetime(1994, 2, 7, 21, 52, 25, tzinfo=UTC))]
    results = store.append_many(inbox.id, items, recent=False)
    assert [r.uid for r in results] == [top.uidnext, top.uidnext + 1, top.uidnext + 2]
    assert {r.modseq for r in results} == {top.highestmodseq + 1}
    assert {r.uidvalidity for r in results} == {inbox.uidvalidity}
    after = store.get_folder_by_id(inbox.id)
    assert (after.uidnext, after.highestmodseq) == (top.uidnext + 3, top.highestmodseq + 1)
    bodies = dict(store.iter_bodies(inbox.id, [r.uid for r in results]))
    assert [bodies[r.uid] for r in results] == [msg("a"), msg("b"), msg("c")]
    entries = {e.uid: e for e in store.index(inbox.id)}
    assert entries[results[0].uid].flags == frozenset({"\\Seen"})
    assert entries[results[2].uid].internal_date == datetime(1994, 2, 7, 21, 52, 25, tzinfo=UTC)
    assert store.append_many(inbox.id, []) == []
    # Over quota on the total: nothing stored, no UID used up, nothing charged.
    usage = store.mailbox_usage(mb.id)
    store.set_quota(mb.id, usage[0] + 2 * len(msg("x")))
    with pytest.raises(QuotaExceeded):
        store.append_many(inbox.id, [AppendItem(msg("x"))] * 3)
    assert store.mailbox_usage(mb.id) == usage
    assert store.get_folder_by_id(inbox.id).uidnext == after.uidnext
    assert [r.uid for r in store.append_many(inbox.id, [AppendItem(msg("x"))] * 2)] == [
        after.uidnext, after.uidnext + 1]
    with pytest.raises(NotFound):
        store.append_many(999_999, [AppendItem(msg("c"))])
