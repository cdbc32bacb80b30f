"""FETCH and UID FETCH (RFC 3501 6.4.5, 7.4.2; RFC 7162 MODSEQ/CHANGEDSINCE;
RFC 3516 BINARY).

Messages are processed in small batches: metadata for many at once, bodies
up to BODY_BATCH_BYTES (or one body) per store call, and after each batch the
handler waits for the transport to drain, so a FETCH of a big mailbox never
holds more than that in memory. A FETCH that sets \\Seen takes one body at a
time (its \\Seen write covers exactly the messages of the batch).
FLAGS, UID, RFC822.SIZE and INTERNALDATE come from the session's view (no
store call); ENVELOPE and BODYSTRUCTURE from the metadata stored at delivery.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from twisted.internet import defer

from imapd import fetch as render
from imapd.commands.base import Context, Handler, ok
from imapd.commands.selected import audit_content, require_view, resolve_set
from imapd.errors import EXPUNGE_ISSUED, Reply, bad, fail, no
from imapd.parser.commands import (
    Command,
    Fetch,
    FetchAttribute,
    FetchBinary,
    FetchBinarySize,
    FetchBodySection,
    FetchBodyStructure,
    FetchEnvelope,
    FetchFlags,
    FetchInternalDate,
    FetchModSeq,
    FetchRfc822,
    FetchRfc822Header,
    FetchRfc822Size,
    FetchRfc822Text,
    FetchUid,
    Section,
    SectionText,
    sets_seen,
)
from imapd.responses import (
    MODSEQ_ITEM,
    RFC822_SIZE_ITEM,
    SIZE_ITEM,
    UID_ITEM,
    UNKNOWN_CTE,
    binary_item,
    bodystructure_item,
    envelope_item,
    flags_item,
    internaldate_item,
    section_item,
    vanished,
)
from imapd.responses import fetch as fetch_response
from imapd.view import SelectedView
from storage.interface import FlagChange, FlagMode, MessageInfo, MessageStore

META_BATCH = 250
# Bodies read in one store call at most, unless a single one is larger: ten
# header fetches of small messages cost one round trip to a store thread, not
# ten (each with its own access check and wake-up of the reactor).
BODY_BATCH_BYTES = 1 << 20
# A batch of at most this many messages is read on the reactor thread
# (`Context.run_selected_quick`; the store sends a read of large bodies to
# a thread, see `storage.interface.MessageStore.no_waiting`).
QUICK_MESSAGES = 50
BODY_ITEMS = (FetchRfc822, FetchRfc822Header, FetchRfc822Text, FetchBodySection, FetchBinary,
              FetchBinarySize)
# Items that return message content: a FETCH with one of them is audited.
CONTENT_ITEMS = (FetchRfc822, FetchRfc822Header, FetchRfc822Text, FetchBodySection, FetchBinary)


def needs_metadata(att: FetchAttribute) -> bool:
    """Whether the stored MIME metadata is needed (the whole message is not)."""
    if isinstance(att, FetchEnvelope | FetchBodyStructure | FetchRfc822Header | FetchRfc822Text):
        return True
    if isinstance(att, FetchBodySection | FetchBinary):
        return bool(att.section.part) or att.section.text is not None
    if isinstance(att, FetchBinarySize):
        return bool(att.part)
    return False


@dataclass
class Loaded:
    infos: dict[int, MessageInfo] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    seen: list[FlagChange] = field(default_factory=list)
    sizes: dict[int, tuple[int, datetime]] = field(default_factory=dict)
    # Bodies stopped before this UID (the byte budget): the rest of the batch
    # is loaded by the next call.
    stopped_at: int | None = None


def _mark_seen(
    store: MessageStore, folder_id: int, uids: Sequence[int], seen_account: int | None
) -> list[FlagChange]:
    """The implicit \\Seen of BODY[] and RFC822 (RFC 3501 6.4.5): the
    reader's own on a mailbox with private \\Seen."""
    changes, _ = store.store_flags(folder_id, uids, FlagMode.ADD, ["\\Seen"],
                                   seen_account=seen_account)
    return changes


def _load(
    store: MessageStore, folder_id: int, uids: Sequence[int], need_info: bool,
    need_body: bool, need_sizes: bool = False, body_budget: int = 0,
) -> Loaded:
    """The metadata, sizes and bodies of `uids` (ascending); bodies up to
    `body_budget` bytes, at least one (`Loaded.stopped_at` says where they
    stopped)."""
    out = Loaded()
    if need_sizes and not need_info:
        out.sizes = store.sizes_and_dates(folder_id, uids)
    if need_info:
        out.infos = {i.uid: i for i in store.message_infos(folder_id, uids)}
        if need_sizes:  # the metadata read brought them: no second query
            out.sizes = {u: (i.size, i.internal_date) for u, i in out.infos.items()}
    if need_body:
        out.bodies, out.stopped_at = store.read_bodies(folder_id, uids, body_budget)
    return out


async def fetch(ctx: Context, cmd: Fetch) -> Reply:
    view = require_view(ctx)
    session = ctx.session
    if cmd.vanished and not (cmd.uid and cmd.changed_since is not None
                             and "QRESYNC" in session.enabled):
        raise bad("VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC enabled")
    attrs = list(cmd.attributes)
    if cmd.changed_since is not None or any(isinstance(a, FetchModSeq) for a in attrs):
        session.enabled.add("CONDSTORE")  # a CONDSTORE enabling command (RFC 7162 3.1)
        view.condstore = True
        if cmd.changed_since is not None and not any(isinstance(a, FetchModSeq) for a in attrs):
            attrs.append(FetchModSeq())
    if cmd.uid and not any(isinstance(a, FetchUid) for a in attrs):
        attrs.insert(0, FetchUid())
    uids = resolve_set(view, cmd.sequence_set, cmd.uid)
    if cmd.vanished and cmd.changed_since is not None:
        changes = await ctx.run_selected(ctx.services.store.changes_since, view.folder_id,
                                         cmd.changed_since, seen_account=view.seen_account)
        largest = max(view.max_uid(), max(changes.expunged, default=0))
        gone = sorted(u for u in changes.expunged
                      if not view.has(u) and cmd.sequence_set.contains(u, largest))
        if gone:
            ctx.send(vanished(gone, earlier=True))
    if cmd.changed_since is not None:
        uids = [u for u in uids if view.modseq_of(u) > cmd.changed_since]
    need_info = any(needs_metadata(a) for a in attrs)
    need_body = any(isinstance(a, BODY_ITEMS) for a in attrs)
    marks_seen = (
        any(sets_seen(a) for a in attrs) and not view.readonly and "s" in view.rights
    )
    batch = 1 if need_body and marks_seen else META_BATCH
    wants_flags = any(isinstance(a, FetchFlags) for a in attrs)
    need_sizes = any(isinstance(a, FetchRfc822Size | FetchInternalDate) for a in attrs)
    if view.condstore and wants_flags:
        # RFC 7162 3.1: once CONDSTORE is on, FETCH responses carrying flags
        # carry UID and MODSEQ too.
        if not any(isinstance(a, FetchUid) for a in attrs):
            attrs.insert(0, FetchUid())
        if not any(isinstance(a, FetchModSeq) for a in attrs):
            attrs.append(FetchModSeq())
    missing = False
    unknown_cte = False
    wants_content = any(isinstance(a, CONTENT_ITEMS) for a in attrs)
    # Section labels, e.g. BODY[HEADER.FIELDS (From To ...)]: once per command,
    # not once per message.
    labels = [a.label().encode() if isinstance(a, FetchBodySection | FetchBinary
                                               | FetchBinarySize) else b""
              for a in attrs]
    read: list[int] = []  # UIDs whose content was sent: audited once, at the end
    try:
        start = 0
        while start < len(uids):
            window = uids[start : start + batch]
            start += len(window)
            chunk = view.present(window)
            if not chunk:
                continue
            to_mark = [u for u in chunk if marks_seen and "\\Seen" not in view.flags_of(u)]
            loaded = Loaded()
            marking = [u for u in to_mark if view.live(u)]
            # The \\Seen write (writer lane) and the reads go at once: the
            # content does not depend on the flag.
            seen_d = (defer.ensureDeferred(
                ctx.run_write_selected(_mark_seen, ctx.services.store, view.folder_id, marking,
                                       view.seen_account))
                if marking else None)
            try:
                if need_info or need_body or need_sizes:
                    live = [u for u in chunk if view.live(u)]
                    # A few messages: read on the reactor thread (a large
                    # body or many rows send it to a thread: `no_waiting`).
                    run = (ctx.run_selected_quick if len(live) <= QUICK_MESSAGES
                           else ctx.run_selected)
                    loaded = await run(
                        _load, ctx.services.store, view.folder_id, live, need_info, need_body,
                        need_sizes, BODY_BATCH_BYTES,
                    )
            finally:
                # Waited for even if the read failed: never a write in flight
                # that the session does not know the outcome of.
                if seen_d is not None:
                    loaded.seen = await seen_d
            if ctx.session.view is not view:
                return ok("FETCH completed")
            stop = loaded.stopped_at
            if stop is not None:  # (never with a \\Seen write: one body a batch)
                start -= sum(1 for u in window if u >= stop)
                chunk = [u for u in chunk if u < stop]
            changed = {c.uid for c in loaded.seen}
            for c in loaded.seen:
                view.set_flags(c.uid, c.flags, c.modseq)
            out: list[bytes] = []
            chunk_read: list[int] = []
            if wants_flags or changed:
                out.extend(view.announce_keywords(chunk))
            positions = view.uids
            pos = bisect.bisect_left(positions, chunk[0])
            for uid in chunk:
                # chunk is ascending: walk the view instead of a search per UID.
                while pos < len(positions) and positions[pos] < uid:
                    pos += 1
                if pos >= len(positions) or positions[pos] != uid:
                    continue
                seq = pos + 1
                if need_sizes and uid not in loaded.sizes:
                    missing = True
                    continue
                if not (need_info or need_body or changed):
                    out.append(_render_light(view, pos, uid, attrs, loaded))
                    continue
                if (need_info and uid not in loaded.infos) or (need_body and uid not in loaded.bodies):
                    missing = True
                    continue
                line, bad_cte = _render(view, seq, uid, attrs, labels, loaded, uid in changed)
                unknown_cte = unknown_cte or bad_cte
                out.append(line)
                if wants_content:
                    chunk_read.append(uid)
            if out:
                ctx.send(b"".join(out))
                read.extend(chunk_read)
                await ctx.drained()
            if changed:
                ctx.watcher.notify_local(view.folder_id, exclude=getattr(ctx, "watch_token", None))
    finally:
        if read:
            await audit_content(ctx, "fetch", read)
    if unknown_cte:
        raise no("Unknown content transfer encoding", UNKNOWN_CTE)
    if missing:
        raise fail(EXPUNGE_ISSUED)
    return ok("FETCH completed")


def _render_light(
    view: SelectedView, pos: int, uid: int, attrs: list[FetchAttribute], loaded: Loaded
) -> bytes:
    """Items that come from the view (the sync of every client) and the
    sizes and dates loaded for them."""
    items: list[bytes] = []
    for a in attrs:
        kind = type(a)
        if kind is FetchUid:
            items.append(UID_ITEM % uid)
        elif kind is FetchFlags:
            items.append(flags_item(view.display_flags(uid, pos)))
        elif kind is FetchModSeq:
            items.append(MODSEQ_ITEM % view.modseqs[pos])
        elif kind is FetchRfc822Size:
            items.append(RFC822_SIZE_ITEM % loaded.sizes[uid][0])
        elif kind is FetchInternalDate:
            items.append(internaldate_item(loaded.sizes[uid][1]))
    return fetch_response(pos + 1, items)


def _render(
    view: SelectedView, seq: int, uid: int, attrs: list[FetchAttribute], labels: list[bytes],
    loaded: Loaded, seen_now: bool,
) -> tuple[bytes, bool]:
    """One FETCH response; `labels[i]` is the label of `attrs[i]` when it has
    a section."""
    items: list[bytes] = []
    info = loaded.infos.get(uid)
    raw = loaded.bodies.get(uid)
    meta = info.metadata if info is not None else {}
    has_flags = False
    unknown_cte = False
    for i, a in enumerate(attrs):
        if isinstance(a, FetchUid):
            items.append(UID_ITEM % uid)
        elif isinstance(a, FetchFlags):
            has_flags = True
            items.append(flags_item(view.display_flags(uid)))
        elif isinstance(a, FetchModSeq):
            items.append(MODSEQ_ITEM % view.modseq_of(uid))
        elif isinstance(a, FetchRfc822Size):
            items.append(RFC822_SIZE_ITEM % loaded.sizes[uid][0])
        elif isinstance(a, FetchInternalDate):
            items.append(internaldate_item(loaded.sizes[uid][1]))
        elif isinstance(a, FetchEnvelope):
            items.append(envelope_item(render.render_envelope(meta)))
        elif isinstance(a, FetchBodyStructure):
            items.append(bodystructure_item(
                render.render_bodystructure(meta, a.extensible, view.rev2), a.extensible))
        elif isinstance(a, FetchRfc822):
            assert raw is not None
            items.append(section_item(b"RFC822", raw))
        elif isinstance(a, FetchRfc822Header):
            assert raw is not None
            data = render.section_bytes(raw, meta, Section(text=SectionText.HEADER))
            items.append(section_item(b"RFC822.HEADER", data))
        elif isinstance(a, FetchRfc822Text):
            assert raw is not None
            data = render.section_bytes(raw, meta, Section(text=SectionText.TEXT))
            items.append(section_item(b"RFC822.TEXT", data))
        elif isinstance(a, FetchBodySection):
            assert raw is not None
            data = render.section_bytes(raw, meta, a.section, view.rev2)
            p = a.section.partial
            if p is not None:
                data = render.partial(data, p.start, p.length)
            items.append(section_item(labels[i], data))
        elif isinstance(a, FetchBinary):
            assert raw is not None
            bin_data = render.binary_bytes(raw, meta, a.section.part, view.rev2)
            if bin_data is None:
                unknown_cte = True
                continue
            p = a.section.partial
            if p is not None:
                bin_data = render.partial(bin_data, p.start, p.length)
            items.append(binary_item(labels[i], bin_data))
        elif isinstance(a, FetchBinarySize):
            assert raw is not None
            size = render.binary_size(raw, meta, a.part, view.rev2)
            if size is None:
                unknown_cte = True
                continue
            items.append(SIZE_ITEM % (labels[i], size))
    if seen_now and not has_flags:
        # RFC 3501 6.4.5: \Seen set as a side effect is reported.
        items.append(flags_item(view.display_flags(uid)))
        # ... with UID and MODSEQ once CONDSTORE is on (RFC 7162 3.1).
        if view.condstore and not any(isinstance(a, FetchUid) for a in attrs):
            items.insert(0, UID_ITEM % uid)
        if view.condstore and not any(isinstance(a, FetchModSeq) for a in attrs):
            items.append(MODSEQ_ITEM % view.modseq_of(uid))
    return fetch_response(seq, items), unknown_cte


HANDLERS: dict[type[Command], Handler] = {Fetch: fetch}
