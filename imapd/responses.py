"""Every IMAP response the server sends but the tagged completion: strings,
flag lists, dates, number sets, the typed catalogue of response codes, and
the untagged data lines (RFC 3501 section 7 and the extensions' responses).

Everything returns ``bytes`` ready for the wire (RFC 3501 section 9 response
grammar), CRLF included for whole lines. The choice between atom, quoted
string and literal is made here only: strings go in the cheapest safe form,
a literal when they hold 8-bit octets, CR/LF or NUL; message header strings
(ENVELOPE, BODYSTRUCTURE) by the stricter `istring`/`nstring`; mailbox names
are always quoted (modified UTF-7, or UTF-8 after ENABLE UTF8=ACCEPT).
Tagged completions and their texts are `imapd.errors.Reply` (the one
catalogue of NO/BAD answers), whose response codes come from here. Handlers
do not format response lines themselves: they call the builders below.

The builders on the hot paths (`fetch`, `fetch_flags`, `flag_list`,
`exists`, `expunge`) do the same work as the inline formatting they
replaced, no intermediate object more (a FLAGS list is cached as bytes).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from imapd.parser import mutf7
from imapd.parser.tokens import ASTRING_CHARS

NIL = b"NIL"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MAX_QUOTED = 4096  # longer strings go as literals: easier on clients' line buffers

Text = str | bytes


def _bytes(value: Text) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


# ------------------------------------------------------------------ strings


def _quotable(data: bytes) -> bool:
    # RFC 3501 QUOTED-CHAR: 7-bit TEXT-CHAR (no NUL, CR, LF).
    return len(data) <= MAX_QUOTED and all(0 < c < 0x80 and c not in (10, 13) for c in data)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def quoted(data: Text) -> bytes:
    """A quoted string; the caller guarantees it is quotable (else use ``string``)."""
    raw = _bytes(data)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nquoted(data: Text | None) -> bytes:
    """``NIL`` or a quoted string (server-chosen 7-bit or UTF-8 text)."""
    return NIL if data is None else quoted(data)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7, quoted; UTF-8, quoted, to
    a session that enabled UTF8=ACCEPT (RFC 6855 3: no modified UTF-7 then).
    Names never hold control characters (the parser and the store refuse
    them), so a quoted string always fits."""
    return quoted(name if utf8 else mutf7.encode(name))


def string(value: Text) -> bytes:
    """``string``: quoted when possible, else a literal."""
    raw = _bytes(value)
    return quoted(raw) if _quotable(raw) else literal(raw)


def astring(value: Text) -> bytes:
    """``astring``: a bare atom when unambiguous (never ``NIL``), else ``string``."""
    raw = _bytes(value)
    if raw and raw.upper() != NIL and all(c in ASTRING_CHARS for c in raw):
        return raw
    return string(raw)


# Strings of ENVELOPE and BODYSTRUCTURE: raw header octets (decoded as
# latin-1) written back as those octets. Stricter than `string`, as they come
# from any sender: quoted only when printable 7-bit text, and a NUL, which
# not even a literal may hold (RFC 3501 9, CHAR8), dropped.
_UNSAFE = re.compile(rb"[^\x20-\x7e]")


def istring(value: bytes) -> bytes:
    """A message's string: quoted when possible, else a synchronising literal."""
    if len(value) < 1024 and _UNSAFE.search(value) is None:
        if b"\\" in value or b'"' in value:
            value = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + value + b'"'
    value = value.replace(b"\x00", b"")
    return b"{%d}\r\n" % len(value) + value


def nstring(value: str | None) -> bytes:
    """``NIL`` or `istring` of a header value held as latin-1 text."""
    if value is None:
        return NIL
    if len(value) < 1024 and value.isascii() and value.isprintable():
        # fast path: printable ASCII is always a quoted string
        if "\\" in value or '"' in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return b'"' + value.encode("ascii") + b'"'
    return istring(value.encode("latin-1", "replace"))


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen $Label1)``; system flags first, then keywords, stable order."""
    if isinstance(flags, frozenset):
        return _flag_set(flags)
    return _flag_list(set(flags))


@functools.lru_cache(maxsize=4096)
def _flag_set(flags: frozenset[str]) -> bytes:
    # Few distinct flag sets per mailbox: FLAGS for 100,000 messages formats
    # a handful of them.
    return _flag_list(flags)


def _flag_list(flags: Iterable[str]) -> bytes:
    ordered = sorted(flags, key=lambda f: (not f.startswith("\\"), f.lower()))
    return b"(" + " ".join(ordered).encode("utf-8") + b")"


def number(value: int) -> bytes:
    return b"%d" % value


# -------------------------------------------------------------------- dates


def format_date_time(moment: datetime) -> str:
    """RFC 3501 date-time without quotes: ``27-Nov-2026 13:00:00 +0000``.

    Naive datetimes are taken as UTC. Month names never depend on the locale.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f"{moment.day:02d}-{MONTHS[moment.month - 1]}-{moment.year:04d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


def internal_date(value: datetime) -> str:
    """``"27-Nov-2026 13:00:00 +0000"``, quotes included (FETCH INTERNALDATE)."""
    # Not strftime("%b"): month names follow LC_TIME, and a server started
    # under fr_FR would send "27-nov.-2026" that no client can parse.
    return '"' + format_date_time(value) + '"'


# ---------------------------------------------------------------- number sets


def sequence_set(values: Iterable[int], *, sort: bool = True) -> bytes:
    """``1:3,5,9:10``. With sort=False the order is kept and only ascending runs
    merge: COPYUID/APPENDUID pair source and destination UIDs by position."""
    seq = sorted(set(values)) if sort else list(values)
    if not seq:
        raise ValueError("an IMAP sequence set cannot be empty")
    parts: list[bytes] = []
    start = prev = seq[0]
    for value in seq[1:]:
        if value == prev + 1:
            prev = value
            continue
        parts.append(_span(start, prev))
        start = prev = value
    parts.append(_span(start, prev))
    return b",".join(parts)


def _span(low: int, high: int) -> bytes:
    return b"%d" % low if low == high else b"%d:%d" % (low, high)


# ------------------------------------------------------------ response codes


class Code(enum.Enum):
    """RFC 3501, 4315, 5530, 7162, 9208, 4978, 6154, 3516, 5182, 5267 response codes."""

    ALERT = "ALERT"
    BADCHARSET = "BADCHARSET"
    CAPABILITY = "CAPABILITY"
    PARSE = "PARSE"
    PERMANENTFLAGS = "PERMANENTFLAGS"
    READ_ONLY = "READ-ONLY"
    READ_WRITE = "READ-WRITE"
    TRYCREATE = "TRYCREATE"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    # RFC 4315 UIDPLUS
    APPENDUID = "APPENDUID"
    COPYUID = "COPYUID"
    UIDNOTSTICKY = "UIDNOTSTICKY"
    # RFC 7162 CONDSTORE / QRESYNC
    HIGHESTMODSEQ = "HIGHESTMODSEQ"
    NOMODSEQ = "NOMODSEQ"
    MODIFIED = "MODIFIED"
    CLOSED = "CLOSED"
    # RFC 7889 / RFC 4469 / RFC 9208
    TOOBIG = "TOOBIG"
    OVERQUOTA = "OVERQUOTA"
    # RFC 5530
    UNAVAILABLE = "UNAVAILABLE"
    AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
    AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"
    EXPIRED = "EXPIRED"
    PRIVACYREQUIRED = "PRIVACYREQUIRED"
    CONTACTADMIN = "CONTACTADMIN"
    NOPERM = "NOPERM"
    INUSE = "INUSE"
    EXPUNGEISSUED = "EXPUNGEISSUED"
    CORRUPTION = "CORRUPTION"
    SERVERBUG = "SERVERBUG"
    CLIENTBUG = "CLIENTBUG"
    CANNOT = "CANNOT"
    LIMIT = "LIMIT"
    ALREADYEXISTS = "ALREADYEXISTS"
    NONEXISTENT = "NONEXISTENT"
    # RFC 4978, RFC 6154, RFC 3516
    COMPRESSIONACTIVE = "COMPRESSIONACTIVE"
    USEATTR = "USEATTR"
    UNKNOWN_CTE = "UNKNOWN-CTE"
    # RFC 9051
    HASCHILDREN = "HASCHILDREN"
    # RFC 5267 CONTEXT=SEARCH / CONTEXT=SORT
    NOUPDATE = "NOUPDATE"
    # RFC 4469 CATENATE
    BADURL = "BADURL"
    # RFC 5465 NOTIFY
    BADEVENT = "BADEVENT"
    NOTIFICATIONOVERFLOW = "NOTIFICATIONOVERFLOW"


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """``[CODE args]``. Build with the constants and functions below."""

    code: Code
    args: bytes = b""

    def render(self) -> bytes:
        name = self.code.value.encode("ascii")
        return b"[" + name + (b" " + self.args if self.args else b"") + b"]"

    def text(self) -> str:
        """The code without its brackets (for logs and tests; replies hold the code itself)."""
        return self.render()[1:-1].decode("ascii")


# Codes without arguments.
ALERT = ResponseCode(Code.ALERT)
PARSE = ResponseCode(Code.PARSE)
READ_ONLY = ResponseCode(Code.READ_ONLY)
READ_WRITE = ResponseCode(Code.READ_WRITE)
TRYCREATE = ResponseCode(Code.TRYCREATE)
UIDNOTSTICKY = ResponseCode(Code.UIDNOTSTICKY)
NOMODSEQ = ResponseCode(Code.NOMODSEQ)
CLOSED = ResponseCode(Code.CLOSED)
TOOBIG = ResponseCode(Code.TOOBIG)
OVERQUOTA = ResponseCode(Code.OVERQUOTA)
UNAVAILABLE = ResponseCode(Code.UNAVAILABLE)
AUTHENTICATIONFAILED = ResponseCode(Code.AUTHENTICATIONFAILED)
AUTHORIZATIONFAILED = ResponseCode(Code.AUTHORIZATIONFAILED)
EXPIRED = ResponseCode(Code.EXPIRED)
PRIVACYREQUIRED = ResponseCode(Code.PRIVACYREQUIRED)
CONTACTADMIN = ResponseCode(Code.CONTACTADMIN)
NOPERM = ResponseCode(Code.NOPERM)
INUSE = ResponseCode(Code.INUSE)
EXPUNGEISSUED = ResponseCode(Code.EXPUNGEISSUED)
CORRUPTION = ResponseCode(Code.CORRUPTION)
SERVERBUG = ResponseCode(Code.SERVERBUG)
CLIENTBUG = ResponseCode(Code.CLIENTBUG)
CANNOT = ResponseCode(Code.CANNOT)
LIMIT = ResponseCode(Code.LIMIT)
ALREADYEXISTS = ResponseCode(Code.ALREADYEXISTS)
NONEXISTENT = ResponseCode(Code.NONEXISTENT)
COMPRESSIONACTIVE = ResponseCode(Code.COMPRESSIONACTIVE)
USEATTR = ResponseCode(Code.USEATTR)
UNKNOWN_CTE = ResponseCode(Code.UNKNOWN_CTE)
HASCHILDREN = ResponseCode(Code.HASCHILDREN)
NOTIFICATIONOVERFLOW = ResponseCode(Code.NOTIFICATIONOVERFLOW)


def badcharset(charsets: Sequence[str] = ()) -> ResponseCode:
    return ResponseCode(Code.BADCHARSET, paren(astring(c) for c in charsets) if charsets else b"")


def badevent(events: Iterable[str]) -> ResponseCode:
    """RFC 5465 5.8 ``[BADEVENT (events supported)]``."""
    return ResponseCode(Code.BADEVENT, paren(e.encode("ascii") for e in events))


def badurl(url: str) -> ResponseCode:
    """RFC 4469 ``[BADURL url]``; the caller has made `url` safe for resp-text."""
    return ResponseCode(Code.BADURL, url.encode("ascii"))


def capability_code(capabilities: Iterable[str]) -> ResponseCode:
    return ResponseCode(Code.CAPABILITY, " ".join(capabilities).encode("ascii"))


def permanentflags(flags: Iterable[str], *, keywords_allowed: bool = True,
                   sort: bool = True) -> ResponseCode:
    """``[PERMANENTFLAGS (\\Answered ... \\*)]``: ``\\*`` when clients may create keywords.
    With sort=False the flags keep the caller's order (as FLAGS gave them)."""
    body = flag_list(flags) if sort else b"(" + " ".join(flags).encode("utf-8") + b")"
    if keywords_allowed:
        body = body[:-1] + (b" " if len(body) > 2 else b"") + b"\\*)"
    return ResponseCode(Code.PERMANENTFLAGS, body)


def uidnext(value: int) -> ResponseCode:
    return ResponseCode(Code.UIDNEXT, number(value))


def uidvalidity(value: int) -> ResponseCode:
    return ResponseCode(Code.UIDVALIDITY, number(value))


def unseen(seq: int) -> ResponseCode:
    return ResponseCode(Code.UNSEEN, number(seq))


def highestmodseq(value: int) -> ResponseCode:
    return ResponseCode(Code.HIGHESTMODSEQ, number(value))


def modified(values: Iterable[int]) -> ResponseCode:
    """RFC 7162 ``[MODIFIED set]`` (UIDs for UID STORE, else sequence numbers)."""
    return ResponseCode(Code.MODIFIED, sequence_set(values))


def appenduid(uidvalidity_value: int, uids: Sequence[int]) -> ResponseCode:
    return ResponseCode(
        Code.APPENDUID, number(uidvalidity_value) + b" " + sequence_set(uids, sort=False)
    )


def copyuid(uidvalidity_value: int, source: Sequence[int], dest: Sequence[int]) -> ResponseCode:
    """RFC 4315 ``[COPYUID v src dst]``: sets kept in corresponding order."""
    if len(source) != len(dest):
        raise ValueError("COPYUID source and destination differ in length")
    return ResponseCode(
        Code.COPYUID,
        number(uidvalidity_value)
        + b" "
        + sequence_set(source, sort=False)
        + b" "
        + sequence_set(dest, sort=False),
    )


# ------------------------------------------------------- untagged responses
# `name` arguments are mailbox names as `mailbox` encodes them: a LIST
# answer names each folder up to three times and encodes it once.


def untagged_ok(code: ResponseCode | None, text: str) -> bytes:
    """``* OK [code] text`` (RFC 3501 7.1.1)."""
    head = b"* OK " + code.render() + b" " if code is not None else b"* OK "
    return head + text.encode() + b"\r\n"


def untagged_no(code: ResponseCode | None, text: str) -> bytes:
    """``* NO [code] text`` (RFC 3501 7.1.2)."""
    head = b"* NO " + code.render() + b" " if code is not None else b"* NO "
    return head + text.encode() + b"\r\n"


def bye(text: str) -> bytes:
    """``* BYE text`` (RFC 3501 7.1.5)."""
    return b"* BYE " + text.encode() + b"\r\n"


def continuation(text: bytes) -> bytes:
    """``+ text`` (RFC 3501 7.5): more from the client is awaited."""
    return b"+ " + text + b"\r\n"


def capability(capabilities: Iterable[str]) -> bytes:
    return b"* CAPABILITY " + " ".join(capabilities).encode("ascii") + b"\r\n"


def enabled(capabilities: Iterable[str]) -> bytes:
    """RFC 5161 ``* ENABLED`` with what this command newly enabled."""
    return b"* ENABLED" + b"".join(b" " + c.encode("ascii") for c in capabilities) + b"\r\n"


def id_(fields: Iterable[tuple[str, str | None]]) -> bytes:
    """RFC 2971 ``* ID ("name" "value" ...)``."""
    return b"* ID " + paren(quoted(k) + b" " + nquoted(v) for k, v in fields) + b"\r\n"


def namespace(personal: Sequence[tuple[str, str]], others: Sequence[tuple[str, str]],
              shared: Sequence[tuple[str, str]]) -> bytes:
    """RFC 2342 ``* NAMESPACE``: each kind a list of (prefix, separator), or NIL."""

    def kind(spaces: Sequence[tuple[str, str]]) -> bytes:
        if not spaces:
            return NIL
        return paren(b"(" + quoted(prefix) + b" " + quoted(sep) + b")" for prefix, sep in spaces)

    return b"* NAMESPACE " + kind(personal) + b" " + kind(others) + b" " + kind(shared) + b"\r\n"


# Mailboxes (RFC 3501 7.2, RFC 5258, RFC 5465, RFC 4314, RFC 9208).

CHILDINFO_SUBSCRIBED = b' ("CHILDINFO" ("SUBSCRIBED"))'  # RFC 5258 3.5 extended data


def oldname(name: bytes) -> bytes:
    """RFC 5465 5.4 extended data of a LIST telling a rename."""
    return b' ("OLDNAME" (' + name + b"))"


def list_(attributes: Iterable[str], separator: str, name: bytes, extra: bytes = b"") -> bytes:
    """``* LIST (attrs) "/" name`` and the extended data `extra` (its leading
    space included: `CHILDINFO_SUBSCRIBED`, `oldname`)."""
    return (b"* LIST (" + " ".join(attributes).encode("ascii") + b") " + quoted(separator)
            + b" " + name + extra + b"\r\n")


def lsub(attributes: Iterable[str], separator: str, name: bytes) -> bytes:
    return (b"* LSUB (" + " ".join(attributes).encode("ascii") + b") " + quoted(separator)
            + b" " + name + b"\r\n")


def status(name: bytes, items: Iterable[tuple[str, int]]) -> bytes:
    """``* STATUS name (MESSAGES 3 UIDNEXT 9 ...)``, items in the given order."""
    body = " ".join(f"{item} {value}" for item, value in items).encode("ascii")
    return b"* STATUS " + name + b" (" + body + b")\r\n"


def myrights(name: bytes, rights: str) -> bytes:
    return b"* MYRIGHTS " + name + b" " + rights.encode("ascii") + b"\r\n"


def acl(name: bytes, entries: Iterable[tuple[str, str]]) -> bytes:
    """``* ACL name identifier rights ...`` (identifiers are the server's own)."""
    body = b"".join(b" " + quoted(who) + b" " + rights.encode("ascii") for who, rights in entries)
    return b"* ACL " + name + body + b"\r\n"


def listrights(name: bytes, identifier: str, required: str, optional: Iterable[str]) -> bytes:
    """``* LISTRIGHTS``. The identifier is the client's, possibly a literal
    with CR LF in it: `string` answers with a literal then."""
    return (b"* LISTRIGHTS " + name + b" " + string(identifier) + b" " + quoted(required)
            + b" " + " ".join(optional).encode("ascii") + b"\r\n")


def quota(root: str, resources: Iterable[tuple[str, int, int]]) -> bytes:
    """RFC 9208 ``* QUOTA "root" (STORAGE used limit ...)``."""
    body = " ".join(f"{res} {used} {limit}" for res, used, limit in resources).encode("ascii")
    return b"* QUOTA " + quoted(root) + b" (" + body + b")\r\n"


def quotaroot(name: bytes, roots: Iterable[str]) -> bytes:
    return b"* QUOTAROOT " + name + b"".join(b" " + quoted(r) for r in roots) + b"\r\n"


# The selected mailbox (RFC 3501 7.3, 7.4; RFC 7162 VANISHED).


def exists(count: int) -> bytes:
    return b"* %d EXISTS\r\n" % count


def recent(count: int) -> bytes:
    return b"* %d RECENT\r\n" % count


def expunge(seq: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % seq


def vanished(uids: Iterable[int], *, earlier: bool = False) -> bytes:
    """RFC 7162 ``* VANISHED [(EARLIER)] uid-set``."""
    head = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    return head + sequence_set(uids) + b"\r\n"


def flags(flag_names: Iterable[str]) -> bytes:
    """``* FLAGS (...)``, in the given order."""
    return b"* FLAGS (" + " ".join(flag_names).encode("utf-8") + b")\r\n"


def fetch(seq: int, items: Iterable[bytes]) -> bytes:
    """``* 12 FETCH (items)``; each item is already ``NAME value`` (below)."""
    return b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"


# FETCH data items (RFC 3501 7.4.2, RFC 7162 3.1, RFC 3516 4). The numeric
# ones are formats (``UID_ITEM % uid``): the FETCH loop applies them per
# message without a call.
UID_ITEM = b"UID %d"
MODSEQ_ITEM = b"MODSEQ (%d)"
RFC822_SIZE_ITEM = b"RFC822.SIZE %d"
SIZE_ITEM = b"%s %d"  # BINARY.SIZE[part]: label and size


def flags_item(flag_names: Iterable[str]) -> bytes:
    """``FLAGS (\\Seen $Label1)``, cached whole for a frozenset (see `flag_list`)."""
    if isinstance(flag_names, frozenset):
        return _flags_item(flag_names)
    return b"FLAGS " + _flag_list(set(flag_names))


@functools.lru_cache(maxsize=4096)
def _flags_item(flag_names: frozenset[str]) -> bytes:
    return b"FLAGS " + _flag_set(flag_names)


def internaldate_item(moment: datetime) -> bytes:
    return b"INTERNALDATE " + internal_date(moment).encode("ascii")


def envelope_item(envelope: bytes) -> bytes:
    return b"ENVELOPE " + envelope


def bodystructure_item(structure: bytes, extensible: bool) -> bytes:
    """``BODYSTRUCTURE (...)``, or ``BODY (...)`` without the extension data."""
    return (b"BODYSTRUCTURE " if extensible else b"BODY ") + structure


def section_item(label: bytes, data: bytes) -> bytes:
    """``BODY[...] {n}``, ``RFC822.TEXT {n}``...: message octets as a literal."""
    return label + b" " + literal(data)


def binary_item(label: bytes, data: bytes) -> bytes:
    """RFC 3516 ``BINARY[...]``: a literal8 (``~{n}``) when the data holds a
    NUL, which no other literal may."""
    return label + (b" ~" if b"\x00" in data else b" ") + literal(data)


def fetch_flags(seq: int, uid: int | None, flag_names: frozenset[str] | None,
                modseq: int | None) -> bytes:
    """``* 12 FETCH (UID 7 FLAGS (...) MODSEQ (9))`` telling a flag change,
    each item left out when None (STORE .SILENT under CONDSTORE has no FLAGS)."""
    items = [UID_ITEM % uid] if uid is not None else []
    if flag_names is not None:
        items.append(flags_item(flag_names))
    if modseq is not None:
        items.append(MODSEQ_ITEM % modseq)
    return b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"


# SEARCH, SORT, THREAD (RFC 3501 7.2.5, RFC 4731, RFC 5256, RFC 5267, RFC 7162).


def _numbers_line(head: bytes, numbers: Iterable[int], modseq: int | None) -> bytes:
    body = b"".join(b" %d" % n for n in numbers)
    tail = b" (MODSEQ %d)" % modseq if modseq is not None else b""
    return head + body + tail + b"\r\n"


def search(numbers: Iterable[int], modseq: int | None = None) -> bytes:
    """``* SEARCH 2 5 (MODSEQ 9)``: MODSEQ when the key named one (RFC 7162 3.1.5)."""
    return _numbers_line(b"* SEARCH", numbers, modseq)


def sort(numbers: Iterable[int], modseq: int | None = None) -> bytes:
    return _numbers_line(b"* SORT", numbers, modseq)


def thread(text: str) -> bytes:
    """``* THREAD (1)(2 3)``; `text` is the thread list (`imapd.sort.render_threads`)."""
    return b"* THREAD" + (b" " + text.encode("ascii") if text else b"") + b"\r\n"


def _tag_correlator(tag: str) -> bytes:
    return b"(TAG " + quoted(tag) + b")"


def esearch(tag: str, uid: bool, options: Sequence[str], partial: tuple[int, int] | None,
            numbers: Sequence[int], *, ordered: bool = False,
            modseq: int | None = None) -> bytes:
    """RFC 4731 / RFC 5267 ``* ESEARCH (TAG "t") [UID] ...`` for `numbers`
    (in sequence order, or in sort order when `ordered`: then MIN and MAX
    are the first and last, ALL and PARTIAL keep the order)."""
    out = [b"* ESEARCH " + _tag_correlator(tag)]
    if uid:
        out.append(b"UID")
    if numbers:
        if "MIN" in options:
            out.append(b"MIN %d" % (numbers[0] if ordered else min(numbers)))
        if "MAX" in options:
            out.append(b"MAX %d" % (numbers[-1] if ordered else max(numbers)))
    if "COUNT" in options:
        out.append(b"COUNT %d" % len(numbers))
    if numbers and "ALL" in options:
        out.append(b"ALL " + sequence_set(numbers, sort=not ordered))
    if partial is not None:
        low, high = partial
        window = numbers[low - 1 : high]
        out.append(b"PARTIAL (%d:%d " % (low, high)
                   + (sequence_set(window, sort=not ordered) if window else NIL) + b")")
    if modseq is not None:
        out.append(b"MODSEQ %d" % modseq)
    return b" ".join(out) + b"\r\n"


def esearch_update(tag: str, uid: bool, item: str, pairs: Iterable[tuple[int, Sequence[int]]],
                   *, ordered: bool) -> bytes:
    """RFC 5267 4.3 ``* ESEARCH (TAG "t") [UID] ADDTO (pos set ...)`` (or
    REMOVEFROM); a SORT context (`ordered`) keeps each set's order."""
    parts = b" ".join(b"%d " % pos + sequence_set(numbers, sort=not ordered)
                      for pos, numbers in pairs)
    head = b"* ESEARCH " + _tag_correlator(tag) + (b" UID" if uid else b"")
    return head + b" " + item.encode("ascii") + b" (" + parts + b")\r\n"


def noupdate(tag: str, text: str = "Too many updating searches, will not notify") -> bytes:
    """RFC 5267 4.3.1: the untagged refusal of an UPDATE, the other return
    options being honoured."""
    return untagged_no(ResponseCode(Code.NOUPDATE, quoted(tag)), text)
