"""Authentication as `twisted.cred`: one portal for both daemons.

Protocols build credentials (a password, "the TLS client certificate, with
this requested authorisation identity", or an identity provider's token) and
call `Authenticator.login`; they
only ever see the resulting `Identity`. The checkers ask `Policy`, which
records every attempt in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.cred import portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import Interface, implementer

from conf.settings import ACCOUNT_CLASSES, AuthMethod
from policy.decisions import AuthResult, Decision, Identity, Peer, Policy
from policy.tokens import TokenCheck
from storage.threaded import InlineRunner, StoreRunner

if TYPE_CHECKING:
    from policy.idp import IdentityProvider
    from policy.ldapdir import BindChecker, BindOutcome


class IIdentity(Interface):  # type: ignore[misc]
    """Avatar interface: the authenticated `Identity`."""


class IPasswordCredentials(ICredentials):
    """A login and a password, with the connection they came on."""


class ICertificateCredentials(ICredentials):
    """The TLS client certificate of the connection, and the requested login."""


class ITokenCredentials(ICredentials):
    """An identity provider's access token (SASL OAUTHBEARER, XOAUTH2)."""


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


@implementer(ITokenCredentials)
@dataclass(frozen=True)
class TokenCredentials:
    peer: Peer
    token: str = field(repr=False)
    user: str | None  # the authzid / user= the client sent with it
    mechanism: str


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
    """Passwords checked by the store's hash, or, for the directory's
    accounts of classes allowing method "ldap", by a bind to the directory:
    the store runner says whether (and as which entry) to bind, the bind
    runs on the directory's own bounded runner (never holding a store
    thread while the directory is slow), and the store runner decides."""

    credentialInterfaces = (IPasswordCredentials,)

    def __init__(self, policy: Policy, runner: StoreRunner | InlineRunner, *,
                 binder: BindChecker | None = None,
                 binder_runner: StoreRunner | InlineRunner | None = None) -> None:
        self._policy = policy
        self._runner = runner
        self._binder = binder
        self._binder_runner = binder_runner or runner

    def requestAvatarId(self, credentials: PasswordCredentials) -> defer.Deferred[Identity]:
        peer, login, password = credentials.peer, credentials.login, credentials.password
        binder = self._binder
        if binder is None:
            d = self._runner.run(self._policy.authenticate_password, peer, login, password)
            return d.addCallback(_unwrap)

        def bind(dn: str | None) -> Any:
            if dn is None:
                return None
            return self._binder_runner.run(binder.check, dn, password)

        def decide(outcome: BindOutcome | None) -> defer.Deferred[AuthResult]:
            return self._runner.run(self._policy.authenticate_password, peer, login, password,
                                    outcome)

        looked_up: defer.Deferred[Any] = self._runner.run(
            self._policy.directory_dn_for_login, peer, login)
        return looked_up.addCallback(bind).addCallback(decide).addCallback(_unwrap)


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


@implementer(ICredentialsChecker)
class TokenChecker:
    """The provider is asked on its own runner (network: never on the
    reactor, and never holding a store thread while the provider is slow);
    the policy then maps the token to an account, on the store runner."""

    credentialInterfaces = (ITokenCredentials,)

    def __init__(self, policy: Policy, runner: StoreRunner | InlineRunner,
                 provider: IdentityProvider, provider_runner: StoreRunner | InlineRunner) -> None:
        self._policy = policy
        self._runner = runner
        self._provider = provider
        self._provider_runner = provider_runner

    def requestAvatarId(self, credentials: TokenCredentials) -> defer.Deferred[Identity]:
        def decide(check: TokenCheck) -> defer.Deferred[AuthResult]:
            return self._runner.run(self._policy.authenticate_token, credentials.peer, check,
                                    credentials.user, credentials.mechanism)

        d: defer.Deferred[Any] = self._provider_runner.run(self._provider.verify,
                                                            credentials.token)
        return d.addCallback(decide).addCallback(_unwrap)


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
    """The portal, wrapped so protocols get an `Identity` or a `LoginRefused`.

    Token logins are on when the settings name an identity provider (or one
    is given); `provider_runner` runs its network calls (default: `runner`;
    `mssctl serve` gives it threads of its own). Directory binds (method
    "ldap") likewise when `ldap` is configured and a class allows "ldap",
    on `binder_runner`."""

    def __init__(self, policy: Policy, runner: StoreRunner | InlineRunner, *,
                 provider: IdentityProvider | None = None,
                 provider_runner: StoreRunner | InlineRunner | None = None,
                 binder: BindChecker | None = None,
                 binder_runner: StoreRunner | InlineRunner | None = None) -> None:
        if binder is None and policy.settings.ldap is not None and any(
                AuthMethod.LDAP in policy.settings.policy.login_methods.allowed(c)
                for c in ACCOUNT_CLASSES):
            from policy.ldapdir import BindChecker

            binder = BindChecker(policy.settings.ldap)
        self.binder = binder
        checkers: list[Any] = [
            PasswordChecker(policy, runner, binder=binder, binder_runner=binder_runner),
            CertificateChecker(policy, runner),
        ]
        if provider is None and policy.settings.identity_provider is not None:
            from policy.idp import IdentityProvider

            provider = IdentityProvider(policy.settings.identity_provider)
        self.provider = provider
        if provider is not None:
            checkers.append(TokenChecker(policy, runner, provider, provider_runner or runner))
        realm: Any = IdentityRealm()
        self.portal = portal.Portal(realm, checkers)

    @property
    def tokens_enabled(self) -> bool:
        """OAUTHBEARER and XOAUTH2 are offered only then."""
        return self.provider is not None

    @property
    def openid_configuration(self) -> str | None:
        """The provider's discovery URL, for the SASL error status (RFC 7628 3.2.2)."""
        return self.provider.discovery_url if self.provider is not None else None

    def login(self, credentials: ICredentials) -> defer.Deferred[Identity]:
        """Fires with the Identity; fails with LoginRefused (reason in
        `.decision.reason`) or another exception (e.g. StoreUnavailable)."""
        d: defer.Deferred[Any] = self.portal.login(credentials, None, IIdentity)
        return d.addCallback(_avatar)
