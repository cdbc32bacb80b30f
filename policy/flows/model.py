"""The typed facts the flow matrix decides on, and its decision.

A `FlowRequest` is one flow: one (sender, recipient) pair of one message, with
everything known about its source and destination. The engine is pure: facts
that need the store or the whitelist are found by the caller
(`policy.flows.facts.facts_for`) and handed over in the request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from conf.settings import ListenerRole
from storage.interface import AccountClass, MailboxType


class FlowVerdict(enum.Enum):
    """Same values as `policy.decisions.Verdict` (kept apart so that the
    decisions module can import this package without a cycle)."""

    ALLOW = "allow"
    DENY = "deny"  # permanent: 5xx
    TEMPFAIL = "tempfail"  # try again later: 4xx


class AuthMethod(enum.Enum):
    """How the sending account logged in (the matrix's `method` values;
    `none` in a rule stands for "not logged in")."""

    CARD = "card"  # a practitioner's or employee's smart card (SASL EXTERNAL)
    ORG_CERTIFICATE = "org-certificate"  # any other client certificate: systems
    # Method names, not secrets:
    PASSWORD = "password"  # noqa: S105
    PASSWORD_TOTP = "password+totp"  # noqa: S105
    TOKEN = "token"  # noqa: S105 - an identity provider's token (OAUTHBEARER, XOAUTH2)


class BoxState(enum.Enum):
    """The local recipient's mailbox, as the matrix's `box_state` sees it."""

    ACTIVE = "active"
    DISABLED = "disabled"
    MISSING = "missing"  # a local domain, but no mailbox by that address


@dataclass(frozen=True, slots=True)
class FlowRequest:
    """One flow. `None` means "not known" (or "not logged in" for the account
    fields): a condition on an unknown fact never matches, neither `true`
    nor `false`."""

    listener: str  # the listener's name in the settings
    role: ListenerRole  # mx (between operators) or submission (clients)
    sender: str  # the envelope sender; "" for the null sender (<>)
    recipient: str  # one envelope recipient, local@domain
    client_ip: str | None = None
    account: str | None = None  # login of the authenticated account
    account_class: AccountClass | None = None
    auth_method: AuthMethod | None = None
    sender_local: bool = False  # the sender's domain is one we serve
    sender_box_type: MailboxType | None = None  # our mailbox by the sender's address
    peer_dn: str | None = None  # the sending MTA's certificate subject (mx)
    # The peer's DN is listed in the whitelist for the sender's domain (for
    # any domain when the sender is null); None without a whitelist.
    peer_whitelisted: bool | None = None
    recipient_local: bool = False  # the recipient's domain is one we serve
    recipient_whitelisted: bool | None = None  # None without a whitelist
    recipient_box_type: MailboxType | None = None  # None: remote, or no such mailbox
    recipient_box_state: BoxState | None = None  # None for a remote recipient
    size: int | None = None  # bytes: declared (SIZE=) at RCPT, actual after DATA


@dataclass(frozen=True, slots=True)
class FlowReply:
    """An SMTP reply a rule answers with: code, RFC 3463 status and text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


@dataclass(frozen=True, slots=True)
class RuleMiss:
    """Why one rule did not decide (explain)."""

    rule: str
    line: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlowDecision:
    verdict: FlowVerdict
    rule: str  # the id of the rule that decided, or "default"
    line: int  # that rule's line in the matrix file (of `default:` for the default)
    reply: FlowReply | None  # the rule's own reply; None when allowed or when it names none
    checksum: str  # "sha256:<hex>" of the matrix file that decided
    # The deciding rule has a max_size and the request's size was not known:
    # decide again once it is (after DATA).
    size_assumed: bool = False
    # explain() only: every rule before the deciding one, with its reasons.
    tried: tuple[RuleMiss, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.verdict is FlowVerdict.ALLOW

    def audit_details(self) -> dict[str, str]:
        """Named fields for the audit event (and the SMTP log line) of the
        decision: the rule id and which matrix it belongs to."""
        return {"flow_rule": self.rule, "flow_matrix": self.checksum.removeprefix("sha256:")[:16]}


DEFAULT_RULE = "default"

__all__ = [
    "DEFAULT_RULE",
    "AuthMethod",
    "BoxState",
    "FlowDecision",
    "FlowReply",
    "FlowRequest",
    "FlowVerdict",
    "RuleMiss",
]
