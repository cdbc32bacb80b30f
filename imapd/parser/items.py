"""Grammar of command arguments: sequence sets, flags, FETCH items, SEARCH keys."""

from __future__ import annotations

import re
from collections.abc import Callable

from imapd.parser.commands import (
    FETCH_MACROS,
    DateField,
    DateRelation,
    FetchAttribute,
    FetchBinary,
    FetchBinarySize,
    FetchBodySection,
    FetchBodyStructure,
    FetchEnvelope,
    FetchFlags,
    FetchInternalDate,
    FetchModSeq,
    FetchRfc822,
    FetchRfc822Header,
    FetchRfc822Size,
    FetchRfc822Text,
    FetchUid,
    Partial,
    SearchAll,
    SearchAnd,
    SearchBody,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchLarger,
    SearchModSeq,
    SearchNot,
    SearchOlder,
    SearchOr,
    SearchSeqSet,
    SearchSmaller,
    SearchText,
    SearchUid,
    SearchYounger,
    Section,
    SectionText,
    SeqRange,
    SequenceSet,
    StatusItem,
)
from imapd.parser.dates import parse_date
from imapd.parser.tokens import ATOM_CHARS, DIGITS, Cursor, ParseError, to_text

# ------------------------------------------------------------ sequence sets

MAX_SEQUENCE_RANGES = 10_000  # a set is one line, but keep the work per command bounded

_SEQ_CHARS = DIGITS | frozenset(b"*:,$")


def _seq_number(cur: Cursor) -> int | None:
    if cur.accept(b"*"):
        return None
    return cur.nz_number()


def parse_sequence_set(cur: Cursor) -> SequenceSet:
    """``sequence-set`` or ``$`` (RFC 5182)."""
    if cur.peek() == ord("$"):
        cur.advance()
        return SequenceSet((), saved=True)
    ranges: list[SeqRange] = []
    while True:
        start = _seq_number(cur)
        end = _seq_number(cur) if cur.accept(b":") else start
        ranges.append(SeqRange(start, end))
        if len(ranges) > MAX_SEQUENCE_RANGES:
            raise ParseError("Sequence set too long")
        if not cur.accept(b","):
            break
    nxt = cur.peek()
    if nxt is not None and nxt in _SEQ_CHARS:
        raise ParseError("Invalid sequence set")
    return SequenceSet(tuple(ranges))


def looks_like_sequence_set(cur: Cursor) -> bool:
    c = cur.peek()
    return c is not None and (c in DIGITS or c in b"*$")


# ------------------------------------------------------------------- flags

SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


def parse_flag(cur: Cursor, *, allow_wildcard: bool = False) -> str:
    """``flag``: system flags canonicalised, keywords kept as sent.
    ``\\*`` only where allow_wildcard (PERMANENTFLAGS-style, never from clients)."""
    if cur.accept(b"\\"):
        if allow_wildcard and cur.accept(b"*"):
            return "\\*"
        name = "\\" + cur.atom()
        return SYSTEM_FLAGS.get(name.upper(), name)
    return cur.atom()


def parse_flag_list(cur: Cursor) -> tuple[str, ...]:
    """``"(" [flag *(SP flag)] ")"``, duplicates removed, order kept."""
    cur.expect(b"(")
    flags: list[str] = []
    if not cur.accept(b")"):
        while True:
            flags.append(parse_flag(cur))
            if cur.accept(b")"):
                break
            cur.sp()
    return tuple(dict.fromkeys(flags))


# ---------------------------------------------------------- FETCH items

# Characters of a fetch-att name before "[" / "<" ("BODY.PEEK", "RFC822.SIZE").
_FETCH_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")

_SIMPLE_FETCH: dict[str, FetchAttribute] = {
    "FLAGS": FetchFlags(),
    "UID": FetchUid(),
    "INTERNALDATE": FetchInternalDate(),
    "RFC822.SIZE": FetchRfc822Size(),
    "ENVELOPE": FetchEnvelope(),
    "BODYSTRUCTURE": FetchBodyStructure(extensible=True),
    "BODY": FetchBodyStructure(extensible=False),
    "MODSEQ": FetchModSeq(),
    "RFC822": FetchRfc822(),
    "RFC822.HEADER": FetchRfc822Header(),
    "RFC822.TEXT": FetchRfc822Text(),
}

MAX_HEADER_FIELDS = 1000
# header-fld-name: printable ASCII except ":" (RFC 5322 ftext)
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def _section_part(cur: Cursor) -> tuple[int, ...]:
    parts: list[int] = []
    while cur.peek() is not None and cur.peek() in DIGITS:
        parts.append(cur.nz_number())
        if not cur.accept(b"."):
            # a part path ends the spec, or is followed by ".TEXT" etc.
            return tuple(parts)
        if cur.peek() is None or cur.peek() not in DIGITS:
            # the "." introduced a section-text
            cur.advance(-1)
            return tuple(parts)
    return tuple(parts)


def _header_list(cur: Cursor) -> tuple[str, ...]:
    cur.expect(b"(")
    names: list[str] = []
    while True:
        raw = cur.astring()
        if not _FIELD_NAME.fullmatch(raw):
            raise ParseError("Invalid header field name")
        names.append(raw.decode("ascii"))
        if len(names) > MAX_HEADER_FIELDS:
            raise ParseError("Too many header fields")
        if cur.accept(b")"):
            return tuple(names)
        cur.sp()


def parse_section(cur: Cursor, *, binary: bool = False) -> Section:
    """``"[" [section-spec] "]"`` (the partial is parsed by the caller)."""
    cur.expect(b"[")
    part = _section_part(cur)
    text: SectionText | None = None
    headers: tuple[str, ...] = ()
    if part and cur.accept(b"."):
        if binary:
            raise ParseError("Invalid BINARY section")
        text = _section_text(cur, allow_mime=True)
    elif not part and cur.peek() != ord("]"):
        if binary:
            raise ParseError("Invalid BINARY section")
        text = _section_text(cur, allow_mime=False)
    if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
        cur.sp()
        headers = _header_list(cur)
    cur.expect(b"]")
    return Section(part=part, text=text, headers=headers)


def _section_text(cur: Cursor, *, allow_mime: bool) -> SectionText:
    word = cur.take_while(
        frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.")
    ).upper()
    try:
        text = SectionText(word.decode("ascii"))
    except ValueError:
        raise ParseError("Invalid section") from None
    if text is SectionText.MIME and not allow_mime:
        raise ParseError("MIME needs a part number")
    return text


def _partial(cur: Cursor) -> Partial | None:
    if not cur.accept(b"<"):
        return None
    start = cur.number()
    cur.expect(b".")
    length = cur.nz_number()
    cur.expect(b">")
    return Partial(start, length)


def parse_fetch_att(cur: Cursor) -> FetchAttribute:
    name = cur.take_while(_FETCH_NAME_CHARS).decode("ascii").upper()
    if cur.peek() == ord("["):
        if name in ("BODY", "BODY.PEEK"):
            section = parse_section(cur)
            partial = _partial(cur)
            if partial is not None:
                section = Section(section.part, section.text, section.headers, partial)
            return FetchBodySection(section, peek=name == "BODY.PEEK")
        if name in ("BINARY", "BINARY.PEEK"):
            section = parse_section(cur, binary=True)
            partial = _partial(cur)
            if partial is not None:
                section = Section(section.part, None, (), partial)
            return FetchBinary(section, peek=name == "BINARY.PEEK")
        if name == "BINARY.SIZE":
            return FetchBinarySize(parse_section(cur, binary=True).part)
        raise ParseError("Invalid FETCH attribute")
    att = _SIMPLE_FETCH.get(name)
    if att is None:
        raise ParseError("Invalid FETCH attribute")
    return att


def parse_fetch_atts(cur: Cursor) -> tuple[FetchAttribute, ...]:
    """Macro, single fetch-att, or parenthesised list (duplicates removed)."""
    if cur.accept(b"("):
        atts: list[FetchAttribute] = []
        while True:
            atts.append(parse_fetch_att(cur))
            if cur.accept(b")"):
                break
            cur.sp()
        return tuple(dict.fromkeys(atts))
    for macro, expansion in FETCH_MACROS.items():
        if cur.accept_word(macro.encode()):
            return expansion
    return (parse_fetch_att(cur),)


# ------------------------------------------------------------- STATUS items


def parse_status_items(cur: Cursor) -> tuple[StatusItem, ...]:
    cur.expect(b"(")
    items: list[StatusItem] = []
    while True:
        word = cur.keyword()
        try:
            items.append(StatusItem(word))
        except ValueError:
            raise ParseError("Invalid STATUS item") from None
        if cur.accept(b")"):
            break
        cur.sp()
    return tuple(dict.fromkeys(items))


# ------------------------------------------------------------ SEARCH keys

MAX_SEARCH_DEPTH = 100


class SearchParser:
    """Recursive descent over RFC 3501 search-key (+ RFC 7162 MODSEQ, RFC 5032)."""

    def __init__(self, cur: Cursor, decode: Callable[[bytes], str]) -> None:
        self.cur = cur
        self.decode = decode

    def program(self) -> SearchKey:
        """``search-key *(SP search-key)`` up to the end of the command."""
        keys = [self.key(0)]
        while not self.cur.at_end():
            self.cur.sp()
            keys.append(self.key(0))
        return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))

    def _string(self) -> str:
        return self.decode(self.cur.astring())

    def _date(self, field: DateField, relation: DateRelation) -> SearchKey:
        self.cur.sp()
        return SearchDate(field, relation, parse_date(self.cur))

    def key(self, depth: int) -> SearchKey:
        cur = self.cur
        if depth > MAX_SEARCH_DEPTH:
            raise ParseError("Search too deeply nested")
        if cur.accept(b"("):
            keys = [self.key(depth + 1)]
            while not cur.accept(b")"):
                cur.sp()
                keys.append(self.key(depth + 1))
            return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
        if looks_like_sequence_set(cur):
            return SearchSeqSet(parse_sequence_set(cur))
        word = cur.keyword()
        simple = _SIMPLE_SEARCH.get(word)
        if simple is not None:
            return simple
        if word in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[word]
            return SearchFlag(flag, present)
        if word in _DATE_KEYS:
            return self._date(*_DATE_KEYS[word])
        if word in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            cur.sp()
            return SearchHeader(word, self._string())
        if word == "HEADER":
            cur.sp()
            raw = cur.astring()
            if not _FIELD_NAME.fullmatch(raw):
                raise ParseError("Invalid header field name")
            cur.sp()
            return SearchHeader(raw.decode("ascii"), self._string())
        if word == "BODY":
            cur.sp()
            return SearchBody(self._string())
        if word == "TEXT":
            cur.sp()
            return SearchText(self._string())
        if word in ("KEYWORD", "UNKEYWORD"):
            cur.sp()
            return SearchFlag(cur.atom(), word == "KEYWORD")
        if word == "LARGER":
            cur.sp()
            return SearchLarger(cur.number64())
        if word == "SMALLER":
            cur.sp()
            return SearchSmaller(cur.number64())
        if word == "UID":
            cur.sp()
            return SearchUid(parse_sequence_set(cur))
        if word == "NOT":
            cur.sp()
            return SearchNot(self.key(depth + 1))
        if word == "OR":
            cur.sp()
            left = self.key(depth + 1)
            cur.sp()
            return SearchOr(left, self.key(depth + 1))
        if word == "MODSEQ":
            return self._modseq()
        if word in ("OLDER", "YOUNGER"):
            cur.sp()
            seconds = cur.nz_number()
            return SearchOlder(seconds) if word == "OLDER" else SearchYounger(seconds)
        raise ParseError("Unknown search key")

    def _modseq(self) -> SearchKey:
        cur = self.cur
        cur.sp()
        entry_name: str | None = None
        entry_type: str | None = None
        if cur.peek() == 0x22 or cur.at_literal():
            entry_name = to_text(cur.string())
            cur.sp()
            entry_type = cur.keyword().lower()
            if entry_type not in ("priv", "shared", "all"):
                raise ParseError("Invalid MODSEQ entry type")
            cur.sp()
        return SearchModSeq(cur.number64(), entry_name, entry_type)


_SIMPLE_SEARCH: dict[str, SearchKey] = {
    "ALL": SearchAll(),
    "NEW": SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False))),
    "OLD": SearchFlag("\\Recent", False),
}

_FLAG_KEYS: dict[str, tuple[str, bool]] = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "RECENT": ("\\Recent", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}

_DATE_KEYS: dict[str, tuple[DateField, DateRelation]] = {
    "BEFORE": (DateField.INTERNAL, DateRelation.BEFORE),
    "ON": (DateField.INTERNAL, DateRelation.ON),
    "SINCE": (DateField.INTERNAL, DateRelation.SINCE),
    "SENTBEFORE": (DateField.SENT, DateRelation.BEFORE),
    "SENTON": (DateField.SENT, DateRelation.ON),
    "SENTSINCE": (DateField.SENT, DateRelation.SINCE),
}


def search_decoder(charset: str | None) -> Callable[[bytes], str]:
    """How SEARCH strings are turned into str for a CHARSET (see commands.py)."""
    if charset is None or charset in ("UTF-8", "US-ASCII"):
        # Without CHARSET, RFC 3501 means US-ASCII; clients routinely send UTF-8.
        return to_text
    try:
        # str.encode accepts only text encodings (codecs.lookup also finds
        # bytes-to-bytes ones, zlib, base64, and str-to-str ones, rot13, whose
        # decoders raise anything); not b"".decode: empty input skips the lookup.
        "a".encode(charset)
    except (LookupError, ValueError, TypeError):
        return lambda raw: raw.decode("latin-1")  # unknown: SEARCH answers BADCHARSET

    def decode(raw: bytes) -> str:
        try:
            return raw.decode(charset)
        except (LookupError, ValueError, TypeError):  # UnicodeError is a ValueError
            raise ParseError("String does not match CHARSET") from None

    return decode


__all__ = [
    "ATOM_CHARS",
    "SearchParser",
    "parse_fetch_atts",
    "parse_flag",
    "parse_flag_list",
    "parse_section",
    "parse_sequence_set",
    "parse_status_items",
    "search_decoder",
]
