"""Helpers for commands on the selected mailbox: resolving sequence sets
through the session's own view, and pulling changes made elsewhere."""

from __future__ import annotations

from imapd.commands.base import Context
from imapd.errors import bad
from imapd.parser.commands import SequenceSet
from imapd.view import SelectedView
from storage.interface import NotFound


def require_view(ctx: Context) -> SelectedView:
    view = ctx.session.view
    if view is None:  # the dispatch state check makes this unreachable
        raise bad("No mailbox selected")
    return view


def resolve_set(view: SelectedView, sequence_set: SequenceSet, uid: bool) -> list[int]:
    """UIDs (ascending) named by the set, through this session's numbering.

    Sequence numbers outside 1..EXISTS are a client error (BAD); UIDs that do
    not exist are ignored (RFC 3501 6.4.8).
    """
    if sequence_set.saved:
        raise bad("Saved search results are not supported")
    if uid:
        largest = view.max_uid()
        if largest == 0:
            return []
        return view.uids_for_uid_ranges(sequence_set.merged_bounds(largest))
    exists = view.exists
    if exists == 0:
        # RFC 3501 9: every sequence number is invalid in an empty mailbox,
        # "*" included.
        raise bad("No messages: invalid message sequence number")
    spans = sequence_set.merged_bounds(exists)
    for low, high in spans:
        if low < 1 or high > exists:
            raise bad("Invalid message sequence number")
    return view.uids_for_seq_ranges(spans)


async def sync_view(ctx: Context, *, force: bool = False) -> None:
    """Absorb what changed in the store since this view last looked.

    Done when forced (NOOP, CHECK, IDLE, after this session's own writes) or
    when the folder watcher marked the view dirty; otherwise skipped, so a
    busy session does not pay a query per command.
    """
    view = ctx.session.view
    if view is None or not (force or view.dirty):
        return
    try:
        changes, claimed = await ctx.watcher.pull(
            view.folder_id, view.highestmodseq, not view.readonly, view.max_uid()
        )
    except NotFound:
        return  # the folder was deleted elsewhere: nothing more to learn
    if ctx.session.view is view:
        view.absorb(changes, claimed)


def is_shared(ctx: Context) -> bool:
    place = ctx.session.selected_place
    identity = ctx.session.identity
    return place is not None and identity is not None and (
        place.prefix != "" or place.mailbox.owner_account_id != identity.account.id
    )


async def trace(ctx: Context, action: str, count: int) -> None:
    """One audit event per command that reads messages of a shared mailbox:
    every access to a functional mailbox is traced to the agent."""
    if not is_shared(ctx) or count == 0:
        return
    place = ctx.session.selected_place
    assert place is not None
    await ctx.run(ctx.services.audit.record, ctx.session.actor, action,
                  f"{place.mailbox.address}/{place.folder}", "ok", messages=count)
