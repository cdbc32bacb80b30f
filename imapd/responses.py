"""Serialisers for IMAP response data: strings, flag lists, dates, number sets,
and the typed catalogue of response codes.

Everything returns ``bytes`` ready for the wire (RFC 3501 section 9 response
grammar). Strings are sent in the cheapest safe form: atom, quoted string, or a
literal when they hold 8-bit octets, CR/LF or NUL. Tagged completions and their
texts are `imapd.errors.Reply` (the one catalogue of NO/BAD answers); handlers
build data lines with these and `imapd.wire`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

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


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen $Label1)``; system flags first, then keywords, stable order."""
    ordered = sorted(set(flags), key=lambda f: (not f.startswith("\\"), f.lower()))
    return paren(f.encode("utf-8") for f in ordered)


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


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """``[CODE args]``. Build with the constants and functions below."""

    code: Code
    args: bytes = b""

    def render(self) -> bytes:
        name = self.code.value.encode("ascii")
        return b"[" + name + (b" " + self.args if self.args else b"") + b"]"

    def text(self) -> str:
        """The code without its brackets, as `imapd.errors.Reply` holds it."""
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


def badcharset(charsets: Sequence[str] = ()) -> ResponseCode:
    return ResponseCode(Code.BADCHARSET, paren(astring(c) for c in charsets) if charsets else b"")


def capability_code(capabilities: Iterable[str]) -> ResponseCode:
    return ResponseCode(Code.CAPABILITY, " ".join(capabilities).encode("ascii"))


def permanentflags(flags: Iterable[str], *, keywords_allowed: bool = True) -> ResponseCode:
    """``[PERMANENTFLAGS (\\Answered ... \\*)]``: ``\\*`` when clients may create keywords."""
    body = flag_list(flags)
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
