"""The folder index cache (storage.index.IndexCache) never serves a stale view:
random operations made through one store instance (as another process would)
are all visible in the index of a second, caching instance, which always
equals an uncached read."""

from __future__ import annotations

import random
from typing import Any

from storage.index import IndexCache
from storage.interface import AccountClass, FlagMode, MailboxType


def test_cached_index_follows_random_changes(open_any: Any) -> None:
    writer = open_any()
    writer.add_domain("hopital.test")
    acc = writer.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = writer.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    inbox = writer.get_folder(mb.id, "INBOX")
    other = writer.create_folder(mb.id, "Other")
    reader = open_any()
    reader._index_cache = IndexCache(min_size=1)  # cache even tiny folders
    uncached = open_any()
    uncached._index_cache = IndexCache(min_size=10**9)
    rng = random.Random(4314)
    for step in range(60):
        uids = [e.uid for e in writer.index(inbox.id)]
        op = rng.choice(["append", "append", "flags", "expunge", "move", "copy_in"])
        if op == "append" or not uids:
            writer.append(inbox.id, f"Subject: {step}\r\n\r\nx\r\n".encode())
        elif op == "flags":
            pick = rng.sample(uids, k=min(3, len(uids)))
            flag = rng.choice(["\\Seen", "\\Deleted", "$Work"])
            writer.store_flags(inbox.id, pick, rng.choice(list(FlagMode)), [flag])
        elif op == "expunge":
            writer.expunge(inbox.id)
        elif op == "move":
            writer.move(inbox.id, rng.sample(uids, k=1), other.id)
        else:
            back = [e.uid for e in writer.index(other.id)]
            if back:
                writer.copy(other.id, back[:2], inbox.id)
        if step % 3 == 0 or rng.random() < 0.3:
            assert reader.index(inbox.id) == uncached.index(inbox.id), f"step {step}: {op}"
            assert reader.index(other.id) == uncached.index(other.id)
    assert reader.index(inbox.id) == uncached.index(inbox.id)


def test_cache_rebuilt_when_folder_replaced(open_any: Any) -> None:
    """A deleted and re-created folder (SQLite may reuse its id) is never
    served from the old folder's cached index."""
    writer = open_any()
    writer.add_domain("hopital.test")
    mb = writer.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    reader = open_any()
    reader._index_cache = IndexCache(min_size=1)
    f = writer.create_folder(mb.id, "Z")
    for i in range(3):
        writer.append(f.id, f"Subject: {i}\r\n\r\nx\r\n".encode())
    assert len(reader.index(f.id)) == 3
    writer.delete_folder(mb.id, "Z")
    g = writer.create_folder(mb.id, "Z")
    writer.append(g.id, b"Subject: new\r\n\r\nx\r\n")
    assert [e.uid for e in reader.index(g.id)] == [1]


def test_cache_is_bounded() -> None:
    from datetime import UTC, datetime

    from storage.interface import IndexEntry

    cache = IndexCache(max_entries=10, min_size=2)
    entry = IndexEntry(1, 1, frozenset(), 1, datetime.now(UTC))
    cache.put(1, (1, 1, 1, 1), [entry] * 6)
    cache.put(2, (1, 1, 1, 1), [entry] * 6)  # evicts folder 1
    assert cache.get(1) is None and cache.get(2) is not None
    cache.put(3, (1, 1, 1, 1), [entry])  # too small to keep
    assert cache.get(3) is None


def test_apply_changes_matches_a_rebuild() -> None:
    from datetime import UTC, datetime

    from storage.index import apply_changes
    from storage.interface import IndexEntry

    when = datetime.now(UTC)
    rng = random.Random(7162)

    def entry(uid: int, modseq: int) -> IndexEntry:
        return IndexEntry(uid, modseq, frozenset(), 10, when)

    base = [entry(u, 1) for u in range(1, 2001) if rng.random() < 0.8]
    for n_changes in (0, 1, 5, 50, 1500):
        uids = [e.uid for e in base]
        gone = set(rng.sample(uids, k=min(n_changes, 20)))
        changed = sorted(
            {e.uid: e for e in [entry(rng.choice(uids), 2) for _ in range(n_changes)]}.values(),
            key=lambda e: e.uid,
        )
        changed = [e for e in changed if e.uid not in gone] + [entry(3000 + n_changes, 2)]
        expected = sorted(
            [e for e in base if e.uid not in gone and e.uid not in {c.uid for c in changed}]
            + changed,
            key=lambda e: e.uid,
        )
        assert apply_changes(base, changed, gone) == expected, n_changes
