"""LIST (RFC 3501, LIST-EXTENDED RFC 5258, SPECIAL-USE RFC 6154, LIST-STATUS
RFC 5819, CHILDREN RFC 3348) and LSUB."""

from __future__ import annotations

from dataclasses import dataclass

from imapd import responses
from imapd.commands.auth import build_namespaces
from imapd.commands.base import Context, Handler, ok
from imapd.commands.mailbox import check_status_items, quick_status, status_values
from imapd.errors import RECURSIVEMATCH_ALONE, Reply, bad, fail
from imapd.namespace import SEP, Namespaces
from imapd.parser.commands import Command, List, Lsub, StatusItem
from imapd.parser.mutf7 import UndecodableName
from imapd.wildcards import ListPattern
from policy.decisions import Identity, Policy, seen_account
from storage.interface import Folder, MessageStore

# LIST-EXTENDED takes a list of patterns (RFC 5258); clients send one to three.
# The bound keeps one command's matching work small whatever the line holds.
MAX_PATTERNS = 32
# The longest folder list (names, shared ones included) collected on the
# reactor thread at the next LIST (see `_listing`).
QUICK_LIST_ENTRIES = 500


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    folder: Folder | None  # None: a non-selectable container ("Shared", ...)
    rights: str
    personal: bool = False
    # A subscribed name whose folder is gone (RFC 5258 \NonExistent).
    nonexistent: bool = False
    seen_account: int | None = None  # whose \Seen STATUS UNSEEN counts


@dataclass(frozen=True, slots=True)
class Listing:
    namespaces: Namespaces
    entries: list[Entry]  # what exists (folders and hierarchy levels)
    # Full IMAP names on the subscription lists of the visible mailboxes,
    # including names whose folder was deleted (RFC 3501 6.3.6).
    subscribed: frozenset[str]

    def phantoms(self) -> list[Entry]:
        """Subscribed names that exist no more."""
        known = {e.name for e in self.entries}
        return [Entry(n, None, "", nonexistent=True)
                for n in sorted(self.subscribed - known)]


def _collect(policy: Policy, store: MessageStore, identity: Identity) -> Listing:
    with store.read_scope():  # one read transaction for every mailbox listed
        return _collect_in(policy, store, identity)


def _collect_in(policy: Policy, store: MessageStore, identity: Identity) -> Listing:
    ns = build_namespaces(policy, identity)
    entries: list[Entry] = []
    subscribed: set[str] = set()
    if ns.primary is not None:
        own = seen_account(identity, ns.primary)
        entries.extend(Entry(f.name, f, "lrswipkxtea", True, seen_account=own)
                       for f in store.list_folders(ns.primary.id))
        subscribed.update(store.list_subscriptions(ns.primary.id))
    for am in ns.others:
        # Rights per folder (a grant may name one folder): a folder one may
        # not look up ("l") is not listed, nor its name on the subscription
        # list: not permitted looks like not found.
        if "l" not in am.rights and not any("l" in r for _, r in am.folder_rights):
            continue
        prefix = ns.prefix_of(am)
        seen = seen_account(identity, am.mailbox)
        for f in store.list_folders(am.mailbox.id):
            rights = am.rights_on(f.name)
            if "l" in rights:
                entries.append(Entry(prefix + f.name, f, rights, seen_account=seen))
        subscribed.update(prefix + n for n in store.list_subscriptions(am.mailbox.id)
                          if "l" in am.rights_on(n))
    names = {e.name for e in entries}
    entries.extend(Entry(n, None, "") for n, _ in ns.containers() if n not in names)
    names = {e.name for e in entries}
    # A level with inferiors but no folder of its own (e.g. after DELETE of a
    # parent, RFC 3501 6.3.4) still exists as \Noselect.
    for e in list(entries):
        parts = e.name.split(SEP)
        for i in range(1, len(parts)):
            parent = SEP.join(parts[:i])
            if parent not in names:
                names.add(parent)
                entries.append(Entry(parent, None, "", e.personal))
    return Listing(ns, entries, frozenset(subscribed))


async def _listing(ctx: Context) -> Listing:
    """The session's folders and rights: index reads, on the reactor thread
    (`Context.run_quick`) when its last list was short (a first one, or one
    of thousands of folders, on a thread)."""
    session = ctx.session
    assert session.identity is not None
    quick = session.listed is not None and session.listed <= QUICK_LIST_ENTRIES
    listing: Listing = await (ctx.run_quick if quick else ctx.run)(
        _collect, ctx.services.policy, ctx.services.store, session.identity
    )
    session.namespaces = listing.namespaces
    session.listed = len(listing.entries)
    return listing


def _parents(names: list[str]) -> set[str]:
    """Every name that has a name of `names` below it: \\HasChildren, in one
    pass rather than a scan of the list per name."""
    out: set[str] = set()
    for n in names:
        cut = n.rfind(SEP)
        while cut > 0:
            parent = n[:cut]
            if parent in out:
                break  # its own parents are in already
            out.add(parent)
            cut = parent.rfind(SEP)
    return out


def _attrs(e: Entry, parents: set[str], subscribed: frozenset[str] | None) -> list[str]:
    """LIST attributes; `parents`: the names with children (`_parents`);
    `subscribed` is the subscription list when the client asked for
    \\Subscribed, else None."""
    attrs: list[str] = []
    if e.nonexistent:
        # RFC 5258 3.4: \NonExistent implies \Noselect; nothing else is known.
        return ["\\NonExistent"] + (["\\Subscribed"] if subscribed is not None else [])
    if e.folder is None:
        attrs.append("\\Noselect")
    attrs.append("\\HasChildren" if e.name in parents else "\\HasNoChildren")
    # Special use only in the personal namespace: a client must not take a
    # functional mailbox's Sent for its own.
    if e.personal and e.folder is not None and e.folder.special_use is not None:
        attrs.append(e.folder.special_use.value)
    if subscribed is not None and e.name in subscribed:
        attrs.append("\\Subscribed")
    return attrs


def _status_values(
    store: MessageStore, entries: list[Entry], items: tuple[StatusItem, ...], limit: int
) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for e in entries:
        if e.folder is not None and "r" in e.rights:
            out[e.name] = status_values(store, e.folder, items, limit,
                                        seen_account=e.seen_account)
    return out


async def list_(ctx: Context, cmd: List) -> Reply:
    session = ctx.session
    assert session.identity is not None
    listing = await _listing(ctx)
    entries = listing.entries
    subscribed = listing.subscribed
    if cmd.select_recursive_match and not (cmd.select_subscribed or cmd.select_special_use):
        # RFC 5258 3: RECURSIVEMATCH alone (or with REMOTE only) is an error.
        raise fail(RECURSIVEMATCH_ALONE)
    patterns = cmd.patterns or ("",)
    if len(patterns) == 1 and patterns[0] == "":
        ctx.send(responses.list_(["\\Noselect"], SEP, responses.quoted("")))
        return ok("LIST completed")
    wanted = list(dict.fromkeys(p for p in patterns if p))
    if len(wanted) > MAX_PATTERNS:
        raise bad(f"At most {MAX_PATTERNS} patterns in one LIST")
    # A pattern or reference that is not modified UTF-7 matches no name
    # (the command is well-formed: OK, nothing listed, as Dovecot answers).
    if isinstance(cmd.reference, UndecodableName):
        wanted = []
    wanted = [p for p in wanted if not isinstance(p, UndecodableName)]
    compiled = [ListPattern.compile(cmd.reference, p) for p in wanted]
    parents = _parents([e.name for e in entries])
    want_sub = subscribed if cmd.select_subscribed or cmd.return_subscribed else None
    if cmd.select_subscribed:
        # RFC 5258 3.1: the SUBSCRIBED selection also returns subscribed names
        # that do not exist (any more), flagged \NonExistent.
        entries = entries + listing.phantoms()
    chosen: list[tuple[Entry, bytes]] = []  # (entry, extended data)
    for e in sorted(entries, key=lambda x: (x.name.upper() != "INBOX", x.name)):
        if not any(m.matches(e.name) for m in compiled):
            continue
        extra = b""
        if cmd.select_subscribed and e.name not in subscribed:
            if not cmd.select_recursive_match:
                continue
            # RFC 5258 3.5: a parent is returned for a subscribed descendant
            # only when that descendant is not itself returned by the patterns.
            if not any(
                x.startswith(e.name + SEP) and not any(m.matches(x) for m in compiled)
                for x in subscribed
            ):
                continue
            extra = responses.CHILDINFO_SUBSCRIBED
        if cmd.select_special_use and (
            not e.personal or e.folder is None or e.folder.special_use is None
        ):
            continue
        chosen.append((e, extra))
    statuses: dict[str, list[tuple[str, int]]] = {}
    if cmd.return_status:
        check_status_items(session, cmd.return_status)
        quick = quick_status(session, [e.name for e, _ in chosen], cmd.return_status)
        statuses = await (ctx.run_quick if quick else ctx.run)(
            _status_values, ctx.services.store, [e for e, _ in chosen], cmd.return_status,
            session.append_limit,
        )
        for name, values in statuses.items():
            for item, value in values:
                if item == "MESSAGES":
                    session.note_size(name, value)
    out: list[bytes] = []
    for e, extra in chosen:
        wire = responses.mailbox(e.name, session.utf8)
        out.append(responses.list_(_attrs(e, parents, want_sub), SEP, wire, extra))
        if e.name in statuses:
            out.append(responses.status(wire, statuses[e.name]))
        if cmd.return_myrights and e.folder is not None:
            out.append(responses.myrights(wire, e.rights))
    ctx.send(b"".join(out))
    return ok("LIST completed")


async def lsub(ctx: Context, cmd: Lsub) -> Reply:
    session = ctx.session
    assert session.identity is not None
    listing = await _listing(ctx)
    if not cmd.pattern:
        ctx.send(responses.lsub(["\\Noselect"], SEP, responses.quoted("")))
        return ok("LSUB completed")
    if isinstance(cmd.reference, UndecodableName) or isinstance(cmd.pattern, UndecodableName):
        return ok("LSUB completed")  # matches nothing, as in LIST
    pattern = ListPattern.compile(cmd.reference, cmd.pattern)
    subscribed = listing.subscribed
    # Subscribed names stay listed after their folder is deleted (RFC 3501
    # 6.3.6): LSUB is the subscription list, not the folder list.
    parents = _parents([e.name for e in listing.entries])
    entries = listing.entries + listing.phantoms()
    out: list[bytes] = []
    for e in sorted(entries, key=lambda x: (x.name.upper() != "INBOX", x.name)):
        if not pattern.matches(e.name):
            continue
        if e.name in subscribed:
            if e.nonexistent:
                attrs = []  # the name is subscribed; nothing more is known
            else:
                attrs = [a for a in _attrs(e, parents, None) if not a.startswith("\\Has")]
            out.append(responses.lsub(attrs, SEP, responses.mailbox(e.name, session.utf8)))
        elif cmd.pattern.endswith("%"):
            # RFC 3501 6.3.9: with "%" last, an unsubscribed superior of a
            # subscribed mailbox is returned, flagged \Noselect.
            if any(s.startswith(e.name + SEP) for s in subscribed):
                out.append(responses.lsub(["\\Noselect"], SEP,
                                          responses.mailbox(e.name, session.utf8)))
    ctx.send(b"".join(out))
    return ok("LSUB completed")


HANDLERS: dict[type[Command], Handler] = {List: list_, Lsub: lsub}
