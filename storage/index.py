"""Building folder indexes fast: `IndexEntry` records from raw rows, and a
bounded cache of large folder indexes kept valid by MODSEQ."""

from __future__ import annotations

import dataclasses
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from storage.interface import IndexEntry
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
