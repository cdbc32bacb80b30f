"""The one catalogue of SMTP replies: code + RFC 3463 enhanced status + text.

Production code and tests use the same names (``R.RCPT_UNKNOWN``), so a test
asserts on the catalogue entry, not on a copy of the wording. Every reply after
the greeting and the EHLO response carries its enhanced status code
(ENHANCEDSTATUSCODES, RFC 2034 section 3). Texts never carry exception text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from policy.flows.model import FlowDecision, FlowVerdict
from policy.reasons import Reason


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str | None  # RFC 3463 "class.subject.detail"; None for greeting/EHLO
    text: str

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def positive(self) -> bool:
        return self.code < 400

    def with_text(self, text: str) -> Reply:
        return replace(self, text=text)

    def to_bytes(self) -> bytes:
        return format_reply(self.code, self.status, [self.text])


def format_reply(code: int, status: str | None, lines: list[str]) -> bytes:
    """Multi-line replies use "250-" on all but the last line (RFC 5321 4.2.1)."""
    out: list[bytes] = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        sep = " " if i == last else "-"
        prefix = f"{code}{sep}"
        if status is not None:
            prefix += status + " "
        # CR/LF in a text would split the reply: never let one through.
        clean = line.replace("\r", " ").replace("\n", " ")
        out.append((prefix + clean).encode("utf-8", "replace") + b"\r\n")
    return b"".join(out)


class R:
    """Every reply the server sends, by name."""

    # -- connection
    GREETING = Reply(220, None, "ESMTP ready")  # text replaced by "<host> ESMTP ..."
    BYE = Reply(221, "2.0.0", "Bye")
    SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, closing connection")
    TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address")
    IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
    TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
    TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands without a transaction")
    TLS_REQUIRED_CLOSE = Reply(421, "4.7.0", "TLS required")

    # -- generic
    OK = Reply(250, "2.0.0", "OK")
    HELO_OK = Reply(250, None, "Hello")  # text replaced by "<host> Hello <client>"
    SENDER_OK = Reply(250, "2.1.0", "Sender OK")
    RCPT_OK = Reply(250, "2.1.5", "Recipient OK")
    RCPT_RELAY_OK = Reply(250, "2.1.5", "Recipient OK, will relay")
    DELIVERED = Reply(250, "2.0.0", "Message accepted for delivery")
    RESET = Reply(250, "2.0.0", "Reset")
    NOOP = Reply(250, "2.0.0", "OK")
    VRFY_DISABLED = Reply(252, "2.5.0", "Cannot verify user, will attempt delivery")
    HELP = Reply(214, "2.0.0", "See RFC 5321")
    START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
    START_TLS = Reply(220, "2.0.0", "Ready to start TLS")
    AUTH_OK = Reply(235, "2.7.0", "Authentication succeeded")
    AUTH_CHALLENGE = Reply(334, None, "")  # text = base64 challenge
    BDAT_OK = Reply(250, "2.0.0", "Chunk received")

    # -- syntax / sequence
    SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognised")
    LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
    BARE_LINE_ENDING = Reply(500, "5.5.2", "Bare CR or LF not allowed, use CRLF")
    PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
    ADDRESS_SYNTAX = Reply(501, "5.1.3", "Bad address syntax")
    SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
    HELO_SYNTAX = Reply(501, "5.5.4", "HELO/EHLO requires a domain or address literal")
    NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
    BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
    NEED_HELO = Reply(503, "5.5.1", "Send EHLO/HELO first")
    NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
    NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
    NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
    ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
    AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
    ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
    PARAM_NOT_IMPLEMENTED = Reply(555, "5.5.4", "Parameter not recognised or not implemented")
    BODY_8BIT_NEEDS_8BITMIME = Reply(555, "5.5.4", "BODY value not supported")
    SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    BDAT_MIXED = Reply(503, "5.5.1", "DATA not allowed after BDAT")

    # -- TLS / auth
    TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
    TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
    AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
    AUTH_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for authentication")
    AUTH_MECH_UNKNOWN = Reply(504, "5.5.4", "Unrecognised authentication mechanism")
    AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
    # RFC 4954 4 requires 501; the enhanced code is Postfix's.
    AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
    AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
    AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64 response")
    AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
    AUTH_NOT_ALLOWED = Reply(503, "5.5.1", "AUTH not available on this listener")
    CLIENT_CERT_REQUIRED = Reply(530, "5.7.0", "A client certificate is required")

    # -- envelope decisions (from the policy)
    SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not allowed for this account")
    SENDER_DENIED = Reply(550, "5.7.1", "Sender refused")
    FROM_NOT_OWNED = Reply(550, "5.7.1", "From: header not allowed for this account")
    FROM_UNREADABLE = Reply(550, "5.7.1", "One From: field with plain addresses is required")
    # An open session whose account was disabled since its AUTH: refused and closed.
    ACCOUNT_DISABLED = Reply(550, "5.7.1", "Account disabled")
    PEER_NOT_TRUSTED = Reply(550, "5.7.1", "Operator not in the trust space for this domain")
    # The MX peer presented no certificate (mutual TLS between operators): a
    # configuration to fix on its side, told apart from a DN not listed.
    PEER_CERT_REQUIRED = Reply(
        530, "5.7.0", "A client certificate is required from operators of the trust space")
    RCPT_UNKNOWN = Reply(550, "5.1.1", "No such recipient")
    RCPT_DISABLED = Reply(550, "5.2.1", "Mailbox disabled")
    RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")
    NOT_WHITELISTED = Reply(550, "5.7.1", "Destination domain is not in the trust space")
    TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
    STORE_UNAVAILABLE = Reply(451, "4.3.0", "Temporary failure, try again later")
    LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing")
    QUOTA_EXCEEDED = Reply(552, "5.2.2", "Mailbox full")
    QUOTA_EXCEEDED_TEMP = Reply(452, "4.2.2", "Mailbox full")

    # -- message content
    MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
    MESSAGE_LINE_TOO_LONG = Reply(554, "5.6.0", "Message line too long (RFC 5321 limit: 998 octets)")
    MESSAGE_BARE_LINE_ENDING = Reply(554, "5.6.0", "Bare CR or LF in message, use CRLF")
    MESSAGE_NOT_8BIT = Reply(554, "5.6.1", "8-bit content without BODY=8BITMIME")
    MESSAGE_BAD_HEADERS = Reply(554, "5.6.0", "Message header section is malformed")
    TRANSACTION_FAILED = Reply(554, "5.5.0", "Transaction failed")

    # -- the flow matrix: a deny / tempfail rule (or default) without `reply:`
    FLOW_DENIED = Reply(550, "5.7.1", "Flow not allowed")
    FLOW_TEMPFAIL = Reply(451, "4.7.1", "Flow refused for now, try again later")
    TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops, mail loop detected")


# Decision reasons from policy.decisions.Decision.reason -> reply.
POLICY_REPLIES: dict[Reason, Reply] = {
    Reason.UNKNOWN_RECIPIENT: R.RCPT_UNKNOWN,
    Reason.MAILBOX_DISABLED: R.RCPT_DISABLED,
    Reason.RELAY_DENIED: R.RELAY_DENIED,
    Reason.NOT_WHITELISTED: R.NOT_WHITELISTED,
    Reason.SENDER_NOT_OWNED: R.SENDER_NOT_OWNED,
    Reason.AUTH_REQUIRED: R.AUTH_REQUIRED,
    Reason.STORE_UNAVAILABLE: R.STORE_UNAVAILABLE,
    Reason.NO_CERTIFICATE: R.CLIENT_CERT_REQUIRED,
    Reason.UNKNOWN_CERTIFICATE: R.AUTH_FAILED,
    Reason.BAD_CREDENTIALS: R.AUTH_FAILED,
    Reason.ACCOUNT_DISABLED: R.AUTH_FAILED,
    Reason.METHOD_NOT_ALLOWED: R.AUTH_FAILED,
    Reason.AUTHZID_MISMATCH: R.AUTH_FAILED,
    Reason.FROM_UNREADABLE: R.FROM_UNREADABLE,
    Reason.FROM_NOT_OWNED: R.FROM_NOT_OWNED,
    # A lock is never told apart from a wrong password (policy.throttle).
    Reason.ACCOUNT_LOCKED: R.AUTH_FAILED,
    Reason.ADDRESS_LOCKED: R.AUTH_FAILED,
    Reason.CERTIFICATE_NOT_PINNED: R.AUTH_FAILED,
}


# Reasons of the MX peer operator check (Policy.check_peer_operator, at MAIL):
# the sending operator is refused, not an address. A missing certificate and
# a certificate whose DN is not listed get different replies, so that the
# peer's postmaster knows which to fix.
PEER_REPLIES: dict[Reason, Reply] = {
    Reason.NOT_WHITELISTED: R.PEER_NOT_TRUSTED,
    Reason.NO_CERTIFICATE: R.PEER_CERT_REQUIRED,
}


# Reasons SMTP never maps through POLICY_REPLIES, and why. With the keys of
# POLICY_REPLIES they cover every Reason (tests/unit/test_reply_maps.py): a
# new reason must be placed in one or the other.
NOT_MAPPED: dict[Reason, str] = {
    Reason.OK: "not a refusal",
    # A refused login always answers R.AUTH_FAILED (R.AUTH_TEMPFAIL when
    # temporary): the reason is for the audit, never for the client.
    **{r: "login: R.AUTH_FAILED whatever the reason" for r in (
        Reason.TOTP_MISSING, Reason.TOTP_INVALID, Reason.TOTP_REPLAYED, Reason.MALFORMED_SASL,
        Reason.UNKNOWN_USER, Reason.IDP_UNAVAILABLE, Reason.TOKEN_MALFORMED,
        Reason.TOKEN_ALGORITHM, Reason.TOKEN_UNKNOWN_KEY, Reason.TOKEN_BAD_SIGNATURE,
        Reason.TOKEN_WRONG_ISSUER, Reason.TOKEN_WRONG_AUDIENCE, Reason.TOKEN_EXPIRED,
        Reason.TOKEN_NOT_YET_VALID, Reason.TOKEN_NO_LOGIN_CLAIM, Reason.TOKEN_UNVERIFIED_EMAIL,
        Reason.TOKEN_INACTIVE)},
    Reason.FLOW_DENIED: "the rule's reply: flow_reply()",
    Reason.FLOW_TEMPFAIL: "the rule's reply: flow_reply()",
    Reason.LISTENER_GONE: "audit only (queue)",
    Reason.NOT_REQUIRED: "audit only (peer check off)",
    Reason.DN_MISMATCH: "outbound: relayerrors words in the queue, no reply to send",
    # IMAP's: mailboxes, ACLs and open sessions.
    **{r: "IMAP only" for r in (
        Reason.NO_ACCESS, Reason.NOT_VISIBLE, Reason.UNKNOWN_IDENTIFIER,
        Reason.OWNER_RIGHTS_FIXED, Reason.UNKNOWN_RIGHT, Reason.MAILBOX_WITHDRAWN)},
}


def reply_for_reason(reason: Reason, *, temporary: bool = False, default: Reply | None = None,
                     peer: bool = False) -> Reply:
    """Maps a policy reason once; a temporary verdict always answers 4xx.
    `peer`: the decision is the peer operator check (`PEER_REPLIES` first)."""
    if temporary:
        return R.STORE_UNAVAILABLE
    if peer and reason in PEER_REPLIES:
        return PEER_REPLIES[reason]
    return POLICY_REPLIES.get(reason, default or R.TRANSACTION_FAILED)


def flow_reply(flow: FlowDecision) -> Reply:
    """The reply of a refusing flow-matrix decision: its rule's own `reply:`,
    else the default for the verdict."""
    if flow.reply is not None:
        return Reply(flow.reply.code, flow.reply.status, flow.reply.text)
    return R.FLOW_TEMPFAIL if flow.verdict is FlowVerdict.TEMPFAIL else R.FLOW_DENIED


def local_error(ref: str) -> Reply:
    """The generic reply to an unexpected error: only the correlation id of
    the logged traceback, never the error itself."""
    return R.LOCAL_ERROR.with_text(f"Local error in processing (ref {ref})")
