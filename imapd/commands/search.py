"""SEARCH and UID SEARCH (RFC 3501 6.4.4, RFC 7162 MODSEQ, RFC 4731 ESEARCH,
RFC 5182 SEARCHRES, RFC 5267 PARTIAL and UPDATE contexts).

Keys that only look at flags, sets and MODSEQ are answered from the session's
view over its columns (`imapd.search.select`: no object per message, no store
call); sizes and dates are read from the store for keys that look at them;
others load the stored metadata in batches (and bodies only for BODY/TEXT/other
headers), all in the store thread.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import compress
from typing import NamedTuple

from imapd import search as engine
from imapd.commands.base import Context, Handler, ok
from imapd.commands.selected import require_view
from imapd.contexts import UpdatingContext, costly, keep
from imapd.errors import (
    REV2_SEARCH_RECENT,
    SEARCH_CHARSET_UTF8,
    SEARCH_TOO_MANY_KEYS,
    Reply,
    bad,
    fail,
    no,
)
from imapd.parser.commands import (
    SUPPORTED_SEARCH_CHARSETS,
    Command,
    DateField,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchLarger,
    SearchModSeq,
    SearchNot,
    SearchOlder,
    SearchOr,
    SearchSmaller,
    SearchYounger,
)
from imapd.responses import badcharset, esearch, noupdate
from imapd.responses import search as search_response
from imapd.view import SelectedView
from storage.interface import MessageInfo, MessageStore

BATCH = 500
_EPOCH = datetime.fromtimestamp(0, UTC)


def _needs_meta(key: SearchKey) -> bool:
    if isinstance(key, SearchHeader) or engine.needs_body(key):
        return True
    if isinstance(key, SearchDate):
        return key.field is DateField.SENT
    if isinstance(key, SearchNot):
        return _needs_meta(key.key)
    if isinstance(key, SearchOr):
        return _needs_meta(key.left) or _needs_meta(key.right)
    if isinstance(key, SearchAnd):
        return any(_needs_meta(k) for k in key.keys)
    return False


def _needs_sizes(key: SearchKey) -> bool:
    """Whether RFC822.SIZE or the internal date is looked at (the view has
    neither: they are read from the store for such searches only)."""
    if isinstance(key, SearchLarger | SearchSmaller | SearchOlder | SearchYounger):
        return True
    if isinstance(key, SearchDate):
        return key.field is DateField.INTERNAL
    if isinstance(key, SearchNot):
        return _needs_sizes(key.key)
    if isinstance(key, SearchOr):
        return _needs_sizes(key.left) or _needs_sizes(key.right)
    if isinstance(key, SearchAnd):
        return any(_needs_sizes(k) for k in key.keys)
    return False


def matches_all(key: SearchKey) -> bool:
    """Whether `key` is ALL (or an AND of ALLs): every message matches."""
    if isinstance(key, SearchAll):
        return True
    return isinstance(key, SearchAnd) and all(matches_all(k) for k in key.keys)


def _uses_modseq(key: SearchKey) -> bool:
    return any(isinstance(k, SearchModSeq) for k in engine.leaves(key))


def _uses_recent(key: SearchKey) -> bool:
    """NEW, OLD, RECENT or UNRECENT (the parser makes \\Recent flag keys of them)."""
    return any(isinstance(k, SearchFlag) and k.flag == "\\Recent" for k in engine.leaves(key))


def _run(
    store: MessageStore | None, folder_id: int, key: SearchKey,
    messages: Sequence[tuple[int, MessageInfo]], recent: frozenset[int], max_uid: int,
    now: datetime, saved: frozenset[int] = frozenset(),
) -> list[tuple[int, int, int]]:
    """(seq, uid, modseq) of matching messages; `messages` are view entries
    (flags from the view); with a store, metadata is loaded for them."""
    out: list[tuple[int, int, int]] = []
    max_seq = len(messages)
    for start in range(0, len(messages), BATCH):
        chunk = messages[start : start + BATCH]
        infos: dict[int, MessageInfo] = {}
        if store is not None:
            infos = {i.uid: i for i in store.message_infos(folder_id, [m.uid for _, m in chunk])}
        for seq, base in chunk:
            info = base
            if store is not None:
                stored = infos.get(base.uid)
                if stored is None:
                    continue  # expunged meanwhile: it cannot match anything
                info = MessageInfo(base.uid, base.modseq, base.flags, stored.size,
                                   stored.internal_date, stored.metadata)

            def loader(uid: int = base.uid) -> bytes:
                assert store is not None
                return store.message_body(folder_id, uid)

            if engine.matches(key, info, seq, loader, max_seq=max_seq, max_uid=max_uid,
                              recent=recent, saved=saved, now=now):
                out.append((seq, info.uid, info.modseq))
    return out


def check_charset(charset: str | None) -> None:
    if charset is not None and charset not in SUPPORTED_SEARCH_CHARSETS:
        raise no("Unsupported charset", badcharset(SUPPORTED_SEARCH_CHARSETS))


class Found(NamedTuple):
    """The messages a key matches, in sequence order, as three columns."""

    seqs: Sequence[int]
    uids: Sequence[int]
    modseqs: Sequence[int]


# The most keys (flags, sets, dates, strings... once NOT, OR and AND are
# taken apart) one search may combine: NO [LIMIT] beyond. Clients send a
# few, a filter of many addresses a few hundred; each costs a pass over the
# folder (found reading the change once more: 7,000 `MODSEQ n` in one 64 KiB
# line took 33 s of CPU on a 100,000-message folder).
MAX_SEARCH_KEYS = 1000
# Keys x messages a search may cost on the reactor thread; above, it runs on
# a store thread, so that the worker's other sessions go on meanwhile
# (about 20 keys over 100,000 messages: tens of milliseconds).
REACTOR_WORK = 2_000_000


async def matching(ctx: Context, view: SelectedView, key: SearchKey,
                   saved: frozenset[int] | None = None,
                   only: Sequence[int] | None = None) -> Found:
    """The messages of the view matching `key`, in sequence order (the store
    is asked only for what the key looks at); never the view's own arrays,
    which change while the store thread reads. `saved`: "$" as an updating
    context keeps it (else the view's). `only`: just these UIDs (ascending)
    of the view, for a key that looks at nothing but each message itself
    (`imapd.contexts.local`)."""
    if ctx.session.rev2 and _uses_recent(key):
        raise fail(REV2_SEARCH_RECENT)  # SEARCH, SORT and THREAD alike
    if _uses_modseq(key):
        ctx.session.enabled.add("CONDSTORE")
        view.condstore = True
    if saved is None:
        saved = view.saved
    if only is None and matches_all(key):
        # SORT / THREAD / SEARCH ... ALL of a big folder: nothing to look at
        return Found(range(1, view.exists + 1), array("I", view.uids), array("Q", view.modseqs))
    keys = sum(1 for _ in engine.leaves(key))
    if keys > MAX_SEARCH_KEYS:
        raise fail(SEARCH_TOO_MANY_KEYS)
    heavy = keys * (view.exists if only is None else len(only)) > REACTOR_WORK
    if engine.on_columns(key):
        columns = _columns(view, only)
        if heavy:
            return await ctx.run(_select_columns, key, columns, saved)
        return _select_columns(key, columns, saved)
    found = await _matching_messages(ctx, view, key, saved, only, heavy)
    return Found([seq for seq, _, _ in found], [uid for _, uid, _ in found],
                 [modseq for _, _, modseq in found])


class _Columns(NamedTuple):
    """What `_select_columns` reads of the view: copies, so that a store
    thread may read them while the view changes."""

    seqs: Sequence[int]
    uids: Sequence[int]
    modseqs: Sequence[int]
    flags: Sequence[frozenset[str]]
    max_seq: int
    max_uid: int
    recent: frozenset[int]


def _columns(view: SelectedView, only: Sequence[int] | None) -> _Columns:
    seqs: Sequence[int] = range(1, view.exists + 1)
    uids: Sequence[int] = array("I", view.uids)
    modseqs: Sequence[int] = array("Q", view.modseqs)
    flags: Sequence[frozenset[str]] = list(view.flags)
    if only is not None:
        positions = [(view.seq_of(u) or 0) - 1 for u in view.present(only)]
        seqs = [p + 1 for p in positions]
        uids = [view.uids[p] for p in positions]
        modseqs = [view.modseqs[p] for p in positions]
        flags = [view.flags[p] for p in positions]
    return _Columns(seqs, uids, modseqs, flags, view.exists, view.max_uid(),
                    frozenset(view.recent))


def _select_columns(key: SearchKey, c: _Columns, saved: frozenset[int]) -> Found:
    """`matching` for a key about flags, numbers and MODSEQ: over the view's
    columns, with no object per message (a 100,000-message folder in tens
    of milliseconds: UNDELETED, UNSEEN, as webmails and desktop clients
    send them before SORT and THREAD)."""
    chosen = engine.select(key, c.seqs, c.uids, c.modseqs, c.flags, max_seq=c.max_seq,
                           max_uid=c.max_uid, recent=c.recent, saved=saved)
    return Found(list(compress(c.seqs, chosen)), list(compress(c.uids, chosen)),
                 list(compress(c.modseqs, chosen)))


async def _matching_messages(ctx: Context, view: SelectedView, key: SearchKey,
                             saved: frozenset[int], only: Sequence[int] | None,
                             heavy: bool = False) -> list[tuple[int, int, int]]:
    """`matching` for any key: (seq, uid, modseq) of the matching messages,
    each looked at as a `MessageInfo` (with size and date, metadata and body
    when the key looks at them)."""
    uids = view.uids
    positions: Sequence[int] = range(len(uids))
    if only is not None:
        positions = [(view.seq_of(u) or 0) - 1 for u in view.present(only)]
    sizes: dict[int, tuple[int, datetime]] = {}
    if _needs_sizes(key):
        wanted = list(uids) if only is None else [uids[i] for i in positions]
        sizes = await ctx.run_selected(ctx.services.store.sizes_and_dates, view.folder_id,
                                       wanted)
    messages = view_messages(view, positions, sizes)
    store = ctx.services.store if _needs_meta(key) else None
    now = datetime.now().astimezone()
    if store is None and not heavy:
        return _run(None, view.folder_id, key, messages, frozenset(view.recent),
                    view.max_uid(), now, saved)
    if store is None:  # no store read, but too long for the reactor thread
        return await ctx.run(_run, None, view.folder_id, key, messages,
                             frozenset(view.recent), view.max_uid(), now, saved)
    return await ctx.run_selected(_run, store, view.folder_id, key, messages,
                                  frozenset(view.recent), view.max_uid(), now, saved)


def view_messages(view: SelectedView, positions: Sequence[int],
                  sizes: dict[int, tuple[int, datetime]]) -> list[tuple[int, MessageInfo]]:
    """(seq, message) of the view's messages at these positions, with the
    flags the client is shown; size and internal date from `sizes` (UID ->
    both), where the key looks at them."""
    uids, modseqs = view.uids, view.modseqs
    unknown = (0, _EPOCH)  # never looked at: the key does not use sizes or dates
    messages = []
    for i in positions:
        uid = uids[i]
        size, when = sizes.get(uid, unknown)
        messages.append(
            (i + 1, MessageInfo(uid, modseqs[i], view.display_flags(uid, i), size, when, {}))
        )
    return messages


def saved_uids(options: tuple[str, ...], uids: Sequence[int], *, ordered: bool = False) -> frozenset[int]:
    """What RETURN (SAVE ...) keeps (RFC 5182 2.4): with MIN and/or MAX
    but neither ALL nor COUNT (nor PARTIAL), only those; else every match."""
    if not uids:
        return frozenset()
    if ("MIN" in options or "MAX" in options) and not {"ALL", "COUNT", "PARTIAL"} & set(options):
        kept: set[int] = set()
        if "MIN" in options:
            kept.add(uids[0] if ordered else min(uids))
        if "MAX" in options:
            kept.add(uids[-1] if ordered else max(uids))
        return frozenset(kept)
    return frozenset(uids)


def check_update_tag(view: SelectedView, tag: str, options: tuple[str, ...] | None) -> bool:
    """Whether the command asks for UPDATE; a tag an updating context
    already has is BAD (RFC 5267 4.3)."""
    if options is None or "UPDATE" not in options:
        return False
    if tag in view.contexts:
        raise bad("Tag reuse: an updating search already has this tag")
    return True


def keep_updating(ctx: Context, view: SelectedView, context: UpdatingContext) -> None:
    """Keeps the context, or refuses with ``* NO [NOUPDATE "tag"]`` when the
    session has as many as it may (RFC 5267 4.3.1); the command's other
    return options are honoured either way. Refused too when keeping it
    would go over a large folder at every change (`contexts.costly`)."""
    if costly(context, view.exists):
        ctx.send(noupdate(context.tag, "Folder too large to keep this search up to date"))
        return
    if not keep(view.contexts, context, ctx.services.settings.limits.imap_update_contexts):
        ctx.send(noupdate(context.tag))
        return
    context.state = view.state()


async def search(ctx: Context, cmd: Search) -> Reply:
    view = require_view(ctx)
    saved_before = view.saved
    saving = cmd.return_options is not None and "SAVE" in cmd.return_options
    try:
        updating = check_update_tag(view, cmd.tag, cmd.return_options)
        if cmd.charset is not None and "UTF8=ACCEPT" in ctx.session.enabled:
            # RFC 6855 3: after ENABLE UTF8=ACCEPT, a CHARSET conflicts with UTF-8
            # (IMAP4rev2 alone keeps CHARSET: RFC 9051 6.4.4 takes UTF-8 and US-ASCII).
            raise fail(SEARCH_CHARSET_UTF8)
        check_charset(cmd.charset)
        found = await matching(ctx, view, cmd.key)
    except Exception:
        if saving:
            view.saved = frozenset()  # RFC 5182 2.1: a failed SAVE empties "$"
        raise
    uses_modseq = _uses_modseq(cmd.key)
    modseq = max(found.modseqs) if uses_modseq and found.uids else None
    numbers = found.uids if cmd.uid else found.seqs
    options = cmd.return_options
    if options is None and ctx.session.rev2:
        # RFC 9051 6.4.4: SEARCH is answered with ESEARCH, ALL when no RETURN.
        options = ("ALL",)
    if options is None:
        ctx.send(search_response(numbers, modseq))
        return ok("SEARCH completed")
    if saving:
        view.saved = saved_uids(options, found.uids)
    if updating:
        keep_updating(ctx, view, UpdatingContext(cmd.tag, cmd.uid, cmd.key, None, saved_before,
                                                 list(found.uids)))
    if options != ("SAVE",):  # SAVE alone: no ESEARCH response (RFC 5182 2.4)
        ctx.send(esearch(cmd.tag, cmd.uid, options, cmd.partial, numbers, modseq=modseq))
    return ok("SEARCH completed")


HANDLERS: dict[type[Command], Handler] = {Search: search}
