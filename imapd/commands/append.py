"""APPEND (RFC 3501 6.3.11) with MULTIAPPEND (RFC 3502), CATENATE (RFC 4469),
literal8 (RFC 3516 BINARY: binary parts stored in base64, `imapd.binary`),
the UTF8 data item (RFC 6855) and APPENDUID (RFC 4315).

One APPEND is one store transaction (`MessageStore.append_many`): all its
messages are stored or none, and the tagged OK (with the APPENDUID of every
message) is sent only after that commit, so nothing acknowledged is ever lost.
Every check comes before the write: the limits (messages per command, each
message within APPENDLIMIT), 8-bit header fields only once UTF8=ACCEPT is
enabled (RFC 6855 4), the destination (``i`` right; a missing or
invisible one is ``NO [TRYCREATE]``), each CATENATE URL, the quota on the
command's total. Any failure ends the whole command.

A CATENATE URL (RFC 5092) is read with the user's own rights, exactly as a
FETCH: the ``r`` right on its mailbox, decided and audited by the policy; a
message or part that does not exist, or that the user may not read, is the
same ``NO [BADURL]``. A URL read into a stored message is audited as a
``fetch`` of that message, as a FETCH of it would be. The stored messages
are one ``append`` event (after the decision's own), like a COPY's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from imapd import fetch as render
from imapd.binary import encode_binary_parts
from imapd.commands.access import resolve_folder
from imapd.commands.base import Context, Handler, ok
from imapd.commands.mailbox import check_flags
from imapd.commands.selected import record_content, sync_view
from imapd.errors import (
    APPEND_8BIT_HEADERS,
    APPEND_EMPTY,
    APPEND_OVER_LIMIT,
    APPEND_TOO_BIG,
    APPEND_TOO_MANY,
    APPEND_TRYCREATE,
    APPEND_UTF8_NOT_ENABLED,
    BADURL_MISSING,
    BADURL_OTHER_SERVER,
    BADURL_OTHER_USER,
    CATENATE_TOO_BIG,
    NoPermission,
    NotPermitted,
    Reply,
    badurl,
    fail,
)
from imapd.namespace import Namespaces
from imapd.parser.commands import (
    Append,
    AppendMessage,
    CatenatePart,
    CatenateText,
    Command,
)
from imapd.parser.imapurl import parse_imap_url
from imapd.parser.tokens import ParseError
from imapd.responses import appenduid, sequence_set
from policy.decisions import Identity, Policy, seen_account
from storage.interface import (
    AppendItem,
    Folder,
    InvalidName,
    MessageStore,
    NotFound,
)
from storage.mime import find_part, header_bounds, parse_message

# An APPEND of at most this many octets (no CATENATE) is parsed and sealed
# on the reactor thread (`Context.run_quick`): under 1 ms of CPU for a usual
# message, tens of ms for one built of thousands of tiny MIME parts.
QUICK_APPEND_OCTETS = 64 * 1024

@dataclass
class _Read:
    """A message a CATENATE URL read (audited once the APPEND is stored)."""

    target: str  # mailbox address/folder, as audit events name it
    uid: int


@dataclass
class _UrlReads:
    """The messages CATENATE URLs read in one APPEND, and the octets they may
    still read: each URL decrypts its whole message, so one command may not
    make the server read more than it may hold (`limits.imap_append_octets`)."""

    left: int
    # IMAP4rev2: a URL's part numbers go on inside message/global (RFC 9051 6.4.5).
    message_global: bool = False
    done: list[_Read] = field(default_factory=list)


@dataclass
class _Prepared:
    folder: Folder
    target: str  # the destination, as audit events name it
    items: list[AppendItem]
    seen: int | None
    reads: list[_Read] = field(default_factory=list)


def _uses_utf8(message: AppendMessage) -> bool:
    return message.utf8 or any(
        isinstance(p, CatenateText) and p.utf8 for p in message.catenate or ())


def _check(ctx: Context, cmd: Append) -> None:
    """What is decided without the store: limits, flags, the UTF8 item."""
    limits = ctx.services.settings.limits
    if len(cmd.messages) > limits.imap_append_messages:
        raise fail(APPEND_TOO_MANY)
    utf8 = ctx.session.utf8
    limit = ctx.session.append_limit
    for message in cmd.messages:
        check_flags(message.flags)
        if _uses_utf8(message) and not utf8:
            # RFC 6855 4: only once the client has enabled UTF8=ACCEPT.
            raise fail(APPEND_UTF8_NOT_ENABLED)
        if message.catenate is None:
            if len(message.message) > limit:
                raise fail(APPEND_TOO_BIG)
            if not message.message:
                raise fail(APPEND_EMPTY)


def _url_data(
    policy: Policy, store: MessageStore, identity: Identity, namespaces: Namespaces,
    hostname: str, url_text: str, reads: _UrlReads,
) -> bytes:
    """The octets a CATENATE URL names (BODY.PEEK[section]<partial> of it)."""
    try:
        url = parse_imap_url(url_text)
    except ParseError as exc:
        raise badurl(url_text, exc.message) from None
    if url.host is not None and url.host != hostname.lower():
        raise badurl(url_text, BADURL_OTHER_SERVER)
    if url.user is not None and url.user.lower() != identity.name.lower():
        raise badurl(url_text, BADURL_OTHER_USER)
    missing = badurl(url_text, BADURL_MISSING)
    try:
        place, folder = resolve_folder(policy, store, identity, namespaces, url.mailbox, "r",
                                       "fetch")
        if url.uidvalidity is not None and url.uidvalidity != folder.uidvalidity:
            raise missing
        raw = store.message_body(folder.id, url.uid)
    except (NotFound, NotPermitted, NoPermission, InvalidName):
        # Permission first, and "not permitted" looks like "not found".
        raise missing from None
    reads.left -= len(raw)
    if reads.left < 0:
        raise fail(APPEND_OVER_LIMIT)
    section = url.section
    meta = parse_message(raw)
    if section.part and find_part(meta, section.part,
                                  message_global=reads.message_global) is None:
        raise missing
    data = render.section_bytes(raw, meta, section, reads.message_global)
    if section.partial is not None:
        data = render.partial(data, section.partial.start, section.partial.length)
    reads.done.append(_Read(f"{place.mailbox.address}/{place.folder}", url.uid))
    return data


def _compose(
    policy: Policy, store: MessageStore, identity: Identity, namespaces: Namespaces,
    hostname: str, parts: Sequence[CatenatePart], limit: int, reads: _UrlReads,
) -> bytes:
    """A CATENATE message, its parts in order; past `limit`, ``NO [TOOBIG]``."""
    out = bytearray()
    for part in parts:
        if isinstance(part, CatenateText):
            data = part.data
        else:
            data = _url_data(policy, store, identity, namespaces, hostname, part.url, reads)
        if len(out) + len(data) > limit:
            raise fail(CATENATE_TOO_BIG)
        out += data
    return bytes(out)


def _has_8bit_header(raw: bytes) -> bool:
    fields_end, _ = header_bounds(raw, 0, len(raw))
    return not raw[:fields_end].isascii()


def _prepare(
    policy: Policy, store: MessageStore, identity: Identity, namespaces: Namespaces,
    hostname: str, name: str, messages: Sequence[AppendMessage], limit: int, utf8: bool,
    url_octets: int, rev2: bool = False,
) -> _Prepared:
    """The decisions and the CPU work of an APPEND, before its one write: the
    destination, each CATENATE message, the parsing and encryption."""
    place, folder = resolve_folder(policy, store, identity, namespaces, name, "i", "append")
    reads = _UrlReads(url_octets, rev2)
    items: list[AppendItem] = []
    for message in messages:
        raw = message.message
        binary = message.binary
        if message.catenate is not None:
            raw = _compose(policy, store, identity, namespaces, hostname, message.catenate,
                           limit, reads)
            if not raw:
                raise fail(APPEND_EMPTY)
            binary = any(isinstance(p, CatenateText) and p.binary for p in message.catenate)
        if not utf8 and _has_8bit_header(raw):
            # RFC 6855 4: a client that did not enable UTF8=ACCEPT may not
            # store a message whose header fields hold 8-bit octets.
            raise fail(APPEND_8BIT_HEADERS)
        if binary:
            # RFC 3516: what came as literal8 may hold binary parts; they are
            # stored in base64 (BINARY[] decodes them back).
            raw = encode_binary_parts(raw)
        items.append(AppendItem(store.prepare(raw),
                                tuple(f for f in message.flags if f != "\\Recent"),
                                message.internal_date))
    return _Prepared(folder, f"{place.mailbox.address}/{place.folder}", items,
                     seen_account(identity, place.mailbox), reads.done)


async def append(ctx: Context, cmd: Append) -> Reply:
    session = ctx.session
    assert session.identity is not None and session.namespaces is not None
    _check(ctx, cmd)
    selected = session.view
    # An IMAP4rev2 session has no \Recent: it leaves them to rev1 sessions.
    claiming = (selected.folder_id if selected is not None
                and not (selected.readonly or selected.rev2) else None)
    store = ctx.services.store
    try:
        # Parsing and sealing a small message: on the reactor thread.
        quick = (all(m.catenate is None for m in cmd.messages)
                 and sum(len(m.message) for m in cmd.messages) <= QUICK_APPEND_OCTETS)
        prepared: _Prepared = await (ctx.run_quick if quick else ctx.run)(
            _prepare, ctx.services.policy, store, session.identity, session.namespaces,
            ctx.services.settings.hostname, cmd.mailbox, cmd.messages, session.append_limit,
            session.utf8, ctx.services.settings.limits.imap_append_octets, session.rev2,
        )
        # Appending to the folder this session has selected read-write: the
        # session takes the messages as recent itself (no claim to write later).
        folder = prepared.folder
        results = await ctx.run_write(
            store.append_many, folder.id, prepared.items, recent=folder.id != claiming,
            seen_account=prepared.seen,
        )
    except (NotFound, NotPermitted):
        # The destination is missing or invisible (or was deleted meanwhile):
        # RFC 3501 6.3.11, tell the client it may CREATE the mailbox.
        raise fail(APPEND_TRYCREATE) from None
    uids = [r.uid for r in results]
    # ONE event per APPEND that stored messages, as for COPY and STORE; and
    # one fetch event per folder CATENATE URLs read, as for a FETCH.
    await record_content(ctx, "append", prepared.target, uids,
                         **({"catenate": True} if prepared.reads else {}))
    read: dict[str, set[int]] = {}
    for r in prepared.reads:
        read.setdefault(r.target, set()).add(r.uid)
    for target, read_uids in read.items():
        await record_content(ctx, "fetch", target, sorted(read_uids), via="catenate",
                             to=prepared.target, appended=sequence_set(uids, sort=False).decode())
    view = session.view
    if view is not None and view.folder_id == folder.id:
        await sync_view(ctx, own_write=True)
        if view.folder_id == claiming and session.view is view:
            view.recent.update(u for u in uids if view.has(u))
    ctx.watcher.notify_local(folder.id, exclude=getattr(ctx, "watch_token", None))
    return ok("APPEND completed", appenduid(results[0].uidvalidity, uids))


HANDLERS: dict[type[Command], Handler] = {Append: append}
