"""SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS,
NAMESPACE (RFC 3501 6.3, RFC 2342, RFC 6154, RFC 7889).

LIST and LSUB live in `imapd.commands.listing`, APPEND in `imapd.commands.append`."""

from __future__ import annotations

from dataclasses import dataclass

from imapd import responses
from imapd.commands.access import resolve, resolve_folder, resolve_new
from imapd.commands.base import Context, Handler, ok
from imapd.errors import (
    ALREADY_EXISTS,
    DELETE_HASCHILDREN,
    EMPTY_NAME,
    INBOX_NOT_DELETED,
    NOT_MUTF7,
    QRESYNC_NOT_ENABLED,
    RENAME_ACROSS,
    RENAME_REFUSED,
    REV2_STATUS_RECENT,
    STATUS_NO_ITEM,
    UNSUPPORTED_USE,
    AccessWithdrawn,
    NotPermitted,
    Reply,
    bad,
    fail,
)
from imapd.namespace import SEP, Namespaces, Place
from imapd.parser.commands import (
    Command,
    Create,
    Delete,
    Examine,
    Namespace,
    QResync,
    Rename,
    Select,
    Status,
    StatusItem,
    Subscribe,
    Unsubscribe,
)
from imapd.parser.mutf7 import UndecodableName
from imapd.session import Session
from imapd.view import SYSTEM_FLAGS, SelectedView
from imapd.watcher import NameChange
from policy.decisions import Identity, Policy, SessionAccess, seen_account
from storage.interface import (
    Folder,
    IndexColumns,
    InvalidName,
    MessageStore,
    NotFound,
    SpecialUse,
)


def leave_selected(ctx: Context) -> None:
    view = ctx.session.unselect()
    token = getattr(ctx, "watch_token", None)
    if view is not None and token is not None:
        ctx.watcher.unwatch(view.folder_id, token)
        ctx.watch_token = None  # type: ignore[attr-defined]


def _identity(ctx: Context) -> tuple[Identity, Namespaces]:
    s = ctx.session
    assert s.identity is not None and s.namespaces is not None
    return s.identity, s.namespaces


# ---------------------------------------------------------------- SELECT


# The largest folders (messages, as this session last saw them) whose SELECT
# or STATUS reads run on the reactor thread (`Context.run_quick`): about
# 5 ms of SELECT, 1 ms of STATUS on the development machine.
QUICK_SELECT_MESSAGES = 2000
QUICK_STATUS_MESSAGES = 5000
QUICK_STATUS_FOLDERS = 8  # LIST RETURN (STATUS)


@dataclass
class Opened:
    place: Place
    folder: Folder
    columns: IndexColumns
    recent: frozenset[int]
    rights: str
    access: SessionAccess  # what later commands are checked against
    # IMAP4rev2: the attributes of the LIST response SELECT sends (else None).
    list_attributes: list[str] | None = None
    # SELECT found recent messages to claim: `select` claims them with a
    # write of its own (on the writer lane), after this read.
    to_claim: bool = False


def _has_children(policy: Policy, store: MessageStore, identity: Identity, place: Place) -> bool:
    """Whether LIST shows a name below `place` to this identity (folders of
    one's own mailbox; of another, those one may look up)."""
    own = place.prefix == ""
    below = place.folder + SEP
    return any(
        own or "l" in policy.mailbox_rights(identity, place.mailbox, f.name)
        for f in store.list_folders(place.mailbox.id) if f.name.startswith(below)
    )


def _list_attributes(
    policy: Policy, store: MessageStore, identity: Identity, place: Place, folder: Folder,
) -> list[str]:
    """The selected mailbox's attributes as LIST gives them (RFC 9051 6.3.2:
    they must be accurate): children one may look up, and the special use of
    a personal folder (`imapd.commands.listing`)."""
    attrs = ["\\HasChildren" if _has_children(policy, store, identity, place)
             else "\\HasNoChildren"]
    if place.prefix == "" and folder.special_use is not None:
        attrs.append(folder.special_use.value)
    return attrs


def _open(
    policy: Policy, store: MessageStore, identity: Identity, namespaces: Namespaces,
    name: str, readonly: bool, rev2: bool = False,
) -> Opened:
    with store.read_scope():  # one read transaction for the whole SELECT
        place, folder = resolve_folder(
            policy, store, identity, namespaces, name, "r", "examine" if readonly else "select"
        )
        rights = policy.mailbox_rights(identity, place.mailbox, place.folder)
        columns = store.index_columns(folder.id,
                                      seen_account=seen_account(identity, place.mailbox))
        # `folder` (uidvalidity, uidnext, highestmodseq) and the index are of
        # one snapshot; what changes after it is pulled at the next sync.
        # This call only reads (it may run on the reactor thread: see
        # `select`): most SELECTs find nothing to claim, which a read tells
        # (through the index), and `select` claims the others on the writer
        # lane. EXAMINE reports the same \\Recent as SELECT but leaves them
        # for the session that selects the folder (RFC 3501 6.3.2). An
        # IMAP4rev2 session has none and leaves them to rev1 sessions.
        recent: frozenset[int] = frozenset()
        if not rev2:
            recent = store.recent_uids(folder.id)
        return Opened(place, folder, columns, recent if readonly else frozenset(), rights,
                      policy.session_access(identity, place.mailbox, place.folder),
                      _list_attributes(policy, store, identity, place, folder) if rev2 else None,
                      to_claim=bool(recent) and not readonly)


async def select(ctx: Context, cmd: Select | Examine) -> Reply:
    readonly = isinstance(cmd, Examine)
    session = ctx.session
    if session.view is not None:
        leave_selected(ctx)
        # RFC 7162 3.2.11: a server that advertises QRESYNC (we always do)
        # says so whenever SELECT/EXAMINE closes the previous mailbox, so
        # that the client knows which responses belong to which mailbox.
        ctx.send(responses.untagged_ok(responses.CLOSED, "Previous mailbox closed"))
    identity, namespaces = _identity(ctx)
    if cmd.qresync is not None and "QRESYNC" not in session.enabled:
        raise fail(QRESYNC_NOT_ENABLED)
    if cmd.condstore:
        session.enabled.add("CONDSTORE")
    # A folder this session saw small has its index read on the reactor
    # thread (`Context.run_quick`); a large or unknown one on a thread.
    run = ctx.run_quick if session.quick_size(cmd.mailbox, QUICK_SELECT_MESSAGES) else ctx.run
    opened: Opened = await run(
        _open, ctx.services.policy, ctx.services.store, identity, namespaces, cmd.mailbox,
        readonly, session.rev2,
    )
    if not opened.access.decision.allowed:  # e.g. the account was disabled meanwhile
        ctx.set_access(opened.access)
        raise AccessWithdrawn(opened.access.decision.reason)
    if opened.to_claim:
        # Only what the snapshot holds: a message that came since is not in
        # the view, and is claimed by the sync that brings it.
        opened.recent = await ctx.run_write(ctx.services.store.claim_recent, opened.folder.id,
                                            below=opened.folder.uidnext)
    can_write = any(r in opened.rights for r in "stwe")
    readonly = readonly or not can_write
    st = opened.folder
    view = SelectedView.from_columns(
        opened.folder.id, cmd.mailbox, readonly, st.uidvalidity, st.uidnext,
        st.highestmodseq, opened.columns, opened.recent,
    )
    view.condstore = "CONDSTORE" in session.enabled
    view.qresync = "QRESYNC" in session.enabled
    view.rev2 = session.rev2
    view.rights = opened.rights
    view.seen_account = seen_account(identity, opened.place.mailbox)
    session.select(opened.place, view)
    session.note_size(cmd.mailbox, view.exists)
    ctx.set_access(opened.access)
    ctx.watch_token = ctx.watcher.watch(  # type: ignore[attr-defined]
        view.folder_id, ctx.on_folder_changed, (view.uidnext, view.highestmodseq)
    )
    view.keywords = view.keyword_set()
    untagged_ok = responses.untagged_ok
    out = [view.flags_response(), responses.exists(view.exists)]
    if not view.rev2:
        # RFC 9051 has neither the RECENT response nor the UNSEEN code.
        out.append(responses.recent(len(view.recent)))
        first_unseen = view.first_unseen()
        if first_unseen is not None:
            out.append(untagged_ok(responses.unseen(first_unseen), "First unseen"))
    out.append(untagged_ok(responses.uidvalidity(st.uidvalidity), "UIDs valid"))
    out.append(untagged_ok(responses.uidnext(view.uidnext), "Predicted next UID"))
    out.append(untagged_ok(responses.highestmodseq(max(view.highestmodseq, 1)), "Highest"))
    if opened.list_attributes is not None:
        # RFC 9051 6.3.2: SELECT and EXAMINE answer a LIST response too.
        wire = responses.mailbox(opened.place.imap_name(), True)
        out.append(responses.list_(opened.list_attributes, SEP, wire))
    ctx.send(b"".join(out))
    if cmd.qresync is not None and cmd.qresync.uidvalidity == st.uidvalidity:
        await _resync(ctx, view, cmd.qresync)
    mode = responses.READ_ONLY if readonly else responses.READ_WRITE
    return ok(f"{'EXAMINE' if isinstance(cmd, Examine) else 'SELECT'} completed", mode)


async def _resync(ctx: Context, view: SelectedView, q: QResync) -> None:
    """RFC 7162 3.2.5.1: what vanished and what changed since the client's
    MODSEQ, limited to the UIDs it says it knows."""
    changes = await ctx.run(ctx.services.store.changes_since, view.folder_id, q.modseq,
                            seen_account=view.seen_account)
    largest = max(view.max_uid(), max(changes.expunged, default=0))

    def known(uid: int) -> bool:
        return q.known_uids is None or q.known_uids.contains(uid, largest)

    vanished = sorted(u for u in changes.expunged if known(u) and not view.has(u))
    out: list[bytes] = []
    if vanished:
        out.append(responses.vanished(vanished, earlier=True))
    changed = [u for u, m in zip(view.uids, view.modseqs, strict=True)
               if m > q.modseq and known(u)]
    out.extend(view.announce_keywords(changed))
    for uid in changed:
        seq = view.seq_of(uid)
        assert seq is not None  # `changed` holds the view's own UIDs
        out.append(responses.fetch_flags(seq, uid, view.display_flags(uid), view.modseq_of(uid)))
    ctx.send(b"".join(out))


# ---------------------------------------------------------------- CREATE etc.

_USE = {u.value.lower(): u for u in SpecialUse}


async def create(ctx: Context, cmd: Create) -> Reply:
    identity, namespaces = _identity(ctx)
    if isinstance(cmd.mailbox, UndecodableName):
        raise fail(NOT_MUTF7)
    name = cmd.mailbox.rstrip("/")
    if not name:
        raise fail(EMPTY_NAME)
    use: SpecialUse | None = None
    for attr in cmd.special_use:
        found = _USE.get(attr.lower())
        if found is None or use is not None:
            raise fail(UNSUPPORTED_USE)
        use = found
    place = await ctx.run(
        resolve_new, ctx.services.policy, ctx.services.store, identity, namespaces, name,
        "create",
    )
    if place.folder.upper() == "INBOX":
        raise fail(ALREADY_EXISTS)
    await ctx.run(ctx.services.store.create_folder, place.mailbox.id, place.folder, use)
    _names_changed(ctx, NameChange(place.mailbox.id, place.folder))
    return ok("CREATE completed")


def _level_with_children(
    policy: Policy, store: MessageStore, identity: Identity, namespaces: Namespaces, name: str,
) -> bool:
    """A name with no folder of its own that LIST shows as a \\Noselect level
    above folders this identity sees."""
    try:
        place = namespaces.resolve(name)
    except NotPermitted:
        return False
    return _has_children(policy, store, identity, place)


async def delete(ctx: Context, cmd: Delete) -> Reply:
    identity, namespaces = _identity(ctx)
    try:
        place, folder = await ctx.run(
            resolve_folder, ctx.services.policy, ctx.services.store, identity, namespaces,
            cmd.mailbox, "x", "delete",
        )
    except (NotFound, NotPermitted):
        # RFC 9051 6.3.5: deleting a \Noselect name with inferiors is an
        # error, NO [HASCHILDREN]; it tells nothing LIST does not show. A rev1
        # session keeps NO [NONEXISTENT], as Dovecot 2.3 answers.
        if ctx.session.rev2 and await ctx.run(
                _level_with_children, ctx.services.policy, ctx.services.store,
                identity, namespaces, cmd.mailbox):
            raise fail(DELETE_HASCHILDREN) from None
        raise
    if place.folder == "INBOX":
        raise fail(INBOX_NOT_DELETED)
    await ctx.run(ctx.services.store.delete_folder, place.mailbox.id, place.folder)
    ctx.watcher.notify_local(folder.id)
    _names_changed(ctx, NameChange(place.mailbox.id, place.folder, deleted=True))
    return ok("DELETE completed")


async def rename(ctx: Context, cmd: Rename) -> Reply:
    identity, namespaces = _identity(ctx)
    policy, store = ctx.services.policy, ctx.services.store
    if isinstance(cmd.new, UndecodableName) and not isinstance(cmd.old, UndecodableName):
        raise fail(NOT_MUTF7)
    old, _ = await ctx.run(
        resolve_folder, policy, store, identity, namespaces, cmd.old, "x", "rename"
    )
    new = await ctx.run(
        resolve_new, policy, store, identity, namespaces, cmd.new.rstrip("/"), "rename",
    )
    if old.mailbox.id != new.mailbox.id:
        raise fail(RENAME_ACROSS)
    if not new.folder or new.folder == "INBOX":
        raise fail(ALREADY_EXISTS)
    try:
        await ctx.run(store.rename_folder, old.mailbox.id, old.folder, new.folder)
    except InvalidName:
        raise fail(RENAME_REFUSED) from None
    _names_changed(ctx, NameChange(old.mailbox.id, new.folder, old_name=old.folder))
    return ok("RENAME completed")


async def subscribe(ctx: Context, cmd: Subscribe | Unsubscribe) -> Reply:
    identity, namespaces = _identity(ctx)
    on = isinstance(cmd, Subscribe)
    # UNSUBSCRIBE must work on a name whose folder was deleted (RFC 3501
    # 6.3.7); the store answers NotFound if the name is neither subscribed
    # nor a folder.
    place, _ = await ctx.run(
        resolve, ctx.services.policy, ctx.services.store, identity, namespaces,
        cmd.mailbox, "l", "subscribe" if on else "unsubscribe", must_exist=on,
    )
    await ctx.run(ctx.services.store.set_subscribed, place.mailbox.id, place.folder, on)
    _names_changed(ctx, NameChange(place.mailbox.id, place.folder, subscribed=on))
    return ok(f"{type(cmd).name} completed")


def _names_changed(ctx: Context, change: NameChange) -> None:
    """Tells the NOTIFY sessions of this process (not this one)."""
    ctx.watcher.notify_names(change, exclude=getattr(ctx, "names_token", None))


async def namespace(ctx: Context, cmd: Namespace) -> Reply:
    _, namespaces = _identity(ctx)
    ctx.send(namespaces.namespace_response())
    return ok("NAMESPACE completed")


# ---------------------------------------------------------------- STATUS


def status_values(
    store: MessageStore, folder: Folder, items: tuple[StatusItem, ...], append_limit: int,
    recent_override: int | None = None, seen_account: int | None = None,
) -> list[tuple[str, int]]:
    """The STATUS items asked for, in their order, with their values.
    `seen_account`: UNSEEN counts what that account has not read (a
    mailbox with private \\Seen)."""
    names = [item.value for item in items]
    st = store.folder_status(folder.id, seen_account=seen_account)
    deleted = deleted_size = 0
    if "DELETED" in names or "DELETED-STORAGE" in names:
        for e in store.index(folder.id):
            if "\\Deleted" in e.flags:
                deleted += 1
                deleted_size += e.size
    values: dict[str, int] = {
        "MESSAGES": st.messages,
        "RECENT": st.recent if recent_override is None else recent_override,
        "UIDNEXT": st.uidnext,
        "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen,
        "HIGHESTMODSEQ": max(st.highestmodseq, 1),
        "SIZE": st.size,
        "DELETED": deleted,
        # RFC 9208 5.1: in the STORAGE resource's unit (1024 octets).
        "DELETED-STORAGE": (deleted_size + 1023) // 1024,
        "APPENDLIMIT": append_limit,
    }
    return [(name, values[name]) for name in names if name in values]


def _status(
    policy: Policy, store: MessageStore, identity: Identity, namespaces: Namespaces,
    name: str, items: tuple[StatusItem, ...], append_limit: int,
) -> list[tuple[str, int]]:
    with store.read_scope():
        place, folder = resolve_folder(policy, store, identity, namespaces, name, "r", "status")
        return status_values(store, folder, items, append_limit,
                             seen_account=seen_account(identity, place.mailbox))


def quick_status(session: Session, names: list[str], items: tuple[StatusItem, ...]) -> bool:
    """Whether the STATUS of `names` may be read on the reactor thread
    (`Context.run_quick`): each is a scan of one folder's rows, so only a
    few folders this session saw small; DELETED reads the whole index."""
    return (len(names) <= QUICK_STATUS_FOLDERS
            and StatusItem.DELETED not in items and StatusItem.DELETED_STORAGE not in items
            and all(session.quick_size(name, QUICK_STATUS_MESSAGES) for name in names))


def check_status_items(session: Session, items: tuple[StatusItem, ...]) -> None:
    """STATUS and LIST RETURN (STATUS ...): RFC 9051 has no RECENT item."""
    if session.rev2 and StatusItem.RECENT in items:
        raise fail(REV2_STATUS_RECENT)


async def status(ctx: Context, cmd: Status) -> Reply:
    identity, namespaces = _identity(ctx)
    if not cmd.items:
        raise fail(STATUS_NO_ITEM)
    check_status_items(ctx.session, cmd.items)
    quick = quick_status(ctx.session, [cmd.mailbox], cmd.items)
    values = await (ctx.run_quick if quick else ctx.run)(
        _status, ctx.services.policy, ctx.services.store, identity, namespaces, cmd.mailbox,
        cmd.items, ctx.session.append_limit,
    )
    for item, value in values:
        if item == "MESSAGES":
            ctx.session.note_size(cmd.mailbox, value)
    ctx.send(responses.status(responses.mailbox(cmd.mailbox, ctx.session.utf8), values))
    return ok("STATUS completed")


# ---------------------------------------------------------------- APPEND
# (`imapd.commands.append`)


def check_flags(flags: tuple[str, ...]) -> None:
    """RFC 3501 9: no system flags but the defined ones (\\Recent is ignored)."""
    for flag in flags:
        if flag.startswith("\\") and flag not in SYSTEM_FLAGS and flag != "\\Recent":
            raise bad("Invalid system flag")


HANDLERS: dict[type[Command], Handler] = {
    Select: select,
    Examine: select,
    Create: create,
    Delete: delete,
    Rename: rename,
    Subscribe: subscribe,
    Unsubscribe: subscribe,
    Namespace: namespace,
    Status: status,
}
