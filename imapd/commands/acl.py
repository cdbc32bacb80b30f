"""ACL (RFC 4314): GETACL, SETACL, DELETEACL, LISTRIGHTS, MYRIGHTS.

The policy decides (`Policy.my_rights`, `acl`, `list_rights`, `set_rights`:
who may see or change which rights, and the change itself, audited with the
actor); this module parses, maps the decision to an IMAP reply and formats
the RFC 4314 responses. Rights are granted per store mailbox (an address), so
an ACL applies to every folder of that mailbox; identifiers are account logins.
"""

from __future__ import annotations

from collections.abc import Callable

from imapd.commands.access import raise_denied
from imapd.commands.base import Context, Handler, ok
from imapd.errors import ImapError, Reply, bad, no
from imapd.namespace import Namespaces
from imapd.parser.commands import Command, DeleteAcl, GetAcl, ListRights, MyRights, SetAcl
from imapd.responses import string
from imapd.wire import mailbox as wire_mailbox
from imapd.wire import quote
from policy.decisions import Decision, Identity, Policy

# SETACL refusals after the access check (Policy.set_rights reasons) -> error.
_SETACL_REFUSALS: dict[str, Callable[[], ImapError]] = {
    "unknown-identifier": lambda: no("Unknown identifier", "CANNOT"),
    "owner-rights-fixed": lambda: no("The owner's rights cannot be changed", "CANNOT"),
    "unknown-right": lambda: bad("Unknown right"),
}


def _ids(ctx: Context) -> tuple[Identity, Namespaces]:
    s = ctx.session
    assert s.identity is not None and s.namespaces is not None
    return s.identity, s.namespaces


async def myrights(ctx: Context, cmd: MyRights) -> Reply:
    identity, ns = _ids(ctx)
    policy = ctx.services.policy

    def rights() -> str:
        place = ns.resolve(cmd.mailbox)
        answer = policy.my_rights(identity, place.mailbox, place.folder)
        if not answer.decision.allowed:
            raise_denied(answer.decision, cmd.mailbox)
        return answer.rights

    value = await ctx.run(rights)
    ctx.send(f"* MYRIGHTS {wire_mailbox(cmd.mailbox, ctx.session.utf8)} {value}\r\n".encode())
    return ok("MYRIGHTS completed")


def _acl(policy: Policy, identity: Identity, ns: Namespaces,
         name: str) -> tuple[tuple[str, str], ...]:
    place = ns.resolve(name)
    answer = policy.acl(identity, place.mailbox, place.folder)
    if not answer.decision.allowed:
        raise_denied(answer.decision, name)
    return answer.entries


async def getacl(ctx: Context, cmd: GetAcl) -> Reply:
    identity, ns = _ids(ctx)
    entries = await ctx.run(_acl, ctx.services.policy, identity, ns, cmd.mailbox)
    body = "".join(f" {quote(who)} {rights}" for who, rights in entries)
    ctx.send(f"* ACL {wire_mailbox(cmd.mailbox, ctx.session.utf8)}{body}\r\n".encode())
    return ok("GETACL completed")


def _setacl(policy: Policy, identity: Identity, ns: Namespaces,
            name: str, who: str, rights: str) -> Decision:
    place = ns.resolve(name)
    return policy.set_rights(identity, place.mailbox, place.folder, who, rights)


async def setacl(ctx: Context, cmd: SetAcl | DeleteAcl) -> Reply:
    identity, ns = _ids(ctx)
    rights = cmd.rights if isinstance(cmd, SetAcl) else ""
    decision = await ctx.run(_setacl, ctx.services.policy, identity, ns,
                             cmd.mailbox, cmd.identifier, rights)
    if not decision.allowed:
        refusal = _SETACL_REFUSALS.get(decision.reason)
        if refusal is not None:
            raise refusal()
        raise_denied(decision, cmd.mailbox)
    return ok(f"{type(cmd).name} completed")


def _listrights(policy: Policy, identity: Identity, ns: Namespaces,
                name: str) -> tuple[str, tuple[str, ...]]:
    place = ns.resolve(name)
    answer = policy.list_rights(identity, place.mailbox, place.folder)
    if not answer.decision.allowed:
        raise_denied(answer.decision, name)
    return answer.required, answer.optional


async def listrights(ctx: Context, cmd: ListRights) -> Reply:
    identity, ns = _ids(ctx)
    required, optional = await ctx.run(_listrights, ctx.services.policy, identity, ns,
                                       cmd.mailbox)
    # The identifier is the client's, possibly a literal with CR LF in it:
    # `string` answers with a literal then, never a broken quoted string.
    ctx.send(f"* LISTRIGHTS {wire_mailbox(cmd.mailbox, ctx.session.utf8)} ".encode() + string(cmd.identifier)
             + f" {quote(required)} {' '.join(optional)}\r\n".encode())
    return ok("LISTRIGHTS completed")


HANDLERS: dict[type[Command], Handler] = {
    MyRights: myrights,
    GetAcl: getacl,
    SetAcl: setacl,
    DeleteAcl: setacl,
    ListRights: listrights,
}
