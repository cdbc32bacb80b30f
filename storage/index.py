"""Building folder indexes fast: `IndexEntry` records from raw rows, and a
bounded cache of large folder indexes kept valid by MODSEQ."""

from __future__ import annotations

import dataclasses
import json
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from storage.interface import IndexColumns, IndexEntry, SortKeys
from storage.sqlbase import parse_flags

_ENTRY_FIELDS = ("uid", "modseq", "flags", "size", "internal_date")
assert tuple(f.name for f in dataclasses.fields(IndexEntry)) == _ENTRY_FIELDS, (
    "storage.interface.IndexEntry changed: update index_entries"
)
_ENTRY_SETTERS = tuple(getattr(IndexEntry, name).__set__ for name in _ENTRY_FIELDS)


def uid_key(e: IndexEntry) -> int:
    return e.uid


def index_entries(rows: Iterable[Any]) -> list[IndexEntry]:
    """IndexEntry records from (uid, modseq, flags, size, internal_date) rows.

    The hot path of SELECT: a frozen dataclass's __init__ goes through
    object.__setattr__ per field, twice the cost of setting the slots directly,
    which is what this does (the field list is checked at import above)."""
    new = object.__new__
    cls = IndexEntry
    set_uid, set_modseq, set_flags, set_size, set_date = _ENTRY_SETTERS
    parse = parse_flags
    # A folder holds a handful of distinct flag strings: parse each once and
    # share the frozenset (faster, and 100,000 entries hold a few sets, not
    # 100,000; their hashes are computed once too).
    parsed: dict[str, frozenset[str]] = {}
    known = parsed.get
    fromts = datetime.fromtimestamp
    utc = UTC
    out: list[IndexEntry] = []
    append = out.append
    for uid, modseq, flags, size, idate in rows:
        e = new(cls)
        set_uid(e, uid)
        set_modseq(e, modseq)
        fs = known(flags)
        if fs is None:
            fs = parsed[flags] = parse(flags)
        set_flags(e, fs)
        set_size(e, size)
        set_date(e, fromts(idate, utc))
        append(e)
    return out


def apply_changes(
    entries: Sequence[IndexEntry], changed: Sequence[IndexEntry], gone: Iterable[int]
) -> list[IndexEntry]:
    """`entries` (UID order) with the expunged UIDs removed and the new or
    changed entries put in place: O(log n) per change plus one copy, so a
    few changes to a 100,000-message folder cost well under a millisecond."""
    out = list(entries)
    if len(changed) > len(out) // 4:  # many changes: rebuild instead
        drop = set(gone) | {e.uid for e in changed}
        out = [e for e in out if e.uid not in drop]
        out.extend(changed)
        out.sort(key=uid_key)
        return out
    for uid in sorted(gone, reverse=True):
        i = bisect_left(out, uid, key=uid_key)
        if i < len(out) and out[i].uid == uid:
            del out[i]
    for e in changed:
        i = bisect_left(out, e.uid, key=uid_key)
        if i < len(out) and out[i].uid == e.uid:
            out[i] = e
        else:
            out.insert(i, e)
    return out


class IndexCache:
    """Recently built folder indexes, keyed by folder and validated against
    (UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT) on every use, so a change made by
    another process is never missed: a stale copy is brought up to date from
    the MODSEQ it was built at. Bounded by the total number of entries."""

    def __init__(self, max_entries: int = 250_000, min_size: int = 2_000) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[int, tuple[tuple[int, int, int, int], tuple[IndexEntry, ...]]] = (
            OrderedDict()
        )
        self._total = 0
        self._max = max_entries
        self._min = min_size  # small folders are cheap to read: not worth the memory

    def get(
        self, folder_id: int
    ) -> tuple[tuple[int, int, int, int], tuple[IndexEntry, ...]] | None:
        with self._lock:
            item = self._data.get(folder_id)
            if item is not None:
                self._data.move_to_end(folder_id)
            return item

    def put(
        self, folder_id: int, version: tuple[int, int, int, int], entries: list[IndexEntry]
    ) -> None:
        with self._lock:
            old = self._data.pop(folder_id, None)
            if old is not None:
                self._total -= len(old[1])
            if len(entries) < self._min or len(entries) > self._max:
                return
            self._data[folder_id] = (version, tuple(entries))
            self._total += len(entries)
            while self._total > self._max:
                _, (_, dropped) = self._data.popitem(last=False)
                self._total -= len(dropped)


# ------------------------------------------------------------ columns


def columns_from_text(uids: str | None, modseqs: str | None, flags: str | None) -> IndexColumns:
    """IndexColumns from the database's concatenated columns (uids and
    modseqs comma-separated, flags newline-separated, all in one order).

    One string per column crosses the driver instead of 100,000 row tuples:
    the rows were half the cost of a cold SELECT on a big folder."""
    if not uids:
        return IndexColumns(array("I"), array("Q"), [])
    # json's C parser reads a list of integers twice as fast as map(int, ...).
    ul: list[int] = json.loads("[" + uids + "]")
    ml: list[int] = json.loads("[" + (modseqs or "") + "]")
    texts = (flags or "").split("\n")
    if len(texts) < len(ul):  # a trailing empty flags text is dropped by some drivers
        texts.extend([""] * (len(ul) - len(texts)))
    shared = {t: parse_flags(t) for t in set(texts)}
    f = list(map(shared.__getitem__, texts))
    ordered = sorted(ul)  # linear on sorted input
    if ordered != ul:
        # The aggregate's order is the scan's (the (folder_id, uid) index) in
        # practice, but SQL does not promise it.
        order = sorted(range(len(ul)), key=ul.__getitem__)
        ml = [ml[i] for i in order]
        f = [f[i] for i in order]
    return IndexColumns(array("I", ordered), array("Q", ml), f)


def copy_columns(cols: IndexColumns) -> IndexColumns:
    return IndexColumns(array("I", cols.uids), array("Q", cols.modseqs), list(cols.flags))


def apply_column_changes(
    cols: IndexColumns, changed: Iterable[tuple[int, int, str]], gone: Iterable[int]
) -> IndexColumns:
    """A copy of `cols` with the expunged UIDs removed and the changed or new
    (uid, modseq, flags text) rows put in place."""
    out = copy_columns(cols)
    uids, modseqs, flags = out.uids, out.modseqs, out.flags
    shared = {f: f for f in set(flags)}  # keep flag sets shared
    for uid in sorted(set(gone), reverse=True):
        i = bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            del uids[i], modseqs[i], flags[i]
    for uid, modseq, text in changed:
        fs = parse_flags(text)
        fs = shared.setdefault(fs, fs)
        i = bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            modseqs[i] = modseq
            flags[i] = fs
        else:
            uids.insert(i, uid)
            modseqs.insert(i, modseq)
            flags.insert(i, fs)
    return out


class ColumnsCache:
    """IndexCache for IndexColumns: big folders' columns, validated by the
    caller against (mailbox, UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT)."""

    def __init__(self, max_entries: int = 400_000, min_size: int = 2_000) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[int, tuple[tuple[int, int, int, int], IndexColumns]] = (
            OrderedDict()
        )
        self._total = 0
        self._max = max_entries
        self._min = min_size

    def get(self, folder_id: int) -> tuple[tuple[int, int, int, int], IndexColumns] | None:
        with self._lock:
            item = self._data.get(folder_id)
            if item is not None:
                self._data.move_to_end(folder_id)
            return item

    def put(self, folder_id: int, version: tuple[int, int, int, int], cols: IndexColumns) -> None:
        """Keeps `cols` itself: the caller hands out copies only."""
        with self._lock:
            old = self._data.pop(folder_id, None)
            if old is not None:
                self._total -= len(old[1].uids)
            n = len(cols.uids)
            if n < self._min or n > self._max:
                return
            self._data[folder_id] = (version, cols)
            self._total += n
            while self._total > self._max:
                _, (_, dropped) = self._data.popitem(last=False)
                self._total -= len(dropped.uids)


class SortKeysCache:
    """The SORT / THREAD keys of recently sorted folders, by UID: a message's
    keys never change, so an entry stays right for as long as the folder's
    UIDVALIDITY does (new messages are added, expunged ones are never asked
    for again). Bounded by the total number of messages kept."""

    def __init__(self, max_entries: int = 200_000) -> None:  # ~85 MiB per 100,000
        self._lock = threading.Lock()
        self._data: OrderedDict[int, tuple[int, dict[int, SortKeys]]] = OrderedDict()
        self._total = 0
        self._max = max_entries

    def get(self, folder_id: int, uidvalidity: int) -> dict[int, SortKeys]:
        """A snapshot of the keys known for the folder (empty if none)."""
        with self._lock:
            item = self._data.get(folder_id)
            if item is None or item[0] != uidvalidity:
                return {}
            self._data.move_to_end(folder_id)
            return dict(item[1])

    def add(self, folder_id: int, uidvalidity: int, keys: dict[int, SortKeys]) -> None:
        if not keys:
            return
        with self._lock:
            item = self._data.get(folder_id)
            if item is None or item[0] != uidvalidity:
                if item is not None:
                    self._total -= len(item[1])
                item = self._data[folder_id] = (uidvalidity, {})
            before = len(item[1])
            item[1].update(keys)
            self._total += len(item[1]) - before
            self._data.move_to_end(folder_id)
            while self._total > self._max and self._data:
                _, (_, dropped) = self._data.popitem(last=False)
                self._total -= len(dropped)
