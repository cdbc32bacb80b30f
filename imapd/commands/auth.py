"""STARTTLS, LOGIN, AUTHENTICATE (PLAIN with SASL-IR or ``+``, LOGIN, EXTERNAL).

Protocol code only builds credentials and receives an `Identity` from the
`twisted.cred` portal (`services.authenticator`); policy decides.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from imapd.commands.base import Context, Handler, ok
from imapd.errors import Reply, bad, no
from imapd.namespace import Namespaces
from imapd.parser.commands import Authenticate, Command, Login, StartTls
from policy.auth import CertificateCredentials, LoginRefused, PasswordCredentials
from policy.decisions import Identity, Policy, SessionAccess

AUTH_FAILED = "AUTHENTICATIONFAILED"
# SASL LOGIN (draft-murchison-sasl-login): the prompts every client expects,
# base64 of "Username:" and "Password:".
LOGIN_USERNAME_PROMPT = base64.b64encode(b"Username:")
LOGIN_PASSWORD_PROMPT = base64.b64encode(b"Password:")


async def starttls(ctx: Context, cmd: StartTls) -> Reply:
    if not ctx.session.starttls_available:
        raise bad("STARTTLS not available")
    # The protocol sends this OK, then discards anything the client pipelined
    # after STARTTLS before switching (CVE-2011-0411 class of attacks).
    ctx.start_tls()
    return ok("Begin TLS negotiation now")


async def login(ctx: Context, cmd: Login) -> Reply:
    if not ctx.session.plaintext_login_allowed:
        raise no("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
    creds = PasswordCredentials(ctx.session.peer, cmd.username, cmd.password)
    return await _complete_login(ctx, creds)


async def authenticate(ctx: Context, cmd: Authenticate) -> Reply:
    mech = cmd.mechanism.upper()
    if mech == "PLAIN":
        if not ctx.session.plaintext_login_allowed:
            raise no("PLAIN is disabled before STARTTLS", "PRIVACYREQUIRED")
        response = cmd.initial_response
        if response is None:
            response = await _continuation(ctx)
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise bad("Malformed PLAIN response")
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError as exc:
            raise bad("Malformed PLAIN response") from exc
        if authzid and authzid.lower() != authcid.lower():
            _count_failure(ctx)
            raise no("Authorization identity refused", "AUTHORIZATIONFAILED")
        creds: Any = PasswordCredentials(ctx.session.peer, authcid, password)
        return await _complete_login(ctx, creds)
    if mech == "LOGIN":
        return await _authenticate_login(ctx, cmd)
    if mech == "EXTERNAL":
        if not ctx.session.tls:
            raise no("EXTERNAL needs TLS with a client certificate", "PRIVACYREQUIRED")
        response = cmd.initial_response
        if response is None:
            response = await _continuation(ctx)
        try:
            authzid = response.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad("Malformed EXTERNAL response") from exc
        creds = CertificateCredentials(ctx.session.peer, authzid or None)
        return await _complete_login(ctx, creds)
    raise no("Unsupported authentication mechanism", "CANNOT")


async def _authenticate_login(ctx: Context, cmd: Authenticate) -> Reply:
    """SASL LOGIN: Thunderbird's fallback after a NO to PLAIN (it then tries
    the other advertised mechanisms). A password mechanism: TLS only."""
    if not ctx.session.plaintext_login_allowed:
        raise no("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
    # With SASL-IR the initial response is the user name (RFC 4959 allows
    # one for any mechanism; Outlook sends it).
    username = cmd.initial_response
    if username is None:
        username = await _continuation(ctx, LOGIN_USERNAME_PROMPT)
    password = await _continuation(ctx, LOGIN_PASSWORD_PROMPT)
    try:
        authcid, secret = username.decode("utf-8"), password.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad("Malformed LOGIN response") from exc
    if not authcid or "\x00" in authcid or "\x00" in secret:
        raise bad("Malformed LOGIN response")
    return await _complete_login(ctx, PasswordCredentials(ctx.session.peer, authcid, secret))


async def _continuation(ctx: Context, prompt: bytes = b"") -> bytes:
    line = await ctx.read_line(prompt)
    if line.strip() == b"*":
        raise bad("Authentication cancelled")
    if line.strip() == b"=":
        return b""
    try:
        return base64.b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad("Invalid base64") from exc


def _count_failure(ctx: Context) -> None:
    ctx.session.failed_auth += 1


async def _complete_login(ctx: Context, creds: Any) -> Reply:
    try:
        identity: Identity = await ctx.services.authenticator.login(creds)
    except LoginRefused as exc:
        _count_failure(ctx)
        reason = exc.decision.reason
        if reason == "authzid-mismatch":
            raise no("Authorization identity refused", "AUTHORIZATIONFAILED") from None
        raise no("Authentication failed", AUTH_FAILED) from None
    namespaces, access = await ctx.run(_session_start, ctx.services.policy, identity)
    ctx.session.login(identity, namespaces)
    ctx.set_access(access)
    return ok("Logged in", "CAPABILITY " + ctx.session.capability_line())


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
