"""The one object the daemons ask: who is this, and may they do that.

SMTP and IMAP never decide on their own: they describe the situation (a
`Peer`, an `Identity`, an address) and act on the `Decision`. Every decision is
recorded in the audit sink, naming the actor. Methods are synchronous and may
touch the store: Twisted code calls them from the store thread pool.

The flow matrix, the national whitelist and RFC 4314 shared access are the next
steps of this layer; their seams are `check_rcpt`, `check_peer_operator` and
`mailbox_rights`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conf.settings import ListenerRole, Settings
from policy.audit import AuditSink
from policy.passwords import verify_password
from storage.interface import (
    Account,
    AccountClass,
    Mailbox,
    MailboxType,
    MessageStore,
    NotFound,
)

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from policy.whitelist import Whitelist

# RFC 4314 rights.
ALL_RIGHTS = "lrswipkxtea"


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
    method: str  # "password" | "external" | ...
    cert_subject: str | None = None

    @property
    def name(self) -> str:
        return self.account.login


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
    #   "no-certificate", "unknown-certificate", "authzid-mismatch"
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


@dataclass(frozen=True, slots=True)
class AccessibleMailbox:
    mailbox: Mailbox
    rights: str
    owned: bool


@dataclass(frozen=True, slots=True)
class AuthResult:
    identity: Identity | None
    decision: Decision = field(default=ALLOW)


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower()


class Policy:
    """The decisions, backed by the store, the settings and the audit sink."""

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        audit: AuditSink,
        whitelist: Whitelist | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.whitelist = whitelist

    # ------------------------------------------------------------ identity

    def authenticate_password(self, peer: Peer, login: str, password: str) -> AuthResult:
        """Password login (AUTH PLAIN/LOGIN, IMAP LOGIN/PLAIN)."""
        login = login.strip().lower()
        try:
            account = self.store.get_account(login)
        except NotFound:
            return self._auth_denied(peer, login, "password", "bad-credentials")
        if not account.password_hash or not verify_password(password, account.password_hash):
            return self._auth_denied(peer, login, "password", "bad-credentials")
        if not account.active:
            return self._auth_denied(peer, login, "password", "account-disabled")
        if account.account_class.value not in self.settings.policy.password_login_classes:
            return self._auth_denied(peer, login, "password", "method-not-allowed")
        return self._auth_ok(peer, Identity(account=account, method="password"))

    def authenticate_certificate(self, peer: Peer, authzid: str | None) -> AuthResult:
        """SASL EXTERNAL: the TLS client certificate names the account.

        `authzid` is the requested login (Thunderbird sends it) or None/"" for
        "whatever the certificate maps to". A mismatch is refused.
        """
        from certs.identity import identity_from_certificate

        cert = peer.client_cert
        if cert is None:
            return self._auth_denied(peer, authzid or "-", "external", "no-certificate")
        cid = identity_from_certificate(cert)
        account: Account | None = None
        if cid.idnat:
            account = self.store.find_account_by_idnat(cid.idnat)
        if account is None:
            account = self.store.find_account_by_cert_subject(cid.subject)
        if account is None and cid.organisation_id:
            account = self.store.find_account_by_cert_subject(cid.organisation_id)
        if account is None:
            return self._auth_denied(peer, cid.subject, "external", "unknown-certificate")
        if authzid and authzid.strip().lower() != account.login:
            return self._auth_denied(peer, cid.subject, "external", "authzid-mismatch",
                                     requested=authzid)
        if not account.active:
            return self._auth_denied(peer, account.login, "external", "account-disabled")
        return self._auth_ok(
            peer, Identity(account=account, method="external", cert_subject=cid.subject)
        )

    def _auth_ok(self, peer: Peer, identity: Identity) -> AuthResult:
        self.audit.record(
            identity.name, "login", peer.listener, "allow",
            method=identity.method, peer=peer.address, tls=peer.tls,
            cert=identity.cert_subject,
        )
        return AuthResult(identity)

    def _auth_denied(
        self, peer: Peer, actor: str, method: str, reason: str, **details: object
    ) -> AuthResult:
        self.audit.record(
            actor, "login", peer.listener, "deny",
            method=method, reason=reason, peer=peer.address, tls=peer.tls, **details,
        )
        return AuthResult(None, Decision(Verdict.DENY, reason))

    # ------------------------------------------------------------ SMTP

    def addresses_of(self, identity: Identity) -> set[str]:
        """Addresses an account may use as sender (own boxes and its login)."""
        own = {m.address for m in self.store.mailboxes_owned_by(identity.account.id)}
        own.add(identity.account.login)
        return own

    def check_sender(self, peer: Peer, identity: Identity | None, sender: str) -> Decision:
        """MAIL FROM (and the From: header on submission)."""
        actor = identity.name if identity else peer.address
        if peer.role is ListenerRole.SUBMISSION:
            if identity is None:
                return self._deny(actor, "mail", sender, "auth-required")
            if sender.lower() not in self.addresses_of(identity):
                return self._deny(actor, "mail", sender, "sender-not-owned")
        elif peer.role is ListenerRole.MX and sender:
            _, domain = split_address(sender)
            if self.settings.is_local_domain(domain) and identity is None:
                # Our own domains do not arrive from other operators.
                return self._deny(actor, "mail", sender, "sender-not-owned")
        self.audit.record(actor, "mail", sender or "<>", "allow", peer=peer.address)
        return ALLOW

    def check_rcpt(
        self, peer: Peer, identity: Identity | None, sender: str, rcpt: str
    ) -> RcptDecision:
        actor = identity.name if identity else peer.address
        _, domain = split_address(rcpt)
        if self.settings.is_local_domain(domain):
            mailbox = self.store.find_mailbox(rcpt.lower())
            if mailbox is None:
                return RcptDecision(self._deny(actor, "rcpt", rcpt, "unknown-recipient"))
            if not mailbox.active:
                return RcptDecision(self._deny(actor, "rcpt", rcpt, "mailbox-disabled"))
            self.audit.record(actor, "rcpt", rcpt, "allow", sender=sender, local=True)
            return RcptDecision(ALLOW, mailbox=mailbox)
        if identity is None or peer.role is not ListenerRole.SUBMISSION:
            return RcptDecision(self._deny(actor, "rcpt", rcpt, "relay-denied"))
        if (
            self.settings.policy.enforce_whitelist
            and self.whitelist is not None
            and not self.whitelist.has_domain(domain)
        ):
            return RcptDecision(self._deny(actor, "rcpt", rcpt, "not-whitelisted"))
        self.audit.record(actor, "rcpt", rcpt, "allow", sender=sender, local=False)
        return RcptDecision(ALLOW, remote=True)

    def check_peer_operator(self, peer: Peer, sender_domain: str) -> Decision:
        """Inbound MX: the peer's certificate must be listed for the sender's
        domain when the whitelist is enforced and mutual TLS is required."""
        if not self.settings.policy.mx_require_client_cert:
            return ALLOW
        actor = peer.address
        if peer.client_cert is None:
            return self._deny(actor, "peer", sender_domain, "no-certificate")
        if self.whitelist is not None:
            from certs.identity import rfc4514_subject

            dn = rfc4514_subject(peer.client_cert)
            if not self.whitelist.allows(sender_domain, dn):
                return self._deny(dn, "peer", sender_domain, "not-whitelisted")
        self.audit.record(actor, "peer", sender_domain, "allow")
        return ALLOW

    def may_relay_to(self, domain: str) -> Decision:
        """Outbound: only whitelisted domains (when a whitelist is loaded)."""
        if (
            self.settings.policy.enforce_whitelist
            and self.whitelist is not None
            and not self.whitelist.has_domain(domain)
        ):
            return self._deny("relay", "relay", domain, "not-whitelisted")
        return ALLOW

    # ------------------------------------------------------------ IMAP

    def accessible_mailboxes(self, identity: Identity) -> list[AccessibleMailbox]:
        """The account's own mailboxes, then those shared with it."""
        out: list[AccessibleMailbox] = []
        seen: set[int] = set()
        for mb in self.store.mailboxes_owned_by(identity.account.id):
            if mb.active:
                out.append(AccessibleMailbox(mb, ALL_RIGHTS, owned=True))
                seen.add(mb.id)
        for grant in self.store.grants_for_account(identity.account.id):
            if grant.mailbox_id in seen or not grant.rights:
                continue
            mb = self.store.get_mailbox_by_id(grant.mailbox_id)
            if mb.active:
                out.append(AccessibleMailbox(mb, grant.rights, owned=False))
                seen.add(mb.id)
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
        if mailbox.owner_account_id == identity.account.id:
            return ALL_RIGHTS if mailbox.active else ""
        for grant in self.store.grants_for_account(identity.account.id):
            if grant.mailbox_id == mailbox.id:
                return grant.rights if mailbox.active else ""
        return ""

    def check_mailbox_access(
        self, identity: Identity, mailbox: Mailbox, folder: str, right: str, action: str
    ) -> Decision:
        rights = self.mailbox_rights(identity, mailbox)
        if right in rights:
            if mailbox.mailbox_type is MailboxType.ORG or mailbox.owner_account_id != identity.account.id:
                # Shared access is always traced to the agent.
                self.audit.record(identity.name, action, f"{mailbox.address}/{folder}", "allow")
            return ALLOW
        return self._deny(identity.name, action, f"{mailbox.address}/{folder}", "no-access")

    # ------------------------------------------------------------ helpers

    def _deny(self, actor: str, action: str, target: str, reason: str) -> Decision:
        self.audit.record(actor, action, target, "deny", reason=reason)
        return Decision(Verdict.DENY, reason)


__all__ = [
    "ALL_RIGHTS",
    "AccessibleMailbox",
    "AccountClass",
    "AuthResult",
    "Decision",
    "Identity",
    "Peer",
    "Policy",
    "RcptDecision",
    "Verdict",
]
