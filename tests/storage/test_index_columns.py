"""`index_columns` (the cheap SELECT index) always equals `index`, cached or
not, through random changes made by another store instance; `sizes_and_dates`
matches it; `append(recent=False)` leaves nothing to claim. SQLite and
PostgreSQL (open_any)."""

from __future__ import annotations

import random
from typing import Any

from storage.index import ColumnsCache
from storage.interface import AccountClass, FlagMode, MailboxType


def same(cols: Any, entries: Any) -> bool:
    return (
        list(cols.uids) == [e.uid for e in entries]
        and list(cols.modseqs) == [e.modseq for e in entries]
        and cols.flags == [e.flags for e in entries]
    )


def test_columns_follow_random_changes(open_any: Any) -> None:
    writer = open_any()
    writer.add_domain("hopital.test")
    acc = writer.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = writer.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    inbox = writer.get_folder(mb.id, "INBOX")
    assert same(writer.index_columns(inbox.id), [])
    reader = open_any()
    reader._columns_cache = ColumnsCache(min_size=1)  # cache even tiny folders
    rng = random.Random(7162)
    for step in range(50):
        uids = list(writer.index_columns(inbox.id).uids)
        op = rng.choice(["append", "append", "flags", "expunge"])
        if op == "append" or not uids:
            writer.append(inbox.id, f"Subject: {step}\r\n\r\nx\r\n".encode())
        elif op == "flags":
            pick = rng.sample(uids, k=min(3, len(uids)))
            flag = rng.choice(["\\Seen", "\\Deleted", "$Work"])
            writer.store_flags(inbox.id, pick, rng.choice(list(FlagMode)), [flag])
        else:
            writer.expunge(inbox.id)
        cols = reader.index_columns(inbox.id)
        assert same(cols, writer.index(inbox.id)), f"step {step}: {op}"
        cols.uids.append(10**6)  # the caller owns its copy: the cache is unharmed
        cols.flags.clear()
    entries = writer.index(inbox.id)
    got = reader.sizes_and_dates(inbox.id, [e.uid for e in entries] + [10**6])
    assert got == {e.uid: (e.size, e.internal_date) for e in entries}
    assert reader.sizes_and_dates(inbox.id, []) == {}


def test_append_not_recent_leaves_nothing_to_claim(open_any: Any) -> None:
    s = open_any()
    s.add_domain("hopital.test")
    mb = s.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    inbox = s.get_folder(mb.id, "INBOX")
    s.append(inbox.id, b"Subject: a\r\n\r\nx\r\n", recent=False)
    assert s.folder_status(inbox.id).recent == 0
    assert s.claim_recent(inbox.id) == frozenset()
    r = s.append(inbox.id, b"Subject: b\r\n\r\nx\r\n")
    assert s.claim_recent(inbox.id) == frozenset({r.uid})
