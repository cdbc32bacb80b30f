"""The one object the daemons ask: who is this, and may they do that.

SMTP and IMAP never decide on their own: they describe the situation (a
`Peer`, an `Identity`, an address) and act on the `Decision`. Every decision is
recorded in the audit sink, naming the actor. Methods are synchronous and may
touch the store: Twisted code calls them from the store thread pool.

`Policy` is thin: its decisions live by concern in `policy.identity` (logins),
`policy.mailflow` (senders, the flow matrix, recipients, peers, the national
whitelist) and `policy.mailbox_access` (RFC 4314 shared access with validity
windows, ACLs, open sessions), on the shared state of `policy.core`; the types
they answer with are in `policy.verdicts` and re-exported here.
"""

from __future__ import annotations

from policy.identity import IdentityDecisions
from policy.mailbox_access import MailboxAccessDecisions
from policy.mailflow import MailFlowDecisions
from policy.verdicts import (
    ALL_RIGHTS,
    AccessibleMailbox,
    AclDecision,
    AuthResult,
    Decision,
    FromDecision,
    Identity,
    ListRightsDecision,
    Peer,
    RcptDecision,
    RightsDecision,
    SessionAccess,
    Verdict,
    normalise_rights,
    seen_account,
)
from storage.interface import AccountClass


class Policy(IdentityDecisions, MailFlowDecisions, MailboxAccessDecisions):
    """The decisions, backed by the store, the settings and the audit sink,
    by concern: who is this (`policy.identity`), may this message go there
    (`policy.mailflow`), may this identity use that mailbox
    (`policy.mailbox_access`); their shared state is `policy.core.PolicyCore`.

    Every public decision method records exactly one audit event (actor,
    action, target, result, reason), except `set_rights`: its access check,
    then the change or the reason there was none. Queries (`mailbox_rights`,
    `accessible_mailboxes`, `primary_mailbox`, `addresses_of`,
    `recipient_address`) record none.
    """


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
    "seen_account",
]
