"""SORT and THREAD (RFC 5256, RFC 5957 DISPLAYFROM / DISPLAYTO): ordering
and threading messages by the keys kept at delivery (`storage.sortkeys`).

Pure logic over `Item`s: no Twisted, no store calls. Strings compare under
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


class _Node:
    """A container of the REFERENCES algorithm: a message, or a dummy
    (item None) standing for a Message-ID referred to but not present."""

    __slots__ = ("item", "parent", "children", "order")

    def __init__(self, item: Item | None = None, order: tuple[int, int] = (0, 0)) -> None:
        self.item = item
        self.parent: _Node | None = None
        self.children: list[_Node] = []
        # what siblings are sorted by: (sent date, sequence number); a
        # dummy's is its first child's
        self.order = order

    def is_ancestor_of(self, other: _Node) -> bool:
        if not self.children:
            return False  # cheap answer for nearly every container
        n: _Node | None = other
        while n is not None:
            if n is self:
                return True
            n = n.parent
        return False

    def adopt(self, child: _Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def first_message(self) -> _Node:
        n = self
        while n.item is None and n.children:
            n = n.children[0]
        return n


def thread(items: Sequence[Item], algorithm: ThreadAlgorithm) -> list[_Node]:
    """The threads of `items` (their roots, in order)."""
    ordered = sorted(items, key=lambda i: i.seq)
    # the containers refer to each other (parent, children): the collector
    # would walk them again and again while they are built; it frees them
    # once, later
    with paused_gc():
        if algorithm is ThreadAlgorithm.ORDEREDSUBJECT:
            return _ordered_subject(ordered)
        return _references(ordered)


def _order(n: _Node) -> tuple[int, int]:
    return n.order


def _ordered_subject(items: list[Item]) -> list[_Node]:
    """RFC 5256 ORDEREDSUBJECT: grouped by base subject; in each group the
    first message by sent date is the parent of all the others; threads in
    the order of their first messages' dates."""
    nodes = [_Node(i, (sent_date(i.keys), i.seq)) for i in items]
    subjects = [casemap(i.keys.subject) for i in items]
    order = sorted(range(len(nodes)), key=lambda j: (subjects[j], nodes[j].order))
    groups: dict[str, _Node] = {}
    roots: list[_Node] = []
    for j in order:
        node = nodes[j]
        root = groups.get(subjects[j])
        if root is None:
            groups[subjects[j]] = node
            roots.append(node)
        else:
            node.parent = root
            root.children.append(node)
    roots.sort(key=_order)
    return roots


def _references(items: list[Item]) -> list[_Node]:
    """RFC 5256 REFERENCES (after Jamie Zawinski's algorithm), steps 1-6."""
    table: dict[str, _Node] = {}
    lookup = table.get
    nodes: list[_Node] = []
    dummies: list[_Node] = []
    node_class = _Node
    for item in items:
        # (1) one container per Message-ID; a missing or duplicate one gets
        # a container of its own (a unique id that nothing refers to)
        keys = item.keys
        mid = keys.message_id
        sent = keys.sent
        order = (keys.arrival if sent is None else sent, item.seq)
        node = lookup(mid) if mid is not None else None
        if node is None or node.item is not None:
            node = node_class(item, order)
            if mid is not None and mid not in table:
                table[mid] = node
        else:
            node.item = item  # a dummy made for a reference until now
            node.order = order
        nodes.append(node)
        # (1A) link the References in order, never changing a link already
        # made and never making a loop
        prev: _Node | None = None
        for ref in keys.references:
            r = lookup(ref)
            if r is None:
                r = table[ref] = node_class()
                dummies.append(r)
            if (prev is not None and r.parent is None and r is not prev
                    and not r.is_ancestor_of(prev)):
                prev.adopt(r)
            prev = r
        # (1B) the last reference (or none) is the parent: a parent guessed
        # from another message's References gives way
        if prev is not None and (prev is node or node.is_ancestor_of(prev)):
            prev = None
        if node.parent is not prev:
            if node.parent is not None:
                node.parent.children.remove(node)
                node.parent = None
            if prev is not None:
                prev.adopt(node)
    # (3) dummies pruned
    roots = _prune(nodes, [d for d in dummies if d.item is None])
    # (4) siblings sorted by date: only the root level matters to step 5
    # (a root's subject, a dummy's by its first child), and step 6 sorts
    # every level after it
    _sort_siblings((), roots)
    # (5) roots gathered by base subject, (6) sorted again
    roots = _group_by_subject(roots)
    _sort_siblings(nodes, roots)
    return roots


def _prune(nodes: list[_Node], dummies: list[_Node]) -> list[_Node]:
    """Steps 2 and 3: the root set, without dummies that have no children;
    a dummy with children gives them to its parent (at the root level only
    when it has a single child).

    A dummy below the root gives its messages to the nearest container
    above it that stays (a message, or a root): found by walking up through
    dummies only, each walk remembered for the dummies it passed, so the
    work is linear in the dummies and their children, whatever the shape
    (found by review: sorting the dummies by depth walked each one to its
    root, quadratic on a chain of Message-IDs no message has, which anyone
    who can send mail to a box can make). The order of siblings is step 4's
    and 6's."""
    holder: dict[int, _Node] = {}
    emptied: dict[int, _Node] = {}  # containers that lose dummy children
    for d in dummies:
        parent = d.parent
        if parent is None:
            continue  # a root: below
        path = [d]
        p = parent
        while p.item is None and id(p) not in holder and p.parent is not None:
            path.append(p)
            p = p.parent
        h = holder.get(id(p), p)  # a dummy met before: where its messages went
        for q in path:
            holder[id(q)] = h
        emptied[id(parent)] = parent
        for c in d.children:
            if c.item is not None:
                c.parent = h
                h.children.append(c)
        d.children = []
        d.parent = None
    for n in emptied.values():
        if n.item is not None or n.parent is None:  # a container that stays
            n.children = [c for c in n.children if c.item is not None]
    kept: list[_Node] = []
    for d in dummies:
        if d.parent is not None or id(d) in holder:
            continue  # moved away above
        if len(d.children) > 1:
            kept.append(d)  # the root of its children
            continue
        for child in d.children:  # a dummy root with one child gives way to it
            child.parent = None
        d.children = []
    roots = [n for n in nodes if n.parent is None]
    roots.extend(kept)
    return roots


def _sort_siblings(nodes: Sequence[_Node], roots: list[_Node]) -> None:
    """Steps 4 and 6: each set of siblings by sent date, ties by sequence
    number. Below the root every container is a message; a dummy (only at
    the root) sorts by its first child."""
    for n in nodes:
        if len(n.children) > 1:
            n.children.sort(key=_order)
    for r in roots:
        if r.item is None:
            if len(r.children) > 1:
                r.children.sort(key=_order)
            r.order = r.children[0].order
    roots.sort(key=_order)


def _group_by_subject(roots: list[_Node]) -> list[_Node]:
    """Step 5: threads whose roots share a base subject are merged."""
    subjects: list[tuple[str, bool]] = []
    for root in roots:
        item = root.first_message().item
        subjects.append(("", False) if item is None
                        else (casemap(item.keys.subject), item.keys.reply))
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
        if (root.item is None and old.item is not None) or (
                old.item is not None and root.item is not None and subjects[j][1] and not reply):
            table[subject] = i
    out: list[_Node | None] = list(roots)
    merged: dict[str, _Node] = {}  # subject -> the root the table's entry became
    for i, current in enumerate(roots):
        subject, reply = subjects[i]
        if not subject:
            continue
        j = table[subject]
        other = merged.get(subject, roots[j])
        if other is current:
            continue
        if current.item is None and other.item is None:
            for child in list(current.children):
                other.adopt(child)
            out[i] = None
        elif other.item is None:
            other.adopt(current)
            out[i] = None
        elif reply and not subjects[j][1]:
            other.adopt(current)
            out[i] = None
        else:
            dummy = _Node()
            dummy.adopt(other)
            dummy.adopt(current)
            out[j] = dummy
            out[i] = None
            merged[subject] = dummy
    return [r for r in out if r is not None]


def release(roots: list[_Node]) -> None:
    """Takes the threads apart (empties `roots`): the containers refer to
    their parents, so they would wait for the cyclic collector, and freeing
    100,000 of them that way cost it as much as threading them."""
    stack = list(roots)
    roots.clear()
    while stack:
        n = stack.pop()
        stack.extend(n.children)
        n.children = []
        n.parent = None


def render_threads(roots: Sequence[_Node], uid: bool) -> str:
    """The THREAD response's data: ``(2)(3 6 (4 23)(44 7 96))``."""
    parts: list[str] = []
    stack: list[_Node | str] = list(reversed(roots))
    while stack:
        top = stack.pop()
        if isinstance(top, str):
            parts.append(top)
            continue
        parts.append("(")
        n = top
        first = True
        while True:
            if n.item is not None:
                parts.append(("" if first else " ") + str(n.item.uid if uid else n.item.seq))
                first = False
            if len(n.children) == 1:
                n = n.children[0]
                continue
            stack.append(")")
            if n.children:
                if not first:
                    parts.append(" ")
                stack.extend(reversed(n.children))
            break
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
