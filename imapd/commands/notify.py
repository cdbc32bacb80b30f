"""NOTIFY (RFC 5465): NOTIFY NONE and NOTIFY SET [STATUS].

The handler checks the events, resolves the mailboxes the groups cover
(`imapd.notify`), reads their state once (sent at once with STATUS; kept as
the baseline a later change is compared with otherwise) and hands the spec
to the protocol, which watches those folders and sends the events as they
come (`IMAPServerProtocol.set_notify`). The tagged OK is followed by the
selected mailbox's pending changes: a NOTIFY SET is an implicit NOOP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imapd.commands.base import Context, Handler, ok
from imapd.commands.listing import _collect_in
from imapd.errors import NOTIFY_BADEVENT, NOTIFY_TOO_MANY, Reply, fail
from imapd.namespace import Namespaces
from imapd.notify import (
    MAX_WATCHED,
    SUPPORTED_EVENTS,
    Box,
    Candidate,
    NotifySpec,
    resolve,
    status_key,
    status_line,
)
from imapd.parser.commands import Command, Notify
from policy.decisions import Identity, Policy
from storage.interface import FolderStatus, MessageStore, NotFound


def candidates(
    policy: Policy, store: MessageStore, identity: Identity
) -> tuple[Namespaces, list[Candidate], set[str]]:
    """The namespaces, the selectable mailboxes this user may look up now,
    with rights, and the names on their subscription lists (in the caller's
    read scope)."""
    listing = _collect_in(policy, store, identity)
    return listing.namespaces, [
        Candidate(e.folder.id, e.name, e.rights, e.personal, e.name in listing.subscribed,
                  e.seen_account)
        for e in listing.entries if e.folder is not None], set(listing.subscribed)


# namespaces, boxes, the next grant change, the subscribed names
Resolved = tuple[Namespaces, dict[int, Box], "datetime | None", set[str]]


def read_boxes(
    policy: Policy, store: MessageStore, identity: Identity, spec: NotifySpec,
    folder_ids: list[int] | None,
) -> tuple[int, Resolved | None, dict[int, FolderStatus]]:
    """One read: the access epoch; the namespaces, boxes and next grant
    change again when the epoch moved since the spec was resolved or a
    grant began or ended by itself (None: unchanged); the state of
    `folder_ids` (None: every box) that are still watched. A folder gone is
    left out."""
    with store.read_scope():
        epoch = store.access_epoch()
        boxes: dict[int, Box] | None = None
        namespaces: Namespaces | None = None
        until = None
        subscribed: set[str] = set()
        if not spec.current(epoch, policy.now()):
            namespaces, found, subscribed = candidates(policy, store, identity)
            boxes = resolve(spec, found)
            until = policy.grants_change_at(identity)
        current = spec.boxes if boxes is None else boxes
        wanted = list(current) if folder_ids is None else [f for f in folder_ids if f in current]
        if boxes is not None and folder_ids is not None:
            # Newly visible boxes: their state now is the baseline (not told).
            wanted += [f for f in boxes if f not in spec.boxes and f not in wanted]
        states: dict[int, FolderStatus] = {}
        for fid in wanted:
            b = current[fid]
            try:
                states[fid] = store.folder_status(fid, seen_account=b.seen_account)
            except NotFound:
                continue
        if namespaces is None or boxes is None:
            return epoch, None, states
        return epoch, (namespaces, boxes, until, subscribed), states


async def notify(ctx: Context, cmd: Notify) -> Reply:
    session = ctx.session
    identity = session.identity
    assert identity is not None
    if not cmd.groups:
        ctx.set_notify(None)
        return ok("NOTIFY completed")
    asked = {e for g in cmd.groups for e in g.events}
    if asked - set(SUPPORTED_EVENTS):
        raise fail(NOTIFY_BADEVENT)
    spec = NotifySpec(cmd.groups)
    policy, store = ctx.services.policy, ctx.services.store

    def setup() -> tuple[Any, int, dict[int, Box], dict[int, FolderStatus]]:
        with store.read_scope():
            epoch = store.access_epoch()
            namespaces, found, subscribed = candidates(policy, store, identity)
            boxes = resolve(spec, found)
            if len(boxes) > MAX_WATCHED:
                return namespaces, epoch, boxes, {}
            spec.epoch, spec.boxes, spec.subscribed = epoch, boxes, subscribed
            spec.until = policy.grants_change_at(identity)
            _, _, states = read_boxes(policy, store, identity, spec, None)
            return namespaces, epoch, boxes, states

    namespaces, epoch, boxes, states = await ctx.run(setup)
    session.namespaces = namespaces
    if len(boxes) > MAX_WATCHED:
        raise fail(NOTIFY_TOO_MANY)
    condstore = "CONDSTORE" in session.enabled
    selected = session.view.folder_id if session.view is not None else None
    out: list[bytes] = []
    for fid, st in states.items():
        box = boxes[fid]
        spec.told[fid] = status_key(st, box.events, condstore)
        # RFC 5465 3.1: the STATUS of each (but the selected) before the OK.
        if cmd.status and fid != selected:
            out.append(status_line(box, st, condstore, session.utf8))
    ctx.send(b"".join(out))
    ctx.set_notify(spec)
    return ok("NOTIFY completed")


HANDLERS: dict[type[Command], Handler] = {Notify: notify}
