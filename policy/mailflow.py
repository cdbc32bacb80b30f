"""May this message go there: the envelope sender and the From: header (own
addresses, send-as), the flow matrix at MAIL, RCPT, after DATA and at relay,
recipients and relaying, the peer operator and the national whitelist."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from conf.settings import ListenerRole, RelayDNCheck
from policy.core import PolicyCore
from policy.reasons import Reason
from policy.verdicts import (
    ALLOW,
    MAILBOX_CACHE_SIZE,
    Decision,
    FromDecision,
    Identity,
    Peer,
    RcptDecision,
    Verdict,
    split_address,
)
from storage.interface import (
    Account,
    Mailbox,
    NotFound,
    QueueEntry,
    QueueOrigin,
)

if TYPE_CHECKING:
    from policy.flows import AuthMethod as FlowAuthMethod
    from policy.flows import FlowDecision, FlowRequest


class MailFlowDecisions(PolicyCore):
    """SMTP's decisions: senders, recipients, flows, peers, relaying."""

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


class _CachedFacts:
    """The store as `facts_for` reads it, through the policy's mailbox cache."""

    def __init__(self, policy: MailFlowDecisions) -> None:
        self._policy = policy

    def find_mailbox(self, address: str) -> Mailbox | None:
        return self._policy._local_mailbox(address)

    def get_account(self, login: str) -> Account:
        return self._policy.store.get_account(login)
