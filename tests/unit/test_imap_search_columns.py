"""SEARCH keys answered over the selected view's columns (`imapd.search.select`,
`imapd.commands.search._select_columns`) against the SEARCH engine they stand in
for: random folders as a session sees them (flags and keywords in any case,
\\Recent, MODSEQs, expunges not yet told, flag changes and new messages
absorbed, "$") and random key trees; the oracle is the engine's own per-message
path (`view_messages` then `_run`), as SEARCH took it for every such key.

A shared mailbox's private \\Seen reaches the view as the flags column (the
store gives each account its own): nothing else to model here; the protocol
tests check it through the server (tests/protocol/test_imap_private_seen.py).
"""

from __future__ import annotations

import random
from array import array
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imapd.commands.search import _columns as view_columns
from imapd.commands.search import _run, _select_columns, view_messages
from imapd.contexts import local
from imapd.parser import commands as c
from imapd.parser.grammar import parse_command
from imapd.search import on_columns, select
from imapd.view import SelectedView
from storage.interface import FolderChanges, IndexColumns, IndexEntry

NOW = datetime(2026, 12, 7, tzinfo=UTC)
# Spellings as they may reach a view: keywords compare without case (RFC 3501
# 2.3.2), system flags too; "\\Recent" is never stored, but if it were, the
# session's own \\Recent would still decide.
STORED = ("\\Seen", "\\Deleted", "\\Flagged", "\\Answered", "\\Draft", "$Junk", "$junk",
          "$Forwarded", "NonJunk", "\\SEEN", "\\Recent")
ASKED = ("\\Seen", "\\Deleted", "\\Flagged", "\\Answered", "\\Draft", "\\Recent", "\\recent",
         "$Junk", "$JUNK", "$Forwarded", "nonjunk", "Absent", "\\seen", "\\Unknown")


def _flag_sets(draw: st.DrawFn) -> list[frozenset[str]]:
    # A few distinct sets, shared as the store shares them, and an equal
    # copy or two that is another object.
    palette = draw(st.lists(st.frozensets(st.sampled_from(STORED), max_size=4),
                            min_size=1, max_size=5))
    return [*palette, *(frozenset(set(fs)) for fs in palette[:2])]


@st.composite
def views(draw: st.DrawFn) -> SelectedView:
    sets = _flag_sets(draw)
    gaps = draw(st.lists(st.integers(1, 4), max_size=30))
    uids = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    modseqs = [draw(st.integers(1, 40)) for _ in uids]
    flags = [draw(st.sampled_from(sets)) for _ in uids]
    recent = draw(st.sets(st.sampled_from(uids))) if uids else set()
    columns = IndexColumns(array("I", uids), array("Q", modseqs), flags)
    view = SelectedView.from_columns(1, "INBOX", False, 7, (uids[-1] if uids else 0) + 1, 40,
                                     columns, recent)
    if uids and draw(st.booleans()):
        # What another session did: expunges (pending: still numbered),
        # flag changes and new messages, some of them \\Recent here.
        gone = draw(st.sets(st.sampled_from(uids), max_size=5))
        changed = [IndexEntry(u, 41 + k, draw(st.sampled_from(sets)), 10, NOW)
                   for k, u in enumerate(draw(st.sets(st.sampled_from(uids), max_size=5)))]
        new = [IndexEntry(uids[-1] + k, 50 + k, draw(st.sampled_from(sets)), 10, NOW)
               for k in range(1, draw(st.integers(0, 4)) + 1)]
        claimed = [e.uid for e in new if draw(st.booleans())]
        view.absorb(FolderChanges(60, uids[-1] + 10, (*changed, *new), tuple(gone)), claimed)
        if draw(st.booleans()):  # some expunges told: the numbers move
            view.expunge_now(draw(st.sets(st.sampled_from(sorted(gone)), max_size=2))
                             if gone else ())
    return view


def _numbers(draw: st.DrawFn, largest: int) -> c.SequenceSet:
    value = st.one_of(st.none(), st.integers(1, largest + 3))
    ranges = draw(st.lists(st.tuples(value, value), min_size=1, max_size=4))
    return c.SequenceSet(tuple(c.SeqRange(a, b) for a, b in ranges))


@st.composite
def leaves(draw: st.DrawFn) -> c.SearchKey:
    kind = draw(st.sampled_from(("all", "flag", "flag", "flag", "seq", "uid", "saved",
                                 "modseq")))
    if kind == "all":
        return c.SearchAll()
    if kind == "flag":
        return c.SearchFlag(draw(st.sampled_from(ASKED)), draw(st.booleans()))
    if kind == "seq":
        return c.SearchSeqSet(_numbers(draw, 35))
    if kind == "uid":
        return c.SearchUid(_numbers(draw, 130))
    if kind == "saved":
        saved = c.SequenceSet((), saved=True)
        return c.SearchUid(saved) if draw(st.booleans()) else c.SearchSeqSet(saved)
    return c.SearchModSeq(draw(st.integers(0, 62)))


keys = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.builds(c.SearchNot, inner),
        st.builds(c.SearchOr, inner, inner),
        st.builds(c.SearchAnd, st.lists(inner, min_size=1, max_size=4).map(tuple)),
    ),
    max_leaves=12,
)


def _oracle(view: SelectedView, key: c.SearchKey, saved: frozenset[int],
            only: list[int] | None = None) -> list[tuple[int, int, int]]:
    """The engine's per-message answer, as `matching` computed it before."""
    positions: list[int] | range = range(view.exists)
    if only is not None:
        positions = [(view.seq_of(u) or 0) - 1 for u in view.present(only)]
    return _run(None, view.folder_id, key, view_messages(view, positions, {}),
                frozenset(view.recent), view.max_uid(), NOW, saved)


def _columns(view: SelectedView, key: c.SearchKey, saved: frozenset[int],
             only: list[int] | None = None) -> list[tuple[int, int, int]]:
    found = _select_columns(key, view_columns(view, only), saved)
    return list(zip(found.seqs, found.uids, found.modseqs, strict=True))


@settings(max_examples=400, deadline=None)
@given(views(), keys, st.data())
def test_columns_answer_as_the_engine(view: SelectedView, key: c.SearchKey,
                                      data: st.DataObject) -> None:
    assert on_columns(key)
    # "$" may name messages expunged since it was saved, and others
    saved = frozenset(data.draw(st.sets(st.integers(1, 130), max_size=20)))
    assert _columns(view, key, saved) == _oracle(view, key, saved)


@settings(max_examples=200, deadline=None)
@given(views(), keys, st.data())
def test_columns_answer_for_some_messages_as_the_engine(view: SelectedView, key: c.SearchKey,
                                                       data: st.DataObject) -> None:
    """An updating context looks again at the messages that changed only,
    for a key about each message alone (`imapd.contexts.local`)."""
    if not local(key):
        key = c.SearchNot(c.SearchFlag("\\Deleted"))
    saved = frozenset(data.draw(st.sets(st.integers(1, 130), max_size=20)))
    only = sorted(data.draw(st.sets(st.integers(1, 130), max_size=20)))
    assert _columns(view, key, saved, only) == _oracle(view, key, saved, only)


def _key(text: str) -> c.SearchKey:
    cmd = parse_command([b"A1 SEARCH " + text.encode()], [])
    assert isinstance(cmd, c.Search)
    return cmd.key


@pytest.mark.parametrize("text", [
    "ALL", "UNDELETED", "UNSEEN", "SEEN", "DELETED", "FLAGGED UNSEEN", "NEW", "OLD", "RECENT",
    "NOT RECENT", "ANSWERED", "UNANSWERED", "DRAFT", "UNDRAFT", "KEYWORD $junk",
    "UNKEYWORD $JUNK", "UNFLAGGED", "1:*", "*", "2,4:6", "UID 3:*", "UID *", "$", "UID $",
    "NOT $", "OR SEEN FLAGGED", "NOT (UNSEEN OR DELETED 1:3)", "MODSEQ 45", "UNDELETED MODSEQ 5",
    "OR (UID 1:10 UNSEEN) (NOT 3:*)", "(((UNDELETED)))",
])
def test_what_clients_send(text: str) -> None:
    """Keys as webmails, Thunderbird and Outlook send them, through the parser,
    over a folder with every case at once."""
    rnd = random.Random(text)
    uids = sorted(rnd.sample(range(1, 400), 120))
    sets = [frozenset(s) for s in ((), ("\\Seen",), ("\\Seen", "\\Deleted"), ("$Junk",),
                                   ("\\Flagged", "\\Answered", "\\Draft"), ("\\Seen", "$junk"))]
    columns = IndexColumns(array("I", uids), array("Q", [rnd.randrange(1, 60) for _ in uids]),
                           [rnd.choice(sets) for _ in uids])
    view = SelectedView.from_columns(1, "INBOX", False, 7, 400, 60, columns,
                                     rnd.sample(uids, 10))
    view.absorb(FolderChanges(70, 420, (IndexEntry(401, 70, sets[2], 10, NOW),),
                              tuple(rnd.sample(uids, 5))), [401])
    saved = frozenset(rnd.sample(range(1, 420), 60))
    key = _key(text)
    assert on_columns(key)
    found = _columns(view, key, saved)
    assert found == _oracle(view, key, saved)
    if text == "UNDELETED":
        assert 0 < len(found) < view.exists


@pytest.mark.parametrize("text", [
    "LARGER 10", "SINCE 1-Jan-2026", "FROM a", "SUBJECT x", "BODY y", "TEXT z", "OLDER 5",
    "UNDELETED HEADER X-A b", "OR SEEN SENTBEFORE 1-Jan-2020", "NOT SMALLER 4",
])
def test_keys_about_the_message_itself_take_the_engine(text: str) -> None:
    assert not on_columns(_key(text))


def test_a_big_folder_is_answered_whole() -> None:
    """Many messages (the masks hold one byte each, a whole folder in one
    integer): the same answer, and the handful of flag sets looked at once."""
    rnd = random.Random(11)
    n = 20_000
    uids = array("I", range(1, n + 1))
    sets = [frozenset(), frozenset({"\\Seen"}), frozenset({"\\Seen", "\\Deleted"})]
    flags = [sets[0] if u % 7 == 0 else sets[2] if u % 20 == 0 else sets[1] for u in uids]
    modseqs = array("Q", (rnd.randrange(1, 1000) for _ in uids))
    recent = set(rnd.sample(range(1, n + 1), 50))
    saved = frozenset(rnd.sample(range(1, n + 1), 500))
    view = SelectedView.from_columns(1, "INBOX", False, 7, n + 1, 1000,
                                     IndexColumns(uids, modseqs, flags), recent)
    for text in ("UNDELETED", "UNSEEN", "OR NEW FLAGGED", "NOT $ UNDELETED 100:*",
                 "UID 5000:6000 MODSEQ 500", "NOT RECENT"):
        key = _key(text)
        assert _columns(view, key, saved) == _oracle(view, key, saved), text
    chosen = select(_key("UNDELETED"), range(1, n + 1), uids, modseqs, flags,
                    max_seq=n, max_uid=n)
    assert len(chosen) == n and sum(chosen) == n - n // 20 + n // 140


def test_an_empty_folder() -> None:
    view = SelectedView.from_columns(1, "INBOX", False, 7, 1, 1,
                                     IndexColumns(array("I"), array("Q"), []), [])
    for text in ("UNDELETED", "*", "UID *", "NOT 1:*", "$", "RECENT"):
        assert _columns(view, _key(text), frozenset({1})) == []
