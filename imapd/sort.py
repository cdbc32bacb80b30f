"""SORT and THREAD (RFC 5256, RFC 5957 DISPLAYFROM / DISPLAYTO): ordering
and threading messages by the keys kept at delivery (`storage.sortkeys`).

Pure logic over the keys of the messages, given in sequence order (or
`Item`s): no Twisted, no store calls. Strings compare under
i;ascii-casemap (ASCII letters upper-cased, then octet order: Python compares
code points, which orders like the UTF-8 octets). Ties, and equal keys under
every criterion, fall back to the sequence number (RFC 5256 3).

Everything is iterative (a thread as deep as the folder is long, a chain of
100,000 replies, must not exhaust Python's recursion limit) and linear but
for the sorts: a 100,000-message folder is sorted or threaded in a fraction
of a second.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

from imapd.parser.commands import SortCriterion, SortKey, ThreadAlgorithm
from storage.interface import SortKeys
from storage.sortkeys import paused_gc

_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def casemap(text: str) -> str:
    """i;ascii-casemap (RFC 4790 9.2): only a-z are folded."""
    return text.translate(_ASCII_UPPER)


class Item(NamedTuple):
    """One message taking part: its sequence number in the session, its UID
    and its keys (with size and internal date)."""

    seq: int
    uid: int
    keys: SortKeys


def sent_date(k: SortKeys) -> int:
    """RFC 5256 DATE: the sent date, else the internal date."""
    sent = k.sent
    return k.arrival if sent is None else sent


_KEY_FUNCS: dict[SortKey, Callable[[SortKeys], Any]] = {
    SortKey.ARRIVAL: lambda k: k.arrival,
    SortKey.DATE: sent_date,
    SortKey.SIZE: lambda k: k.size,
    SortKey.SUBJECT: lambda k: casemap(k.subject),
    SortKey.FROM: lambda k: casemap(k.from_),
    SortKey.TO: lambda k: casemap(k.to),
    SortKey.CC: lambda k: casemap(k.cc),
    SortKey.DISPLAYFROM: lambda k: casemap(k.display_from),
    SortKey.DISPLAYTO: lambda k: casemap(k.display_to),
}


def sort_order(keys: Sequence[SortKeys], criteria: Sequence[SortCriterion]) -> list[int]:
    """Positions in `keys` (given in sequence-number order) in the order of
    the criteria; ties keep sequence order (ascending, whatever REVERSE
    says: it reverses its criterion only)."""
    order = list(range(len(keys)))
    # Stable sorts from the last criterion to the first: each keeps the
    # order of the ones after it among its ties (REVERSE included). Each
    # key is computed once per message.
    for crit in reversed(criteria):
        values = list(map(_KEY_FUNCS[crit.key], keys))
        order.sort(key=values.__getitem__, reverse=crit.reverse)
    return order


def sort_items(items: Sequence[Item], criteria: Sequence[SortCriterion]) -> list[Item]:
    """`items` ordered by the criteria (`sort_order`)."""
    ordered = sorted(items, key=lambda i: i.seq)
    return [ordered[j] for j in sort_order([i.keys for i in ordered], criteria)]


# ------------------------------------------------------------------ threads
#
# Containers are ints: 0 .. n-1 the messages, in sequence order; from n on
# the dummies (a Message-ID referred to that no message has, or a thread
# root made in step 5). A container's parent is an int (-1: none), and the
# tree is kept as parent links only while it is built: every set of
# siblings is sorted in the end (by sent date, then sequence number: no two
# messages tie), so their order before never matters, and the children
# lists are made once, walking the messages in that order. No object per
# container, nothing the cyclic collector has to free.

_NONE = -1


class Threads(NamedTuple):
    """The threads of `messages` messages, 0 .. messages-1 in sequence order
    (the others dummies): their roots in order, and each container's
    children in order (None: none)."""

    messages: int
    roots: list[int]
    children: list[list[int] | None]


def thread(items: Sequence[Item], algorithm: ThreadAlgorithm, uid: bool = False) -> str:
    """The THREAD response's data for `items` (`thread_keys`,
    `render_threads`)."""
    ordered = sorted(items, key=lambda i: i.seq)
    threads = thread_keys([i.keys for i in ordered], algorithm)
    return render_threads(threads, [i.uid if uid else i.seq for i in ordered])


def thread_keys(keys: Sequence[SortKeys], algorithm: ThreadAlgorithm) -> Threads:
    """The threads of the messages whose keys are `keys`, in sequence
    order."""
    with paused_gc():  # 100,000 lists made at once
        if algorithm is ThreadAlgorithm.ORDEREDSUBJECT:
            return _ordered_subject(keys)
        return _references(keys)


def _by_date(keys: Sequence[SortKeys]) -> list[int]:
    """The messages by sent date, ties by sequence number (a stable sort
    of messages given in sequence order)."""
    return sorted(range(len(keys)), key=list(map(sent_date, keys)).__getitem__)


def _ordered_subject(keys: Sequence[SortKeys]) -> Threads:
    """RFC 5256 ORDEREDSUBJECT: grouped by base subject; in each group the
    first message by sent date is the parent of all the others; threads in
    the order of their first messages' dates."""
    subjects = [casemap(k.subject) for k in keys]
    parent = [_NONE] * len(keys)
    first: dict[str, int] = {}
    order = _by_date(keys)
    for i in order:
        root = first.setdefault(subjects[i], i)
        if root != i:
            parent[i] = root
    return _assemble(len(keys), parent, order)


def _references(keys: Sequence[SortKeys]) -> Threads:
    """RFC 5256 REFERENCES (after Jamie Zawinski's algorithm), steps 1-6."""
    n = len(keys)
    # (1) one container per Message-ID: the first message that has it (a
    # reference met before that message is linked to it at once: the same
    # container a dummy taking the message in would have become); a
    # missing or duplicate id leaves its message a container of its own
    ids = [k.message_id for k in keys]
    table: dict[str | None, int] = dict(zip(reversed(ids), range(n - 1, -1, -1), strict=True))
    table.pop(None, None)
    parent = [_NONE] * n
    kids = [0] * n  # how many children: most containers have none, and
    # then cannot be the ancestor of anything
    lookup = table.get
    for i, k in enumerate(keys):
        refs = k.references
        if not refs and parent[i] == _NONE:
            continue
        # (1A) link the References in order, never changing a link already
        # made and never making a loop
        prev = _NONE
        for ref in refs:
            r = lookup(ref)
            if r is None:  # a dummy
                r = table[ref] = len(parent)
                parent.append(prev)
                kids.append(0)
                if prev != _NONE:
                    kids[prev] += 1
            elif prev != _NONE and parent[r] == _NONE:
                a = prev
                if kids[r]:  # else it is the ancestor of nothing else
                    while a != _NONE and a != r:
                        a = parent[a]
                if a != r:  # r is neither prev nor an ancestor of it
                    parent[r] = prev
                    kids[prev] += 1
            prev = r
        # (1B) the last reference (or none) is the parent: a parent guessed
        # from another message's References gives way
        if prev != _NONE and kids[i]:
            a = prev
            while a != _NONE and a != i:
                a = parent[a]
            if a == i:
                prev = _NONE
        elif prev == i:
            prev = _NONE
        p = parent[i]
        if p != prev:
            if p != _NONE:
                kids[p] -= 1
            parent[i] = prev
            if prev != _NONE:
                kids[prev] += 1
    order = _by_date(keys)
    # (3) dummies pruned, (4) roots in order
    roots, first_child, at_root = _prune(n, parent, order)
    # (5) roots gathered by base subject, (6) every level in order
    _group_by_subject(keys, n, parent, roots, first_child, at_root)
    return _assemble(n, parent, order)


def _prune(n: int, parent: list[int],
           order: list[int]) -> tuple[list[int], dict[int, int], dict[int, list[int]]]:
    """Steps 2 to 4: the roots in order, without dummies that have no
    children; a dummy with children gives them to its parent (at the root
    level only when it has a single child). Returns them with each dummy
    root's first child (by which it is ordered) and its children.

    A dummy below the root gives its messages to the nearest container
    above it that stays (a message, or a root): found by walking up through
    dummies only, each walk remembered for the dummies it passed, so the
    work is linear in the dummies and their children, whatever the shape
    (found by review: sorting the dummies by depth walked each one to its
    root, quadratic on a chain of Message-IDs no message has, which anyone
    who can send mail to a box can make)."""
    holder: dict[int, int] = {}
    for d in range(n, len(parent)):
        p = parent[d]
        if p == _NONE:
            continue  # a root
        path = [d]
        while p >= n and p not in holder and parent[p] != _NONE:
            path.append(p)
            p = parent[p]
        h = holder.get(p, p)  # a dummy met before: where its messages go
        for q in path:
            holder[q] = h
    # below the root every container is now a message; a dummy root keeps
    # its messages, those of the dummies below it too
    at_root: dict[int, list[int]] = {}
    for i in range(n):
        p = parent[i]
        if p >= n:
            h = parent[i] = holder.get(p, p)
            if h >= n:
                at_root.setdefault(h, []).append(i)
    for only in at_root.values():
        if len(only) == 1:  # a dummy root with one child gives way to it
            parent[only[0]] = _NONE
    roots: list[int] = []
    first_child: dict[int, int] = {}
    for i in order:
        p = parent[i]
        if p == _NONE:
            roots.append(i)
        elif p >= n and p not in first_child:
            first_child[p] = i
            roots.append(p)
    return roots, first_child, at_root


def _group_by_subject(keys: Sequence[SortKeys], n: int, parent: list[int], roots: list[int],
                      first_child: dict[int, int], at_root: dict[int, list[int]]) -> None:
    """Step 5: threads whose roots share a base subject are merged (new
    dummies added to `parent`)."""
    subjects: list[tuple[str, bool]] = []
    for root in roots:
        k = keys[first_child[root] if root >= n else root]
        subjects.append((casemap(k.subject), k.reply))
    table: dict[str, int] = {}
    for i, root in enumerate(roots):
        subject, reply = subjects[i]
        if not subject:
            continue
        j = table.get(subject)
        if j is None:
            table[subject] = i
            continue
        old = roots[j]
        # a dummy is preferred, then a subject that is not a reply
        if (root >= n and old < n) or (
                old < n and root < n and subjects[j][1] and not reply):
            table[subject] = i
    merged: dict[str, int] = {}  # subject -> the root the table's entry became
    for i, current in enumerate(roots):
        subject, reply = subjects[i]
        if not subject:
            continue
        j = table[subject]
        other = merged.get(subject, roots[j])
        if other == current:
            continue
        if current >= n and other >= n:
            for child in at_root[current]:
                parent[child] = other
        elif other >= n or (reply and not subjects[j][1]):
            parent[current] = other
        else:
            dummy = len(parent)
            parent.append(_NONE)
            parent[other] = dummy
            parent[current] = dummy
            merged[subject] = dummy


def _assemble(n: int, parent: list[int], order: list[int]) -> Threads:
    """Steps 4 and 6: the children lists and the roots, each in order (the
    messages walked in order; a dummy, only ever at the root, comes with
    its first child)."""
    children: list[list[int] | None] = [None] * len(parent)
    roots: list[int] = []
    for i in order:
        p = parent[i]
        if p == _NONE:
            roots.append(i)
            continue
        c = children[p]
        if c is None:
            children[p] = [i]
            if p >= n:
                roots.append(p)
        else:
            c.append(i)
    return Threads(n, roots, children)


def render_threads(threads: Threads, numbers: Sequence[int]) -> str:
    """The THREAD response's data: ``(2)(3 6 (4 23)(44 7 96))``;
    `numbers` are the messages' sequence numbers or UIDs, in sequence
    order."""
    names = list(map(str, numbers))
    n, children = threads.messages, threads.children
    parts: list[str] = []
    out = parts.append
    stack = threads.roots[::-1]
    while stack:
        c = stack.pop()
        if c == _NONE:
            out(")")
            continue
        out("(")
        below = children[c]
        if c < n:  # a message (a dummy, only ever a root, has no number)
            out(names[c])
            # a chain of single replies: one level, no parentheses
            while below is not None and len(below) == 1:
                c = below[0]
                out(" ")
                out(names[c])
                below = children[c]
            if below is None:
                out(")")
                continue
            out(" ")
        assert below is not None  # a dummy has children
        stack.append(_NONE)  # closes this thread once its branches are out
        stack.extend(below[::-1])
    return "".join(parts)


# ------------------------------------------------------------------ answers


class ResultCache:
    """The last SORT and THREAD answers of this process, by everything they
    depend on: the folder and its UIDVALIDITY, the messages chosen (their
    sequence numbers and UIDs), the criteria or algorithm, the UID form. A
    message's keys never change, so an answer stays right for as long as the
    same messages are chosen; mail clients sort or thread a folder again
    after every refresh (webmails on every page). Used from store threads."""

    def __init__(self, size: int = 16) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._size = size

    @staticmethod
    def key(folder_id: int, uidvalidity: int, what: Hashable, uid: bool,
            seqs: Sequence[int], uids: Sequence[int]) -> Hashable:
        digest = hashlib.blake2b(digest_size=20)
        for numbers in (seqs, uids):
            digest.update(numbers.tobytes() if isinstance(numbers, array)
                          else array("I", numbers).tobytes())
        return (folder_id, uidvalidity, what, uid, len(uids), digest.digest())

    def get(self, key: Hashable) -> Any:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def results_for(services: Any) -> ResultCache:
    """The process's cache for these services (one per Services object, as
    the folder watcher)."""
    cache: ResultCache | None = getattr(services, "_imap_sort_results", None)
    if cache is None:
        cache = ResultCache()
        services._imap_sort_results = cache
    return cache
