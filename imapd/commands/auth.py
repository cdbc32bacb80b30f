"""STARTTLS, LOGIN, AUTHENTICATE (the mechanisms of `policy.sasl`, with
SASL-IR or ``+`` continuations).

Protocol code only runs the SASL exchange, builds credentials and receives an
`Identity` from the `twisted.cred` portal (`services.authenticator`); policy
decides. Replies come from the catalogue in `imapd.errors`.
"""

from __future__ import annotations

from typing import Any

from imapd.commands.base import Context, Handler, ok
from imapd.errors import (
    AUTH_BAD_BASE64,
    AUTH_CANCELLED,
    AUTH_FAILED,
    AUTH_MALFORMED,
    AUTH_MECH_UNKNOWN,
    AUTH_UNAVAILABLE,
    AUTHZ_FAILED,
    ImapError,
    Reply,
    bad,
    fail,
    no,
)
from imapd.namespace import Namespaces
from imapd.parser.commands import Authenticate, Command, Login, StartTls
from imapd.responses import PRIVACYREQUIRED, capability_code
from policy import sasl
from policy.auth import (
    CertificateCredentials,
    LoginRefused,
    PasswordCredentials,
    TokenCredentials,
)
from policy.decisions import Identity, Policy, SessionAccess, Verdict
from policy.reasons import Reason

_FAILURE_REPLIES: dict[sasl.FailureKind, Reply] = {
    sasl.FailureKind.CANCELLED: AUTH_CANCELLED,
    sasl.FailureKind.BAD_BASE64: AUTH_BAD_BASE64,
    sasl.FailureKind.MALFORMED: AUTH_MALFORMED,
    sasl.FailureKind.AUTHZID_REFUSED: AUTHZ_FAILED,
    sasl.FailureKind.TOKEN_REFUSED: AUTH_FAILED,
}


async def starttls(ctx: Context, cmd: StartTls) -> Reply:
    if not ctx.session.starttls_available:
        raise bad("STARTTLS not available")
    # The protocol sends this OK, then discards anything the client pipelined
    # after STARTTLS before switching (CVE-2011-0411 class of attacks).
    ctx.start_tls()
    return ok("Begin TLS negotiation now")


async def login(ctx: Context, cmd: Login) -> Reply:
    if not ctx.session.plaintext_login_allowed:
        raise no("LOGIN is disabled before STARTTLS", PRIVACYREQUIRED)
    creds = PasswordCredentials(ctx.session.peer, cmd.username, cmd.password)
    return await _complete_login(ctx, creds)


async def authenticate(ctx: Context, cmd: Authenticate) -> Reply:
    mech = sasl.mechanism(cmd.mechanism)
    tokens = ctx.services.authenticator.tokens_enabled
    if mech is None or (mech.kind is sasl.Kind.TOKEN and not tokens):
        raise fail(AUTH_MECH_UNKNOWN)
    if mech.kind is sasl.Kind.EXTERNAL:
        if not ctx.session.tls:
            raise no("EXTERNAL needs TLS with a client certificate", PRIVACYREQUIRED)
    elif not ctx.session.plaintext_login_allowed:
        # Passwords and bearer tokens only over TLS.
        raise no(f"{mech.name} is disabled before STARTTLS", PRIVACYREQUIRED)
    outcome = await _exchange(ctx, mech, mech.start(cmd.initial_response))
    if isinstance(outcome, sasl.Failed):
        raise await _sasl_failure(ctx, mech, outcome)
    creds: Any
    if isinstance(outcome, sasl.PasswordLogin):
        creds = PasswordCredentials(ctx.session.peer, outcome.authcid, outcome.password)
    elif isinstance(outcome, sasl.ExternalLogin):
        creds = CertificateCredentials(ctx.session.peer, outcome.authzid)
    else:
        assert isinstance(outcome, sasl.TokenLogin)
        creds = TokenCredentials(ctx.session.peer, outcome.token, outcome.user, mech.name)
    return await _complete_login(ctx, creds, mech)


async def _exchange(ctx: Context, mech: sasl.Mechanism, outcome: sasl.Outcome) -> sasl.Outcome:
    """Challenges and responses until the mechanism has credentials or fails."""
    while isinstance(outcome, sasl.Challenge):
        line = await ctx.read_line(sasl.encode_challenge(outcome))
        response = sasl.decode_response(line)
        outcome = response if isinstance(response, sasl.Failed) else mech.respond(response)
    return outcome


async def _sasl_failure(ctx: Context, mech: sasl.Mechanism, failure: sasl.Failed) -> ImapError:
    """The error ending the command; the refusals that are decisions (a
    malformed response, another authzid) are recorded by the policy."""
    if failure.kind in (sasl.FailureKind.MALFORMED, sasl.FailureKind.AUTHZID_REFUSED):
        if failure.kind is sasl.FailureKind.AUTHZID_REFUSED:
            _count_failure(ctx)
        await ctx.run(ctx.services.policy.refuse_sasl, ctx.session.peer, mech.name, failure)
    return fail(_FAILURE_REPLIES[failure.kind])


def _count_failure(ctx: Context) -> None:
    ctx.session.failed_auth += 1


async def _complete_login(ctx: Context, creds: Any, mech: sasl.Mechanism | None = None) -> Reply:
    authenticator = ctx.services.authenticator
    try:
        identity: Identity = await authenticator.login(creds)
    except LoginRefused as exc:
        decision = exc.decision
        if decision.verdict is Verdict.TEMPFAIL:
            raise fail(AUTH_UNAVAILABLE) from None
        _count_failure(ctx)
        if mech is not None and mech.kind is sasl.Kind.TOKEN:
            # RFC 7628 3.2.2: the error status, then the client's %x01.
            outcome = await _exchange(ctx, mech, mech.refuse(authenticator.openid_configuration))
            if isinstance(outcome, sasl.Failed) and outcome.kind is not sasl.FailureKind.TOKEN_REFUSED:
                raise fail(_FAILURE_REPLIES[outcome.kind]) from None
        if decision.reason is Reason.AUTHZID_MISMATCH:
            raise fail(AUTHZ_FAILED) from None
        raise fail(AUTH_FAILED) from None
    namespaces, access = await ctx.run(_session_start, ctx.services.policy, identity)
    ctx.session.login(identity, namespaces)
    ctx.set_access(access)
    return ok("Logged in", capability_code(ctx.session.capabilities()))


def _session_start(policy: Policy, identity: Identity) -> tuple[Namespaces, SessionAccess]:
    """What a new session needs, in one store call: its namespaces, and the
    access epoch its later commands are checked against."""
    access = policy.session_access(identity, None)
    return build_namespaces(policy, identity), access


def build_namespaces(policy: Policy, identity: Identity) -> Namespaces:
    accessible = policy.accessible_mailboxes(identity)
    # Policy.primary_mailbox's rule on the owned mailboxes already read here
    # (active ones, in the same order): one read of them per LOGIN, not two.
    owned = [a.mailbox for a in accessible if a.owned]
    primary = next((m for m in owned if m.address == identity.account.login),
                   owned[0] if owned else None)
    return Namespaces.build(primary, accessible)


HANDLERS: dict[type[Command], Handler] = {StartTls: starttls, Login: login, Authenticate: authenticate}
