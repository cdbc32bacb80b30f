"""RFC 5267 4.3 ADDTO / REMOVEFROM: the difference of two results of an
updating context, applied as a client must apply it (4.3.3, 4.3.4)."""

from __future__ import annotations

import random

import pytest

from imapd.contexts import Pair, UpdatingContext, diff, local, render
from imapd.parser.commands import (
    SearchAll,
    SearchAnd,
    SearchFlag,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOlder,
    SearchOr,
    SearchSeqSet,
    SearchUid,
    SequenceSet,
    SortCriterion,
    SortKey,
)


def apply(old: list[int], removed: list[Pair], added: list[Pair]) -> list[int]:
    """A client's processing of the pairs, in order (RFC 5267 4.3.2-4.3.4)."""
    out = list(old)
    for pos, uids in removed:
        if pos == 0:
            out = [u for u in out if u not in uids]
        else:
            assert out[pos - 1 : pos - 1 + len(uids)] == uids, (out, pos, uids)
            del out[pos - 1 : pos - 1 + len(uids)]
    for pos, uids in added:
        if pos == 0:
            out = sorted(out + uids)
        else:
            out[pos - 1 : pos - 1] = uids
    return out


def sort_context(uid: bool = True) -> UpdatingContext:
    return UpdatingContext("C01", uid, SearchAll(), (SortCriterion(SortKey.DATE),),
                           frozenset(), [])


def test_rfc5267_addto_example() -> None:
    """4.3.3: 2734:2735 becomes 2731:2735; the preferred representation is
    one pair at position 1."""
    update = diff([2734, 2735], [2731, 2732, 2733, 2734, 2735], ordered=True)
    assert update.removed == []
    assert update.added == [(1, [2731, 2732, 2733])]
    line = render(sort_context(), "ADDTO", update.added, lambda u: u)
    assert line == b'* ESEARCH (TAG "C01") UID ADDTO (1 2731:2733)\r\n'


def test_search_updates_are_at_position_zero_in_mailbox_order() -> None:
    """4.3.3 / 4.3.4: a SEARCH context uses position 0, sets in mailbox order."""
    update = diff([5, 32768, 40000], [5, 40000, 32769, 32770], ordered=False)
    assert update.removed == [(0, [32768])]
    assert update.added == [(0, [32769, 32770])]
    ctx = UpdatingContext("B01", True, SearchAll(), None, frozenset(), [])
    assert render(ctx, "REMOVEFROM", update.removed, lambda u: u) == (
        b'* ESEARCH (TAG "B01") UID REMOVEFROM (0 32768)\r\n')
    assert render(ctx, "ADDTO", update.added, lambda u: u) == (
        b'* ESEARCH (TAG "B01") UID ADDTO (0 32769:32770)\r\n')


def test_sort_removals_shift_by_what_was_removed_before() -> None:
    update = diff([10, 20, 30, 40, 50, 60], [10, 30, 60], ordered=True)
    assert update.removed == [(2, [20]), (3, [40, 50])]
    assert update.added == []


def test_sort_sets_keep_the_sort_order() -> None:
    update = diff([7], [9, 8, 7, 3], ordered=True)
    assert update.added == [(1, [9, 8]), (4, [3])]
    line = render(sort_context(uid=False), "ADDTO", update.added, lambda u: u - 1)
    assert line == b'* ESEARCH (TAG "C01") ADDTO (1 8,7 4 2)\r\n'


def test_nothing_changed_is_no_pair() -> None:
    for ordered in (True, False):
        update = diff([1, 2, 3], [1, 2, 3], ordered=ordered)
        assert update.removed == [] and update.added == []


@pytest.mark.parametrize("seed", range(40))
def test_applying_the_pairs_in_order_gives_the_new_result(seed: int) -> None:
    """Any removals and insertions, with the survivors keeping their relative
    order (sort keys do not change), are turned into pairs a client applies."""
    rnd = random.Random(seed)
    universe = rnd.sample(range(1, 200), 40)  # a sort order
    old = [u for u in universe if rnd.random() < 0.5]
    new = [u for u in universe if (u in old) == (rnd.random() < 0.7)]
    update = diff(old, new, ordered=True)
    assert apply(old, update.removed, update.added) == new
    update = diff(sorted(old), sorted(new), ordered=False)
    assert apply(sorted(old), update.removed, update.added) == sorted(new)


def test_local_keys() -> None:
    """Keys about each message alone are looked at only for what changed;
    sequence numbers, ``*``, MODSEQ and time-relative keys are not."""
    some = SequenceSet(((1, 2),))
    saved = SequenceSet((), saved=True)
    assert local(SearchAll())
    assert local(SearchAnd((SearchFlag("\\Seen", False), SearchHeader("SUBJECT", "x"))))
    assert local(SearchOr(SearchUid(saved), SearchNot(SearchFlag("\\Deleted"))))
    for key in (SearchSeqSet(some), SearchUid(some), SearchModSeq(5), SearchOlder(60),
                SearchNot(SearchSeqSet(some)), SearchOr(SearchAll(), SearchUid(some)),
                SearchAnd((SearchAll(), SearchOlder(1)))):
        assert not local(key), key
