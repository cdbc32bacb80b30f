"""Who is this: logins by password (+ one-time code), certificate (card,
organisation) and identity-provider token, and refused SASL exchanges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conf.settings import ACCOUNT_CLASSES, AuthMethod
from policy import totp
from policy.core import PolicyCore
from policy.passwords import verify_password
from policy.reasons import Reason
from policy.sasl import Failed, FailureKind
from policy.throttle import (
    counted_address_login,
    counted_certificate_login,
    throttled_login,
)
from policy.tokens import TokenCheck
from policy.verdicts import (
    AuthResult,
    Decision,
    Identity,
    Peer,
    Verdict,
    _dummy_hash,
)
from storage.interface import (
    Account,
    NotFound,
    TotpFactor,
)

if TYPE_CHECKING:
    from policy.ldapdir import BindOutcome


class IdentityDecisions(PolicyCore):
    """Logins: each records one audit event (method, reason)."""

    def allowed_methods(self, account: Account) -> frozenset[AuthMethod]:
        """`policy.login_methods` of the account's class."""
        return self.settings.policy.login_methods.allowed(account.account_class.value)

    def directory_dn_for_login(self, peer: Peer, login: str) -> str | None:
        """The directory entry to bind as for this password login (method
        "ldap"), or None: no directory configured, an account that is not
        the directory's or whose class does not allow "ldap", or a login
        (or address) locked now: a locked login must not reach the
        directory (whose own lockout would then shut the person out of
        every system). The decision itself is `authenticate_password`'s."""
        if self.settings.ldap is None:
            return None
        login = login.strip().lower()
        try:
            account = self.store.get_account(login)
        except NotFound:
            return None
        if (account.directory_dn is None or not account.active
                or AuthMethod.LDAP not in self.allowed_methods(account)):
            return None
        if self.throttle.check(login, peer.address).lock is not None:
            return None
        return account.directory_dn

    def client_setup_methods(self) -> list[AuthMethod]:
        """The login methods to set a mail client up with (autoconfiguration),
        the same for every address: the query is anonymous, from anywhere,
        and an answer that followed the account would tell anyone which
        addresses are practitioners' (card) or systems' (organisation
        certificate) accounts. In order: the staff class's methods (the
        secretaries, most of the people who set a client up by it), then
        those the other classes allow that are not listed yet. A query:
        reads nothing, records nothing."""
        login_methods = self.settings.policy.login_methods
        methods: list[AuthMethod] = []
        for account_class in ("staff", *(c for c in ACCOUNT_CLASSES if c != "staff")):
            for method in login_methods.allowed_in_order(account_class):
                if method not in methods:
                    methods.append(method)
        return methods

    @throttled_login("password")
    def authenticate_password(self, peer: Peer, login: str, password: str,
                              directory: BindOutcome | None = None) -> AuthResult:
        """Password login (AUTH PLAIN/LOGIN, IMAP LOGIN/PLAIN), with the
        one-time code appended to the password (`policy.totp`) when the
        account has a code secret and its class allows "password+totp".

        Methods: "password" (the password alone) or "password+totp". An
        account with a secret, in a class that allows "password+totp", must
        always give its code, even where "password" is allowed too.

        Method "ldap": `directory` is the answer of a bind as the account's
        directory entry (`directory_dn_for_login`, then
        `policy.ldapdir.BindChecker` on threads of its own); a directory that
        could not be asked is a TEMPFAIL (Reason.DIRECTORY_UNAVAILABLE),
        never a wrong password."""
        login = login.strip().lower()
        try:
            account: Account | None = self.store.get_account(login)
        except NotFound:
            account = None
        if (directory is not None and account is not None and account.directory_dn
                and AuthMethod.LDAP in self.allowed_methods(account)):
            return self._directory_login(peer, account, directory)
        factor: TotpFactor | None = None
        if account is not None and AuthMethod.PASSWORD_TOTP in self.allowed_methods(account):
            factor = self.store.totp_factor(account.id)
        split = totp.split_code(password) if factor is not None else None
        secret, code = split if split is not None else (password, None)
        # Same work whether or not the login exists: no enumeration by
        # timing. One scrypt, whichever form the password came in.
        encoded = account.password_hash if account is not None else None
        ok = verify_password(secret, encoded or _dummy_hash()) and encoded is not None
        if account is None or not ok:
            return self._auth_denied(peer, login, "password", Reason.BAD_CREDENTIALS)
        if not account.active:
            return self._auth_denied(peer, login, "password", Reason.ACCOUNT_DISABLED)
        allowed = self.allowed_methods(account)
        if factor is None:
            if AuthMethod.PASSWORD not in allowed:
                return self._auth_denied(peer, login, "password", Reason.METHOD_NOT_ALLOWED,
                                         account_class=account.account_class.value,
                                         auth_method=AuthMethod.PASSWORD.value)
            return self._auth_ok(peer, Identity(account=account, method="password"),
                                 auth_method=AuthMethod.PASSWORD.value)
        method = AuthMethod.PASSWORD_TOTP.value
        if code is None:
            # The right password without a code: recorded as such.
            return self._auth_denied(peer, login, method, Reason.TOTP_MISSING)
        step = totp.matching_step(factor.secret, code, self._clock().timestamp())
        if step is None:
            return self._auth_denied(peer, login, method, Reason.TOTP_INVALID)
        if not self.store.claim_totp_step(account.id, step):
            return self._auth_denied(peer, login, method, Reason.TOTP_REPLAYED, step=step)
        return self._auth_ok(peer, Identity(account=account, method=method),
                             auth_method=method, step=step)

    def _directory_login(self, peer: Peer, account: Account,
                         outcome: BindOutcome) -> AuthResult:
        from policy.ldapdir import BindOutcome  # ldap3: only where a directory is used

        method = AuthMethod.LDAP.value
        if outcome is BindOutcome.UNAVAILABLE:
            self.audit.record(account.login, "login", peer.listener, "tempfail", method=method,
                              reason=Reason.DIRECTORY_UNAVAILABLE, peer=peer.address,
                              tls=peer.tls)
            return AuthResult(None, Decision(Verdict.TEMPFAIL, Reason.DIRECTORY_UNAVAILABLE))
        if outcome is not BindOutcome.OK:
            return self._auth_denied(peer, account.login, method, Reason.BAD_CREDENTIALS)
        if not account.active:
            return self._auth_denied(peer, account.login, method, Reason.ACCOUNT_DISABLED)
        return self._auth_ok(peer, Identity(account=account, method=method),
                             auth_method=method)

    @counted_certificate_login
    def authenticate_certificate(self, peer: Peer, authzid: str | None) -> AuthResult:
        """SASL EXTERNAL: the TLS client certificate names the account.

        `authzid` is the requested login (Thunderbird sends it) or None/"" for
        "whatever the certificate maps to". A mismatch is refused.

        The mapping (a pinned fingerprint; a card's IdNat_PS; the exact
        subject; an organisation certificate's OU) and certificate pinning
        are `policy.certmap`'s. A certificate refused for want of a pin is
        audited as `certificate-not-pinned`, naming its subject, issuer and
        fingerprint and the account it named.
        """
        from policy.certmap import NOT_PINNED, match_certificate

        cert = peer.client_cert
        requested = (authzid or "").strip().lower()
        if cert is None:
            return self._auth_denied(peer, requested or "-", "external", Reason.NO_CERTIFICATE)
        match = match_certificate(
            self.store, cert, require_org_pinning=self.settings.policy.require_org_cert_pinning)
        cid, account = match.identity, match.account
        if account is not None and match.refusal == NOT_PINNED:
            return self._auth_denied(peer, cid.subject, "external", NOT_PINNED,
                                     account=account.login, issuer=cid.issuer,
                                     fingerprint=match.fingerprint, cert_kind=cid.kind,
                                     requested=requested or None)
        if account is None:
            return self._auth_denied(peer, cid.subject, "external", Reason.UNKNOWN_CERTIFICATE,
                                     cert_kind=cid.kind, requested=requested or None,
                                     issuer=cid.issuer, fingerprint=match.fingerprint)
        if requested and requested != account.login:
            return self._auth_denied(peer, cid.subject, "external", Reason.AUTHZID_MISMATCH,
                                     requested=requested)
        if not account.active:
            return self._auth_denied(peer, account.login, "external", Reason.ACCOUNT_DISABLED,
                                     cert=cid.subject)
        # A person's card, or anything else (an organisation's certificate).
        method = (AuthMethod.CARD if cid.kind in ("practitioner-card", "employee-card")
                  else AuthMethod.ORG_CERTIFICATE)
        if method not in self.allowed_methods(account):
            return self._auth_denied(peer, account.login, "external", Reason.METHOD_NOT_ALLOWED,
                                     cert=cid.subject, cert_kind=cid.kind,
                                     account_class=account.account_class.value,
                                     auth_method=method.value)
        return self._auth_ok(
            peer, Identity(account=account, method="external", cert_subject=cid.subject),
            auth_method=method.value,
        )

    @counted_address_login("token")
    def authenticate_token(
        self, peer: Peer, check: TokenCheck, user: str | None, mechanism: str
    ) -> AuthResult:
        """SASL OAUTHBEARER / XOAUTH2: an identity provider's token, already
        checked by `policy.idp` (off the reactor: it may fetch keys). `user`
        is the name the client sent with it (authzid, XOAUTH2 user=); when
        given it must be the account the token names.

        Refusal reasons: "token-<why>" (token-expired, token-wrong-audience,
        token-bad-signature ... see `policy.tokens.TokenError`),
        Reason.UNKNOWN_USER, Reason.AUTHZID_MISMATCH, Reason.ACCOUNT_DISABLED,
        Reason.METHOD_NOT_ALLOWED; a provider that could not be asked is a
        TEMPFAIL (Reason.IDP_UNAVAILABLE), never a wrong password."""
        requested = (user or "").strip().lower() or None
        details: dict[str, object] = {"mechanism": mechanism, "requested": requested}
        if check.claims is None:
            actor = check.login or requested or "-"
            why = check.error or "malformed"
            if check.temporary:
                self.audit.record(actor, "login", peer.listener, "tempfail", method="token",
                                  reason=why, peer=peer.address, tls=peer.tls, **details)
                return AuthResult(None, Decision(Verdict.TEMPFAIL, Reason.IDP_UNAVAILABLE))
            return self._auth_denied(peer, actor, "token", Reason.of_token(why), **details)
        claims = check.claims
        login = claims.login
        details.update(subject=claims.subject, validated_by=claims.validated_by)
        if requested is not None and requested != login:
            return self._auth_denied(peer, login, "token", Reason.AUTHZID_MISMATCH, **details)
        try:
            account = self.store.get_account(login)
        except NotFound:
            return self._auth_denied(peer, login, "token", Reason.UNKNOWN_USER, **details)
        if not account.active:
            return self._auth_denied(peer, login, "token", Reason.ACCOUNT_DISABLED, **details)
        if AuthMethod.TOKEN not in self.allowed_methods(account):
            return self._auth_denied(peer, login, "token", Reason.METHOD_NOT_ALLOWED,
                                     account_class=account.account_class.value,
                                     auth_method=AuthMethod.TOKEN.value, **details)
        return self._auth_ok(peer, Identity(account=account, method="token"),
                             auth_method=AuthMethod.TOKEN.value, **details)

    def refuse_sasl(self, peer: Peer, mechanism: str, failure: Failed) -> Decision:
        """A SASL exchange the protocol ended before any credentials could be
        checked: malformed input (Reason.MALFORMED_SASL), or a request to act as
        another identity (Reason.AUTHZID_MISMATCH). One audit event; never the
        client's input."""
        reason = (Reason.AUTHZID_MISMATCH if failure.kind is FailureKind.AUTHZID_REFUSED
                  else Reason.MALFORMED_SASL)
        self._auth_denied(peer, "-", mechanism.lower(), reason, detail=failure.detail)
        return Decision(Verdict.DENY, reason)

    def _auth_ok(self, peer: Peer, identity: Identity, **details: object) -> AuthResult:
        self.audit.record(
            identity.name, "login", peer.listener, "allow",
            method=identity.method, peer=peer.address, tls=peer.tls,
            cert=identity.cert_subject, **details,
        )
        return AuthResult(identity)

    def _auth_denied(
        self, peer: Peer, actor: str, method: str, reason: Reason, **details: object
    ) -> AuthResult:
        self.audit.record(
            actor or "-", "login", peer.listener, "deny",
            method=method, reason=reason, peer=peer.address, tls=peer.tls, **details,
        )
        return AuthResult(None, Decision(Verdict.DENY, reason))
