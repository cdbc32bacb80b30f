"""CAPABILITY, NOOP, LOGOUT, ID, ENABLE, UNSELECT, CLOSE, CHECK, COMPRESS."""

from __future__ import annotations

from imapd import responses
from imapd.commands.base import Context, Handler, ok
from imapd.commands.messages import AUDIT_MESSAGE_IDS, audit_expunge
from imapd.commands.selected import sync_view
from imapd.errors import Reply, bad, no
from imapd.parser.commands import (
    Capability,
    Check,
    Close,
    Command,
    Compress,
    Enable,
    Id,
    Logout,
    Noop,
    Unselect,
)

SERVER_ID = (("name", "mss-imapd"), ("vendor", "MSSante open-source"), ("version", "0.1"))
# What ENABLE takes, by its upper-cased name (the parser's), with the name
# the ENABLED response gives back (RFC 9051 6.3.1 answers "IMAP4rev2").
ENABLEABLE = {"CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC", "UTF8=ACCEPT": "UTF8=ACCEPT",
              "IMAP4REV2": "IMAP4rev2"}
# RFC 6855 3: "ENABLE UTF8=ACCEPT" is only valid in the authenticated state
# (the selected view would change names). IMAP4rev2 changes the names too,
# and the selected view's \Recent and SEARCH answers: the same rule.
NOT_WHILE_SELECTED = frozenset({"UTF8=ACCEPT", "IMAP4REV2"})


async def capability(ctx: Context, cmd: Capability) -> Reply:
    ctx.send(responses.capability(ctx.session.capabilities()))
    return ok("Capability completed")


async def noop(ctx: Context, cmd: Noop) -> Reply:
    # The protocol syncs the selected view after every NOOP (forced).
    return ok("NOOP completed")


async def check(ctx: Context, cmd: Check) -> Reply:
    return ok("CHECK completed")


async def logout(ctx: Context, cmd: Logout) -> Reply:
    ctx.send(responses.bye("Logging out"))
    ctx.session.logged_out = True
    return ok("LOGOUT completed")


async def id_(ctx: Context, cmd: Id) -> Reply:
    ctx.send(responses.id_(SERVER_ID))
    return ok("ID completed")


async def enable(ctx: Context, cmd: Enable) -> Reply:
    session = ctx.session
    newly = [c for c in cmd.capabilities if c in ENABLEABLE and c not in session.enabled
             and not (c in NOT_WHILE_SELECTED and session.view is not None)]
    session.enabled.update(newly)
    if "QRESYNC" in session.enabled:
        session.enabled.add("CONDSTORE")  # RFC 7162 3.2.3: QRESYNC implies it
    view = session.view
    if view is not None:
        view.condstore = "CONDSTORE" in session.enabled
        view.qresync = "QRESYNC" in session.enabled
    ctx.send(responses.enabled(ENABLEABLE[c] for c in newly))
    return ok("ENABLE completed")


async def unselect(ctx: Context, cmd: Unselect) -> Reply:
    _leave(ctx)
    return ok("UNSELECT completed")


async def close(ctx: Context, cmd: Close) -> Reply:
    view = ctx.session.view
    place = ctx.session.selected_place
    if view is not None and place is not None and not view.readonly:
        session = ctx.session
        assert session.identity is not None
        decision = await ctx.run(
            ctx.services.policy.check_mailbox_access,
            session.identity, place.mailbox, place.folder, "e", "expunge",
        )
        if decision.allowed:
            done = await ctx.run_write_selected(
                ctx.services.store.expunge_traced, view.folder_id, None,
                max_ids=AUDIT_MESSAGE_IDS)
            await audit_expunge(ctx, done, "CLOSE")
            if done.uids:
                ctx.watcher.notify_local(view.folder_id)
    _leave(ctx)
    return ok("CLOSE completed")


def _leave(ctx: Context) -> None:
    # The selected view goes away without announcing its pending changes.
    from imapd.commands.mailbox import leave_selected

    leave_selected(ctx)


async def compress(ctx: Context, cmd: Compress) -> Reply:
    if cmd.mechanism != "DEFLATE":
        raise bad("Unknown compression mechanism")
    if ctx.session.compressed:
        raise no("Compression already active", responses.COMPRESSIONACTIVE)
    ctx.start_compression()
    return ok("DEFLATE active")


__all__ = ["sync_view"]

HANDLERS: dict[type[Command], Handler] = {
    Capability: capability,
    Noop: noop,
    Check: check,
    Logout: logout,
    Id: id_,
    Enable: enable,
    Unselect: unselect,
    Close: close,
    Compress: compress,
}
