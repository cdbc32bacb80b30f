"""Resolve a client mailbox name and ask policy for the right, in one
blocking call (run through the store runner).

RFC 4314: without the lookup right ``l`` a mailbox answers exactly like a
missing one (`NotPermitted` -> ``NO [NONEXISTENT]``); with ``l`` but without
the needed right it is ``NO [NOPERM]``.
"""

from __future__ import annotations

from imapd.errors import NoPermission, NotPermitted
from imapd.namespace import Namespaces, Place
from policy.decisions import Identity, Policy
from storage.interface import Folder, MessageStore


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
        if "l" in policy.mailbox_rights(identity, place.mailbox) and right != "l":
            raise NoPermission(name)
        raise NotPermitted(name)
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
