"""The per-session sequence view: pure logic, no store."""

from __future__ import annotations

from array import array
from datetime import UTC, datetime

from imapd.view import SelectedView
from storage.interface import FolderChanges, IndexColumns, IndexEntry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def entry(uid: int, flags: tuple[str, ...] = (), modseq: int = 1) -> IndexEntry:
    return IndexEntry(uid=uid, modseq=modseq, flags=frozenset(flags), size=10, internal_date=NOW)


def make_view(uids: list[int]) -> SelectedView:
    columns = IndexColumns(array("I", uids), array("Q", [1] * len(uids)), [frozenset()] * len(uids))
    return SelectedView.from_columns(1, "INBOX", False, 7, max(uids, default=0) + 1, 10, columns, [])


def test_sequence_numbers_follow_uid_order() -> None:
    v = make_view([3, 5, 9])
    assert [v.seq_of(u) for u in (3, 5, 9, 4)] == [1, 2, 3, None]
    assert v.uids_for_seq_ranges([(2, 3)]) == [5, 9]
    assert v.uids_for_uid_ranges([(4, 100)]) == [5, 9]
    assert v.uids_for_seq_ranges([(3, 1)]) == [3, 5, 9]


def test_expunge_waits_for_an_allowed_moment_and_keeps_numbers_stable() -> None:
    v = make_view([3, 5, 9])
    v.absorb(FolderChanges(highestmodseq=12, uidnext=11, changed=(entry(10, modseq=12),),
                           expunged=(5,)))
    # During FETCH/STORE/SEARCH: no EXPUNGE, EXISTS counts the expunged one too.
    assert v.flush(allow_expunge=False) == [b"* 4 EXISTS\r\n"]
    assert v.uid_at(2) == 5 and v.uid_at(4) == 10  # numbers unchanged
    assert not v.live(5)
    assert v.flush(allow_expunge=True) == [b"* 2 EXPUNGE\r\n"]
    assert list(v.uids) == [3, 9, 10]
    assert v.flush(allow_expunge=True) == []


def test_several_expunges_are_numbered_highest_first() -> None:
    v = make_view([1, 2, 3, 4])
    v.absorb(FolderChanges(highestmodseq=11, uidnext=5, changed=(), expunged=(2, 4)))
    assert v.flush(True) == [b"* 4 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]


def test_flag_changes_from_elsewhere_are_reported_once() -> None:
    v = make_view([1, 2])
    v.absorb(FolderChanges(highestmodseq=11, uidnext=3,
                           changed=(entry(2, ("\\Seen",), modseq=11),), expunged=()))
    assert v.flush(False) == [b"* 2 FETCH (FLAGS (\\Seen))\r\n"]
    v.absorb(FolderChanges(highestmodseq=11, uidnext=3,
                           changed=(entry(2, ("\\Seen",), modseq=11),), expunged=()))
    assert v.flush(False) == []


def test_own_store_is_not_repeated() -> None:
    v = make_view([1])
    v.set_flags(1, frozenset({"\\Flagged"}), 11)
    v.absorb(FolderChanges(highestmodseq=11, uidnext=2,
                           changed=(entry(1, ("\\Flagged",), modseq=11),), expunged=()))
    assert v.flush(True) == []


def test_new_message_recent_when_claimed() -> None:
    v = make_view([1])
    new = v.absorb(FolderChanges(highestmodseq=12, uidnext=3, changed=(entry(2, modseq=12),),
                                 expunged=()), claimed_recent={2})
    assert new == [2]
    assert v.flush(True) == [b"* 2 EXISTS\r\n", b"* 1 RECENT\r\n"]
    assert v.display_flags(2) == frozenset({"\\Recent"})


def test_added_then_expunged_between_syncs_is_never_seen() -> None:
    v = make_view([1])
    v.absorb(FolderChanges(highestmodseq=12, uidnext=3, changed=(entry(2, modseq=12),),
                           expunged=(2,)))
    assert v.flush(True) == []
    assert list(v.uids) == [1]
