"""IMAP mailbox names <-> (store mailbox, folder) for one identity (RFC 2342).

- Personal namespace ``""``: the folders of the account's own mailbox
  (`Policy.primary_mailbox`): ``INBOX``, ``Sent``, ``Archive/2024`` ...
- Shared namespace ``Shared/``: functional (ORG), applicative (APP) mailboxes the
  agent is granted, and other mailboxes it owns: ``Shared/<address>/<folder>``.
- Other users ``Other Users/``: personal (PER) mailboxes of others delegated to
  the agent: ``Other Users/<address>/<folder>``.

Names inside the server are Unicode (the parser decodes modified UTF-7;
`imapd.responses.mailbox` encodes). Resolution never says *why* a name does not
resolve: an inaccessible mailbox and a missing one are both `NotPermitted`.
"""

from __future__ import annotations

from dataclasses import dataclass

from imapd import responses
from imapd.errors import NotPermitted
from imapd.parser.mutf7 import UndecodableName
from policy.decisions import AccessibleMailbox
from storage.interface import HIERARCHY_SEPARATOR, Mailbox, MailboxType

SEP = HIERARCHY_SEPARATOR
SHARED = "Shared"
OTHERS = "Other Users"


def normalise_inbox(folder: str) -> str:
    head, sep, rest = folder.partition(SEP)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return folder


@dataclass(frozen=True, slots=True)
class Place:
    """Where an IMAP name points."""

    mailbox: Mailbox
    folder: str  # the store's folder name ("INBOX", "Sent", "a/b")
    prefix: str  # "" for personal, else "Shared/<address>/" ...

    def imap_name(self, folder: str | None = None) -> str:
        return self.prefix + (self.folder if folder is None else folder)


@dataclass(frozen=True, slots=True)
class Namespaces:
    primary: Mailbox | None
    others: tuple[AccessibleMailbox, ...]  # every accessible mailbox but primary

    @classmethod
    def build(cls, primary: Mailbox | None, accessible: list[AccessibleMailbox]) -> Namespaces:
        pid = primary.id if primary else None
        return cls(primary, tuple(a for a in accessible if a.mailbox.id != pid))

    @staticmethod
    def root_of(am: AccessibleMailbox) -> str:
        if am.mailbox.mailbox_type is MailboxType.PER and not am.owned:
            return OTHERS
        return SHARED

    def prefix_of(self, am: AccessibleMailbox) -> str:
        return f"{self.root_of(am)}{SEP}{am.mailbox.address}{SEP}"

    def has_root(self, root: str) -> bool:
        return any(self.root_of(a) == root for a in self.others)

    def resolve(self, name: str) -> Place:
        """Raises NotPermitted for names outside every accessible mailbox,
        and for a name that is not modified UTF-7 (it names nothing)."""
        if isinstance(name, UndecodableName):
            raise NotPermitted(name)
        name = name.rstrip(SEP) if name != SEP else name
        root, sep, rest = name.partition(SEP)
        if sep and root in (SHARED, OTHERS):
            address, sep2, folder = rest.partition(SEP)
            for am in self.others:
                if self.root_of(am) == root and am.mailbox.address == address.lower():
                    if not sep2 or not folder:
                        raise NotPermitted(name)  # the container itself
                    return Place(am.mailbox, normalise_inbox(folder), self.prefix_of(am))
            raise NotPermitted(name)
        if self.primary is None or not name:
            raise NotPermitted(name)
        return Place(self.primary, normalise_inbox(name), "")

    def containers(self) -> list[tuple[str, bool]]:
        """Non-selectable levels of the other namespaces: (name, has children)."""
        out: list[tuple[str, bool]] = []
        for root in (SHARED, OTHERS):
            members = [a for a in self.others if self.root_of(a) == root]
            if members:
                out.append((root, True))
                out.extend((self.prefix_of(a).rstrip(SEP), True) for a in members)
        return out

    def namespace_response(self) -> bytes:
        return responses.namespace(
            [("", SEP)] if self.primary is not None else [],
            [(OTHERS + SEP, SEP)] if self.has_root(OTHERS) else [],
            [(SHARED + SEP, SEP)] if self.has_root(SHARED) else [],
        )
