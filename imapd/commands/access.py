"""Resolve a client mailbox name and ask policy for the right, in one
blocking call (run through the store runner).

The policy's denial says which answer is due (RFC 4314 6); this module only
maps it: "no-access" (visible, the identity holds ``l``, but the needed right
is missing) is ``NO [NOPERM]``; any other denial ("not-visible": no ``l``)
answers exactly like a missing mailbox (`NotPermitted` -> ``NO [NONEXISTENT]``).
"""

from __future__ import annotations

from typing import NoReturn

from imapd.errors import NoPermission, NotPermitted
from imapd.namespace import Namespaces, Place
from policy.decisions import Decision, Identity, Policy
from policy.reasons import Reason
from storage.interface import Folder, MessageStore


def raise_denied(decision: Decision, name: str) -> NoReturn:
    """Maps a policy denial on a mailbox to its IMAP error (see above)."""
    if decision.reason is Reason.NO_ACCESS:
        raise NoPermission(name)
    raise NotPermitted(name)


def resolve(
    policy: Policy,
    store: MessageStore,
    identity: Identity,
    namespaces: Namespaces,
    name: str,
    right: str,
    action: str,
    *,
    must_exist: bool = True,
) -> tuple[Place, Folder | None]:
    place = namespaces.resolve(name)
    decision = policy.check_mailbox_access(identity, place.mailbox, place.folder, right, action)
    if not decision.allowed:
        raise_denied(decision, name)
    if not must_exist:
        return place, None
    return place, store.get_folder(place.mailbox.id, place.folder)


def resolve_folder(
    policy: Policy,
    store: MessageStore,
    identity: Identity,
    namespaces: Namespaces,
    name: str,
    right: str,
    action: str,
) -> tuple[Place, Folder]:
    place, folder = resolve(policy, store, identity, namespaces, name, right, action)
    assert folder is not None
    return place, folder


def resolve_new(
    policy: Policy,
    store: MessageStore,
    identity: Identity,
    namespaces: Namespaces,
    name: str,
    action: str,
) -> Place:
    """A name to make (CREATE, RENAME's new name): the right is "k" on its
    parent (RFC 4314 4, `Policy.check_create_access`)."""
    place = namespaces.resolve(name)
    decision = policy.check_create_access(identity, place.mailbox, place.folder, action)
    if not decision.allowed:
        raise_denied(decision, name)
    return place
