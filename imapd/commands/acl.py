"""ACL (RFC 4314): GETACL, SETACL, DELETEACL, LISTRIGHTS, MYRIGHTS.

Rights are granted per store mailbox (an address), so an ACL applies to every
folder of that mailbox. Identifiers are account logins. The owner's rights are
fixed (all rights); grants to agents are what SETACL changes. Every change goes
through the store's grants, so all nodes see it at once.
"""

from __future__ import annotations

from imapd.commands.access import resolve
from imapd.commands.base import Context, Handler, ok
from imapd.errors import Reply, bad, no
from imapd.namespace import Namespaces, Place
from imapd.parser.commands import Command, DeleteAcl, GetAcl, ListRights, MyRights, SetAcl
from imapd.responses import string
from imapd.wire import mailbox as wire_mailbox
from imapd.wire import quote
from policy.decisions import ALL_RIGHTS, Identity, Policy
from storage.interface import MessageStore, NotFound

# RFC 4314 2.1.1: obsolete c/d map onto the new rights.
_OBSOLETE = {"c": "k", "d": "xte"}


def _norm(rights: str) -> str:
    letters: set[str] = set()
    for ch in rights:
        letters.update(_OBSOLETE.get(ch, ch))
    unknown = letters - set(ALL_RIGHTS)
    if unknown:
        raise bad("Unknown right")
    return "".join(r for r in ALL_RIGHTS if r in letters)


def _ids(ctx: Context) -> tuple[Identity, Namespaces]:
    s = ctx.session
    assert s.identity is not None and s.namespaces is not None
    return s.identity, s.namespaces


def _place(policy: Policy, store: MessageStore, identity: Identity, ns: Namespaces,
           name: str, right: str, action: str) -> Place:
    place, _ = resolve(policy, store, identity, ns, name, right, action)
    return place


async def myrights(ctx: Context, cmd: MyRights) -> Reply:
    identity, ns = _ids(ctx)
    policy = ctx.services.policy

    def rights() -> str:
        place = ns.resolve(cmd.mailbox)
        value = policy.mailbox_rights(identity, place.mailbox)
        if "l" not in value and "r" not in value:
            from imapd.errors import NotPermitted

            raise NotPermitted(cmd.mailbox)
        ctx.services.store.get_folder(place.mailbox.id, place.folder)
        return value

    value = await ctx.run(rights)
    ctx.send(f"* MYRIGHTS {wire_mailbox(cmd.mailbox)} {value}\r\n".encode())
    return ok("MYRIGHTS completed")


def _acl(policy: Policy, store: MessageStore, identity: Identity, ns: Namespaces,
         name: str) -> list[tuple[str, str]]:
    place = _place(policy, store, identity, ns, name, "a", "getacl")
    out: list[tuple[str, str]] = []
    mb = place.mailbox
    if mb.owner_account_id is not None:
        out.append((store.get_account_by_id(mb.owner_account_id).login, ALL_RIGHTS))
    for grant in store.grants_for_mailbox(mb.id):
        if grant.rights and grant.account_id != mb.owner_account_id:
            out.append((store.get_account_by_id(grant.account_id).login, grant.rights))
    return out


async def getacl(ctx: Context, cmd: GetAcl) -> Reply:
    identity, ns = _ids(ctx)
    entries = await ctx.run(_acl, ctx.services.policy, ctx.services.store, identity, ns,
                            cmd.mailbox)
    body = "".join(f" {quote(who)} {rights}" for who, rights in entries)
    ctx.send(f"* ACL {wire_mailbox(cmd.mailbox)}{body}\r\n".encode())
    return ok("GETACL completed")


def _setacl(policy: Policy, store: MessageStore, identity: Identity, ns: Namespaces,
            name: str, who: str, rights: str) -> None:
    place = _place(policy, store, identity, ns, name, "a", "setacl")
    mb = place.mailbox
    try:
        account = store.get_account(who)
    except NotFound:
        raise no("Unknown identifier", "CANNOT") from None
    if account.id == mb.owner_account_id:
        raise no("The owner's rights cannot be changed", "CANNOT")
    current = next((g.rights for g in store.grants_for_mailbox(mb.id)
                    if g.account_id == account.id), "")
    if rights.startswith("+"):
        new = _norm(current + rights[1:])
    elif rights.startswith("-"):
        remove = set(_norm(rights[1:]))
        new = "".join(r for r in current if r not in remove)
    else:
        new = _norm(rights)
    store.set_grant(account.id, mb.id, new)
    policy.audit.record(identity.name, "setacl", mb.address, "ok", identifier=who, rights=new)


async def setacl(ctx: Context, cmd: SetAcl | DeleteAcl) -> Reply:
    identity, ns = _ids(ctx)
    rights = cmd.rights if isinstance(cmd, SetAcl) else ""
    await ctx.run(_setacl, ctx.services.policy, ctx.services.store, identity, ns,
                  cmd.mailbox, cmd.identifier, rights)
    return ok(f"{type(cmd).name} completed")


async def listrights(ctx: Context, cmd: ListRights) -> Reply:
    identity, ns = _ids(ctx)
    await ctx.run(_place, ctx.services.policy, ctx.services.store, identity, ns,
                  cmd.mailbox, "a", "listrights")
    rights = " ".join(ALL_RIGHTS)
    # The identifier is the client's, possibly a literal with CR LF in it:
    # `string` answers with a literal then, never a broken quoted string.
    ctx.send(f"* LISTRIGHTS {wire_mailbox(cmd.mailbox)} ".encode() + string(cmd.identifier)
             + f' "" {rights}\r\n'.encode())
    return ok("LISTRIGHTS completed")


HANDLERS: dict[type[Command], Handler] = {
    MyRights: myrights,
    GetAcl: getacl,
    SetAcl: setacl,
    DeleteAcl: setacl,
    ListRights: listrights,
}
