"""Authentication as `twisted.cred`: one portal for both daemons.

Protocols build credentials (a password, or "the TLS client certificate, with
this requested authorisation identity") and call `Authenticator.login`; they
only ever see the resulting `Identity`. The checkers ask `Policy`, which
records every attempt in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.cred import portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import Interface, implementer

from policy.decisions import AuthResult, Decision, Identity, Peer, Policy
from storage.threaded import InlineRunner, StoreRunner


class IIdentity(Interface):  # type: ignore[misc]
    """Avatar interface: the authenticated `Identity`."""


class IPasswordCredentials(ICredentials):
    """A login and a password, with the connection they came on."""


class ICertificateCredentials(ICredentials):
    """The TLS client certificate of the connection, and the requested login."""


@implementer(IPasswordCredentials)
@dataclass(frozen=True)
class PasswordCredentials:
    peer: Peer
    login: str
    password: str


@implementer(ICertificateCredentials)
@dataclass(frozen=True)
class CertificateCredentials:
    peer: Peer
    authzid: str | None


class LoginRefused(UnauthorizedLogin):
    """Carries the policy's decision (its reason) to the protocol."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


def _unwrap(result: AuthResult) -> Identity:
    if result.identity is None:
        raise LoginRefused(result.decision)
    return result.identity


@implementer(ICredentialsChecker)
class PasswordChecker:
    credentialInterfaces = (IPasswordCredentials,)

    def __init__(self, policy: Policy, runner: StoreRunner | InlineRunner) -> None:
        self._policy = policy
        self._runner = runner

    def requestAvatarId(self, credentials: PasswordCredentials) -> defer.Deferred[Identity]:
        d = self._runner.run(
            self._policy.authenticate_password,
            credentials.peer, credentials.login, credentials.password,
        )
        return d.addCallback(_unwrap)


@implementer(ICredentialsChecker)
class CertificateChecker:
    credentialInterfaces = (ICertificateCredentials,)

    def __init__(self, policy: Policy, runner: StoreRunner | InlineRunner) -> None:
        self._policy = policy
        self._runner = runner

    def requestAvatarId(self, credentials: CertificateCredentials) -> defer.Deferred[Identity]:
        d = self._runner.run(
            self._policy.authenticate_certificate, credentials.peer, credentials.authzid
        )
        return d.addCallback(_unwrap)


def _avatar(result: tuple[Any, Identity, Any]) -> Identity:
    return result[1]


@implementer(portal.IRealm)
class IdentityRealm:
    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Identity, Any]:
        if IIdentity not in interfaces:
            raise NotImplementedError("only IIdentity avatars")
        return IIdentity, avatarId, lambda: None


class Authenticator:
    """The portal, wrapped so protocols get an `Identity` or a `LoginRefused`."""

    def __init__(self, policy: Policy, runner: StoreRunner | InlineRunner) -> None:
        checkers: list[Any] = [PasswordChecker(policy, runner), CertificateChecker(policy, runner)]
        realm: Any = IdentityRealm()
        self.portal = portal.Portal(realm, checkers)

    def login(self, credentials: ICredentials) -> defer.Deferred[Identity]:
        """Fires with the Identity; fails with LoginRefused (reason in
        `.decision.reason`) or another exception (e.g. StoreUnavailable)."""
        d: defer.Deferred[Any] = self.portal.login(credentials, None, IIdentity)
        return d.addCallback(_avatar)
