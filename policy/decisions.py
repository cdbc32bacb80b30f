"""The one object the daemons ask: who is this, and may they do that.

SMTP and IMAP never decide on their own: they describe the situation (a
`Peer`, an `Identity`, an address) and act on the `Decision`. Every decision is
recorded in the audit sink, naming the actor. Methods are synchronous and may
touch the store: Twisted code calls them from the store thread pool.

The national whitelist (`check_rcpt`, `may_relay_to`, `check_peer_operator`)
and RFC 4314 shared access with validity windows (`mailbox_rights`,
`check_mailbox_access`) and access control lists (`my_rights`, `acl`,
`list_rights`, `set_rights`) are here; the flow matrix is the next step, its
seam is `check_rcpt`.
"""

from __future__ import annotations

import enum
import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conf.settings import AuthMethod, ListenerRole, RelayDNCheck, Settings
from policy import totp
from policy.audit import AuditSink
from policy.passwords import hash_password, verify_password
from policy.sasl import Failed, FailureKind
from policy.throttle import (
    LoginThrottle,
    counted_address_login,
    counted_certificate_login,
    throttled_login,
)
from policy.tokens import TokenCheck
from storage.interface import (
    Account,
    AccountClass,
    Grant,
    Mailbox,
    MessageStore,
    NotFound,
    TotpFactor,
)

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from policy.flows import FlowDecision, FlowMatrixHolder
    from policy.whitelist import Whitelist

# RFC 4314 rights. Sending as a shared mailbox is a separate right of the
# grant (`Grant.send_as`), not RFC 4314's "p" (posting to a folder).
ALL_RIGHTS = "lrswipkxtea"


# RCPT lookups of active local mailboxes are cached per process for this many
# seconds: without it every RCPT costs a database read. Correct across
# processes because only positive answers are cached and only briefly: a new
# mailbox is found at once (misses are never cached), while a mailbox disabled
# or removed in another process (`mssctl`) may still be accepted at RCPT for up
# to this long. That is acceptable: delivery to a removed mailbox then fails
# with a temporary error and the sender retries; a disabled one receives mail
# for a few more seconds, as if the change had been made a moment later.
MAILBOX_CACHE_TTL = 5.0
MAILBOX_CACHE_SIZE = 10_000


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the login is unknown, so both cases cost one
    scrypt. Of a random secret: a known one would verify once, then be
    answered from the verified-password cache, and an unknown login tried
    with it would answer faster than a known one."""
    return hash_password(secrets.token_urlsafe(32))


@dataclass(frozen=True, slots=True)
class Peer:
    """The connection as the policy sees it."""

    address: str
    port: int
    listener: str
    role: ListenerRole
    tls: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    # The verified client certificate (chain checked by the TLS layer), if any.
    client_cert: Certificate | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is acting, after authentication."""

    account: Account
    method: str  # "password" | "password+totp" | "external" | "token"
    cert_subject: str | None = None

    @property
    def name(self) -> str:
        return self.account.login


def seen_account(identity: Identity, mailbox: Mailbox) -> int | None:
    """Whose \\Seen an action on this mailbox reads and changes: the acting
    account's own on a mailbox that keeps \\Seen per agent
    (`Mailbox.private_seen`), else None: the message's flag, shared by
    everyone (the owner of a PER box, and every shared-seen box)."""
    return identity.account.id if mailbox.private_seen else None


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"  # permanent
    TEMPFAIL = "tempfail"  # try again later


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    # Machine-readable reason, mapped by each protocol to its reply:
    #   "ok", "unknown-recipient", "relay-denied", "not-whitelisted",
    #   "sender-not-owned", "mailbox-disabled", "auth-required", "store-unavailable",
    #   "bad-credentials", "account-disabled", "method-not-allowed",
    #   "no-certificate", "unknown-certificate", "authzid-mismatch",
    #   "account-locked", "address-locked" (policy.throttle: answered exactly
    #   like "bad-credentials"), "certificate-not-pinned" (policy.certmap),
    #   "totp-missing", "totp-invalid", "totp-replayed" (password + code),
    #   "token-<why>", "unknown-user", "idp-unavailable" (TEMPFAIL) (tokens),
    #   "malformed-sasl",
    #   "not-required" (audit only: peer check skipped by configuration),
    #   "dn-mismatch" (outbound: the receiving MTA is not the whitelisted operator),
    #   mailboxes (RFC 4314):
    #   "no-access" (the mailbox is visible, "l", but the right is missing),
    #   "not-visible" (no "l": must be answered exactly like a missing mailbox),
    #   "unknown-identifier", "owner-rights-fixed", "unknown-right",
    #   "mailbox-rights-fixed" (SETACL)
    #   the flow matrix (`check_rcpt`): "flow-denied", "flow-tempfail" (the
    #   rule's own reply is in `RcptDecision.flow`),
    #   submission's From: (`check_from_header`): "from-unreadable", "from-not-owned",
    #   open sessions (`session_access`): "account-disabled",
    #   "mailbox-withdrawn" (the selected mailbox: grant revoked, expired or
    #   without "r" any more, or the mailbox disabled)
    reason: str = "ok"

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


ALLOW = Decision(Verdict.ALLOW)


@dataclass(frozen=True, slots=True)
class RcptDecision:
    decision: Decision
    # Set when the recipient is one of our mailboxes.
    mailbox: Mailbox | None = None
    # True when the message must be relayed to another operator.
    remote: bool = False
    # The flow matrix's decision (its rule, and the reply of a refusal),
    # when a matrix is configured.
    flow: FlowDecision | None = None


@dataclass(frozen=True, slots=True)
class AccessibleMailbox:
    mailbox: Mailbox
    rights: str  # on every folder (the grant of the whole mailbox; "" if none)
    owned: bool
    # (folder, rights) of the current folder grants: rights on that folder
    # in addition to `rights` (RFC 4314 ACL of one mailbox name).
    folder_rights: tuple[tuple[str, str], ...] = ()

    def rights_on(self, folder: str) -> str:
        """The rights on one folder of the mailbox."""
        extra = "".join(r for f, r in self.folder_rights if f == folder)
        return (normalise_rights(self.rights + extra) or "") if extra else self.rights


@dataclass(frozen=True, slots=True)
class RightsDecision:
    """MYRIGHTS: the decision and, when allowed, the identity's rights."""

    decision: Decision
    rights: str = ""


@dataclass(frozen=True, slots=True)
class AclDecision:
    """GETACL: the decision and, when allowed, (identifier, rights) pairs,
    the owner first."""

    decision: Decision
    entries: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ListRightsDecision:
    """LISTRIGHTS (RFC 4314 3.7): the rights always granted to the identifier
    and the rights that may be granted, each one independently."""

    decision: Decision
    required: str = ""
    optional: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FromDecision:
    """Submission's From: check. When a From: mailbox is a box the agent
    sends as (not its own address), `sender` is the agent's address, for the
    Sender: header that must name it (RFC 5322 3.6.2)."""

    decision: Decision
    sender: str | None = None


@dataclass(frozen=True, slots=True)
class SessionAccess:
    """An open session's access as of `epoch` (the store's access epoch read
    before the facts): the account is still active and, when `mailbox_id` is
    set, the session may still read that mailbox. To be checked again when
    the epoch moves or at `valid_until` (a grant that ends by itself)."""

    decision: Decision
    epoch: int
    mailbox_id: int | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuthResult:
    identity: Identity | None
    decision: Decision = field(default=ALLOW)


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower()


# RFC 4314 2.1.1: the obsolete rights c and d stand for the new ones.
_OBSOLETE_RIGHTS = {"c": "k", "d": "xte"}


def normalise_rights(rights: str) -> str | None:
    """RFC 4314 rights in canonical order, obsolete "c"/"d" mapped; None when
    a letter is not a right."""
    letters: set[str] = set()
    for ch in rights:
        letters.update(_OBSOLETE_RIGHTS.get(ch, ch))
    if letters - set(ALL_RIGHTS):
        return None
    return "".join(r for r in ALL_RIGHTS if r in letters)


class Policy:
    """The decisions, backed by the store, the settings and the audit sink.

    Every public decision method records exactly one audit event (actor,
    action, target, result, reason), except `set_rights`: its access check,
    then the change or the reason there was none. Queries (`mailbox_rights`,
    `accessible_mailboxes`, `primary_mailbox`, `addresses_of`,
    `recipient_address`) record none.
    """

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        audit: AuditSink,
        whitelist: Whitelist | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        mailbox_cache_ttl: float = MAILBOX_CACHE_TTL,
        flows: FlowMatrixHolder | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.whitelist = whitelist
        self._clock = clock
        self._mailbox_ttl = mailbox_cache_ttl
        # The flow matrix (`policy.flows_file`), replaced whole on reload.
        self.flows = flows
        # address -> (monotonic expiry, active Mailbox); see MAILBOX_CACHE_TTL.
        self._mailboxes: dict[str, tuple[float, Mailbox]] = {}
        # Failed logins and locks, shared through the store (policy.throttle).
        self.throttle = LoginThrottle(settings.policy.lockout, store, audit, clock)

    # ------------------------------------------------------------ identity

    def allowed_methods(self, account: Account) -> frozenset[AuthMethod]:
        """`policy.login_methods` of the account's class."""
        return self.settings.policy.login_methods.allowed(account.account_class.value)

    @throttled_login("password")
    def authenticate_password(self, peer: Peer, login: str, password: str) -> AuthResult:
        """Password login (AUTH PLAIN/LOGIN, IMAP LOGIN/PLAIN), with the
        one-time code appended to the password (`policy.totp`) when the
        account has a code secret and its class allows "password+totp".

        Methods: "password" (the password alone) or "password+totp". An
        account with a secret, in a class that allows "password+totp", must
        always give its code, even where "password" is allowed too."""
        login = login.strip().lower()
        try:
            account: Account | None = self.store.get_account(login)
        except NotFound:
            account = None
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
            return self._auth_denied(peer, login, "password", "bad-credentials")
        if not account.active:
            return self._auth_denied(peer, login, "password", "account-disabled")
        allowed = self.allowed_methods(account)
        if factor is None:
            if AuthMethod.PASSWORD not in allowed:
                return self._auth_denied(peer, login, "password", "method-not-allowed",
                                         account_class=account.account_class.value,
                                         auth_method=AuthMethod.PASSWORD.value)
            return self._auth_ok(peer, Identity(account=account, method="password"),
                                 auth_method=AuthMethod.PASSWORD.value)
        method = AuthMethod.PASSWORD_TOTP.value
        if code is None:
            # The right password without a code: recorded as such.
            return self._auth_denied(peer, login, method, "totp-missing")
        step = totp.matching_step(factor.secret, code, self._clock().timestamp())
        if step is None:
            return self._auth_denied(peer, login, method, "totp-invalid")
        if not self.store.claim_totp_step(account.id, step):
            return self._auth_denied(peer, login, method, "totp-replayed", step=step)
        return self._auth_ok(peer, Identity(account=account, method=method),
                             auth_method=method, step=step)

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
            return self._auth_denied(peer, requested or "-", "external", "no-certificate")
        match = match_certificate(
            self.store, cert, require_org_pinning=self.settings.policy.require_org_cert_pinning)
        cid, account = match.identity, match.account
        if account is not None and match.refusal == NOT_PINNED:
            return self._auth_denied(peer, cid.subject, "external", NOT_PINNED,
                                     account=account.login, issuer=cid.issuer,
                                     fingerprint=match.fingerprint, cert_kind=cid.kind,
                                     requested=requested or None)
        if account is None:
            return self._auth_denied(peer, cid.subject, "external", "unknown-certificate",
                                     cert_kind=cid.kind, requested=requested or None,
                                     issuer=cid.issuer, fingerprint=match.fingerprint)
        if requested and requested != account.login:
            return self._auth_denied(peer, cid.subject, "external", "authzid-mismatch",
                                     requested=requested)
        if not account.active:
            return self._auth_denied(peer, account.login, "external", "account-disabled",
                                     cert=cid.subject)
        # A person's card, or anything else (an organisation's certificate).
        method = (AuthMethod.CARD if cid.kind in ("practitioner-card", "employee-card")
                  else AuthMethod.ORG_CERTIFICATE)
        if method not in self.allowed_methods(account):
            return self._auth_denied(peer, account.login, "external", "method-not-allowed",
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
        "unknown-user", "authzid-mismatch", "account-disabled",
        "method-not-allowed"; a provider that could not be asked is a
        TEMPFAIL ("idp-unavailable"), never a wrong password."""
        requested = (user or "").strip().lower() or None
        details: dict[str, object] = {"mechanism": mechanism, "requested": requested}
        if check.claims is None:
            actor = check.login or requested or "-"
            reason = check.error or "malformed"
            if check.temporary:
                self.audit.record(actor, "login", peer.listener, "tempfail", method="token",
                                  reason=reason, peer=peer.address, tls=peer.tls, **details)
                return AuthResult(None, Decision(Verdict.TEMPFAIL, reason))
            return self._auth_denied(peer, actor, "token", f"token-{reason}", **details)
        claims = check.claims
        login = claims.login
        details.update(subject=claims.subject, validated_by=claims.validated_by)
        if requested is not None and requested != login:
            return self._auth_denied(peer, login, "token", "authzid-mismatch", **details)
        try:
            account = self.store.get_account(login)
        except NotFound:
            return self._auth_denied(peer, login, "token", "unknown-user", **details)
        if not account.active:
            return self._auth_denied(peer, login, "token", "account-disabled", **details)
        if AuthMethod.TOKEN not in self.allowed_methods(account):
            return self._auth_denied(peer, login, "token", "method-not-allowed",
                                     account_class=account.account_class.value,
                                     auth_method=AuthMethod.TOKEN.value, **details)
        return self._auth_ok(peer, Identity(account=account, method="token"),
                             auth_method=AuthMethod.TOKEN.value, **details)

    def refuse_sasl(self, peer: Peer, mechanism: str, failure: Failed) -> Decision:
        """A SASL exchange the protocol ended before any credentials could be
        checked: malformed input ("malformed-sasl"), or a request to act as
        another identity ("authzid-mismatch"). One audit event; never the
        client's input."""
        reason = ("authzid-mismatch" if failure.kind is FailureKind.AUTHZID_REFUSED
                  else "malformed-sasl")
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
        self, peer: Peer, actor: str, method: str, reason: str, **details: object
    ) -> AuthResult:
        self.audit.record(
            actor or "-", "login", peer.listener, "deny",
            method=method, reason=reason, peer=peer.address, tls=peer.tls, **details,
        )
        return AuthResult(None, Decision(Verdict.DENY, reason))

    # ------------------------------------------------------------ SMTP

    def addresses_of(self, identity: Identity) -> set[str]:
        """Addresses an account may use as sender: its own (`own_addresses`)
        and the shared mailboxes it holds a current send-as grant on (agents
        answer from a functional box)."""
        access = self.store.mailbox_access(identity.account.id)
        sendable = self._own(identity, access.owned)
        for grant, mb in access.shared:
            if grant.send_as and mb.active and self._grant_in_window(grant):
                sendable.add(mb.address)
        return sendable

    def own_addresses(self, identity: Identity) -> set[str]:
        """The account's login and the active mailboxes it owns: sending from
        them is no send-as."""
        return self._own(identity, self.store.mailboxes_owned_by(identity.account.id))

    @staticmethod
    def _own(identity: Identity, owned: list[Mailbox]) -> set[str]:
        return {m.address for m in owned if m.active} | {identity.account.login}

    def check_from_header(
        self, peer: Peer, identity: Identity, mailboxes: list[str] | None,
        message_id: str | None,
    ) -> FromDecision:
        """Submission: the From: mailboxes of a message (None: the header is
        missing, repeated, or read differently by two address parsers, so
        nobody can say who it claims to be from). Each must be one of the
        account's own addresses or a box it may send as; with a box, the
        message must name the agent in Sender: and a `send-as` event records
        it. Denials: "from-unreadable", "from-not-owned"."""
        actor = identity.name
        if not mailboxes:
            return FromDecision(self._deny(actor, "from", "-", "from-unreadable",
                                           peer=peer.address, message_id=message_id))
        sendable = self.addresses_of(identity)
        refused = [a for a in mailboxes if a not in sendable]
        if refused:
            return FromDecision(self._deny(actor, "from", refused[0], "from-not-owned",
                                           peer=peer.address, message_id=message_id))
        own = self.own_addresses(identity)
        boxes = [a for a in mailboxes if a not in own]
        if not boxes:
            self.audit.record(actor, "from", mailboxes[0], "allow", peer=peer.address)
            return FromDecision(ALLOW)
        self.audit.record(actor, "send-as", ",".join(boxes), "allow", peer=peer.address,
                          message_id=message_id, sender=identity.account.login)
        return FromDecision(ALLOW, sender=identity.account.login)

    def check_sender(self, peer: Peer, identity: Identity | None, sender: str) -> Decision:
        """MAIL FROM (and the From: header on submission)."""
        actor = identity.name if identity else peer.address
        target = sender or "<>"
        if peer.role is ListenerRole.SUBMISSION:
            if identity is None:
                return self._deny(actor, "mail", target, "auth-required", peer=peer.address)
            if not self._still_active(identity):
                # Disabled since its AUTH: an open session submits no more.
                return self._deny(actor, "mail", target, "account-disabled", peer=peer.address)
            if sender.strip().lower() not in self.addresses_of(identity):
                return self._deny(actor, "mail", target, "sender-not-owned", peer=peer.address)
        elif peer.role is ListenerRole.MX and sender:
            _, domain = split_address(sender)
            if self.settings.is_local_domain(domain) and identity is None:
                # Our own domains do not arrive from other operators.
                return self._deny(actor, "mail", target, "sender-not-owned", peer=peer.address)
        self.audit.record(actor, "mail", target, "allow", peer=peer.address)
        return ALLOW

    def _still_active(self, identity: Identity) -> bool:
        try:
            return self.store.get_account_by_id(identity.account.id).active
        except NotFound:
            return False

    def recipient_address(self, rcpt: str) -> str:
        """The address a RCPT TO path stands for: the bare ``<postmaster>``
        (RFC 5321 4.5.1, no domain) is postmaster of the first served domain,
        which `check_rcpt` then accepts like any postmaster@<served domain>
        (falling back on `policy.postmaster`). Every other path is itself."""
        if rcpt.lower() == "postmaster":
            return f"postmaster@{self.settings.domains[0]}"
        return rcpt

    def flow(self, peer: Peer, identity: Identity | None, sender: str,
             rcpt: str) -> FlowDecision | None:
        """The flow matrix's decision on one (sender, recipient) pair, None
        when no matrix is configured. Pure but for the mailbox lookups (the
        same per-process cache as RCPT's)."""
        holder = self.flows
        if holder is None:
            return None
        from policy.flows import auth_method_of, facts_for

        method = None
        if identity is not None:
            kind = None
            if identity.method == "external" and peer.client_cert is not None:
                from certs.identity import identity_from_certificate

                kind = identity_from_certificate(peer.client_cert).kind
            method = auth_method_of(identity.method, kind)
        peer_dn = None
        if peer.role is ListenerRole.MX and peer.client_cert is not None:
            from certs.identity import rfc4514_subject

            peer_dn = rfc4514_subject(peer.client_cert)
        request = facts_for(
            _CachedFacts(self), self.settings, self.whitelist, listener=peer.listener,
            sender=sender, recipient=rcpt, client_ip=peer.address,
            account=identity.account if identity is not None else None,
            auth_method=method, peer_dn=peer_dn,
        )
        return holder.decide(request)

    def check_rcpt(
        self, peer: Peer, identity: Identity | None, sender: str, rcpt: str
    ) -> RcptDecision:
        """RCPT TO: the flow matrix first (when configured: its rule decides,
        and is named in the audit event), then the checks it cannot lift:
        the recipient box must exist and be active, relaying needs an
        authenticated submission and a whitelisted domain."""
        actor = identity.name if identity else peer.address
        flow = self.flow(peer, identity, sender, rcpt)
        rule: dict[str, object] = dict(flow.audit_details()) if flow is not None else {}
        if flow is not None and not flow.allowed:
            from policy.flows import FlowVerdict

            temporary = flow.verdict is FlowVerdict.TEMPFAIL
            reason = "flow-tempfail" if temporary else "flow-denied"
            self.audit.record(actor, "rcpt", rcpt, "deny", reason=reason, sender=sender,
                              peer=peer.address, **rule)
            verdict = Verdict.TEMPFAIL if temporary else Verdict.DENY
            return RcptDecision(Decision(verdict, reason), flow=flow)
        _, domain = split_address(rcpt)
        if self.settings.is_local_domain(domain):
            mailbox = self._local_mailbox(rcpt.strip().lower())
            postmaster = self.settings.policy.postmaster
            if mailbox is None and postmaster and rcpt.partition("@")[0].lower() == "postmaster":
                # RFC 5321 4.5.1: postmaster of every served domain is accepted.
                mailbox = self._local_mailbox(postmaster.strip().lower())
            if mailbox is None:
                return RcptDecision(self._deny(actor, "rcpt", rcpt, "unknown-recipient",
                                               sender=sender, peer=peer.address, **rule))
            if not mailbox.active:
                return RcptDecision(self._deny(actor, "rcpt", rcpt, "mailbox-disabled",
                                               sender=sender, peer=peer.address, **rule))
            self.audit.record(actor, "rcpt", rcpt, "allow", sender=sender, local=True,
                              peer=peer.address, **rule)
            return RcptDecision(ALLOW, mailbox=mailbox, flow=flow)
        if identity is None or peer.role is not ListenerRole.SUBMISSION or not domain:
            return RcptDecision(self._deny(actor, "rcpt", rcpt, "relay-denied",
                                           sender=sender, peer=peer.address, **rule))
        if self._whitelist_refuses(domain):
            return RcptDecision(self._deny(actor, "rcpt", rcpt, "not-whitelisted",
                                           sender=sender, peer=peer.address, **rule))
        self.audit.record(actor, "rcpt", rcpt, "allow", sender=sender, local=False,
                          peer=peer.address, **rule)
        return RcptDecision(ALLOW, remote=True, flow=flow)

    def decides_without_store(self, peer: Peer, rcpt: str | None = None,
                              sender: str | None = None) -> bool:
        """True when the MAIL decision (`rcpt` None: check_sender, then
        check_peer_operator) or the RCPT decision for `rcpt` will not touch
        the database, nor will its audit event: the protocol may then decide
        on the reactor thread instead of paying a thread-pool round trip (a
        measured ~1 ms of CPU per message at SMTP ingest). Conservative: any
        doubt answers False."""
        if not getattr(self.audit, "nonblocking", False):
            return False
        if rcpt is None:
            # Submission senders are checked against the account's mailboxes.
            return peer.role is ListenerRole.MX
        if self.flows is not None:
            if peer.role is not ListenerRole.MX:
                return False  # the matrix looks the sender's box up
            # On MX too when the sender claims a local domain (any client may):
            # only a cached box spares the lookup.
            _, sender_domain = split_address(sender or "")
            if sender_domain and self.settings.is_local_domain(sender_domain):
                hit = self._mailboxes.get((sender or "").strip().lower())
                if hit is None or hit[0] <= time.monotonic():
                    return False
        _, domain = split_address(rcpt)
        if not self.settings.is_local_domain(domain):
            return True  # relay decisions use the settings and the whitelist
        hit = self._mailboxes.get(rcpt.strip().lower())
        return hit is not None and hit[0] > time.monotonic()

    def _local_mailbox(self, address: str) -> Mailbox | None:
        """`store.find_mailbox`, with active mailboxes cached briefly (see
        MAILBOX_CACHE_TTL). Thread-safe: single dict operations only."""
        now = time.monotonic()
        hit = self._mailboxes.get(address)
        if hit is not None and hit[0] > now:
            return hit[1]
        mailbox = self.store.find_mailbox(address)
        if self._mailbox_ttl > 0:
            if mailbox is not None and mailbox.active:
                if len(self._mailboxes) >= MAILBOX_CACHE_SIZE:
                    self._mailboxes.clear()
                self._mailboxes[address] = (now + self._mailbox_ttl, mailbox)
            else:
                self._mailboxes.pop(address, None)
        return mailbox

    def check_peer_operator(self, peer: Peer, sender_domain: str) -> Decision:
        """Inbound MX: when mutual TLS is required, the peer must present a
        certificate, and (whitelist enforced and loaded) its DN must be listed
        for the sender's domain, or for any domain when the sender is null
        (`sender_domain` "")."""
        actor = peer.address
        if not self.settings.policy.mx_require_client_cert:
            self.audit.record(actor, "peer", sender_domain, "allow", reason="not-required")
            return ALLOW
        if peer.client_cert is None:
            return self._deny(actor, "peer", sender_domain, "no-certificate")
        from certs.identity import rfc4514_subject

        dn = rfc4514_subject(peer.client_cert)
        if (
            self.settings.policy.enforce_whitelist
            and self.whitelist is not None
            and not (
                self.whitelist.allows(sender_domain, dn)
                if sender_domain
                # Null sender (a DSN): no domain to match, the operator must
                # still be one of the trust space's.
                else self.whitelist.lists_operator(dn)
            )
        ):
            return self._deny(dn, "peer", sender_domain, "not-whitelisted", peer=peer.address)
        self.audit.record(dn, "peer", sender_domain, "allow", peer=peer.address)
        return ALLOW

    def may_relay_to(self, domain: str) -> Decision:
        """Outbound: only whitelisted domains (when a whitelist is loaded)."""
        domain = domain.strip().lower().rstrip(".")
        if self._whitelist_refuses(domain):
            return self._deny("relay", "relay", domain, "not-whitelisted")
        self.audit.record("relay", "relay", domain, "allow")
        return ALLOW

    def check_relay_peer(self, domain: str, dn: str) -> Decision:
        """Outbound: the receiving MTA's certificate DN against the whitelist
        entries of `domain` (`policy.relay_dn_check`). Without a loaded
        whitelist, or for a domain it does not list (relaying there was
        allowed by `enforce_whitelist: false`), there is nothing to compare."""
        domain = domain.strip().lower().rstrip(".")
        wl = self.whitelist
        if (self.settings.policy.relay_dn_check is RelayDNCheck.OFF or wl is None
                or not wl.has_domain(domain)):
            return ALLOW
        if not wl.allows(domain, dn):
            return self._deny("relay", "relay-peer", domain, "dn-mismatch", dn=dn)
        return ALLOW

    def _whitelist_refuses(self, domain: str) -> bool:
        return (
            self.settings.policy.enforce_whitelist
            and self.whitelist is not None
            and not self.whitelist.has_domain(domain)
        )

    def reload_whitelist(self) -> str | None:
        """Re-read `policy.whitelist_file`; on any problem keep the current
        list. Returns the problem (None when reloaded). One audit event."""
        from policy.whitelist import Whitelist as _Whitelist
        from policy.whitelist import WhitelistError

        path = self.settings.policy.whitelist_file
        if path is None:
            return None
        try:
            fresh = _Whitelist.load(path)
        except WhitelistError as exc:
            self.audit.record("-", "whitelist-reload", str(path), "fail", reason=str(exc),
                              kept=self.whitelist.generated if self.whitelist else None)
            return str(exc)
        self.whitelist = fresh
        self.audit.record("-", "whitelist-reload", str(path), "ok",
                          generated=fresh.generated, domains=len(fresh.domains))
        return None

    # ------------------------------------------------------------ IMAP

    def now(self) -> datetime:
        """The policy's clock (aware UTC): grant windows are judged by it."""
        return self._clock()


    def _grant_current(self, grant: Grant) -> bool:
        """A grant of RFC 4314 rights counts only inside its validity window
        (delegations during a mission end by themselves)."""
        return bool(grant.rights) and self._grant_in_window(grant)

    def _grant_in_window(self, grant: Grant) -> bool:
        now = self.now()
        start, until = _aware(grant.valid_from), _aware(grant.valid_until)
        if start is not None and now < start:
            return False
        return not (until is not None and now >= until)

    def _current_grants(self, account_id: int) -> list[Grant]:
        return [g for g in self.store.grants_for_account(account_id) if self._grant_current(g)]

    def accessible_mailboxes(self, identity: Identity) -> list[AccessibleMailbox]:
        """The account's own mailboxes, then those shared with it: by a
        current grant on the whole mailbox or on one of its folders."""
        out: list[AccessibleMailbox] = []
        seen: set[int] = set()
        access = self.store.mailbox_access(identity.account.id)
        for mb in access.owned:
            if mb.active:
                out.append(AccessibleMailbox(mb, ALL_RIGHTS, owned=True))
                seen.add(mb.id)
        shared: dict[int, tuple[Mailbox, list[str], list[tuple[str, str]]]] = {}
        for grant, mb in access.shared:
            if mb.id in seen or not mb.active or not self._grant_current(grant):
                continue
            _, whole, folders = shared.setdefault(mb.id, (mb, [], []))
            if grant.folder:
                folders.append((grant.folder, grant.rights))
            else:
                whole.append(grant.rights)
        for mb, whole, folders in shared.values():
            out.append(AccessibleMailbox(mb, "".join(whole), owned=False,
                                         folder_rights=tuple(folders)))
        return out

    def primary_mailbox(self, identity: Identity) -> Mailbox | None:
        """The personal namespace of the session: the mailbox named like the
        login, else the first owned one."""
        owned = [m for m in self.store.mailboxes_owned_by(identity.account.id) if m.active]
        for m in owned:
            if m.address == identity.account.login:
                return m
        return owned[0] if owned else None

    def mailbox_rights(self, identity: Identity, mailbox: Mailbox, folder: str | None = None) -> str:
        """RFC 4314 rights of the identity on a mailbox ("" = none: the
        protocol must then answer as if the mailbox did not exist): those
        of its grant on the whole mailbox, and with `folder` those of its
        grant on that folder too."""
        if not mailbox.active or not identity.account.active:
            return ""
        if mailbox.owner_account_id is not None and mailbox.owner_account_id == identity.account.id:
            return ALL_RIGHTS
        return _granted(self._current_grants(identity.account.id), mailbox.id, folder)[0]

    def session_access(
        self, identity: Identity, mailbox: Mailbox | None, folder: str | None = None
    ) -> SessionAccess:
        """Rechecks an open session against the store as it is now: the
        account must still be active, and the mailbox it has selected (if
        any) still readable ("r", the right SELECT needed; on `folder`, the
        selected folder, when given: a folder grant counts). A withdrawal is
        a decision and is audited (action "session", result "deny"); a
        session that keeps its access records nothing (its access was
        recorded when it was granted)."""
        epoch = self.store.access_epoch()  # first: a later change moves it again
        try:
            account = self.store.get_account_by_id(identity.account.id)
        except NotFound:
            account = None
        mailbox_id = mailbox.id if mailbox is not None else None
        if account is None or not account.active:
            decision = self._deny(identity.name, "session", identity.name, "account-disabled")
            return SessionAccess(decision, epoch, mailbox_id)
        if mailbox is None:
            return SessionAccess(ALLOW, epoch)
        try:
            current = self.store.get_mailbox_by_id(mailbox.id)
        except NotFound:
            current = None
        rights, until = "", None
        if current is not None and current.active:
            if current.owner_account_id == account.id:
                rights = ALL_RIGHTS
            else:
                rights, until = _granted(self._current_grants(account.id), mailbox.id, folder)
        if "r" not in rights:
            decision = self._deny(identity.name, "session", mailbox.address, "mailbox-withdrawn")
            return SessionAccess(decision, epoch, mailbox_id)
        return SessionAccess(ALLOW, epoch, mailbox_id, until)

    def check_mailbox_access(
        self, identity: Identity, mailbox: Mailbox, folder: str, right: str, action: str
    ) -> Decision:
        """May the identity use `right` on a folder of the mailbox? Every
        access is recorded (health-data hosting: record every access), naming
        the agent even on a shared box.

        A denial says which answer is due (RFC 4314 6): "no-access" when the
        identity may see the mailbox (holds "l") but lacks another right,
        "not-visible" otherwise: the protocol must then answer exactly as for
        a mailbox that does not exist."""
        rights = self.mailbox_rights(identity, mailbox, folder or None)
        target = f"{mailbox.address}/{folder}"
        shared = mailbox.owner_account_id != identity.account.id
        if len(right) == 1 and right in rights:
            self.audit.record(identity.name, action, target, "allow", right=right,
                              shared=shared, mailbox_type=mailbox.mailbox_type.value)
            return ALLOW
        reason = "no-access" if "l" in rights and right != "l" else "not-visible"
        return self._deny(identity.name, action, target, reason, right=right)

    # RFC 4314 ACL commands, on one folder (a mailbox name): the rights of
    # an identifier there are those of its grant on the whole mailbox
    # (`mssctl mailbox grant` without --folder) and of its grant on that
    # folder, which SETACL/DELETEACL change; identifiers are account logins;
    # the owner's rights are fixed (all rights). Each method decides first,
    # then (when allowed) checks that the folder exists: `NotFound` is
    # raised after the decision, as the store raises it.

    def my_rights(self, identity: Identity, mailbox: Mailbox, folder: str) -> RightsDecision:
        """MYRIGHTS: the identity's own rights; refused ("not-visible") unless
        it holds "l" or "r". Raises NotFound (after the decision) for a
        missing folder."""
        rights = self.mailbox_rights(identity, mailbox, folder)
        target = f"{mailbox.address}/{folder}"
        if "l" not in rights and "r" not in rights:
            return RightsDecision(self._deny(identity.name, "myrights", target, "not-visible"))
        self.audit.record(identity.name, "myrights", target, "allow", rights=rights,
                          shared=mailbox.owner_account_id != identity.account.id)
        self.store.get_folder(mailbox.id, folder)
        return RightsDecision(ALLOW, rights)

    def acl(self, identity: Identity, mailbox: Mailbox, folder: str) -> AclDecision:
        """GETACL: needs "a". The owner (all rights), then every account
        holding a non-empty grant. Raises NotFound (after the decision) for
        a missing folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "getacl")
        if not decision.allowed:
            return AclDecision(decision)
        self.store.get_folder(mailbox.id, folder)
        entries: list[tuple[str, str]] = []
        owner = mailbox.owner_account_id
        if owner is not None:
            entries.append((self.store.get_account_by_id(owner).login, ALL_RIGHTS))
        by_account: dict[int, str] = {}
        for grant in self.store.grants_for_mailbox(mailbox.id):
            if grant.account_id != owner and grant.folder in ("", folder):
                by_account[grant.account_id] = by_account.get(grant.account_id, "") + grant.rights
        for account_id, letters in by_account.items():
            rights = normalise_rights(letters)
            if rights:
                entries.append((self.store.get_account_by_id(account_id).login, rights))
        return AclDecision(ALLOW, tuple(entries))

    def list_rights(self, identity: Identity, mailbox: Mailbox, folder: str) -> ListRightsDecision:
        """LISTRIGHTS: needs "a". Nothing is always granted; every right may
        be granted on its own. Raises NotFound (after the decision) for a
        missing folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "listrights")
        if not decision.allowed:
            return ListRightsDecision(decision)
        self.store.get_folder(mailbox.id, folder)
        return ListRightsDecision(ALLOW, "", tuple(ALL_RIGHTS))

    def set_rights(
        self, identity: Identity, mailbox: Mailbox, folder: str, identifier: str, rights: str
    ) -> Decision:
        """SETACL ("+r" adds, "-r" removes, "r" replaces) and DELETEACL
        (`rights` ""): needs "a". Changes the identifier's grant on this
        folder: its rights there become the new ones, less those its grant
        on the whole mailbox gives anyway. Refused with "unknown-identifier"
        (no such account), "owner-rights-fixed", "unknown-right" or
        "mailbox-rights-fixed" (SETACL would remove a right the grant on the
        whole mailbox gives: `mssctl mailbox grant` changes that one;
        DELETEACL removes the folder's grant and leaves it). Records the
        access check, then the change (or why there was none). Raises
        NotFound (after the access check, before any change) for a missing
        folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "setacl")
        if not decision.allowed:
            return decision
        self.store.get_folder(mailbox.id, folder)
        try:
            account = self.store.get_account(identifier)
        except NotFound:
            return self._deny(identity.name, "setacl", f"{mailbox.address}/{folder}",
                              "unknown-identifier", identifier=identifier)
        target = f"{mailbox.address}/{folder}"
        if account.id == mailbox.owner_account_id:
            return self._deny(identity.name, "setacl", target, "owner-rights-fixed",
                              identifier=identifier)
        grants = [g for g in self.store.grants_for_mailbox(mailbox.id)
                  if g.account_id == account.id]
        whole = "".join(g.rights for g in grants if not g.folder)
        current = normalise_rights(whole + "".join(g.rights for g in grants
                                                   if g.folder == folder)) or ""
        new: str | None
        if rights.startswith("+"):
            new = normalise_rights(current + rights[1:])
        elif rights.startswith("-"):
            remove = normalise_rights(rights[1:])
            new = None if remove is None else "".join(r for r in current if r not in remove)
        else:
            new = normalise_rights(rights)
        if new is None:
            return self._deny(identity.name, "setacl", target, "unknown-right",
                              identifier=identifier)
        if rights and set(whole) - set(new):
            return self._deny(identity.name, "setacl", target, "mailbox-rights-fixed",
                              identifier=identifier, mailbox_rights=whole)
        own = "".join(r for r in new if r not in whole)
        self.store.set_grant(account.id, mailbox.id, own, folder=folder)
        details: dict[str, object] = {"identifier": identifier, "rights": own}
        if whole:
            details["mailbox_rights"] = whole
        self.audit.record(identity.name, "setacl", target, "ok", **details)
        return ALLOW

    # ------------------------------------------------------------ helpers

    def _deny(
        self, actor: str, action: str, target: str, reason: str, **details: object
    ) -> Decision:
        self.audit.record(actor or "-", action, target, "deny", reason=reason, **details)
        return Decision(Verdict.DENY, reason)


class _CachedFacts:
    """The store as `facts_for` reads it, through the policy's mailbox cache."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def find_mailbox(self, address: str) -> Mailbox | None:
        return self._policy._local_mailbox(address)

    def get_account(self, login: str) -> Account:
        return self._policy.store.get_account(login)


def _granted(grants: list[Grant], mailbox_id: int, folder: str | None) -> tuple[str, datetime | None]:
    """From current grants: the rights on a mailbox (its whole-mailbox
    grant's, and with `folder` that folder's grant's too) and the earliest
    end of those grants (when the rights must be judged again)."""
    letters: list[str] = []
    ends: list[datetime] = []
    for grant in grants:
        if grant.mailbox_id != mailbox_id or (grant.folder and grant.folder != folder):
            continue
        letters.append(grant.rights)
        end = _aware(grant.valid_until)
        if end is not None:
            ends.append(end)
    return normalise_rights("".join(letters)) or "", min(ends, default=None)


def _aware(value: datetime | None) -> datetime | None:
    """Stores may hand back naive datetimes (SQLite): they are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


__all__ = [
    "ALL_RIGHTS",
    "AccessibleMailbox",
    "AccountClass",
    "AclDecision",
    "AuthResult",
    "Decision",
    "FromDecision",
    "Identity",
    "ListRightsDecision",
    "Peer",
    "Policy",
    "RcptDecision",
    "RightsDecision",
    "SessionAccess",
    "Verdict",
    "normalise_rights",
]
