"""Helpers for commands on the selected mailbox: resolving sequence sets
through the session's own view, and pulling changes made elsewhere."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from imapd.commands.base import Context
from imapd.errors import bad
from imapd.parser.commands import SequenceSet
from imapd.responses import sequence_set
from imapd.view import SelectedView
from storage.interface import NotFound

log = logging.getLogger(__name__)


def require_view(ctx: Context) -> SelectedView:
    view = ctx.session.view
    if view is None:  # the dispatch state check makes this unreachable
        raise bad("No mailbox selected")
    return view


def resolve_set(view: SelectedView, sequence_set: SequenceSet, uid: bool) -> list[int]:
    """UIDs (ascending) named by the set, through this session's numbering.

    Sequence numbers outside 1..EXISTS are a client error (BAD); UIDs that do
    not exist are ignored (RFC 3501 6.4.8). ``$`` (RFC 5182) is the saved
    result, as UIDs whether or not the command is a UID one; it is empty
    (no message, no error) when nothing was saved or all were expunged.
    """
    if sequence_set.saved:
        return sorted(u for u in view.saved if view.has(u))
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


async def sync_view(ctx: Context, *, force: bool = False, own_write: bool = False) -> None:
    """Absorb what changed in the store since this view last looked.

    Done when forced (NOOP, CHECK, IDLE, after this session's own writes) or
    when the folder watcher marked the view dirty; otherwise skipped, so a
    busy session does not pay a query per command. `own_write`: the session
    has just committed a change it must see (its APPEND, its COPY into this
    folder): the query is one started after that commit.
    """
    view = ctx.session.view
    if view is None or not (force or own_write or view.dirty):
        return
    try:
        changes, claimed = await ctx.watcher.pull(
            view.folder_id, view.highestmodseq, not (view.readonly or view.rev2), view.max_uid(),
            fresh=own_write, seen_account=view.seen_account,
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

async def audit_content(ctx: Context, action: str, uids: Sequence[int], **extra: Any) -> None:
    """ONE audit event per command that returned or changed message content
    (health data: every read is recorded; so are flag changes, copies, moves
    and expunges, with `extra` details), in any mailbox, naming the agent,
    the mailbox/folder and the UIDs as a compact set; never the content.

    A non-blocking sink is called right here; one that may wait for the
    database is called off the reactor. A lost event is logged, never fatal
    to the command."""
    place = ctx.session.selected_place
    if place is None:
        return
    await record_content(ctx, action, f"{place.mailbox.address}/{place.folder}", uids, **extra)


async def record_content(
    ctx: Context, action: str, target: str, uids: Sequence[int], **extra: Any
) -> None:
    """`audit_content` for messages of any folder (`target`: address/folder),
    e.g. those a CATENATE URL read."""
    if not uids:
        return
    audit = ctx.services.audit
    args = (ctx.session.actor, action, target, "ok")
    details: dict[str, Any] = {"messages": len(uids), "uids": sequence_set(uids).decode(), **extra}
    try:
        if getattr(audit, "nonblocking", False):
            audit.record(*args, **details)
        else:
            await ctx.run(audit.record, *args, **details)
    except Exception:  # noqa: BLE001 - the reader already has the data
        log.exception("audit event lost: %s %s", action, target)
