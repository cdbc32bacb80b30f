"""What the policy decides, and about whom: the types every protocol sees.

`Peer` and `Identity` describe the situation; `Decision` (a `Verdict` and a
`policy.reasons.Reason`) and its richer forms (`RcptDecision`, `RightsDecision`,
...) are the answers. `policy.decisions.Policy` makes them."""

from __future__ import annotations

import enum
import functools
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from conf.settings import ListenerRole
from policy.passwords import hash_password
from policy.reasons import Reason
from storage.interface import (
    Account,
    Mailbox,
)

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from policy.flows import FlowDecision


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
