"""What a session asked NOTIFY (RFC 5465) to report, and which mailboxes that
covers: pure logic, no Twisted, no store calls.

The event groups of the last NOTIFY SET are kept as the client sent them;
the mailboxes they cover are resolved against a `Listing` (what the user may
look up now: the policy decided it) and resolved again whenever the store's
access epoch moves, so a withdrawn grant stops the notifications about that
mailbox. A mailbox matched by several groups takes the events of the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from imapd import responses
from imapd.namespace import SEP
from imapd.parser.commands import NotifyFilter, NotifyGroup
from storage.interface import FolderStatus

# Events this server reports (RFC 5465 5); the others are refused with
# NO [BADEVENT (these)]. MailboxName and SubscriptionChange are reported for
# changes made by any process or node (`imapd.watcher.NameChange`: at once
# within the process, else from the store's name events).
SUPPORTED_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName",
                    "SubscriptionChange")
# The most mailboxes (other than the selected one) one session may watch for
# message events: past it NOTIFY SET answers NO [NOTIFICATIONOVERFLOW]. Each
# costs one entry in the process's folder watcher and one STATUS read per
# change.
MAX_WATCHED = 200

_MESSAGE = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})


@dataclass(frozen=True, slots=True)
class Box:
    """A mailbox (other than the selected one) watched for message events."""

    folder_id: int
    name: str  # the IMAP name as this session lists it
    events: frozenset[str]
    seen_account: int | None = None


@dataclass(slots=True)
class NotifySpec:
    groups: tuple[NotifyGroup, ...]
    boxes: dict[int, Box] = field(default_factory=dict)  # folder id -> box
    # The store's access epoch the boxes were resolved at (None: unknown).
    epoch: int | None = None
    # When a grant the user has begins or ends by itself: the boxes are
    # resolved again from then on, as when the epoch moves.
    until: datetime | None = None
    # The last state told (or known) per watched folder: only a change is sent.
    told: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # The subscription lists of the mailboxes the session may look up, as full
    # IMAP names (a `subscribed` filter's mailboxes, RFC 5465 6.2): read when
    # the boxes are resolved, kept current by the name changes heard since.
    subscribed: set[str] = field(default_factory=set)

    def current(self, epoch: int | None, now: datetime) -> bool:
        """Whether the boxes resolved still hold at `epoch` and `now`."""
        return (self.epoch is not None and epoch == self.epoch
                and (self.until is None or now < self.until))

    @property
    def selected(self) -> NotifyGroup | None:
        """The SELECTED / SELECTED-DELAYED group, when it asks for events."""
        for g in self.groups:
            if g.filter.selected:
                return g if g.events else None
        return None

    @property
    def delayed(self) -> bool:
        g = self.selected
        return g is not None and g.filter is NotifyFilter.SELECTED_DELAYED

    def events_for(self, name: str, personal: bool, subscribed: bool) -> frozenset[str]:
        """The events the first matching (non-selected) group asks for `name`."""
        for g in self.groups:
            if not g.filter.selected and matches(g, name, personal, subscribed):
                return frozenset(g.events)
        return frozenset()


def matches(group: NotifyGroup, name: str, personal: bool, subscribed: bool) -> bool:
    kind = group.filter
    if kind is NotifyFilter.PERSONAL:
        return personal
    if kind is NotifyFilter.INBOXES:
        # RFC 5465 6.3: where mail is delivered; here, the personal INBOX.
        return personal and name == "INBOX"
    if kind is NotifyFilter.SUBSCRIBED:
        return subscribed
    if kind is NotifyFilter.SUBTREE:
        return any(name == m or name.startswith(m + SEP) for m in group.mailboxes)
    if kind is NotifyFilter.MAILBOXES:
        return name in group.mailboxes
    return False


@dataclass(frozen=True, slots=True)
class Candidate:
    """A listed, selectable mailbox as `resolve` needs it."""

    folder_id: int
    name: str
    rights: str
    personal: bool
    subscribed: bool
    seen_account: int | None = None


def resolve(spec: NotifySpec, candidates: list[Candidate]) -> dict[int, Box]:
    """The mailboxes watched for message events: matched by a group asking
    for them, and readable ("r": RFC 5465 5 wants "l" and "r")."""
    out: dict[int, Box] = {}
    for c in candidates:
        events = spec.events_for(c.name, c.personal, c.subscribed)
        if events & _MESSAGE and "r" in c.rights:
            out[c.folder_id] = Box(c.folder_id, c.name, events, c.seen_account)
    return out


def status_key(st: FolderStatus, events: frozenset[str], condstore: bool) -> tuple[int, ...]:
    """What a change must move for a STATUS to be sent: the counts for
    MessageNew/MessageExpunge, and HIGHESTMODSEQ for FlagChange once
    CONDSTORE is on (RFC 5465 5.1)."""
    key: tuple[int, ...] = (st.uidvalidity, st.messages, st.uidnext)
    if condstore and "FlagChange" in events:
        key += (st.highestmodseq,)
    return key


def status_line(box: Box, st: FolderStatus, condstore: bool, utf8: bool) -> bytes:
    """RFC 5465 5.2/5.3: MESSAGES UIDNEXT UIDVALIDITY, and HIGHESTMODSEQ
    when CONDSTORE is enabled."""
    items = [("MESSAGES", st.messages), ("UIDNEXT", st.uidnext), ("UIDVALIDITY", st.uidvalidity)]
    if condstore:
        items.append(("HIGHESTMODSEQ", max(st.highestmodseq, 1)))
    return responses.status(responses.mailbox(box.name, utf8), items)
