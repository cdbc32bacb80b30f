"""The dispatch table: command type -> handler, one module per family.

The state check is done once, by the protocol, from the command type's
``allowed_states`` (RFC 3501 section 3); handlers never re-check it.
`tests/protocol/test_imap_dispatch.py` checks that every command type the
parser can produce has a handler here.
"""

from __future__ import annotations

from imapd.commands import (
    acl,
    append,
    auth,
    context,
    fetch,
    idle,
    listing,
    mailbox,
    messages,
    misc,
    notify,
    quota,
    search,
    sort,
)
from imapd.commands.base import Handler
from imapd.parser.commands import Command

DISPATCH: dict[type[Command], Handler] = {
    **auth.HANDLERS,
    **misc.HANDLERS,
    **mailbox.HANDLERS,
    **append.HANDLERS,
    **listing.HANDLERS,
    **fetch.HANDLERS,
    **search.HANDLERS,
    **sort.HANDLERS,
    **context.HANDLERS,
    **messages.HANDLERS,
    **idle.HANDLERS,
    **notify.HANDLERS,
    **acl.HANDLERS,
    **quota.HANDLERS,
}


def handler_for(command: Command) -> Handler:
    return DISPATCH[type(command)]
