"""STORE, COPY, MOVE, EXPUNGE (RFC 3501 6.4.3/6.4.6/6.4.7, UIDPLUS RFC 4315,
MOVE RFC 6851, CONDSTORE RFC 7162 UNCHANGEDSINCE).

Sequence numbers are turned into UIDs through the session's own view before
anything is changed, so a message expunged elsewhere but not yet announced is
never confused with its neighbour.

Each change is ONE audit event after the access decisions: the agent, the
folder, the UIDs changed as a compact set and the Message-IDs of the first
`AUDIT_MESSAGE_IDS` of them (from the metadata stored at delivery)."""

from __future__ import annotations

from collections.abc import Sequence

from imapd.commands.access import resolve_folder
from imapd.commands.base import Context, Handler, ok
from imapd.commands.mailbox import check_flags
from imapd.commands.selected import audit_content, require_view, resolve_set, sync_view
from imapd.errors import (
    EXPUNGE_ISSUED,
    READ_ONLY,
    STORE_RECENT,
    NoPermission,
    NotPermitted,
    Reply,
    fail,
    no,
)
from imapd.namespace import Namespaces, Place
from imapd.parser.commands import Command, Copy, Expunge, Move, Store, StoreMode
from imapd.responses import (
    TRYCREATE,
    copyuid,
    fetch_flags,
    modified,
    sequence_set,
    untagged_ok,
)
from policy.decisions import Identity, Policy, seen_account
from storage.interface import (
    CopyResult,
    Expunged,
    FlagChange,
    FlagMode,
    MessageStore,
    NotFound,
)

# Message-IDs named per audit event (the UID set is always complete): a
# STORE on 1:* of a large folder must not read and log every envelope.
AUDIT_MESSAGE_IDS = 100


def _check(policy: Policy, identity: Identity, place: Place, rights: str, action: str) -> None:
    for right in rights:
        decision = policy.check_mailbox_access(identity, place.mailbox, place.folder, right, action)
        if not decision.allowed:
            raise NoPermission(action)


def _session(ctx: Context) -> tuple[Identity, Namespaces, Place]:
    s = ctx.session
    assert s.identity is not None and s.namespaces is not None and s.selected_place is not None
    return s.identity, s.namespaces, s.selected_place


# ---------------------------------------------------------------- STORE


def _store_flags(
    policy: Policy, store: MessageStore, identity: Identity, place: Place, folder_id: int,
    uids: Sequence[int], mode: FlagMode, flags: Sequence[str], rights: str,
    unchanged_since: int | None,
) -> tuple[list[FlagChange], list[int], dict[int, str]]:
    _check(policy, identity, place, rights, "store")
    # Read before the write (the writer lane holds the lock from the first write).
    ids = store.message_ids(folder_id, uids[:AUDIT_MESSAGE_IDS])
    changes, failed = store.store_flags(
        folder_id, uids, mode, flags, unchanged_since=unchanged_since,
        seen_account=seen_account(identity, place.mailbox))
    return changes, failed, ids


async def store(ctx: Context, cmd: Store) -> Reply:
    view = require_view(ctx)
    identity, _, place = _session(ctx)
    check_flags(cmd.flags)
    if any(f.lower() == "\\recent" for f in cmd.flags):
        # Only the server sets \Recent (RFC 3501 2.3.2): refused as the
        # stricter servers do, rather than answered OK and ignored.
        raise fail(STORE_RECENT)
    if view.readonly:
        raise fail(READ_ONLY)
    flags = list(cmd.flags)
    if cmd.mode is StoreMode.REPLACE:
        rights = "stw"
    else:
        rights = "".join(sorted({
            {"\\Seen": "s", "\\Deleted": "t"}.get(f, "w") for f in flags
        }))
    if cmd.unchanged_since is not None:
        ctx.session.enabled.add("CONDSTORE")
        view.condstore = True
    uids = resolve_set(view, cmd.sequence_set, cmd.uid)
    live = [u for u in uids if view.live(u)]
    changes: list[FlagChange] = []
    failed: list[int] = []
    if live and (flags or cmd.mode is StoreMode.REPLACE):
        changes, failed, ids = await ctx.run_write_selected(
            _store_flags, ctx.services.policy, ctx.services.store, identity, place,
            view.folder_id, live, FlagMode(cmd.mode.value), flags, rights, cmd.unchanged_since,
        )
        if changes or failed:
            changed_uids = [c.uid for c in changes]
            await audit_content(
                ctx, "store", changed_uids, mode=cmd.mode.value, flags=flags,
                message_ids=_named(changed_uids, ids),
                **({"failed": sequence_set(failed).decode()} if failed else {}),
            )
    for c in changes:
        view.set_flags(c.uid, c.flags, c.modseq)
    if changes:
        ctx.watcher.notify_local(view.folder_id, exclude=getattr(ctx, "watch_token", None))
    failed_set = set(failed)
    changed = {c.uid for c in changes}
    if len(changed) + len(failed_set) < len(live) and (flags or cmd.mode is StoreMode.REPLACE):
        # Some message did not change: already so, or expunged by another
        # session since this view last looked. The view learns which (as
        # pending expunges, announced when allowed), so that no FETCH below
        # shows flags of a message that is gone (RFC 2180 4.2).
        await sync_view(ctx, own_write=True)
    gone = [u for u in uids if not view.live(u)]
    out: list[bytes] = view.announce_keywords(changed)
    for uid in uids:
        seq = view.seq_of(uid)
        if seq is None or uid in failed_set or not view.live(uid):
            continue
        if cmd.silent and not (view.condstore and uid in changed):
            continue
        out.append(fetch_flags(
            seq, uid if cmd.uid or view.condstore else None,  # RFC 7162 3.1
            None if cmd.silent else view.display_flags(uid),
            view.modseq_of(uid) if view.condstore else None))
    ctx.send(b"".join(out))
    if failed:
        numbers = sorted(failed) if cmd.uid else sorted(
            s for s in (view.seq_of(u) for u in failed) if s is not None
        )
        # (No number left only if every failed message is gone meanwhile.)
        return ok("Conditional STORE failed", modified(numbers) if numbers else None)
    # RFC 2180 4.2: the other messages were changed; UID STORE ignores UIDs
    # that no longer exist (RFC 3501 6.4.8) and .SILENT answers OK (4.2.1);
    # a plain STORE that named an expunged message answers NO (4.2.2/4.2.3).
    if gone and not cmd.uid and not cmd.silent:
        raise fail(EXPUNGE_ISSUED)
    return ok("STORE completed")


# ---------------------------------------------------------------- COPY / MOVE


def _copy(
    policy: Policy, store: MessageStore, identity: Identity, namespaces: Namespaces,
    source: Place, folder_id: int, uids: Sequence[int], dest_name: str, move: bool,
) -> tuple[CopyResult, int, str, dict[int, str]]:
    if move:
        _check(policy, identity, source, "te", "move")
    try:
        dest_place, dest = resolve_folder(policy, store, identity, namespaces, dest_name, "i",
                                          "move" if move else "copy")
    except (NotFound, NotPermitted):
        raise no("Destination mailbox does not exist", TRYCREATE) from None
    ids = store.message_ids(folder_id, uids[:AUDIT_MESSAGE_IDS])  # before a move takes them
    where = f"{dest_place.mailbox.address}/{dest.name}"
    # \\Seen as the copier sees it; into a mailbox with private \\Seen, hers.
    seen = {"seen_account": seen_account(identity, source.mailbox),
            "dest_seen_account": seen_account(identity, dest_place.mailbox)}
    if move:
        return store.move(folder_id, uids, dest.id, **seen), dest.id, where, ids
    return store.copy(folder_id, uids, dest.id, **seen), dest.id, where, ids


async def copy(ctx: Context, cmd: Copy | Move) -> Reply:
    view = require_view(ctx)
    identity, namespaces, place = _session(ctx)
    is_move = isinstance(cmd, Move)
    if is_move and view.readonly:
        raise fail(READ_ONLY)
    uids = [u for u in resolve_set(view, cmd.sequence_set, cmd.uid) if view.live(u)]
    name = "MOVE" if is_move else "COPY"
    if not uids:
        # Still check the destination, so a bad name is reported as such.
        return ok(f"{name} completed (no messages)")
    result, dest_id, where, ids = await ctx.run_selected(
        _copy, ctx.services.policy, ctx.services.store, identity, namespaces, place,
        view.folder_id, uids, cmd.mailbox, is_move,
    )
    if result.source_uids:
        await audit_content(
            ctx, "move" if is_move else "copy", result.source_uids, to=where,
            dest_uids=sequence_set(result.dest_uids, sort=False).decode(), message_ids=_named(result.source_uids, ids),
        )
    token = getattr(ctx, "watch_token", None)
    ctx.watcher.notify_local(dest_id, exclude=token)
    code = None
    if result.source_uids:
        code = copyuid(result.uidvalidity, result.source_uids, result.dest_uids)
    if is_move:
        if code is not None:
            ctx.send(untagged_ok(code, "Moved"))
        ctx.send(b"".join(view.expunge_now(result.source_uids)))
        ctx.watcher.notify_local(view.folder_id, exclude=token)
        code = None
    if dest_id == view.folder_id:
        await sync_view(ctx, own_write=True)
    return ok(f"{name} completed", code)


# ---------------------------------------------------------------- EXPUNGE


def _expunge(
    policy: Policy, store: MessageStore, identity: Identity, place: Place, folder_id: int,
    uids: Sequence[int] | None,
) -> Expunged:
    _check(policy, identity, place, "e", "expunge")
    return store.expunge_traced(folder_id, uids, max_ids=AUDIT_MESSAGE_IDS)


def _named(uids: Sequence[int], ids: dict[int, str]) -> dict[str, str]:
    """uid -> Message-ID for the audit details (JSON keys are strings)."""
    return {str(u): ids[u] for u in sorted(uids) if u in ids}


async def audit_expunge(ctx: Context, done: Expunged, command: str) -> None:
    if done.uids:
        await audit_content(ctx, "expunge", done.uids, command=command,
                            message_ids=_named(done.uids, done.message_ids))


async def expunge(ctx: Context, cmd: Expunge) -> Reply:
    view = require_view(ctx)
    identity, _, place = _session(ctx)
    if view.readonly:
        raise fail(READ_ONLY)
    uids: list[int] | None = None
    if cmd.uid and cmd.uids is not None:
        uids = resolve_set(view, cmd.uids, True)
        if not uids:
            return ok("EXPUNGE completed")
    done = await ctx.run_write_selected(
        _expunge, ctx.services.policy, ctx.services.store, identity, place, view.folder_id, uids
    )
    await audit_expunge(ctx, done, "UID EXPUNGE" if cmd.uid else "EXPUNGE")
    ctx.send(b"".join(view.expunge_now(done.uids)))
    if done.uids:
        ctx.watcher.notify_local(view.folder_id, exclude=getattr(ctx, "watch_token", None))
    return ok("EXPUNGE completed")


HANDLERS: dict[type[Command], Handler] = {Store: store, Copy: copy, Move: copy, Expunge: expunge}
