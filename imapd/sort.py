"""SORT and THREAD (RFC 5256, RFC 5957 DISPLAYFROM / DISPLAYTO): ordering
and threading messages by the keys kept at delivery (`storage.sortkeys`).

Pure logic over `Item`s: no Twisted, no store calls. Strings compare under
i;ascii-casemap (ASCII letters upper-cased, then octet order: Python compares
code points, which orders like the UTF-8 octets). Ties, and equal keys under
every criterion, fall back to the sequence number (RFC 5256 3).

Everything is iterative: a thread as deep as the folder is long (a chain of
100,000 replies) must not exhaust Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from imapd.parser.commands import SortCriterion, SortKey, ThreadAlgorithm
from storage.interface import SortKeys

_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def casemap(text: str) -> str:
    """i;ascii-casemap (RFC 4790 9.2): only a-z are folded."""
    return text.translate(_ASCII_UPPER)


@dataclass(frozen=True, slots=True)
class Item:
    """One message taking part: its sequence number in the session, UID,
    RFC822.SIZE, INTERNALDATE (Unix seconds) and stored keys."""

    seq: int
    uid: int
    size: int
    arrival: int
    keys: SortKeys

    @property
    def date(self) -> int:
        """RFC 5256 DATE: the sent date, else the internal date."""
        sent = self.keys.sent
        return self.arrival if sent is None else sent


_KEY_FUNCS: dict[SortKey, Callable[[Item], Any]] = {
    SortKey.ARRIVAL: lambda i: i.arrival,
    SortKey.DATE: lambda i: i.date,
    SortKey.SIZE: lambda i: i.size,
    SortKey.SUBJECT: lambda i: casemap(i.keys.subject),
    SortKey.FROM: lambda i: casemap(i.keys.from_),
    SortKey.TO: lambda i: casemap(i.keys.to),
    SortKey.CC: lambda i: casemap(i.keys.cc),
    SortKey.DISPLAYFROM: lambda i: casemap(i.keys.display_from),
    SortKey.DISPLAYTO: lambda i: casemap(i.keys.display_to),
}


def sort_items(items: Sequence[Item], criteria: Sequence[SortCriterion]) -> list[Item]:
    """`items` ordered by the criteria, ties by sequence number (ascending,
    whatever REVERSE says: it reverses its criterion only)."""
    out = sorted(items, key=lambda i: i.seq)
    # Stable sorts from the last criterion to the first: each keeps the
    # order of the ones after it among its ties (REVERSE included).
    for crit in reversed(criteria):
        out.sort(key=_KEY_FUNCS[crit.key], reverse=crit.reverse)
    return out


# ------------------------------------------------------------------ threads


class _Node:
    """A container of the REFERENCES algorithm: a message, or a dummy
    (item None) standing for a Message-ID referred to but not present."""

    __slots__ = ("item", "parent", "children", "order")

    def __init__(self, item: Item | None = None) -> None:
        self.item = item
        self.parent: _Node | None = None
        self.children: list[_Node] = []
        self.order: tuple[int, int] = (0, 0)  # (date, seq) it sorts by

    def is_ancestor_of(self, other: _Node) -> bool:
        if not self.children:
            return False  # cheap answer for nearly every new container
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
    if algorithm is ThreadAlgorithm.ORDEREDSUBJECT:
        return _ordered_subject(ordered)
    return _references(ordered)


def _ordered_subject(items: list[Item]) -> list[_Node]:
    """RFC 5256 ORDEREDSUBJECT: grouped by base subject; in each group the
    first message by sent date is the parent of all the others; threads in
    the order of their first messages' dates."""
    groups: dict[str, _Node] = {}
    by_subject = sorted(items, key=lambda i: (casemap(i.keys.subject), i.date, i.seq))
    roots: list[_Node] = []
    for item in by_subject:
        node = _Node(item)
        node.order = (item.date, item.seq)
        subject = casemap(item.keys.subject)
        root = groups.get(subject)
        if root is None:
            groups[subject] = node
            roots.append(node)
        else:
            node.parent = root
            root.children.append(node)
    roots.sort(key=lambda n: n.order)
    return roots


def _references(items: list[Item]) -> list[_Node]:
    """RFC 5256 REFERENCES (after Jamie Zawinski's algorithm), steps 1-6."""
    table: dict[str, _Node] = {}
    nodes: list[_Node] = []
    for item in items:
        # (1) one container per Message-ID; a missing or duplicate one gets
        # a container of its own (a unique id that nothing refers to)
        mid = item.keys.message_id
        node = table.get(mid) if mid is not None else None
        if node is None or node.item is not None:
            node = _Node(item)
            nodes.append(node)
            if mid is not None and mid not in table:
                table[mid] = node
        else:
            node.item = item  # a dummy made for a reference, listed already
        # (1A) link the References in order, never changing a link already
        # made and never making a loop
        prev: _Node | None = None
        for ref in item.keys.references:
            r = table.get(ref)
            if r is None:
                r = table[ref] = _Node()
                nodes.append(r)
            if (prev is not None and r.parent is None and r is not prev
                    and not r.is_ancestor_of(prev)):
                prev.adopt(r)
            prev = r
        # (1B) the last reference (or none) is the parent: a parent guessed
        # from another message's References gives way
        if prev is not None and (prev is node or node.is_ancestor_of(prev)):
            prev = None
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if prev is not None:
            prev.adopt(node)
    # (2) the root set
    roots = [n for n in nodes if n.parent is None]
    # (3) dummies pruned, (4) siblings sorted by date
    roots = _prune(roots)
    _sort_all(roots)
    # (5) roots gathered by base subject
    roots = _group_by_subject(roots)
    # (6) sorted again, now that threads were merged
    _sort_all(roots)
    return roots


def _prune(roots: list[_Node]) -> list[_Node]:
    """Step 3: a dummy without children goes; one with children gives them
    to its parent (at the root level only when it has a single child).
    Bottom-up, so a promoted child has been pruned already."""
    for node in _post_order(roots):
        node.children = _pruned_list(node, node.children, at_root=False)
    return _pruned_list(None, roots, at_root=True)


def _pruned_list(parent: _Node | None, nodes: list[_Node], *, at_root: bool) -> list[_Node]:
    out: list[_Node] = []
    for n in nodes:
        if n.item is None and (not at_root or len(n.children) <= 1):
            for child in n.children:
                child.parent = parent
            out.extend(n.children)
        else:
            out.append(n)
    return out


def _post_order(roots: list[_Node]) -> list[_Node]:
    """Every node below `roots` (included), children before their parent."""
    out: list[_Node] = []
    stack = list(roots)
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n.children)
    out.reverse()
    return out


def _order(n: _Node) -> tuple[int, int]:
    return n.order


def _sort_all(roots: list[_Node]) -> None:
    """Steps 4 and 6: each set of siblings by sent date (a dummy by its
    first child's), ties by sequence number; deepest sets first."""
    for n in _post_order(roots):
        if n.children:
            n.children.sort(key=_order)
        if n.item is not None:
            n.order = (n.item.date, n.item.seq)
        elif n.children:
            n.order = n.children[0].order
    roots.sort(key=_order)


def _subject_of(root: _Node) -> tuple[str, bool]:
    item = root.first_message().item
    if item is None:
        return "", False
    return casemap(item.keys.subject), item.keys.reply


def _group_by_subject(roots: list[_Node]) -> list[_Node]:
    """Step 5: threads whose roots share a base subject are merged."""
    table: dict[str, _Node] = {}
    for root in roots:
        subject, reply = _subject_of(root)
        if not subject:
            continue
        old = table.get(subject)
        if (old is None
                or (root.item is None and old.item is not None)
                or (old.item is not None and root.item is not None
                    and _subject_of(old)[1] and not reply)):
            table[subject] = root
    out: list[_Node | None] = list(roots)
    where = {id(r): i for i, r in enumerate(roots)}
    for i in range(len(out)):
        current = out[i]
        if current is None:
            continue
        root = current
        subject, reply = _subject_of(root)
        if not subject:
            continue
        other = table[subject]
        if other is root:
            continue
        if root.item is None and other.item is None:
            for child in list(root.children):
                other.adopt(child)
            out[i] = None
        elif other.item is None:
            other.adopt(root)
            out[i] = None
        elif root.item is None:
            root.adopt(other)  # not reached: the table prefers a dummy
            out[where[id(other)]] = None
            table[subject] = root
        elif reply and not other.item.keys.reply:
            other.adopt(root)
            out[i] = None
        else:
            dummy = _Node()
            j = where[id(other)]
            dummy.adopt(other)
            dummy.adopt(root)
            out[j] = dummy
            where[id(dummy)] = j
            out[i] = None
            table[subject] = dummy
    return [r for r in out if r is not None]


def render_threads(roots: Sequence[_Node], uid: bool) -> str:
    """The THREAD response's data: ``(2)(3 6 (4 23)(44 7 96))``."""
    parts: list[str] = []
    stack: list[_Node | str] = []
    for root in reversed(roots):
        stack.append(root)
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
            if n.children:
                if not first:
                    parts.append(" ")
                stack.append(")")
                stack.extend(reversed(n.children))
            else:
                stack.append(")")
            break
    return "".join(parts)
