"""The THREAD algorithms as `imapd.sort` first had them: a container object
per message (parent, children), RFC 5256's steps one after the other, and
the pruning of dummies deepest first (quadratic on a long chain of missing
Message-IDs, and obviously right). Kept as the oracle that the int-based
engine must agree with (tests/unit/test_imap_sort.py)."""

from __future__ import annotations

from collections.abc import Sequence

from imapd.parser.commands import ThreadAlgorithm
from imapd.sort import Item, casemap, sent_date


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
    """The first, quadratic pruning (deepest dummies first, spliced into
    their parent), obviously right and kept as the oracle of the linear one."""
    def depth(n: _Node) -> int:
        d, p = 0, n.parent
        while p is not None:
            d, p = d + 1, p.parent
        return d

    gone: set[int] = set()
    for d in sorted(dummies, key=depth, reverse=True):
        parent = d.parent
        if parent is None:
            if len(d.children) > 1:
                continue
            for child in d.children:
                child.parent = None
            gone.add(id(d))
            continue
        siblings = parent.children
        i = siblings.index(d)
        for child in d.children:
            child.parent = parent
        siblings[i : i + 1] = d.children
        gone.add(id(d))
    roots = [n for n in nodes if n.parent is None]
    roots.extend(d for d in dummies if d.parent is None and id(d) not in gone)
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
