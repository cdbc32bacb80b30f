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
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from imapd.contexts import UpdatingContext, diff, render
from imapd.responses import (
    exists,
    expunge,
    fetch_flags,
    flags,
    permanentflags,
    recent,
    untagged_ok,
    vanished,
)
from storage.interface import FolderChanges, IndexColumns, IndexEntry

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_FLAG_RIGHT = {"\\Seen": "s", "\\Deleted": "t"}
_RECENT = frozenset({"\\Recent"})


@dataclass
class SelectedView:
    folder_id: int
    name: str  # the mailbox name as the client wrote it (decoded)
    readonly: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int  # the store's state this view has absorbed
    # The index as this session knows it, as columns (position i = sequence
    # i + 1; flags and MODSEQ as last announced to it): FLAGS, UID and MODSEQ
    # fetches (every client's sync) need no store call, and a 100,000-message
    # folder is three compact columns, not 100,000 objects. Sizes and dates
    # are read from the store when a command asks for them.
    uids: array[int] = field(default_factory=lambda: array("I"))  # ascending
    modseqs: array[int] = field(default_factory=lambda: array("Q"))
    flags: list[frozenset[str]] = field(default_factory=list)  # shared sets
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
    # The session enabled IMAP4rev2 (RFC 9051): this view claims no \Recent
    # (`recent` stays empty: no RECENT response, no \Recent flag) and its
    # unsolicited FETCH responses carry the UID (RFC 9051 appendix E).
    rev2: bool = False
    # The account whose private \\Seen this view shows (a mailbox with
    # private \\Seen), or None: the message's shared \\Seen.
    seen_account: int | None = None
    # RFC 5182 SEARCHRES: the UIDs of the last SEARCH/SORT RETURN (SAVE)
    # ("$"). A new view (SELECT, EXAMINE) starts empty, as the RFC wants;
    # expunged UIDs stay here but are skipped when "$" is used.
    saved: frozenset[int] = frozenset()
    # RFC 5267 4.3: the SEARCH / SORT results kept up to date for the client
    # (RETURN (UPDATE)), by tag; gone with the view (SELECT, CLOSE, UNSELECT).
    contexts: dict[str, UpdatingContext] = field(default_factory=dict)
    # While there are contexts: the UIDs that came or had their flags changed
    # since they were last computed (what a `contexts.local` key looks at).
    touched: set[int] = field(default_factory=set)

    @classmethod
    def from_columns(
        cls,
        folder_id: int,
        name: str,
        readonly: bool,
        uidvalidity: int,
        uidnext: int,
        highestmodseq: int,
        columns: IndexColumns,
        recent: Iterable[int],
    ) -> SelectedView:
        """Takes ownership of `columns`."""
        view = cls(folder_id, name, readonly, uidvalidity, uidnext, highestmodseq)
        view.uids, view.modseqs, view.flags = columns.uids, columns.modseqs, columns.flags
        view.recent = {u for u in recent if view.seq_of(u) is not None}
        if view.uids:
            view.uidnext = max(uidnext, view.uids[-1] + 1)
        view.announced_exists = len(view.uids)
        view.announced_recent = len(view.recent)
        return view

    def first_unseen(self) -> int | None:
        """Sequence number of the first message without \\Seen."""
        flags = self.flags
        # A handful of distinct (shared) flag sets: list.index runs in C.
        firsts = [flags.index(fs) for fs in set(flags) if "\\Seen" not in fs]
        return min(firsts) + 1 if firsts else None

    def keyword_set(self) -> set[str]:
        out: set[str] = set()
        for fs in set(self.flags):
            out.update(f for f in fs if not f.startswith("\\"))
        return out

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
        ranges = list(ranges)
        n = len(self.uids)
        if len(ranges) == 1:  # 1:* and friends: a slice, already in order
            lo, hi = sorted(ranges[0])
            lo, hi = max(lo, 1), min(hi, n)
            return self.uids[lo - 1 : hi].tolist() if lo <= hi else []
        out: set[int] = set()
        for lo, hi in ranges:
            if lo > hi:
                lo, hi = hi, lo
            lo, hi = max(lo, 1), min(hi, n)
            if lo <= hi:
                out.update(self.uids[lo - 1 : hi])
        return sorted(out)

    def uids_for_uid_ranges(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        """Existing UIDs in the ranges (``*`` already resolved to max_uid)."""
        ranges = list(ranges)
        if len(ranges) == 1:  # UID FETCH 1:*: a slice, already in order
            lo, hi = sorted(ranges[0])
            return self.uids[
                bisect.bisect_left(self.uids, lo) : bisect.bisect_right(self.uids, hi)
            ].tolist()
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
        return self.has(uid) and uid not in self.pending_expunge

    def has(self, uid: int) -> bool:
        """In the view (an expunge may be pending)."""
        return self.seq_of(uid) is not None

    def present(self, uids: Iterable[int]) -> list[int]:
        """The UIDs of `uids` that are in the view. Ascending input (every
        FETCH batch) is one walk along the view, not a search per UID."""
        known = self.uids
        n = len(known)
        wanted = uids if isinstance(uids, list) else list(uids)
        if wanted:
            # Fast path (FETCH 1:* batches): a contiguous run of the view.
            i = bisect.bisect_left(known, wanted[0])
            if known[i : i + len(wanted)].tolist() == wanted:
                return list(wanted)
        out = []
        i = 0
        prev = -1
        for uid in wanted:
            if uid < prev or prev < 0 or i >= n or known[i] > uid or uid - prev > 64:
                i = bisect.bisect_left(known, uid)
            else:
                while i < n and known[i] < uid:
                    i += 1
            prev = uid
            if i < n and known[i] == uid:
                out.append(uid)
        return out

    def flags_of(self, uid: int) -> frozenset[str]:
        seq = self.seq_of(uid)
        return self.flags[seq - 1] if seq is not None else frozenset()

    def modseq_of(self, uid: int) -> int:
        seq = self.seq_of(uid)
        return self.modseqs[seq - 1] if seq is not None else 0

    def state(self) -> tuple[int, ...]:
        """Changes whenever a message comes, goes (or is known to go) or has
        its flags changed (its MODSEQ only grows): a context computed on an
        equal state needs no new computation. Sums in C: cheap."""
        return (len(self.uids), self.max_uid(), sum(self.modseqs), len(self.pending_expunge),
                self.highestmodseq)

    # ------------------------------------------------------------ changes

    def absorb(self, changes: FolderChanges, claimed_recent: Iterable[int] = ()) -> list[int]:
        """Takes in what changed in the store; returns the new UIDs."""
        gone = set(changes.expunged)
        for uid in gone:
            if self.has(uid):
                self.pending_expunge.add(uid)
                self.pending_flags.pop(uid, None)
        last = self.max_uid()
        new: list[IndexEntry] = []
        for entry in changes.changed:
            if entry.uid in gone:
                continue
            seq = self.seq_of(entry.uid)
            if seq is not None:
                if entry.uid in self.pending_expunge:
                    continue
                i = seq - 1
                if entry.modseq > self.modseqs[i]:
                    self.modseqs[i] = entry.modseq
                    if entry.flags != self.flags[i]:
                        self.flags[i] = entry.flags
                        self.pending_flags[entry.uid] = None
                        if self.contexts:
                            self.touched.add(entry.uid)
            elif entry.uid > last:
                new.append(entry)
        new.sort(key=lambda e: e.uid)
        for entry in new:
            self.uids.append(entry.uid)
            self.modseqs.append(entry.modseq)
            self.flags.append(entry.flags)
        if self.contexts:
            self.touched.update(e.uid for e in new)
        claimed = set(claimed_recent)
        self.recent.update(e.uid for e in new if e.uid in claimed)
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
        self.uidnext = max(self.uidnext, changes.uidnext, self.max_uid() + 1)
        self.dirty = False
        return [e.uid for e in new]

    def set_flags(self, uid: int, flags: frozenset[str], modseq: int) -> None:
        """This session changed the flags itself (and tells its client)."""
        seq = self.seq_of(uid)
        if seq is not None:
            if self.contexts and flags != self.flags[seq - 1]:
                self.touched.add(uid)
            self.flags[seq - 1] = flags
            self.modseqs[seq - 1] = max(modseq, self.modseqs[seq - 1])
            self.pending_flags.pop(uid, None)

    def expunge_now(self, uids: Iterable[int]) -> list[bytes]:
        """Removes the UIDs and returns the responses telling the client:
        EXPUNGE per message, or one VANISHED once QRESYNC is enabled."""
        gone = sorted(set(self.present(uids)), reverse=True)
        # RFC 5267 4.3.4: REMOVEFROM before the expunge, its numbers valid then.
        out = self._leave_contexts(gone)
        if self.qresync:
            self._drop(gone)
            if gone:
                out.append(vanished(gone))
            return out
        out.extend(map(expunge, self._drop(gone)))
        return out

    # ------------------------------------------------------------ contexts

    def _number(self, context: UpdatingContext) -> Callable[[int], int]:
        if context.uid:
            return int
        return lambda uid: self.seq_of(uid) or 0  # every UID told is in the view

    def _leave_contexts(self, gone: Iterable[int]) -> list[bytes]:
        """An expunged message leaves every updating context's result."""
        going = set(gone)
        out: list[bytes] = []
        for context in self.contexts.values():
            if going.isdisjoint(context.result):
                continue
            left = [u for u in context.result if u not in going]
            update = diff(context.result, left, ordered=context.ordered)
            out.append(render(context, "REMOVEFROM", update.removed, self._number(context)))
            context.result = left
        return out

    def revise_contexts(self, results: dict[str, tuple[tuple[int, ...], list[int]]]
                        ) -> list[bytes]:
        """Takes in the results of updating contexts computed again ((view
        state, UIDs) by tag) and returns the REMOVEFROM responses for what
        left them (told now, while its numbers are valid); what joined them is
        told by `flush`, after EXISTS (RFC 5267 4.3.3)."""
        out: list[bytes] = []
        for tag, (state, found) in results.items():
            context = self.contexts.get(tag)
            if context is None:
                continue  # cancelled meanwhile
            kept = set(found)
            left = [u for u in context.result if u in kept]
            if len(left) != len(context.result):
                update = diff(context.result, left, ordered=context.ordered)
                out.append(render(context, "REMOVEFROM", update.removed, self._number(context)))
                context.result = left
            context.joining = found
            context.state = state
        return out

    def _join_contexts(self) -> list[bytes]:
        out: list[bytes] = []
        for context in self.contexts.values():
            found, context.joining = context.joining, None
            if found is None:
                continue
            have = set(context.result)
            # Expunged meanwhile: gone. Known to be expunged: not worth telling.
            new = [u for u in found if u in have
                   or (self.has(u) and u not in self.pending_expunge)]
            update = diff(context.result, new, ordered=context.ordered)
            if update.added:
                out.append(render(context, "ADDTO", update.added, self._number(context)))
            context.result = new
        return out

    def _drop(self, uids_desc: list[int]) -> list[int]:
        seqs: list[int] = []
        for uid in uids_desc:
            found = self.seq_of(uid)
            if found is None:
                continue
            seq = found
            del self.uids[seq - 1], self.modseqs[seq - 1], self.flags[seq - 1]
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

    def flush(self, allow_expunge: bool, with_uid: bool = False, *,
              flags: bool = True) -> list[bytes]:
        """Untagged responses for what is pending and may be said now.

        RFC 3501 7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH
        (`allow_expunge` False); EXISTS still may be sent and then counts the
        messages whose expunge is not yet announced. `flags` False keeps
        flag changes pending (NOTIFY without FlagChange, between commands).
        """
        out: list[bytes] = []
        if allow_expunge and self.pending_expunge:
            out.extend(self.expunge_now(self.pending_expunge))
        if self.announced_exists != len(self.uids):
            out.extend(self.announce_keywords(self.uids[self.announced_exists:]))
            out.append(exists(len(self.uids)))
            self.announced_exists = len(self.uids)
        if self.announced_recent != len(self.recent):
            out.append(recent(len(self.recent)))
            self.announced_recent = len(self.recent)
        if self.pending_flags and flags:
            out.extend(self.announce_keywords(self.pending_flags))
            for uid in list(self.pending_flags):
                pos = self.seq_of(uid)
                if pos is None or uid in self.pending_expunge:
                    continue
                out.append(self.fetch_flags_line(pos, uid, with_uid))
            self.pending_flags.clear()
        if self.contexts:
            out.extend(self._join_contexts())
        return out

    def flags_response(self) -> bytes:
        """FLAGS and PERMANENTFLAGS as SELECT sends them (and on new keywords)."""
        names = SYSTEM_FLAGS + tuple(sorted(self.keywords, key=str.lower))
        if self.readonly:
            code = permanentflags((), keywords_allowed=False)
            return flags(names) + untagged_ok(code, "No permanent flags permitted")
        perm = [f for f in names if _FLAG_RIGHT.get(f, "w") in self.rights]
        code = permanentflags(perm, keywords_allowed="w" in self.rights, sort=False)
        return flags(names) + untagged_ok(code, "Flags permitted")

    def announce_keywords(self, uids: Iterable[int]) -> list[bytes]:
        """A FLAGS response first if these messages carry unannounced keywords."""
        new: set[str] = set()
        known = self.keywords
        wanted = list(uids)
        if not wanted:
            return []
        # The distinct flag sets between the lowest and highest of these UIDs
        # (a superset is harmless: a FLAGS response may list more keywords),
        # in C, not a search per UID.
        i = bisect.bisect_left(self.uids, min(wanted))
        j = bisect.bisect_right(self.uids, max(wanted))
        for fs in set(self.flags[i:j]):
            for flag in fs:
                if flag[:1] != "\\" and flag not in known:
                    new.add(flag)
        if not new:
            return []
        known.update(new)
        return [self.flags_response()]

    def fetch_flags_line(self, seq: int, uid: int, with_uid: bool) -> bytes:
        # RFC 7162 3.1: UID and MODSEQ in all of them; RFC 9051: UID.
        return fetch_flags(seq, uid if with_uid or self.condstore or self.rev2 else None,
                           self.display_flags(uid),
                           self.modseq_of(uid) if self.condstore else None)

    def display_flags(self, uid: int, pos: int | None = None) -> frozenset[str]:
        """Flags with \\Recent added for messages this session saw as new
        (`pos`: the UID's index in the view, when the caller knows it)."""
        flags = self.flags_of(uid) if pos is None else self.flags[pos]
        if uid in self.recent:
            return flags | _RECENT
        if "\\Recent" in flags:
            return flags - _RECENT
        return flags
