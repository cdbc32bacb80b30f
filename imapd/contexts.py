"""RFC 5267 4.3 updating contexts: the results of SEARCH and SORT commands
sent with ``RETURN (UPDATE ...)``, kept up to date for the client.

A context holds its result as UIDs, in mailbox order (SEARCH) or in the
requested order (SORT). When the selected folder changed, the result is
computed again and the difference told with ``ADDTO`` / ``REMOVEFROM``
return data items (4.3.2-4.3.4): for SEARCH at context position 0 in
mailbox order, for SORT at the positions in the sorted list, pairs to be
applied in the order they appear. The contexts live on the selected view, so
a new SELECT or EXAMINE, CLOSE and UNSELECT drop them (4.3).

Pure logic: no Twisted, no store calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imapd.parser.commands import (
    SearchKey,
    SearchModSeq,
    SearchOlder,
    SearchSeqSet,
    SearchUid,
    SearchYounger,
    SortCriterion,
)
from imapd.responses import esearch_update
from imapd.search import leaves

# (position, UIDs): one pair of an ADDTO or REMOVEFROM data item.
Pair = tuple[int, list[int]]


@dataclass
class UpdatingContext:
    tag: str  # the search correlator: the searching command's tag
    uid: bool  # UID SEARCH / UID SORT: updates name UIDs, else sequence numbers
    key: SearchKey
    criteria: tuple[SortCriterion, ...] | None  # None: a SEARCH (mailbox order)
    saved: frozenset[int]  # "$" as it was when the command ran (RFC 5182)
    result: list[int]  # UIDs, in mailbox order or in sort order
    state: tuple[int, ...] = field(default=())  # the view's `state()` it was computed on
    # A result computed again whose new members are not told yet (the view
    # tells them after EXISTS).
    joining: list[int] | None = None

    @property
    def ordered(self) -> bool:
        return self.criteria is not None


@dataclass
class Update:
    """The difference between two results of one context: removals apply
    first (sent before EXPUNGE, with the numbers valid then), additions
    after (sent after EXISTS, with the numbers valid then)."""

    removed: list[Pair]
    added: list[Pair]


def diff(old: Sequence[int], new: Sequence[int], *, ordered: bool) -> Update:
    """`old` and `new` are UIDs, each without repeats. For an ordered (SORT)
    result, a message that stays keeps its place relative to the others that
    stay (sort keys never change): removing the runs of `old` that go, then
    inserting the runs of `new` that come at their final positions, in
    ascending order, turns `old` into `new`."""
    gone = set(old).difference(new)
    came = set(new).difference(old)
    if not ordered:
        removed = [(0, sorted(gone))] if gone else []
        added = [(0, sorted(came))] if came else []
        return Update(removed, added)
    return Update(_runs(old, gone, shift=True), _runs(new, came, shift=False))


def _runs(items: Sequence[int], chosen: set[int], *, shift: bool) -> list[Pair]:
    """Runs of consecutive `items` in `chosen`, each with its 1-based position;
    `shift`: the position once the runs before it are removed."""
    out: list[Pair] = []
    taken = 0
    i, n = 0, len(items)
    while i < n:
        if items[i] not in chosen:
            i += 1
            continue
        start = i
        while i < n and items[i] in chosen:
            i += 1
        out.append((start + 1 - (taken if shift else 0), list(items[start:i])))
        taken += i - start
    return out


def local(key: SearchKey) -> bool:
    """Whether `key` looks at nothing but each message itself (its flags,
    size, dates, headers, body, "$" as kept): then only the messages that
    came or whose flags changed need to be looked at again. Sequence numbers
    and ``*`` move with other messages, MODSEQ grows without a flag
    change, OLDER and YOUNGER with time: those are computed again whole."""
    for k in leaves(key):
        if isinstance(k, SearchSeqSet | SearchUid) and not k.sequence_set.saved:
            return False
        if isinstance(k, SearchModSeq | SearchOlder | SearchYounger):
            return False
    return True


def keep(contexts: dict[str, UpdatingContext], context: UpdatingContext, limit: int) -> bool:
    """Adds the context unless `limit` are kept already (RFC 5267 4.3.1:
    at least one must be allowed)."""
    if len(contexts) >= limit:
        return False
    contexts[context.tag] = context
    return True


# An updating context that must be computed again whole at each change (a
# SORT, or a key on sequence numbers, MODSEQ, OLDER/YOUNGER) is refused on a
# folder larger than this: every change anyone makes would cost a pass over
# the folder per such context (found by review).
WHOLE_UPDATE_MAX = 10_000


def costly(context: UpdatingContext, messages: int) -> bool:
    """Whether keeping `context` up to date would mean going over the whole
    folder of `messages` at every change, on a folder too large for it."""
    return messages > WHOLE_UPDATE_MAX and (
        context.criteria is not None or not local(context.key))


def render(context: UpdatingContext, item: str, pairs: Sequence[Pair],
           number: Callable[[int], int]) -> bytes:
    """``* ESEARCH (TAG "t") [UID] ADDTO (pos set ...)`` (or REMOVEFROM);
    `number` turns a UID into what the client sees (itself, or its
    sequence number now)."""
    numbered = [(pos, [number(u) for u in uids]) for pos, uids in pairs]
    return esearch_update(context.tag, context.uid, item, numbered, ordered=context.ordered)
