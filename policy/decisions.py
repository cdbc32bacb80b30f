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
from policy.reasons import Reason
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
    QueueEntry,
    QueueOrigin,
    TotpFactor,
)

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from policy.flows import AuthMethod as FlowAuthMethod
    from policy.flows import FlowDecision, FlowMatrixHolder, FlowRequest
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
    # Why (`policy.reasons.Reason`, the audit's `reason` word), mapped by
    # each protocol to its reply once.
    reason: Reason = Reason.OK
    # A refusal by the flow matrix at MAIL FROM (`check_sender_flow`): the
    # rule, and the reply it names.
    flow: FlowDecision | None = None

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
    rights: str
    owned: bool


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
        it. Denials: Reason.FROM_UNREADABLE, Reason.FROM_NOT_OWNED."""
        actor = identity.name
        if not mailboxes:
            return FromDecision(self._deny(actor, "from", "-", Reason.FROM_UNREADABLE,
                                           peer=peer.address, message_id=message_id))
        sendable = self.addresses_of(identity)
        refused = [a for a in mailboxes if a not in sendable]
        if refused:
            return FromDecision(self._deny(actor, "from", refused[0], Reason.FROM_NOT_OWNED,
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
                return self._deny(actor, "mail", target, Reason.AUTH_REQUIRED, peer=peer.address)
            if not self._still_active(identity):
                # Disabled since its AUTH: an open session submits no more.
                return self._deny(actor, "mail", target, Reason.ACCOUNT_DISABLED, peer=peer.address)
            if sender.strip().lower() not in self.addresses_of(identity):
                return self._deny(actor, "mail", target, Reason.SENDER_NOT_OWNED, peer=peer.address)
        elif peer.role is ListenerRole.MX and sender:
            _, domain = split_address(sender)
            if self.settings.is_local_domain(domain) and identity is None:
                # Our own domains do not arrive from other operators.
                return self._deny(actor, "mail", target, Reason.SENDER_NOT_OWNED, peer=peer.address)
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

    @staticmethod
    def _flow_method(peer: Peer, identity: Identity | None) -> FlowAuthMethod | None:
        if identity is None:
            return None
        from policy.flows import auth_method_of

        kind = None
        if identity.method == "external" and peer.client_cert is not None:
            from certs.identity import identity_from_certificate

            kind = identity_from_certificate(peer.client_cert).kind
        return auth_method_of(identity.method, kind)

    @staticmethod
    def _peer_dn(peer: Peer) -> str | None:
        if peer.role is ListenerRole.MX and peer.client_cert is not None:
            from certs.identity import rfc4514_subject

            return rfc4514_subject(peer.client_cert)
        return None

    def _flow_request(self, peer: Peer, identity: Identity | None, sender: str, rcpt: str,
                      size: int | None) -> FlowRequest:
        from policy.flows import facts_for

        return facts_for(
            _CachedFacts(self), self.settings, self.whitelist, listener=peer.listener,
            sender=sender, recipient=rcpt, client_ip=peer.address,
            account=identity.account if identity is not None else None,
            auth_method=self._flow_method(peer, identity), peer_dn=self._peer_dn(peer),
            size=size,
        )

    def flow_origin(self, peer: Peer, identity: Identity | None) -> QueueOrigin:
        """The source facts of a message, kept with its queue entry so that
        `recheck_relay` decides on the same source later."""
        method = self._flow_method(peer, identity)
        return QueueOrigin(
            listener=peer.listener, client_ip=peer.address,
            account=identity.account.login if identity is not None else None,
            auth_method=method.value if method is not None else None,
            peer_dn=self._peer_dn(peer),
        )

    def recheck_relay(self, entry: QueueEntry) -> dict[str, Decision]:
        """The queue is about to relay `entry`: the flow matrix decides each
        recipient again (it may have changed since the message was accepted,
        and so may the account: class, disabled), with the source kept at
        submission and the message's size. Returns the refused recipients
        (deny: fail with the rule's reply; tempfail: try again later), with
        the rule in `Decision.flow`. Each recipient decided is audited
        (action "relay-flow", actor "relay", the rule named). Nothing is
        decided (an empty answer) without a matrix or for an entry queued
        before origins were kept; a listener that no longer exists leaves
        the entry to the decision taken when it was accepted (audited)."""
        holder = self.flows
        origin = entry.origin
        if holder is None or origin is None:
            return {}
        from policy.flows import AuthMethod as FlowMethod
        from policy.flows import FlowVerdict, UnknownListener, facts_for

        account: Account | None = None
        if origin.account is not None:
            try:
                account = self.store.get_account(origin.account)
            except NotFound:
                account = None  # gone: decided as not logged in
        method = (FlowMethod(origin.auth_method)
                  if account is not None and origin.auth_method else None)
        refused: dict[str, Decision] = {}
        for rcpt in entry.recipients:
            try:
                request = facts_for(
                    _CachedFacts(self), self.settings, self.whitelist, listener=origin.listener,
                    sender=entry.sender, recipient=rcpt, client_ip=origin.client_ip,
                    account=account, auth_method=method, peer_dn=origin.peer_dn,
                    size=entry.size,
                )
            except UnknownListener:
                self.audit.record("relay", "relay-flow", rcpt, "skip", queue_id=entry.id,
                                  reason=Reason.LISTENER_GONE, listener=origin.listener)
                continue
            flow = holder.decide(request)
            if flow.allowed:
                self.audit.record("relay", "relay-flow", rcpt, "allow", queue_id=entry.id,
                                  **flow.audit_details())
                continue
            temporary = flow.verdict is FlowVerdict.TEMPFAIL
            reason = Reason.FLOW_TEMPFAIL if temporary else Reason.FLOW_DENIED
            self.audit.record("relay", "relay-flow", rcpt, "deny", queue_id=entry.id,
                              reason=reason, **flow.audit_details())
            refused[rcpt] = Decision(Verdict.TEMPFAIL if temporary else Verdict.DENY, reason,
                                     flow=flow)
        return refused

    def flow(self, peer: Peer, identity: Identity | None, sender: str,
             rcpt: str, size: int | None = None) -> FlowDecision | None:
        """The flow matrix's decision on one (sender, recipient) pair, None
        when no matrix is configured. `size`: declared at RCPT (SIZE=), the
        actual size after DATA. Pure but for the mailbox lookups (the same
        per-process cache as RCPT's)."""
        holder = self.flows
        if holder is None:
            return None
        return holder.decide(self._flow_request(peer, identity, sender, rcpt, size))

    def check_sender_flow(self, peer: Peer, identity: Identity | None, sender: str,
                          size: int | None = None) -> Decision:
        """MAIL FROM, after `check_sender` (and, on MX, `check_peer_operator`):
        the flow matrix refuses here when its decision is the same for every
        recipient (`FlowMatrix.decide_sender`: a rule on the source alone).
        A refusal is audited (action "mail", the rule named) and carries the
        rule's reply in `Decision.flow`; anything else is decided per
        recipient at RCPT, and records nothing here."""
        holder = self.flows
        if holder is None:
            return ALLOW
        flow = holder.matrix.decide_sender(self._flow_request(peer, identity, sender, "", size))
        if flow is None or flow.allowed:
            return ALLOW
        from policy.flows import FlowVerdict

        temporary = flow.verdict is FlowVerdict.TEMPFAIL
        reason = Reason.FLOW_TEMPFAIL if temporary else Reason.FLOW_DENIED
        self.audit.record(identity.name if identity else peer.address, "mail", sender or "<>",
                          "deny", reason=reason, peer=peer.address, **flow.audit_details())
        return Decision(Verdict.TEMPFAIL if temporary else Verdict.DENY, reason, flow=flow)

    def check_message_size(self, peer: Peer, identity: Identity | None, sender: str,
                           recipients: list[str], size: int) -> Decision:
        """After DATA, when the matrix has a `max_size` rule: every accepted
        recipient decided again with the message's real size (at RCPT it
        was the SIZE= declared, or unknown). The first recipient now refused
        refuses the message (SMTP has no per-recipient answer to DATA), with
        its rule's reply in `Decision.flow`; each refused recipient is
        audited (action "data", the rule named). Records nothing when all
        still pass."""
        holder = self.flows
        if holder is None or not holder.matrix.uses_size:
            return ALLOW
        from policy.flows import FlowVerdict

        actor = identity.name if identity else peer.address
        refusal: Decision | None = None
        for rcpt in recipients:
            flow = holder.decide(self._flow_request(peer, identity, sender, rcpt, size))
            if flow.allowed:
                continue
            temporary = flow.verdict is FlowVerdict.TEMPFAIL
            reason = Reason.FLOW_TEMPFAIL if temporary else Reason.FLOW_DENIED
            self.audit.record(actor, "data", rcpt, "deny", reason=reason, sender=sender or "<>",
                              size=size, peer=peer.address, **flow.audit_details())
            if refusal is None:
                refusal = Decision(Verdict.TEMPFAIL if temporary else Verdict.DENY, reason,
                                   flow=flow)
        return refusal or ALLOW

    def check_rcpt(
        self, peer: Peer, identity: Identity | None, sender: str, rcpt: str,
        size: int | None = None,
    ) -> RcptDecision:
        """RCPT TO: the flow matrix first (when configured: its rule decides,
        and is named in the audit event), then the checks it cannot lift:
        the recipient box must exist and be active, relaying needs an
        authenticated submission and a whitelisted domain."""
        actor = identity.name if identity else peer.address
        flow = self.flow(peer, identity, sender, rcpt, size)
        rule: dict[str, object] = dict(flow.audit_details()) if flow is not None else {}
        if flow is not None and not flow.allowed:
            from policy.flows import FlowVerdict

            temporary = flow.verdict is FlowVerdict.TEMPFAIL
            reason = Reason.FLOW_TEMPFAIL if temporary else Reason.FLOW_DENIED
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
                return RcptDecision(self._deny(actor, "rcpt", rcpt, Reason.UNKNOWN_RECIPIENT,
                                               sender=sender, peer=peer.address, **rule))
            if not mailbox.active:
                return RcptDecision(self._deny(actor, "rcpt", rcpt, Reason.MAILBOX_DISABLED,
                                               sender=sender, peer=peer.address, **rule))
            self.audit.record(actor, "rcpt", rcpt, "allow", sender=sender, local=True,
                              peer=peer.address, **rule)
            return RcptDecision(ALLOW, mailbox=mailbox, flow=flow)
        if identity is None or peer.role is not ListenerRole.SUBMISSION or not domain:
            return RcptDecision(self._deny(actor, "rcpt", rcpt, Reason.RELAY_DENIED,
                                           sender=sender, peer=peer.address, **rule))
        if self._whitelist_refuses(domain):
            return RcptDecision(self._deny(actor, "rcpt", rcpt, Reason.NOT_WHITELISTED,
                                           sender=sender, peer=peer.address, **rule))
        self.audit.record(actor, "rcpt", rcpt, "allow", sender=sender, local=False,
                          peer=peer.address, **rule)
        return RcptDecision(ALLOW, remote=True, flow=flow)

    def decides_without_store(self, peer: Peer, rcpt: str | None = None,
                              sender: str | None = None) -> bool:
        """True when the MAIL decision (`rcpt` None: check_sender, then
        check_peer_operator and check_sender_flow) or the RCPT decision for `rcpt` will not touch
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
            self.audit.record(actor, "peer", sender_domain, "allow", reason=Reason.NOT_REQUIRED)
            return ALLOW
        if peer.client_cert is None:
            return self._deny(actor, "peer", sender_domain, Reason.NO_CERTIFICATE)
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
            return self._deny(dn, "peer", sender_domain, Reason.NOT_WHITELISTED, peer=peer.address)
        self.audit.record(dn, "peer", sender_domain, "allow", peer=peer.address)
        return ALLOW

    def may_relay_to(self, domain: str) -> Decision:
        """Outbound: only whitelisted domains (when a whitelist is loaded)."""
        domain = domain.strip().lower().rstrip(".")
        if self._whitelist_refuses(domain):
            return self._deny("relay", "relay", domain, Reason.NOT_WHITELISTED)
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
            return self._deny("relay", "relay-peer", domain, Reason.DN_MISMATCH, dn=dn)
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
        """The account's own mailboxes, then those shared with it."""
        out: list[AccessibleMailbox] = []
        seen: set[int] = set()
        access = self.store.mailbox_access(identity.account.id)
        for mb in access.owned:
            if mb.active:
                out.append(AccessibleMailbox(mb, ALL_RIGHTS, owned=True))
                seen.add(mb.id)
        for grant, shared in access.shared:
            if shared.id not in seen and shared.active and self._grant_current(grant):
                out.append(AccessibleMailbox(shared, grant.rights, owned=False))
                seen.add(shared.id)
        return out

    def primary_mailbox(self, identity: Identity) -> Mailbox | None:
        """The personal namespace of the session: the mailbox named like the
        login, else the first owned one."""
        owned = [m for m in self.store.mailboxes_owned_by(identity.account.id) if m.active]
        for m in owned:
            if m.address == identity.account.login:
                return m
        return owned[0] if owned else None

    def mailbox_rights(self, identity: Identity, mailbox: Mailbox) -> str:
        """RFC 4314 rights of the identity on a mailbox ("" = none: the
        protocol must then answer as if the mailbox did not exist)."""
        if not mailbox.active or not identity.account.active:
            return ""
        if mailbox.owner_account_id is not None and mailbox.owner_account_id == identity.account.id:
            return ALL_RIGHTS
        for grant in self._current_grants(identity.account.id):
            if grant.mailbox_id == mailbox.id:
                return grant.rights
        return ""

    def session_access(self, identity: Identity, mailbox: Mailbox | None) -> SessionAccess:
        """Rechecks an open session against the store as it is now: the
        account must still be active, and the mailbox it has selected (if
        any) still readable ("r", the right SELECT needed). A withdrawal is
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
            decision = self._deny(identity.name, "session", identity.name, Reason.ACCOUNT_DISABLED)
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
                for grant in self._current_grants(account.id):
                    if grant.mailbox_id == mailbox.id:
                        rights, until = grant.rights, _aware(grant.valid_until)
        if "r" not in rights:
            decision = self._deny(identity.name, "session", mailbox.address, Reason.MAILBOX_WITHDRAWN)
            return SessionAccess(decision, epoch, mailbox_id)
        return SessionAccess(ALLOW, epoch, mailbox_id, until)

    def check_mailbox_access(
        self, identity: Identity, mailbox: Mailbox, folder: str, right: str, action: str
    ) -> Decision:
        """May the identity use `right` on a folder of the mailbox? Every
        access is recorded (health-data hosting: record every access), naming
        the agent even on a shared box.

        A denial says which answer is due (RFC 4314 6): Reason.NO_ACCESS when the
        identity may see the mailbox (holds "l") but lacks another right,
        Reason.NOT_VISIBLE otherwise: the protocol must then answer exactly as for
        a mailbox that does not exist."""
        rights = self.mailbox_rights(identity, mailbox)
        target = f"{mailbox.address}/{folder}"
        shared = mailbox.owner_account_id != identity.account.id
        if len(right) == 1 and right in rights:
            self.audit.record(identity.name, action, target, "allow", right=right,
                              shared=shared, mailbox_type=mailbox.mailbox_type.value)
            return ALLOW
        reason = Reason.NO_ACCESS if "l" in rights and right != "l" else Reason.NOT_VISIBLE
        return self._deny(identity.name, action, target, reason, right=right)

    # RFC 4314 ACL commands. Rights are granted per store mailbox (an
    # address), so an ACL applies to every folder of it; identifiers are
    # account logins; the owner's rights are fixed (all rights). Each method
    # decides first, then (when allowed) checks that the folder exists:
    # `NotFound` is raised after the decision, as the store raises it.

    def my_rights(self, identity: Identity, mailbox: Mailbox, folder: str) -> RightsDecision:
        """MYRIGHTS: the identity's own rights; refused (Reason.NOT_VISIBLE) unless
        it holds "l" or "r". Raises NotFound (after the decision) for a
        missing folder."""
        rights = self.mailbox_rights(identity, mailbox)
        target = f"{mailbox.address}/{folder}"
        if "l" not in rights and "r" not in rights:
            return RightsDecision(self._deny(identity.name, "myrights", target, Reason.NOT_VISIBLE))
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
        for grant in self.store.grants_for_mailbox(mailbox.id):
            if grant.rights and grant.account_id != owner:
                entries.append((self.store.get_account_by_id(grant.account_id).login,
                                grant.rights))
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
        (`rights` ""): needs "a". Refused with Reason.UNKNOWN_IDENTIFIER (no such
        account), Reason.OWNER_RIGHTS_FIXED or Reason.UNKNOWN_RIGHT. Records the access
        check, then the change (or why there was none). Raises NotFound
        (after the access check, before any change) for a missing folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "setacl")
        if not decision.allowed:
            return decision
        self.store.get_folder(mailbox.id, folder)
        try:
            account = self.store.get_account(identifier)
        except NotFound:
            return self._deny(identity.name, "setacl", mailbox.address, Reason.UNKNOWN_IDENTIFIER,
                              identifier=identifier)
        if account.id == mailbox.owner_account_id:
            return self._deny(identity.name, "setacl", mailbox.address, Reason.OWNER_RIGHTS_FIXED,
                              identifier=identifier)
        current = next((g.rights for g in self.store.grants_for_mailbox(mailbox.id)
                        if g.account_id == account.id), "")
        new: str | None
        if rights.startswith("+"):
            new = normalise_rights(current + rights[1:])
        elif rights.startswith("-"):
            remove = normalise_rights(rights[1:])
            new = None if remove is None else "".join(r for r in current if r not in remove)
        else:
            new = normalise_rights(rights)
        if new is None:
            return self._deny(identity.name, "setacl", mailbox.address, Reason.UNKNOWN_RIGHT,
                              identifier=identifier)
        self.store.set_grant(account.id, mailbox.id, new)
        self.audit.record(identity.name, "setacl", mailbox.address, "ok",
                          identifier=identifier, rights=new)
        return ALLOW

    # ------------------------------------------------------------ helpers

    def _deny(
        self, actor: str, action: str, target: str, reason: Reason, **details: object
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
