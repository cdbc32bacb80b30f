"""ACL (RFC 4314): GETACL, SETACL, DELETEACL, LISTRIGHTS, MYRIGHTS.

The policy decides (`Policy.my_rights`, `acl`, `list_rights`, `set_rights`:
who may see or change which rights, and the change itself, audited with the
actor); this module parses, maps the decision to an IMAP reply and formats
the RFC 4314 responses. Every command names one folder: its ACL holds each
identifier's rights there, those of its grant on the whole store mailbox (an
address, `mssctl mailbox grant`) and of its grant on that folder (which
SETACL and DELETEACL change); identifiers are account logins.
"""

from __future__ import annotations

from imapd import responses
from imapd.commands.access import raise_denied
from imapd.commands.base import Context, Handler, ok
from imapd.errors import (
    ACL_MAILBOX_RIGHTS_FIXED,
    ACL_OWNER_FIXED,
    ACL_UNKNOWN_IDENTIFIER,
    ACL_UNKNOWN_RIGHT,
    Reply,
    fail,
)
from imapd.namespace import Namespaces
from imapd.parser.commands import Command, DeleteAcl, GetAcl, ListRights, MyRights, SetAcl
from policy.decisions import Decision, Identity, Policy
from policy.reasons import Reason

# SETACL refusals after the access check (Policy.set_rights reasons) -> reply.
_SETACL_REFUSALS: dict[Reason, Reply] = {
    Reason.UNKNOWN_IDENTIFIER: ACL_UNKNOWN_IDENTIFIER,
    Reason.OWNER_RIGHTS_FIXED: ACL_OWNER_FIXED,
    Reason.UNKNOWN_RIGHT: ACL_UNKNOWN_RIGHT,
    Reason.MAILBOX_RIGHTS_FIXED: ACL_MAILBOX_RIGHTS_FIXED,
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
    ctx.send(responses.myrights(responses.mailbox(cmd.mailbox, ctx.session.utf8), value))
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
    ctx.send(responses.acl(responses.mailbox(cmd.mailbox, ctx.session.utf8), entries))
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
            raise fail(refusal)
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
    ctx.send(responses.listrights(responses.mailbox(cmd.mailbox, ctx.session.utf8),
                                  cmd.identifier, required, optional))
    return ok("LISTRIGHTS completed")


HANDLERS: dict[type[Command], Handler] = {
    MyRights: myrights,
    GetAcl: getacl,
    SetAcl: setacl,
    DeleteAcl: setacl,
    ListRights: listrights,
}
