"""The per-session view of a selected mailbox (RFC 3501 2.3.1.2, 5.2, 7.4.1).

Each session numbers messages its own way: sequence numbers only change when
*this* session tells its client (EXPUNGE, EXISTS). Changes made elsewhere
(another session, the SMTP daemon in another process) are absorbed as
`FolderChanges` and kept pending until the protocol reaches a moment where they
may be announced. Everything inside the server works on UIDs; a sequence number
from the client is turned into a UID through this view, so a pending expunge
never makes a command act on the wrong message.

Pure logic: no Twisted, no store calls.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from imapd.wire import uid_set
from storage.interface import FolderChanges, IndexEntry

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_FLAG_RIGHT = {"\\Seen": "s", "\\Deleted": "t"}
_RECENT = frozenset({"\\Recent"})


def format_flags(flags: Iterable[str]) -> str:
    if isinstance(flags, frozenset):
        return _format_flag_set(flags)
    return "(" + " ".join(sorted(flags, key=_flag_order)) + ")"


@functools.lru_cache(maxsize=4096)
def _format_flag_set(flags: frozenset[str]) -> str:
    # Few distinct flag sets per mailbox: FLAGS for 100,000 messages formats
    # a handful of them.
    return "(" + " ".join(sorted(flags, key=_flag_order)) + ")"


def _flag_order(flag: str) -> tuple[int, str]:
    # System flags first, in a stable order clients and tests can rely on.
    return (0 if flag.startswith("\\") else 1, flag.lower())


@dataclass
class SelectedView:
    folder_id: int
    name: str  # the mailbox name as the client wrote it (decoded)
    readonly: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int  # the store's state this view has absorbed
    uids: list[int] = field(default_factory=list)  # ascending; seq = index + 1
    # The index entries as this session knows them (flags and MODSEQ as last
    # announced to it): FLAGS, UID, RFC822.SIZE, INTERNALDATE and MODSEQ
    # fetches (every client's sync) need no store call.
    entries: dict[int, IndexEntry] = field(default_factory=dict)
    recent: set[int] = field(default_factory=set)
    rights: str = ""  # RFC 4314 rights on the mailbox when it was selected
    # Keywords the client has been told about in a FLAGS response: a keyword
    # is never used in FETCH FLAGS before it is listed (RFC 3501 7.2.6).
    keywords: set[str] = field(default_factory=set)
    # Pending, not yet announced to the client:
    pending_expunge: set[int] = field(default_factory=set)
    pending_flags: dict[int, None] = field(default_factory=dict)  # ordered set
    announced_exists: int = 0
    announced_recent: int = 0
    dirty: bool = False  # the folder watcher saw a change not absorbed yet
    condstore: bool = False  # report MODSEQ in unsolicited FETCH (RFC 7162 3.2)
    qresync: bool = False  # VANISHED instead of EXPUNGE (RFC 7162 3.2.10)

    @classmethod
    def from_index(
        cls,
        folder_id: int,
        name: str,
        readonly: bool,
        uidvalidity: int,
        uidnext: int,
        highestmodseq: int,
        entries: Sequence[IndexEntry],
        recent: Iterable[int],
    ) -> SelectedView:
        view = cls(folder_id, name, readonly, uidvalidity, uidnext, highestmodseq)
        uids = view.uids = [e.uid for e in entries]
        view.entries = dict(zip(uids, entries, strict=True))
        view.recent = set(recent) & view.entries.keys()
        if entries:
            view.uidnext = max(uidnext, entries[-1].uid + 1)
        view.announced_exists = len(view.uids)
        view.announced_recent = len(view.recent)
        return view

    # ------------------------------------------------------------ numbers

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def uids_for_seq_ranges(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        """Ranges already resolved (``*`` = exists), 1-based inclusive."""
        out: set[int] = set()
        n = len(self.uids)
        for lo, hi in ranges:
            if lo > hi:
                lo, hi = hi, lo
            lo, hi = max(lo, 1), min(hi, n)
            if lo <= hi:
                out.update(self.uids[lo - 1 : hi])
        return sorted(out)

    def uids_for_uid_ranges(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        """Existing UIDs in the ranges (``*`` already resolved to max_uid)."""
        out: set[int] = set()
        for lo, hi in ranges:
            if lo > hi:
                lo, hi = hi, lo
            i = bisect.bisect_left(self.uids, lo)
            j = bisect.bisect_right(self.uids, hi)
            out.update(self.uids[i:j])
        return sorted(out)

    def live(self, uid: int) -> bool:
        """Still in the view and not known to be expunged."""
        return uid in self.entries and uid not in self.pending_expunge

    def flags_of(self, uid: int) -> frozenset[str]:
        entry = self.entries.get(uid)
        return entry.flags if entry is not None else frozenset()

    def modseq_of(self, uid: int) -> int:
        entry = self.entries.get(uid)
        return entry.modseq if entry is not None else 0

    # ------------------------------------------------------------ changes

    def absorb(self, changes: FolderChanges, claimed_recent: Iterable[int] = ()) -> list[int]:
        """Takes in what changed in the store; returns the new UIDs."""
        gone = set(changes.expunged)
        for uid in gone:
            if uid in self.entries:
                self.pending_expunge.add(uid)
                self.pending_flags.pop(uid, None)
        last = self.max_uid()
        new: list[IndexEntry] = []
        for entry in changes.changed:
            if entry.uid in gone:
                continue
            known = self.entries.get(entry.uid)
            if known is not None:
                if entry.uid in self.pending_expunge:
                    continue
                if entry.modseq > known.modseq:
                    self.entries[entry.uid] = entry
                    if entry.flags != known.flags:
                        self.pending_flags[entry.uid] = None
            elif entry.uid > last:
                new.append(entry)
        new.sort(key=lambda e: e.uid)
        for entry in new:
            self.uids.append(entry.uid)
            self.entries[entry.uid] = entry
        claimed = set(claimed_recent)
        self.recent.update(e.uid for e in new if e.uid in claimed)
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
        self.uidnext = max(self.uidnext, changes.uidnext, self.max_uid() + 1)
        self.dirty = False
        return [e.uid for e in new]

    def set_flags(self, uid: int, flags: frozenset[str], modseq: int) -> None:
        """This session changed the flags itself (and tells its client)."""
        known = self.entries.get(uid)
        if known is not None:
            self.entries[uid] = replace(known, flags=flags, modseq=max(modseq, known.modseq))
            self.pending_flags.pop(uid, None)

    def remove_now(self, uids: Iterable[int]) -> list[int]:
        """This session expunged these UIDs itself: returns the EXPUNGE
        sequence numbers, in the order they must be sent."""
        return self._drop(sorted(set(uids) & self.entries.keys(), reverse=True))

    def expunge_now(self, uids: Iterable[int]) -> list[bytes]:
        """Removes the UIDs and returns the responses telling the client:
        EXPUNGE per message, or one VANISHED once QRESYNC is enabled."""
        gone = sorted(set(uids) & self.entries.keys(), reverse=True)
        if self.qresync:
            self._drop(gone)
            return [f"* VANISHED {uid_set(reversed(gone))}\r\n".encode()] if gone else []
        return [b"* %d EXPUNGE\r\n" % seq for seq in self._drop(gone)]

    def _drop(self, uids_desc: list[int]) -> list[int]:
        seqs: list[int] = []
        for uid in uids_desc:
            found = self.seq_of(uid)
            if found is None:
                continue
            seq = found
            del self.uids[seq - 1]
            self.entries.pop(uid, None)
            self.recent.discard(uid)
            self.pending_expunge.discard(uid)
            self.pending_flags.pop(uid, None)
            self.announced_exists -= 1
            seqs.append(seq)
        self.announced_recent = min(self.announced_recent, len(self.recent))
        return seqs

    def pending(self, allow_expunge: bool) -> bool:
        return bool(
            (allow_expunge and self.pending_expunge)
            or self.pending_flags
            or self.announced_exists != len(self.uids)
            or self.announced_recent != len(self.recent)
        )

    def flush(self, allow_expunge: bool, with_uid: bool = False) -> list[bytes]:
        """Untagged responses for what is pending and may be said now.

        RFC 3501 7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH
        (`allow_expunge` False); EXISTS still may be sent and then counts the
        messages whose expunge is not yet announced.
        """
        out: list[bytes] = []
        if allow_expunge and self.pending_expunge:
            out.extend(self.expunge_now(self.pending_expunge))
        if self.announced_exists != len(self.uids):
            out.extend(self.announce_keywords(self.uids[self.announced_exists:]))
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            self.announced_exists = len(self.uids)
        if self.announced_recent != len(self.recent):
            out.append(b"* %d RECENT\r\n" % len(self.recent))
            self.announced_recent = len(self.recent)
        if self.pending_flags:
            out.extend(self.announce_keywords(self.pending_flags))
            for uid in list(self.pending_flags):
                pos = self.seq_of(uid)
                if pos is None or uid in self.pending_expunge:
                    continue
                out.append(self.fetch_flags_line(pos, uid, with_uid))
            self.pending_flags.clear()
        return out

    def flags_response(self) -> bytes:
        """FLAGS and PERMANENTFLAGS as SELECT sends them (and on new keywords)."""
        flags = SYSTEM_FLAGS + tuple(sorted(self.keywords, key=str.lower))
        out = f"* FLAGS ({' '.join(flags)})\r\n"
        if self.readonly:
            out += "* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n"
        else:
            perm = [f for f in flags if _FLAG_RIGHT.get(f, "w") in self.rights]
            if "w" in self.rights:
                perm.append("\\*")
            out += f"* OK [PERMANENTFLAGS ({' '.join(perm)})] Flags permitted\r\n"
        return out.encode()

    def announce_keywords(self, uids: Iterable[int]) -> list[bytes]:
        """A FLAGS response first if these messages carry unannounced keywords."""
        new: set[str] = set()
        known = self.keywords
        for uid in uids:
            entry = self.entries.get(uid)
            if entry is None:
                continue
            for flag in entry.flags:
                if flag[:1] != "\\" and flag not in known:
                    new.add(flag)
        if not new:
            return []
        known.update(new)
        return [self.flags_response()]

    def fetch_flags_line(self, seq: int, uid: int, with_uid: bool) -> bytes:
        items = []
        if with_uid or self.condstore:  # RFC 7162 3.1: UID and MODSEQ in all of them
            items.append(f"UID {uid}")
        items.append("FLAGS " + format_flags(self.display_flags(uid)))
        if self.condstore:
            items.append(f"MODSEQ ({self.modseq_of(uid)})")
        return f"* {seq} FETCH ({' '.join(items)})\r\n".encode()

    def display_flags(self, uid: int) -> frozenset[str]:
        """Flags with \\Recent added for messages this session saw as new."""
        flags = self.flags_of(uid)
        if uid in self.recent:
            return flags | _RECENT
        if "\\Recent" in flags:
            return flags - _RECENT
        return flags
