"""SORT, THREAD and their UID forms (RFC 5256, RFC 5957 SORT=DISPLAY,
RFC 5267 ESORT), with RFC 5182 SAVE.

The messages are chosen as SEARCH chooses them; the keys kept at delivery
(`storage.sortkeys`), sizes and internal dates are read, and the ordering or
threading done, in one call off the reactor (`imapd.sort`).
"""

from __future__ import annotations

from collections.abc import Sequence

from imapd import sort as engine
from imapd.commands.base import Context, Handler, ok
from imapd.commands.search import check_charset, esearch_line, matching, saved_uids
from imapd.commands.selected import require_view
from imapd.errors import Reply
from imapd.parser.commands import Command, Sort, SortCriterion, Thread, ThreadAlgorithm
from storage.interface import MessageStore
from storage.sortkeys import paused_gc


def _items(store: MessageStore, folder_id: int,
           found: Sequence[tuple[int, int]]) -> list[engine.Item]:
    keys = store.sort_keys(folder_id, [uid for _, uid in found])
    new, item = tuple.__new__, engine.Item
    with paused_gc():
        # a UID without keys was expunged meanwhile: it takes no part
        return [new(item, (seq, uid, keys[uid])) for seq, uid in found if uid in keys]


def _sorted(store: MessageStore, folder_id: int, found: Sequence[tuple[int, int]],
            criteria: Sequence[SortCriterion]) -> list[tuple[int, int]]:
    """(seq, uid) of `found` in the criteria's order."""
    return [(i.seq, i.uid) for i in engine.sort_items(_items(store, folder_id, found), criteria)]


def _threaded(store: MessageStore, folder_id: int, found: Sequence[tuple[int, int]],
              algorithm: ThreadAlgorithm, uid: bool) -> str:
    roots = engine.thread(_items(store, folder_id, found), algorithm)
    return engine.render_threads(roots, uid)


async def sort(ctx: Context, cmd: Sort) -> Reply:
    view = require_view(ctx)
    saving = cmd.return_options is not None and "SAVE" in cmd.return_options
    try:
        check_charset(cmd.charset)
        found = [(seq, uid) for seq, uid, _ in await matching(ctx, view, cmd.key)]
        ordered = await ctx.run_selected(_sorted, ctx.services.store, view.folder_id, found,
                                         cmd.criteria)
    except Exception:
        if saving:
            view.saved = frozenset()  # RFC 5182 2.1: a failed SAVE empties "$"
        raise
    numbers = [uid if cmd.uid else seq for seq, uid in ordered]
    options = cmd.return_options
    if options is None:
        ctx.send(("* SORT" + "".join(f" {n}" for n in numbers) + "\r\n").encode())
        return ok("Sort completed")
    if saving:
        view.saved = saved_uids(options, [uid for _, uid in ordered], ordered=True)
    if options != ("SAVE",):
        ctx.send(esearch_line(cmd.tag, cmd.uid, options, cmd.partial, numbers, ordered=True))
    return ok("Sort completed")


async def thread(ctx: Context, cmd: Thread) -> Reply:
    view = require_view(ctx)
    check_charset(cmd.charset)
    found = [(seq, uid) for seq, uid, _ in await matching(ctx, view, cmd.key)]
    text = await ctx.run_selected(_threaded, ctx.services.store, view.folder_id, found,
                                  cmd.algorithm, cmd.uid)
    ctx.send(("* THREAD" + (" " + text if text else "") + "\r\n").encode())
    return ok("Thread completed")


HANDLERS: dict[type[Command], Handler] = {Sort: sort, Thread: thread}

