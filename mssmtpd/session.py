"""Per-connection state (`Session`) and per-transaction state (`Envelope`).

The envelope is dropped on RSET, after a message is accepted or refused, on a
new EHLO/HELO and after STARTTLS (where the whole session restarts: RFC 3207
section 4.2). `sequence_error` is the one place that says whether a command is
allowed in the current state; it does not know Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.settings import ListenerRole, ListenerSettings, TLSMode
from mssmtpd import parser as p
from mssmtpd.replies import R, Reply
from policy.decisions import Identity, Peer
from storage.interface import Mailbox


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    params: p.RcptParams
    mailbox: Mailbox | None  # a local mailbox
    remote: bool  # to relay to another operator


@dataclass
class Envelope:
    sender: str
    params: p.MailParams
    recipients: list[Recipient] = field(default_factory=list)
    chunked: bool = False  # BDAT started: DATA is no longer allowed
    # RCPTs refused for being over the limit (audited once per transaction: a
    # flood must not turn each of its lines into an audit write).
    excess_recipients: int = 0
    # The message's size as received (after DATA, before our headers).
    accepted_size: int | None = None

    @property
    def local(self) -> list[Recipient]:
        return [r for r in self.recipients if r.mailbox is not None]

    @property
    def remote(self) -> list[Recipient]:
        return [r for r in self.recipients if r.remote]


@dataclass
class Session:
    peer: Peer
    listener: ListenerSettings
    helo: str | None = None
    esmtp: bool = False
    identity: Identity | None = None
    envelope: Envelope | None = None
    tls: bool = False
    bad_commands: int = 0
    commands_without_mail: int = 0
    failed_auth: int = 0
    messages: int = 0
    transaction_ids: int = 0

    def reset_transaction(self) -> None:
        self.envelope = None

    def restart_after_tls(self, peer: Peer) -> None:
        """RFC 3207 4.2: forget everything learnt in plaintext."""
        self.peer = peer
        self.helo = None
        self.esmtp = False
        self.identity = None
        self.envelope = None
        self.tls = True

    @property
    def role(self) -> ListenerRole:
        return self.listener.role

    @property
    def tls_required(self) -> bool:
        """STARTTLS listeners accept no mail in plaintext: TLS on every transaction."""
        return self.listener.tls is TLSMode.STARTTLS and not self.tls

    @property
    def auth_offered(self) -> bool:
        """AUTH only on submission, only under TLS (or on a plaintext test listener)."""
        if self.role is not ListenerRole.SUBMISSION:
            return False
        return self.tls or self.listener.tls is TLSMode.NONE


# Commands that need no EHLO/HELO and no TLS.
_ALWAYS = (p.Noop, p.Quit, p.Rset, p.Help, p.Ehlo, p.Helo)


def sequence_error(session: Session, command: p.Command) -> Reply | None:
    """The reply refusing `command` in this state, or None when allowed."""
    if isinstance(command, _ALWAYS):
        return None
    if isinstance(command, p.StartTls):
        if session.tls:
            return R.ALREADY_TLS
        if session.listener.tls is not TLSMode.STARTTLS:
            return R.NOT_IMPLEMENTED
        if session.helo is None:
            return R.NEED_HELO
        return None
    if isinstance(command, p.Vrfy | p.Expn):
        return None
    if session.helo is None:
        return R.NEED_HELO
    if isinstance(command, p.Auth):
        if session.role is not ListenerRole.SUBMISSION:
            return R.AUTH_NOT_ALLOWED
        if not session.auth_offered:
            return R.AUTH_ENCRYPTION_REQUIRED
        if session.identity is not None:
            return R.ALREADY_AUTHENTICATED
        if session.envelope is not None:
            return R.AUTH_IN_TRANSACTION
        return None
    if session.tls_required:
        return R.TLS_REQUIRED
    if isinstance(command, p.MailFrom):
        if session.envelope is not None:
            return R.NESTED_MAIL
        if session.role is ListenerRole.SUBMISSION and session.identity is None:
            return R.AUTH_REQUIRED
        return None
    if isinstance(command, p.RcptTo):
        if session.envelope is None:
            return R.NEED_MAIL
        return None
    if isinstance(command, p.Data | p.Bdat):
        if session.envelope is None:
            return R.NEED_MAIL
        if not session.envelope.recipients:
            return R.NEED_RCPT
        if isinstance(command, p.Data) and session.envelope.chunked:
            return R.BDAT_MIXED
        return None
    return R.NOT_IMPLEMENTED
