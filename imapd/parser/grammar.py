"""Command grammar: one complete command (lines + literals) -> a typed Command."""

from __future__ import annotations

from collections.abc import Callable

from imapd.parser import commands as c
from imapd.parser.dates import parse_date_time
from imapd.parser.items import (
    SearchParser,
    parse_fetch_att,
    parse_fetch_atts,
    parse_flag,
    parse_flag_list,
    parse_sequence_set,
    parse_status_items,
    search_decoder,
)
from imapd.parser.mutf7 import mailbox_or_undecodable
from imapd.parser.tokens import TAG_CHARS, Cursor, Literal, ParseError, to_text
from policy.sasl import decode_base64

MAX_ID_PAIRS = 30  # RFC 2971
MAX_ENABLE = 100
# Bounds on what one APPEND may describe (its octets are bounded by the reader):
# the server's own limit on messages per command is lower (a setting).
MAX_APPEND_MESSAGES = 10_000
MAX_CATENATE_PARTS = 1_000
MAX_URL_LENGTH = 8 * 1024
# NOTIFY (RFC 5465): event groups and mailbox names one command may carry.
MAX_NOTIFY_GROUPS = 32
MAX_NOTIFY_NAMES = 1_000


def parse_tag(cur: Cursor) -> str:
    raw = cur.take_while(TAG_CHARS)
    if not raw:
        raise ParseError("Invalid tag")
    return raw.decode("ascii")


def parse_command(
    lines: list[bytes], literals: list[Literal], *, utf8: bool = False
) -> c.Command:
    """Parses a whole command; raises ParseError (the tag is known to the reader).
    `utf8`: the session enabled UTF8=ACCEPT (RFC 6855)."""
    cur = Cursor(lines, literals, utf8=utf8)
    tag = parse_tag(cur)
    cur.sp()
    name = cur.keyword()
    if name == "UID":
        cur.sp()
        sub = cur.keyword()
        uid_handler = _UID_COMMANDS.get(sub)
        if uid_handler is None:
            raise ParseError("Unknown UID command")
        command = uid_handler(cur, tag, True)
    else:
        handler = _COMMANDS.get(name)
        if handler is None:
            raise ParseError("Unknown command")
        command = handler(cur, tag)
    cur.expect_end()
    return command


# ------------------------------------------------------------------ helpers


def _mailbox(cur: Cursor) -> str:
    """A mailbox argument; not modified UTF-7 -> an `UndecodableName` that
    the handlers answer NO (see there), not a parse error."""
    return mailbox_or_undecodable(cur.astring(), utf8=cur.utf8)


def _name(cur: Cursor, raw: bytes) -> str:
    """A LIST reference or pattern, a quota root: decoded, not normalised
    (an `UndecodableName` when not modified UTF-7, as for `_mailbox`)."""
    return mailbox_or_undecodable(raw, inbox=False, utf8=cur.utf8)


def _text(cur: Cursor) -> str:
    return to_text(cur.astring())


def _no_args(cls: type[c.Command]) -> Callable[[Cursor, str], c.Command]:
    def parse(cur: Cursor, tag: str) -> c.Command:
        return cls(tag)

    return parse


def _mailbox_only(cls: Callable[..., c.Command]) -> Callable[[Cursor, str], c.Command]:
    def parse(cur: Cursor, tag: str) -> c.Command:
        cur.sp()
        return cls(tag, _mailbox(cur))

    return parse


def _mailbox_identifier(cls: Callable[..., c.Command]) -> Callable[[Cursor, str], c.Command]:
    def parse(cur: Cursor, tag: str) -> c.Command:
        cur.sp()
        mailbox = _mailbox(cur)
        cur.sp()
        return cls(tag, mailbox, _text(cur))

    return parse


def _paren_list(cur: Cursor, item: Callable[[], None]) -> None:
    """``"(" [item *(SP item)] ")"``."""
    cur.expect(b"(")
    if cur.accept(b")"):
        return
    while True:
        item()
        if cur.accept(b")"):
            return
        cur.sp()


# ---------------------------------------------------- any / not authenticated


def _id(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    if cur.accept_word(b"NIL"):
        return c.Id(tag, None)
    pairs: list[tuple[str, str | None]] = []

    def pair() -> None:
        key = to_text(cur.string())
        cur.sp()
        value = cur.nstring()
        pairs.append((key, None if value is None else to_text(value)))
        if len(pairs) > MAX_ID_PAIRS:
            raise ParseError("Too many ID parameters")

    _paren_list(cur, pair)
    return c.Id(tag, tuple(pairs))


_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def decode_sasl(raw: bytes) -> bytes:
    """A SASL initial response: ``=`` is empty (RFC 4959), else strict
    base64 (`policy.sasl.decode_base64`, shared with SMTP)."""
    data = decode_base64(raw)
    if data is None:
        raise ParseError("Invalid base64")
    return data


def _authenticate(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mechanism = cur.keyword()
    initial: bytes | None = None
    if cur.accept(b" "):
        initial = decode_sasl(cur.take_while(_BASE64_CHARS))
    return c.Authenticate(tag, mechanism, initial)


def _login(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    user = _text(cur)
    cur.sp()
    return c.Login(tag, user, _text(cur))


# ------------------------------------------------------------ authenticated


def _select_params(cur: Cursor) -> tuple[bool, c.QResync | None]:
    condstore = False
    qresync: c.QResync | None = None

    def param() -> None:
        nonlocal condstore, qresync
        word = cur.keyword()
        if word == "CONDSTORE":
            condstore = True
        elif word == "QRESYNC":
            cur.sp()
            qresync = _qresync(cur)
        else:
            raise ParseError("Unknown SELECT parameter")

    if cur.accept(b" "):
        _paren_list(cur, param)
    return condstore, qresync


def _qresync(cur: Cursor) -> c.QResync:
    cur.expect(b"(")
    uidvalidity = cur.nz_number()
    cur.sp()
    modseq = cur.number64()
    known: c.SequenceSet | None = None
    seq_match: tuple[c.SequenceSet, c.SequenceSet] | None = None
    if cur.accept(b" "):
        if cur.peek() != ord("("):
            known = parse_sequence_set(cur)
            if not cur.accept(b" "):
                cur.expect(b")")
                return c.QResync(uidvalidity, modseq, known, None)
        cur.expect(b"(")
        seqs = parse_sequence_set(cur)
        cur.sp()
        uids = parse_sequence_set(cur)
        cur.expect(b")")
        seq_match = (seqs, uids)
    cur.expect(b")")
    return c.QResync(uidvalidity, modseq, known, seq_match)


def _select(cls: type[c.Select] | type[c.Examine]) -> Callable[[Cursor, str], c.Command]:
    def parse(cur: Cursor, tag: str) -> c.Command:
        cur.sp()
        mailbox = _mailbox(cur)
        condstore, qresync = _select_params(cur)
        return cls(tag, mailbox, condstore, qresync)

    return parse


def _create(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mailbox = _mailbox(cur)
    uses: list[str] = []
    if cur.accept(b" "):
        # RFC 6154 create-param: "(" "USE" SP "(" use-attr *(SP use-attr) ")" ")"
        def param() -> None:
            if cur.keyword() != "USE":
                raise ParseError("Unknown CREATE parameter")
            cur.sp()
            _paren_list(cur, lambda: uses.append(parse_flag(cur)))

        _paren_list(cur, param)
    return c.Create(tag, mailbox, tuple(uses))


def _rename(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    old = _mailbox(cur)
    cur.sp()
    return c.Rename(tag, old, _mailbox(cur))


def _pattern(cur: Cursor) -> str:
    return _name(cur, cur.list_mailbox())


def _list(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    opts: dict[str, object] = {}
    extended = False
    if cur.peek() == ord("("):
        extended = True

        def select_opt() -> None:
            word = cur.keyword()
            key = {
                "SUBSCRIBED": "select_subscribed",
                "REMOTE": "select_remote",
                "RECURSIVEMATCH": "select_recursive_match",
                "SPECIAL-USE": "select_special_use",
            }.get(word)
            if key is None:
                raise ParseError("Unknown LIST selection option")
            opts[key] = True

        _paren_list(cur, select_opt)
        cur.sp()
        # RFC 5258: RECURSIVEMATCH alone is an error.
        if opts.get("select_recursive_match") and len(opts) == 1:
            raise ParseError("RECURSIVEMATCH needs another selection option")
    reference = _name(cur, cur.astring())
    cur.sp()
    patterns: list[str] = []
    if cur.peek() == ord("("):
        extended = True
        _paren_list(cur, lambda: patterns.append(_pattern(cur)))
        if not patterns:
            raise ParseError("Empty pattern list")
    else:
        patterns.append(_pattern(cur))
    if cur.accept(b" "):
        if cur.keyword() != "RETURN":
            raise ParseError("Expected RETURN")
        cur.sp()
        extended = True

        def return_opt() -> None:
            word = cur.keyword()
            key = {
                "SUBSCRIBED": "return_subscribed",
                "CHILDREN": "return_children",
                "SPECIAL-USE": "return_special_use",
                "MYRIGHTS": "return_myrights",
            }.get(word)
            if key is not None:
                opts[key] = True
            elif word == "STATUS":
                cur.sp()
                opts["return_status"] = parse_status_items(cur)
            else:
                raise ParseError("Unknown LIST return option")

        _paren_list(cur, return_opt)
    return c.List(tag, reference, tuple(patterns), extended=extended, **opts)  # type: ignore[arg-type]


def _lsub(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    reference = _name(cur, cur.astring())
    cur.sp()
    return c.Lsub(tag, reference, _pattern(cur))


def _status(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    return c.Status(tag, mailbox, parse_status_items(cur))


def _append(cur: Cursor, tag: str) -> c.Command:
    """RFC 3501 APPEND, RFC 3502 MULTIAPPEND (``1*append-message``), RFC 4469
    CATENATE, RFC 6855 ``UTF8 (literal8)`` and RFC 3516 literal8."""
    cur.sp()
    mailbox = _mailbox(cur)
    messages: list[c.AppendMessage] = []
    while cur.accept(b" "):
        messages.append(_append_message(cur))
        if len(messages) > MAX_APPEND_MESSAGES:
            raise ParseError("Too many messages in one APPEND")
    if not messages:
        raise ParseError("Expected the message as a literal")
    return c.Append(tag, mailbox, tuple(messages))


def _append_message(cur: Cursor) -> c.AppendMessage:
    """``append-opts SP append-data``."""
    flags: tuple[str, ...] = ()
    internal_date = None
    if cur.peek() == ord("("):
        flags = parse_flag_list(cur)
        cur.sp()
    if cur.peek() == 0x22:
        internal_date = parse_date_time(cur)
        cur.sp()
    if cur.at_literal():
        literal = _message_literal(cur)
        return c.AppendMessage(flags, internal_date, literal.data, literal.binary)
    if cur.accept_word(b"UTF8"):
        literal = _utf8_literal(cur)
        return c.AppendMessage(flags, internal_date, literal.data, literal.binary, utf8=True)
    if cur.accept_word(b"CATENATE"):
        cur.sp()
        parts: list[c.CatenatePart] = []

        def part() -> None:
            parts.append(_cat_part(cur))
            if len(parts) > MAX_CATENATE_PARTS:
                raise ParseError("Too many CATENATE parts")

        _paren_list(cur, part)
        if not parts:
            raise ParseError("Empty CATENATE list")
        return c.AppendMessage(flags, internal_date, catenate=tuple(parts))
    raise ParseError("Expected the message as a literal")


def _message_literal(cur: Cursor) -> Literal:
    """Message data: a literal, or a literal8 (RFC 3516), the only place NUL
    may appear (RFC 3501 CHAR8 excludes it)."""
    literal = cur.take_literal(binary_ok=True)
    if not literal.binary and b"\x00" in literal.data:
        raise ParseError("NUL in a literal (binary data goes in a literal8 ~{n})")
    return literal


def _utf8_literal(cur: Cursor) -> Literal:
    """RFC 6855 ``"UTF8" SP "(" literal8 ")"`` (a plain literal is taken too)."""
    cur.sp()
    cur.expect(b"(")
    if not cur.at_literal():
        raise ParseError("Expected a literal8")
    literal = _message_literal(cur)
    cur.expect(b")")
    return literal


def _cat_part(cur: Cursor) -> c.CatenatePart:
    """RFC 4469 ``cat-part = text-literal / url``, RFC 6855 ``=/ utf8-literal``."""
    if cur.accept_word(b"TEXT"):
        cur.sp()
        if not cur.at_literal():
            raise ParseError("Expected a literal after TEXT")
        literal = _message_literal(cur)
        return c.CatenateText(literal.data, literal.binary)
    if cur.accept_word(b"URL"):
        cur.sp()
        raw = cur.astring()
        if len(raw) > MAX_URL_LENGTH:
            raise ParseError("URL too long")
        return c.CatenateUrl(raw.decode("latin-1"))
    if cur.accept_word(b"UTF8"):
        literal = _utf8_literal(cur)
        return c.CatenateText(literal.data, literal.binary, utf8=True)
    raise ParseError("Expected TEXT, URL or UTF8 in CATENATE")


def _enable(cur: Cursor, tag: str) -> c.Command:
    caps: list[str] = []
    while cur.accept(b" "):
        caps.append(cur.keyword())
        if len(caps) > MAX_ENABLE:
            raise ParseError("Too many capabilities")
    if not caps:
        raise ParseError("ENABLE needs a capability")
    return c.Enable(tag, tuple(dict.fromkeys(caps)))


_EVENT_NAMES = {name.upper(): name for name in c.NOTIFY_EVENTS}


def _notify(cur: Cursor, tag: str) -> c.Command:
    """RFC 5465 8, with the composition rules of sections 5 and 6.1 (a
    breach is BAD); unknown events pass, for the handler's BADEVENT (NO)."""
    cur.sp()
    if cur.accept_word(b"NONE"):
        return c.Notify(tag)
    if not cur.accept_word(b"SET"):
        raise ParseError("Expected NOTIFY SET or NOTIFY NONE")
    cur.sp()
    status = cur.accept_word(b"STATUS")
    if status:
        cur.sp()
    groups: list[c.NotifyGroup] = []
    names = 0
    while True:
        group = _notify_group(cur)
        names += len(group.mailboxes)
        groups.append(group)
        if len(groups) > MAX_NOTIFY_GROUPS or names > MAX_NOTIFY_NAMES:
            raise ParseError("Too many NOTIFY event groups or mailboxes")
        if not cur.accept(b" "):
            break
    if sum(1 for g in groups if g.filter.selected) > 1:
        raise ParseError("Only one of SELECTED and SELECTED-DELAYED")
    return c.Notify(tag, tuple(groups), status)


def _notify_group(cur: Cursor) -> c.NotifyGroup:
    cur.expect(b"(")
    word = cur.keyword()
    try:
        kind = c.NotifyFilter(word)
    except ValueError:
        raise ParseError("Unknown NOTIFY mailbox filter") from None
    mailboxes: list[str] = []
    if kind in (c.NotifyFilter.SUBTREE, c.NotifyFilter.MAILBOXES):
        cur.sp()
        if cur.peek() == ord("("):
            _paren_list(cur, lambda: mailboxes.append(_mailbox(cur)))
            if not mailboxes:
                raise ParseError("Empty mailbox list")
        else:
            mailboxes.append(_mailbox(cur))
        if len(mailboxes) > MAX_NOTIFY_NAMES:
            raise ParseError("Too many mailboxes")
    cur.sp()
    events: list[str] = []
    fetch: tuple[c.FetchAttribute, ...] = ()
    if not cur.accept_word(b"NONE"):
        def event() -> None:
            nonlocal fetch
            word = cur.atom().upper()
            name = _EVENT_NAMES.get(word, word)
            events.append(name)
            if name == "MessageNew" and cur.peek_upper(2) == b" (":
                cur.sp()
                atts: list[c.FetchAttribute] = []
                _paren_list(cur, lambda: atts.append(parse_fetch_att(cur)))
                fetch = tuple(dict.fromkeys(atts))

        _paren_list(cur, event)
        if not events:
            raise ParseError("Empty event list (use NONE)")
    cur.expect(b")")
    present = set(events)
    # RFC 5465 5: MessageNew and MessageExpunge together, and FlagChange or
    # AnnotationChange only with both.
    if ("MessageNew" in present) != ("MessageExpunge" in present):
        raise ParseError("MessageNew and MessageExpunge go together")
    if present & {"FlagChange", "AnnotationChange"} and "MessageNew" not in present:
        raise ParseError("FlagChange needs MessageNew and MessageExpunge")
    # RFC 5465 6.1: only message events for the selected mailbox.
    if kind.selected and present & (set(c.NOTIFY_EVENTS) - c.MESSAGE_EVENTS):
        raise ParseError("Only message events with SELECTED")
    # MessageNew's FETCH attributes are for the selected mailbox (5.2): the
    # others get a STATUS. Dovecot answers BAD as well.
    if fetch and not kind.selected:
        raise ParseError("FETCH attributes only with SELECTED")
    return c.NotifyGroup(kind, tuple(dict.fromkeys(mailboxes)), tuple(dict.fromkeys(events)),
                         fetch)


def _compress(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    return c.Compress(tag, cur.keyword())


def _setacl(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    identifier = _text(cur)
    cur.sp()
    rights = _text(cur)
    return c.SetAcl(tag, mailbox, identifier, rights)


def _getquota(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    return c.GetQuota(tag, _name(cur, cur.astring()))


def _setquota(cur: Cursor, tag: str) -> c.Command:
    cur.sp()
    root = _name(cur, cur.astring())
    cur.sp()
    limits: list[tuple[str, int]] = []

    def resource() -> None:
        name = cur.keyword()
        cur.sp()
        limits.append((name, cur.number64()))

    _paren_list(cur, resource)
    return c.SetQuota(tag, root, tuple(limits))


# ----------------------------------------------------------------- selected


def _expunge(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    if uid:
        cur.sp()
        return c.Expunge(tag, True, parse_sequence_set(cur))
    return c.Expunge(tag)


_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "CONTEXT",
                             "UPDATE"})


def _return_options(cur: Cursor) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """RFC 4731 ``RETURN (...)`` with RFC 5267 PARTIAL, CONTEXT and UPDATE;
    after RETURN and a space. ``RETURN ()`` means ALL (RFC 4731 3.1)."""
    opts: list[str] = []
    partial: tuple[int, int] | None = None

    def opt() -> None:
        nonlocal partial
        word = cur.keyword()
        if word not in _RETURN_OPTIONS:
            raise ParseError("Unknown SEARCH return option")
        if word == "PARTIAL":
            if partial is not None:
                raise ParseError("PARTIAL given twice")
            cur.sp()
            low = cur.nz_number()
            cur.expect(b":")
            high = cur.nz_number()
            partial = (min(low, high), max(low, high))
        opts.append(word)

    _paren_list(cur, opt)
    return tuple(dict.fromkeys(opts)) or ("ALL",), partial


def _search(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    charset: str | None = None
    if cur.accept_word(b"RETURN"):
        cur.sp()
        return_options, partial = _return_options(cur)
        cur.sp()
    if cur.accept_word(b"CHARSET"):
        cur.sp()
        charset = _charset(cur)
        cur.sp()
    key = SearchParser(cur, search_decoder(charset)).program()
    return c.Search(tag, key, charset, uid, return_options, partial)


def _charset(cur: Cursor) -> str:
    raw = cur.astring()
    if any(ch >= 0x80 or ch < 0x21 for ch in raw):
        raise ParseError("Invalid charset name")
    return raw.decode("ascii").upper()


def _sort(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    if cur.accept_word(b"RETURN"):
        cur.sp()
        return_options, partial = _return_options(cur)
        cur.sp()
    criteria: list[c.SortCriterion] = []
    reverse = False

    def criterion() -> None:
        nonlocal reverse
        word = cur.keyword()
        if word == "REVERSE":
            if reverse:
                raise ParseError("REVERSE given twice")
            reverse = True
            cur.sp()
            word = cur.keyword()
        try:
            key = c.SortKey(word)
        except ValueError:
            raise ParseError("Unknown sort criterion") from None
        criteria.append(c.SortCriterion(key, reverse))
        reverse = False

    _paren_list(cur, criterion)
    if not criteria:
        raise ParseError("Empty sort criteria")
    cur.sp()
    charset = _charset(cur)
    cur.sp()
    key = SearchParser(cur, search_decoder(charset)).program()
    # A key given again (reversed or not) cannot change the order: its ties
    # are equal on it. Only the first of each is kept, so a line of 8,000
    # criteria costs at most one sort per kind of key (found by review: each
    # was a full sort of the folder).
    seen: set[c.SortKey] = set()
    kept = []
    for crit in criteria:
        if crit.key not in seen:
            seen.add(crit.key)
            kept.append(crit)
    return c.Sort(tag, tuple(kept), charset, key, uid, return_options, partial)


def _cancel_update(cur: Cursor, tag: str) -> c.Command:
    """RFC 5267 4.3.5 ``CANCELUPDATE 1*(SP quoted)``: the tags of searching
    commands, as quoted strings."""
    tags: list[str] = []
    while cur.accept(b" "):
        raw = cur.quoted()
        if not raw or not raw.isascii():
            raise ParseError("Invalid tag in CANCELUPDATE")
        tags.append(raw.decode("ascii"))
    if not tags:
        raise ParseError("CANCELUPDATE needs at least one tag")
    return c.CancelUpdate(tag, tuple(dict.fromkeys(tags)))


def _thread(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    try:
        algorithm = c.ThreadAlgorithm(cur.keyword())
    except ValueError:
        raise ParseError("Unknown threading algorithm") from None
    cur.sp()
    charset = _charset(cur)
    cur.sp()
    key = SearchParser(cur, search_decoder(charset)).program()
    return c.Thread(tag, algorithm, charset, key, uid)


def _fetch(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    seqset = parse_sequence_set(cur)
    cur.sp()
    atts = parse_fetch_atts(cur)
    changed_since: int | None = None
    vanished = False
    if cur.accept(b" "):

        def modifier() -> None:
            nonlocal changed_since, vanished
            word = cur.keyword()
            if word == "CHANGEDSINCE":
                cur.sp()
                changed_since = cur.number64()
            elif word == "VANISHED":
                vanished = True
            else:
                raise ParseError("Unknown FETCH modifier")

        _paren_list(cur, modifier)
        # RFC 7162 3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
        if vanished and (not uid or changed_since is None):
            raise ParseError("VANISHED needs UID FETCH and CHANGEDSINCE")
    return c.Fetch(tag, seqset, atts, uid, changed_since, vanished)


_STORE_ITEMS = {
    "FLAGS": (c.StoreMode.REPLACE, False),
    "FLAGS.SILENT": (c.StoreMode.REPLACE, True),
    "+FLAGS": (c.StoreMode.ADD, False),
    "+FLAGS.SILENT": (c.StoreMode.ADD, True),
    "-FLAGS": (c.StoreMode.REMOVE, False),
    "-FLAGS.SILENT": (c.StoreMode.REMOVE, True),
}


def _store(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
    cur.sp()
    seqset = parse_sequence_set(cur)
    cur.sp()
    unchanged_since: int | None = None
    if cur.peek() == ord("("):

        def modifier() -> None:
            nonlocal unchanged_since
            if cur.keyword() != "UNCHANGEDSINCE":
                raise ParseError("Unknown STORE modifier")
            cur.sp()
            unchanged_since = cur.number64()

        _paren_list(cur, modifier)
        cur.sp()
    item = cur.keyword()
    if item not in _STORE_ITEMS:
        raise ParseError("Invalid STORE item")
    mode, silent = _STORE_ITEMS[item]
    cur.sp()
    if cur.peek() == ord("("):
        flags = parse_flag_list(cur)
    else:
        flag_list = [parse_flag(cur)]
        while cur.accept(b" "):
            flag_list.append(parse_flag(cur))
        flags = tuple(dict.fromkeys(flag_list))
    return c.Store(tag, seqset, mode, silent, flags, uid, unchanged_since)


def _copy_like(cls: type[c.Copy] | type[c.Move]) -> Callable[..., c.Command]:
    def parse(cur: Cursor, tag: str, uid: bool = False) -> c.Command:
        cur.sp()
        seqset = parse_sequence_set(cur)
        cur.sp()
        return cls(tag, seqset, _mailbox(cur), uid)

    return parse


# -------------------------------------------------------------------- tables

_COMMANDS: dict[str, Callable[[Cursor, str], c.Command]] = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout),
    "ID": _id,
    "STARTTLS": _no_args(c.StartTls),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _select(c.Select),
    "EXAMINE": _select(c.Examine),
    "CREATE": _create,
    "DELETE": _mailbox_only(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_only(c.Subscribe),
    "UNSUBSCRIBE": _mailbox_only(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "NAMESPACE": _no_args(c.Namespace),
    "ENABLE": _enable,
    "IDLE": _no_args(c.Idle),
    "NOTIFY": _notify,
    "COMPRESS": _compress,
    "GETACL": _mailbox_only(c.GetAcl),
    "SETACL": _setacl,
    "DELETEACL": _mailbox_identifier(c.DeleteAcl),
    "LISTRIGHTS": _mailbox_identifier(c.ListRights),
    "MYRIGHTS": _mailbox_only(c.MyRights),
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _mailbox_only(c.GetQuotaRoot),
    "SETQUOTA": _setquota,
    "CHECK": _no_args(c.Check),
    "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "SORT": _sort,
    "THREAD": _thread,
    "CANCELUPDATE": _cancel_update,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_like(c.Copy),
    "MOVE": _copy_like(c.Move),
}

# UID EXPUNGE is RFC 4315, UID MOVE RFC 6851.
_UID_COMMANDS: dict[str, Callable[[Cursor, str, bool], c.Command]] = {
    "FETCH": _fetch,
    "STORE": _store,
    "SEARCH": _search,
    "SORT": _sort,
    "THREAD": _thread,
    "COPY": _copy_like(c.Copy),
    "MOVE": _copy_like(c.Move),
    "EXPUNGE": _expunge,
}

KNOWN_COMMANDS = frozenset(_COMMANDS) | {"UID"}
