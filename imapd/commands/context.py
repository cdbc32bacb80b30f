"""RFC 5267 4.3 updating contexts: CANCELUPDATE, and computing the kept
SEARCH / SORT results again when the selected folder changed.

`context_updates` runs where unsolicited responses may be sent (after each
command, during IDLE), before `SelectedView.flush`: it returns the
REMOVEFROM responses of messages that stopped matching; the view tells
the ADDTO ones after EXISTS, and an expunge's REMOVEFROM before it.
"""

from __future__ import annotations

from imapd.commands.base import Context, Handler, ok
from imapd.commands.search import matching
from imapd.commands.selected import require_view
from imapd.commands.sort import sort_these, sorted_uids
from imapd.contexts import UpdatingContext, local
from imapd.errors import Reply
from imapd.parser.commands import CancelUpdate, Command
from imapd.view import SelectedView


async def _result(ctx: Context, view: SelectedView, context: UpdatingContext,
                  touched: set[int]) -> list[int]:
    if local(context.key):
        # Only what came or changed is looked at again; what the client
        # knows and did not change keeps its answer (expunges have left).
        again = sorted(touched)
        hits = set((await matching(ctx, view, context.key, context.saved, only=again)).uids)
        members = sorted({u for u in context.result if u not in touched} | hits)
        if context.criteria is None:
            return members
        return await sort_these(ctx, view, context.criteria, members)
    if context.criteria is not None:
        return await sorted_uids(ctx, view, context.key, context.criteria, context.saved)
    return list((await matching(ctx, view, context.key, context.saved)).uids)


async def context_updates(ctx: Context, view: SelectedView) -> list[bytes]:
    """Computes again the contexts whose folder changed since they were last
    computed (none: no work); REMOVEFROM responses to send now."""
    results: dict[str, tuple[tuple[int, ...], list[int]]] = {}
    touched, view.touched = view.touched, set()
    try:
        for tag, context in list(view.contexts.items()):
            state = view.state()
            if context.state == state:
                continue
            if not touched and local(context.key):
                # Nothing came or changed flags: a key about each message
                # alone answers as before (an expunge has left already).
                context.state = state
                continue
            results[tag] = (state, await _result(ctx, view, context, touched))
            if ctx.session.view is not view:
                return []
    except BaseException:
        view.touched |= touched  # looked at again next time
        raise
    return view.revise_contexts(results) if results else []


async def cancel_update(ctx: Context, cmd: CancelUpdate) -> Reply:
    """RFC 5267 4.3.5. A tag with no updating context (never one, refused
    with NOUPDATE, or already cancelled) is no error: the client wants no
    updates for it, and it gets none."""
    view = require_view(ctx)
    for tag in cmd.tags:
        view.contexts.pop(tag, None)
    if not view.contexts:
        view.touched.clear()
    return ok("No further updates")


HANDLERS: dict[type[Command], Handler] = {CancelUpdate: cancel_update}
