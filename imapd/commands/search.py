"""SEARCH and UID SEARCH (RFC 3501 6.4.4, RFC 7162 MODSEQ).

Keys that only look at flags, sizes, dates, sets and MODSEQ are answered from
the session's view with no store call; others load the stored metadata in
batches (and bodies only for BODY/TEXT/other headers), all in the store thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from imapd import search as engine
from imapd.commands.base import Context, Handler, ok
from imapd.commands.selected import require_view
from imapd.errors import SEARCH_CHARSET_UTF8, Reply, fail, no
from imapd.parser.commands import (
    SUPPORTED_SEARCH_CHARSETS,
    Command,
    DateField,
    Search,
    SearchAnd,
    SearchDate,
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


def _uses_modseq(key: SearchKey) -> bool:
    if isinstance(key, SearchModSeq):
        return True
    if isinstance(key, SearchNot):
        return _uses_modseq(key.key)
    if isinstance(key, SearchOr):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, SearchAnd):
        return any(_uses_modseq(k) for k in key.keys)
    return False


def _run(
    store: MessageStore | None, folder_id: int, key: SearchKey,
    messages: Sequence[tuple[int, MessageInfo]], recent: frozenset[int], max_uid: int,
    now: datetime,
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
                              recent=recent, now=now):
                out.append((seq, info.uid, info.modseq))
    return out


async def search(ctx: Context, cmd: Search) -> Reply:
    view = require_view(ctx)
    if cmd.charset is not None and ctx.session.utf8:
        # RFC 6855 3: after ENABLE UTF8=ACCEPT, a CHARSET conflicts with UTF-8.
        raise fail(SEARCH_CHARSET_UTF8)
    if cmd.charset is not None and cmd.charset not in SUPPORTED_SEARCH_CHARSETS:
        raise no("Unsupported charset", "BADCHARSET (" + " ".join(SUPPORTED_SEARCH_CHARSETS) + ")")
    uses_modseq = _uses_modseq(cmd.key)
    if uses_modseq:
        ctx.session.enabled.add("CONDSTORE")
        view.condstore = True
    sizes: dict[int, tuple[int, datetime]] = {}
    if _needs_sizes(cmd.key):
        sizes = await ctx.run_selected(ctx.services.store.sizes_and_dates, view.folder_id,
                                       list(view.uids))
    unknown = (0, _EPOCH)  # never looked at: the key does not use sizes or dates
    messages = []
    for i, (uid, modseq) in enumerate(zip(view.uids, view.modseqs, strict=True)):
        size, when = sizes.get(uid, unknown)
        messages.append(
            (i + 1, MessageInfo(uid, modseq, view.display_flags(uid), size, when, {}))
        )
    store = ctx.services.store if _needs_meta(cmd.key) else None
    now = datetime.now().astimezone()
    if store is None:
        found = _run(None, view.folder_id, cmd.key, messages, frozenset(view.recent),
                     view.max_uid(), now)
    else:
        found = await ctx.run_selected(_run, store, view.folder_id, cmd.key, messages,
                                       frozenset(view.recent), view.max_uid(), now)
    numbers = [uid if cmd.uid else seq for seq, uid, _ in found]
    line = "* SEARCH" + "".join(f" {n}" for n in numbers)
    if uses_modseq and found:
        line += f" (MODSEQ {max(m for _, _, m in found)})"
    ctx.send((line + "\r\n").encode())
    return ok("SEARCH completed")


HANDLERS: dict[type[Command], Handler] = {Search: search}
