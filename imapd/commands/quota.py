"""QUOTA (RFC 9208) with the STORAGE resource, in units of 1024 octets.

One quota root per store mailbox: ``""`` for the session's personal mailbox,
the mailbox address for shared ones. Limits are set by the operator
(`mssctl`), so SETQUOTA is refused.
"""

from __future__ import annotations

from imapd import responses
from imapd.commands.access import resolve
from imapd.commands.base import Context, Handler, ok
from imapd.errors import NotPermitted, Reply, no
from imapd.namespace import Namespaces
from imapd.parser.commands import Command, GetQuota, GetQuotaRoot, SetQuota
from imapd.parser.mutf7 import UndecodableName
from policy.decisions import Identity, Policy
from storage.interface import Mailbox, MessageStore


def _root_name(ns: Namespaces, mb: Mailbox) -> str:
    return "" if ns.primary is not None and ns.primary.id == mb.id else mb.address


def _quota_line(store: MessageStore, root: str, mb: Mailbox) -> bytes | None:
    if mb.quota_bytes is None:
        return None
    used, _count = store.mailbox_usage(mb.id)
    return responses.quota(root, [("STORAGE", (used + 1023) // 1024, mb.quota_bytes // 1024)])


def _quotaroot(policy: Policy, store: MessageStore, identity: Identity, ns: Namespaces,
               name: str, utf8: bool) -> bytes:
    place, _ = resolve(policy, store, identity, ns, name, "r", "getquotaroot")
    mb = store.get_mailbox_by_id(place.mailbox.id)
    root = _root_name(ns, mb)
    line = _quota_line(store, root, mb)
    if line is None:
        return responses.quotaroot(responses.mailbox(name, utf8), [])
    return responses.quotaroot(responses.mailbox(name, utf8), [root]) + line


async def getquotaroot(ctx: Context, cmd: GetQuotaRoot) -> Reply:
    s = ctx.session
    assert s.identity is not None and s.namespaces is not None
    text = await ctx.run(_quotaroot, ctx.services.policy, ctx.services.store, s.identity,
                         s.namespaces, cmd.mailbox, s.utf8)
    ctx.send(text)
    return ok("GETQUOTAROOT completed")


def _getquota(policy: Policy, store: MessageStore, identity: Identity, ns: Namespaces,
              root: str) -> bytes:
    if isinstance(root, UndecodableName):
        raise NotPermitted(root)
    # (mailbox, a folder to judge "r" on): the root of a shared mailbox is
    # readable like the mailbox, or like a folder of it granted alone (as
    # GETQUOTAROOT of that folder names the root).
    candidates = ([(ns.primary, "")] if ns.primary is not None else []) + [
        (a.mailbox, "" if "r" in a.rights else
         next((f for f, r in a.folder_rights if "r" in r), "")) for a in ns.others]
    for mb, folder in candidates:
        if _root_name(ns, mb) != root:
            continue
        # The policy decides (and records) whether the root may be read; a
        # refused one answers like a root that does not exist.
        if policy.check_mailbox_access(identity, mb, folder, "r", "getquota").allowed:
            line = _quota_line(store, root, store.get_mailbox_by_id(mb.id))
            if line is not None:
                return line
        break
    raise NotPermitted(root)


async def getquota(ctx: Context, cmd: GetQuota) -> Reply:
    s = ctx.session
    assert s.identity is not None and s.namespaces is not None
    try:
        text = await ctx.run(_getquota, ctx.services.policy, ctx.services.store, s.identity,
                             s.namespaces, cmd.root)
    except NotPermitted:
        raise no("No such quota root", responses.NONEXISTENT) from None
    ctx.send(text)
    return ok("GETQUOTA completed")


async def setquota(ctx: Context, cmd: SetQuota) -> Reply:
    raise no("Quotas are set by the operator", responses.NOPERM)


HANDLERS: dict[type[Command], Handler] = {GetQuotaRoot: getquotaroot, GetQuota: getquota, SetQuota: setquota}
