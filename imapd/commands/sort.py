"""SORT, THREAD and their UID forms (RFC 5256, RFC 5957 SORT=DISPLAY,
RFC 5267 ESORT and CONTEXT=SORT's UPDATE), with RFC 5182 SAVE.

The messages are chosen as SEARCH chooses them; the keys kept at delivery
(`storage.sortkeys`), sizes and internal dates are read, and the ordering or
threading done, in one call off the reactor (`imapd.sort`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from imapd import responses
from imapd import sort as engine
from imapd.commands.base import Context, Handler, ok
from imapd.commands.search import (
    _uses_modseq,
    check_charset,
    check_update_tag,
    keep_updating,
    matching,
    saved_uids,
)
from imapd.commands.selected import require_view
from imapd.contexts import UpdatingContext
from imapd.errors import Reply
from imapd.parser.commands import (
    Command,
    SearchKey,
    Sort,
    SortCriterion,
    Thread,
    ThreadAlgorithm,
)
from imapd.view import SelectedView
from storage.interface import MessageStore, SortKeys
from storage.sortkeys import paused_gc


def _keys(store: MessageStore, folder_id: int, seqs: Sequence[int], uids: Sequence[int]
          ) -> tuple[list[SortKeys], Sequence[int], Sequence[int]]:
    """The keys of these messages (sequence numbers and UIDs, in sequence
    order), and those numbers again: a UID without keys was expunged
    meanwhile and takes no part."""
    found = store.sort_keys(folder_id, uids)
    if not all(map(found.__contains__, uids)):
        present = [j for j, u in enumerate(uids) if u in found]
        seqs = [seqs[j] for j in present]
        uids = [uids[j] for j in present]
    return list(map(found.__getitem__, uids)), seqs, uids


def _sorted(store: MessageStore, cache: engine.ResultCache, key: Hashable, folder_id: int,
            seqs: Sequence[int], uids: Sequence[int], criteria: Sequence[SortCriterion],
            uid: bool) -> list[int]:
    """The UIDs (or sequence numbers) of the messages in the criteria's
    order; `seqs` and `uids` name them, in sequence order. Looked up in
    `cache` here, in the store call that checks the session's access."""
    found_before: list[int] | None = cache.get(key)
    if found_before is not None:
        return found_before
    numbers = _sort_now(store, folder_id, seqs, uids, criteria, uid)
    cache.put(key, numbers)
    return numbers


def _sort_now(store: MessageStore, folder_id: int, seqs: Sequence[int], uids: Sequence[int],
              criteria: Sequence[SortCriterion], uid: bool) -> list[int]:
    # Every step makes a list of 100,000 things: the cyclic collector would
    # walk the heap again and again meanwhile.
    with paused_gc():
        keys, seqs, uids = _keys(store, folder_id, seqs, uids)
        numbers = uids if uid else seqs
        return [numbers[j] for j in engine.sort_order(keys, criteria)]


def _threaded(store: MessageStore, cache: engine.ResultCache, key: Hashable, folder_id: int,
              seqs: Sequence[int], uids: Sequence[int], algorithm: ThreadAlgorithm,
              uid: bool) -> str:
    found_before: str | None = cache.get(key)
    if found_before is not None:
        return found_before
    with paused_gc():
        keys, seqs, uids = _keys(store, folder_id, seqs, uids)
        text = engine.render_threads(engine.thread_keys(keys, algorithm), uids if uid else seqs)
    cache.put(key, text)
    return text


async def _chosen(ctx: Context, view: SelectedView, key: SearchKey,
                  saved: frozenset[int] | None = None) -> tuple[Sequence[int], Sequence[int]]:
    """(sequence numbers, UIDs) of the messages `key` matches."""
    found = await matching(ctx, view, key, saved)
    return found.seqs, found.uids


async def sorted_uids(ctx: Context, view: SelectedView, key: SearchKey,
                      criteria: Sequence[SortCriterion], saved: frozenset[int]) -> list[int]:
    """The UIDs of the messages `key` matches, in the criteria's order (an
    updating context computed again; "$" as the context keeps it)."""
    seqs, uids = await _chosen(ctx, view, key, saved)
    return await _uids_in_order(ctx, view, criteria, seqs, uids)


async def sort_these(ctx: Context, view: SelectedView, criteria: Sequence[SortCriterion],
                     uids: Sequence[int]) -> list[int]:
    """`uids` (ascending, in the view) in the criteria's order."""
    return await _uids_in_order(ctx, view, criteria, [view.seq_of(u) or 0 for u in uids], uids)


async def _uids_in_order(ctx: Context, view: SelectedView, criteria: Sequence[SortCriterion],
                         seqs: Sequence[int], uids: Sequence[int]) -> list[int]:
    cache_key = engine.ResultCache.key(view.folder_id, view.uidvalidity, tuple(criteria), True,
                                       seqs, uids)
    found: list[int] = await ctx.run_selected(
        _sorted, ctx.services.store, engine.results_for(ctx.services), cache_key,
        view.folder_id, seqs, uids, criteria, True)
    return found


async def sort(ctx: Context, cmd: Sort) -> Reply:
    view = require_view(ctx)
    saved_before = view.saved
    saving = cmd.return_options is not None and "SAVE" in cmd.return_options
    try:
        updating = check_update_tag(view, cmd.tag, cmd.return_options)
        check_charset(cmd.charset)
        seqs, uids = await _chosen(ctx, view, cmd.key)
        key = engine.ResultCache.key(view.folder_id, view.uidvalidity, cmd.criteria, cmd.uid,
                                     seqs, uids)
        numbers = await ctx.run_selected(_sorted, ctx.services.store,
                                         engine.results_for(ctx.services), key, view.folder_id,
                                         seqs, uids, cmd.criteria, cmd.uid)
    except Exception:
        if saving:
            view.saved = frozenset()  # RFC 5182 2.1: a failed SAVE empties "$"
        raise
    # RFC 7162 3.1.5: a MODSEQ search key makes the answer carry the highest
    # mod-sequence of the messages it returns, as SEARCH does.
    modseq = (max(view.modseqs[s - 1] for s in seqs)
              if seqs and _uses_modseq(cmd.key) else None)
    options = cmd.return_options
    if options is None:
        ctx.send(responses.sort(numbers, modseq))
        return ok("Sort completed")
    if saving or updating:
        in_order = numbers if cmd.uid else [view.uids[n - 1] for n in numbers]
    if saving:
        view.saved = saved_uids(options, in_order, ordered=True)
    if updating:
        keep_updating(ctx, view, UpdatingContext(cmd.tag, cmd.uid, cmd.key, cmd.criteria,
                                                 saved_before, in_order))
    if options != ("SAVE",):
        ctx.send(responses.esearch(cmd.tag, cmd.uid, options, cmd.partial, numbers, ordered=True,
                                   modseq=modseq))
    return ok("Sort completed")


async def thread(ctx: Context, cmd: Thread) -> Reply:
    view = require_view(ctx)
    check_charset(cmd.charset)
    seqs, uids = await _chosen(ctx, view, cmd.key)
    key = engine.ResultCache.key(view.folder_id, view.uidvalidity, cmd.algorithm, cmd.uid,
                                 seqs, uids)
    text = await ctx.run_selected(_threaded, ctx.services.store, engine.results_for(ctx.services),
                                  key, view.folder_id, seqs, uids, cmd.algorithm, cmd.uid)
    ctx.send(responses.thread(text))
    return ok("Thread completed")


HANDLERS: dict[type[Command], Handler] = {Sort: sort, Thread: thread}

