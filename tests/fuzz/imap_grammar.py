"""Hypothesis strategies for IMAP commands, from the grammar and from real clients.

A command is a list of pieces: bytes of the command line, and `Lit` literals.
`build_unit` turns it into what a client sends, a segment per synchronising
literal. Every command name the parser knows has its argument strategy in two
flavours: *valid* (what the grammar accepts, so that handlers run deep) and
*noisy* (any argument may be garbage: broken strings, wrong literal counts,
long tokens, NULs, 8-bit octets, bad numbers, extra arguments, odd line ends).
Real client lines (Thunderbird, Outlook, mbsync, curl, imaplib) are replayed
as they are or mutated. Framing is kept in every case: the stream splits into
commands exactly where the units say, which the exact oracle relies on.
"""

from __future__ import annotations

import base64
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz_support import NUMBERS, ODD_OCTETS, Unit, mutated
from hypothesis import strategies as st
from imap_transcript import CARDIO, PASSWORD, SECRETARY

from imapd.parser.grammar import KNOWN_COMMANDS
from imapd.parser.tokens import ASTRING_CHARS, ATOM_CHARS

# LIST patterns match in time linear in the name (imapd/wildcards.py); the
# backtracking regex before it took over a minute with 4 wildcards against a
# 1,000-character name. The cap only keeps each command's line reasonable.
MAX_LIST_WILDCARDS = 64
MAX_CREATED_NAME = 1000
# Not fuzzed yet: inflated input is unbounded (being fixed).
EXCLUDED_COMMANDS = frozenset({"COMPRESS"})
# Charsets that once broke SEARCH (tests/fuzz/test_fuzz_regressions.py): codecs
# that are not text encodings, and text ones that refuse "replace".
FIXED_SEARCH_CHARSETS = [b"ZLIB", b"BZ2", b"ROT13"]
FIXED_BODY_CHARSETS = [b"rot13", b"zlib", b"hex", b"base64", b"uu", b"bz2", b"idna",
                       b"punycode"]
SEARCH_CHARSETS = [b"UTF-8", b"US-ASCII", b"ISO-8859-1", b"utf-8", b"WINDOWS-1252", b"UTF-16",
                   b"UTF-7", b"ISO-2022-JP"]
ODD_SEARCH_CHARSETS = [b"KOI8-R", b"X", b"\xc3\xa9", b"HEX", b"BASE64", b"UU", b"IDNA",
                       b"PUNYCODE", b"UTF-32", b"CP037", b'"UTF-8"', b"{5}",
                       *FIXED_SEARCH_CHARSETS]
BODY_CHARSETS = [b"us-ascii", b"utf-8", b"iso-8859-1", b"windows-1252", b"utf-16", b"x-unknown",
                 b"utf-7", b"utf-32", b"cp037", b'"utf-8"', b"", *FIXED_BODY_CHARSETS]

SHARED_INBOX = f"Shared/{CARDIO}/INBOX"
PLAIN_TOKEN = base64.b64encode(f"\0{SECRETARY}\0{PASSWORD}".encode())

S = st.SearchStrategy

# ------------------------------------------------------------------ units


@dataclass(frozen=True)
class Lit:
    """A literal. `delta`: announced size minus len(data); a larger
    announcement swallows `filler` octets, a smaller one leaves the rest of
    `data` on the line. Exactly the announced octets are sent either way."""

    data: bytes
    marker: str = "{}"  # "{}", "{+}", "~{}", "~{+}"
    delta: int = 0
    filler: bytes = b""


Piece = bytes | Lit
_MARKER_AT_END = re.compile(rb"~?\{[0-9]+\+?\}\Z")


def _line_text(text: bytes) -> bytes:
    return text.replace(b"\n", b" ")


def build_unit(tag: str, pieces: list[Piece], terminator: bytes = b"\r\n", label: str = "",
               then: tuple[bytes, ...] = (), finish: bytes = b"") -> Unit:
    """The octets a client sends for `tag` + pieces: a segment ends at each
    synchronising literal (the client waits for "+"); `then` are further
    continuation lines (AUTHENTICATE responses, IDLE's DONE)."""
    segments: list[bytes] = []
    line = bytearray(tag.encode() + b" ")
    for piece in pieces:
        if isinstance(piece, bytes):
            line += _line_text(piece)
            continue
        size = max(0, len(piece.data) + piece.delta)
        payload = piece.data[:size]
        if size > len(piece.data):
            filler = piece.filler or b" "
            payload += (filler * (size // len(filler) + 1))[: size - len(piece.data)]
        line += piece.marker.replace("{", f"{{{size}").encode() + b"\r\n"
        if not piece.marker.endswith("+}"):
            segments.append(bytes(line))
            line = bytearray()
        line += payload + _line_text(piece.data[size:])
    # The last line must not end in what the reader takes for a literal
    # marker (it drops the LF, then one CR).
    seen = bytes(line) + terminator[:-1]
    if _MARKER_AT_END.search(seen[:-1] if seen.endswith(b"\r") else seen):
        line += b" "
    segments.append(bytes(line) + terminator)
    first = segments[0].split(b"\n", 1)[0]
    words = (first[:-1] if first.endswith(b"\r") else first).split(b" ", 2)
    if not finish and len(words) > 1 and words[1].upper() in (b"IDLE", b"AUTHENTICATE"):
        # The server may wait for a line the plan does not have: "*" ends
        # both (IDLE answers BAD, AUTHENTICATE "cancelled").
        finish = b"*\r\n"
    return Unit(tuple(segments) + then, tag=tag, finish=finish, label=label)


def cap_wildcards(pieces: list[Piece], limit: int = MAX_LIST_WILDCARDS) -> list[Piece]:
    """At most `limit` LIST wildcards in a command (lengths unchanged, so
    literal counts stay right)."""
    left = [limit]

    def cap(data: bytes) -> bytes:
        out = bytearray(data)
        for i, ch in enumerate(out):
            if ch in b"%*":
                if left[0] > 0:
                    left[0] -= 1
                else:
                    out[i] = ord("x")
        return bytes(out)

    return [cap(p) if isinstance(p, bytes) else Lit(cap(p.data), p.marker, p.delta, cap(p.filler))
            for p in pieces]


def cap_stream_wildcards(data: bytes, limit: int = MAX_LIST_WILDCARDS) -> bytes:
    """For mutated streams: at most `limit` wildcards after the first LIST/LSUB."""
    m = re.search(rb"(?i)l(ist|sub)", data)
    if m is None:
        return data
    tail = bytearray(data[m.start():])
    for i, ch in enumerate(tail):
        if ch in b"%*":
            if limit > 0:
                limit -= 1
            else:
                tail[i] = ord("x")
    return data[: m.start()] + bytes(tail)


# ------------------------------------------------------------------ tokens

_ATOM_ALPHABET = "".join(sorted(chr(c) for c in ATOM_CHARS))
SPECIALS = [b"(", b")", b"{", b"}", b'"', b"\\", b"*", b"%", b"[", b"]", b"<", b">", b"~", b"+",
            b"$", b":", b",", b".", b"-"]

atoms = st.text(_ATOM_ALPHABET, min_size=1, max_size=12).map(str.encode)
numbers = st.sampled_from(NUMBERS)
long_runs = st.builds(lambda unit, n: unit * n,
                      st.sampled_from([b"a", b"x ", b"(", b"1,", b"\xff", b"%", b"\\", b"[", b"A" * 7]),
                      st.sampled_from([100, 1000, 3000, 70000]))
junk = st.lists(st.one_of(st.sampled_from(SPECIALS), st.sampled_from(ODD_OCTETS), atoms, numbers),
                min_size=1, max_size=6).map(b"".join)


def quote(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _atom_ok(value: bytes) -> bool:
    return bool(value) and all(c in ASTRING_CHARS for c in value)


@st.composite
def literal(draw: Any, value: bytes, noisy: bool) -> Lit:
    marker = draw(st.sampled_from(["{}", "{}", "{+}", "{+}", "~{}", "~{+}"] if noisy
                                  else ["{}", "{+}"]))
    if not noisy:
        return Lit(value, marker)
    delta = draw(st.sampled_from([0, 0, 0, -1, 1, -3, 3, 2]))
    filler = draw(st.sampled_from([b"", b" ", b")", b"\r\n", b'"', b"\x00x"]))
    return Lit(value, marker, delta, filler)


@st.composite
def astring(draw: Any, values: S[bytes], noisy: bool) -> list[Piece]:
    value = draw(values)
    forms = ["atom", "quoted", "quoted", "literal"] + (["broken"] if noisy else [])
    form = draw(st.sampled_from(forms))
    if form == "atom" and (noisy or _atom_ok(value)):
        return [value]
    if form in ("atom", "quoted") and (noisy or not any(c in b"\0\r\n" for c in value)):
        return [quote(value)]
    if form == "broken":
        return [draw(st.sampled_from([b'"' + value, value + b'"', b'"' + value + b'\\"',
                                      b'"a\\b"', b'"\x00"', b'"\r"']))]
    return [draw(literal(value, noisy))]


def garbage() -> S[list[Piece]]:
    """Any token at all."""
    return st.one_of(
        atoms.map(lambda a: [a]), numbers.map(lambda n: [n]), junk.map(lambda j: [j]),
        astring(st.one_of(atoms, junk), True), long_runs.map(lambda r: [r]),
        st.just([b"NIL"]), st.just([b"()"]), st.just([b""]),
        st.lists(atoms, max_size=4).map(lambda xs: [b"(" + b" ".join(xs) + b")"]),
        st.builds(lambda d: [b"(" * d + b"x" + b")" * d], st.integers(1, 300)),
    )


def join(parts: list[list[Piece]], sep: bytes = b" ") -> list[Piece]:
    out: list[Piece] = []
    for i, part in enumerate(parts):
        if i:
            out.append(sep)
        out.extend(part)
    return out


def paren(items: S[list[Piece]], max_size: int = 5, min_size: int = 0) -> S[list[Piece]]:
    return st.lists(items, min_size=min_size, max_size=max_size).map(
        lambda xs: [b"("] + join(xs) + [b")"])


def words(*choices: bytes) -> S[list[Piece]]:
    return st.sampled_from([[w] for w in choices])


def cat(*parts: S[list[Piece]], sep: bytes = b" ") -> S[list[Piece]]:
    """The parts in order, separated by `sep` (empty parts leave no separator)."""
    return st.tuples(*parts).map(lambda xs: join([x for x in xs if x], sep))


def optional(part: S[list[Piece]]) -> S[list[Piece]]:
    return st.one_of(st.just([]), part)


# ------------------------------------------------------------ values

MAILBOX_NAMES = [
    b"INBOX", b"inbox", b"Trash", b"Sent", b"Drafts", b"Archive", b"Nouveau", b"INBOX/sub",
    SHARED_INBOX.encode(), f"Shared/{CARDIO}".encode(), f"Shared/{CARDIO}/Archive".encode(),
    b"Shared", b"Shared/", b"Shared/accueil@hopital.test/INBOX", b"a/b/c", b"a//b", b"/", b"",
    b"Dossiers/Ann&AOk-e", b"&Jjo-", b"&-", b"x&ZeVnLIqe-", b"caf\xc3\xa9", b"%", b"*", b"INBOX*",
]
ODD_NAMES = [b"\xff\xfe", b"\x00", b"a\rb", b"&", b"&AAA", b"&Jjo"]

VALID_SEQ = [b"1", b"2", b"3", b"*", b"1:*", b"*:1", b"2:4", b"1,3", b"1:2,4:*", b"$", b"4294967295",
             b"1:4294967295", b"3:1", b"*:*", b"5", b"4:*", b"9"]
ODD_SEQ = [b"0", b"4294967296", b"1,", b",1", b"1::2", b"99999999999999999999999", b"-1", b"1:0",
           b"$:1", b"*1"]
_ranges = st.one_of(st.integers(1, 9).map(lambda n: str(n).encode()),
                    st.builds(lambda a, b: b"%d:%d" % (a, b), st.integers(1, 9), st.integers(1, 9)),
                    st.just(b"*"), st.just(b"7:*"))

FLAGS = [b"\\Seen", b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Draft", b"$Label1", b"Junk",
         b"$Forwarded", b"NonJunk", b"\\SEEN", b"\\seen"]
ODD_FLAGS = [b"\\Recent", b"\\*", b"\\Foo", b"\\", b"a]b", b"\xff", b"(", b"%"]

SECTION_TEXTS = [b"", b"HEADER", b"TEXT", b"HEADER.FIELDS (From Subject)",
                 b"HEADER.FIELDS.NOT (Received)",
                 b"header.fields (FROM TO CC BCC SUBJECT DATE MESSAGE-ID PRIORITY X-PRIORITY)"]
PART_TEXTS = SECTION_TEXTS + [b"MIME"]
PARTS = [b"1", b"2", b"3", b"1.2", b"2.1", b"2.3", b"4.1", b"99", b"2.1.1"]
ODD_SECTIONS = [b"0", b"1.", b"4294967296", b"HEADER.FIELDS ()", b"HEADER.FIELDS (a:b)", b"MIME",
                b"1.FOO", b"TEXT.1", b"HEADER.FIELDS", b"1..2"]
PARTIALS = [b"", b"", b"", b"<0.10>", b"<5.1>", b"<4294967295.1>", b"<1.4294967295>", b"<0.65536>"]
ODD_PARTIALS = [b"<0.0>", b"<a>", b"<1>", b"<-1.2>", b"<", b"<99999999999.1>"]

FETCH_NAMES = [b"FLAGS", b"UID", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODYSTRUCTURE",
               b"BODY", b"MODSEQ", b"RFC822", b"RFC822.HEADER", b"RFC822.TEXT", b"flags"]
STATUS_ITEMS = [b"MESSAGES", b"RECENT", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN", b"HIGHESTMODSEQ",
                b"SIZE", b"DELETED", b"DELETED-STORAGE", b"APPENDLIMIT"]
DATES = [b"1-Jan-2026", b"27-Nov-2026", b"7-Feb-1994", b'"1-Jan-2026"', b"01-Jan-2026"]
ODD_DATES = [b"31-Feb-2026", b"1-Foo-2026", b"01-Jan-99999", b"0-Jan-0", b"1-jan-2026x"]
DATE_TIMES = [b'"27-Nov-2026 13:00:00 +0100"', b'"1-Jan-1900 00:00:00 +0000"',
              b'" 1-Jan-2026 00:00:00 +0000"']
ODD_DATE_TIMES = [b'"31-Feb-2026 25:61:61 +9999"', b'"x"', b'"27-Nov-2026"']
MESSAGES = [
    b"Subject: fuzz\r\n\r\nhello\r\n",
    b"From: a@b.test\r\nTo: secretaire@hopital.test\r\nSubject: =?utf-8?q?=C3=A9?=\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=x\r\n\r\n"
    b"--x\r\nContent-Type: text/plain\r\n\r\nbody\r\n--x--\r\n",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n",
    b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n",
    b"\r\n", b"no header at all", b"Subject: \xff\xfe\x00\r\n\r\n\x00\x01",
]


def _values(valid: list[bytes], odd: list[bytes], noisy: bool) -> S[bytes]:
    return st.sampled_from(valid + odd if noisy else valid)


# ------------------------------------------------------------ the grammar


class Grammar:
    """The argument strategies of every command, valid or noisy."""

    def __init__(self, noisy: bool) -> None:
        self.noisy = noisy
        n = noisy

        def arg(valid: S[list[Piece]]) -> S[list[Piece]]:
            return st.one_of(valid, valid, valid, garbage()) if n else valid

        def astr(values: S[bytes]) -> S[list[Piece]]:
            return astring(values, n)

        names = st.one_of(_values(MAILBOX_NAMES, ODD_NAMES, n), atoms,
                          long_runs if n else st.nothing())
        created_names = st.one_of(_values(MAILBOX_NAMES, ODD_NAMES, n), atoms,
                                  st.builds(lambda a, k: (a * k)[:MAX_CREATED_NAME], atoms,
                                            st.integers(1, 40)))
        self.mailbox = arg(astr(names))
        created = arg(astr(created_names))
        seqsets = st.one_of(_values(VALID_SEQ, ODD_SEQ, n),
                            st.lists(_ranges, min_size=1, max_size=60).map(b",".join))
        seqset = arg(seqsets.map(lambda s: [s]))
        flag = st.one_of(_values(FLAGS, ODD_FLAGS, n), atoms)
        flag_list = st.lists(flag, max_size=6).map(lambda fs: [b"(" + b" ".join(fs) + b")"])
        text = astr(st.one_of(atoms, _values([b"gamma", b"\xc3\xa9", b"", b"Compte", b"hello"],
                                             [b"\xff", b"\x00"], n)))

        @st.composite
        def section(draw: Any) -> bytes:
            name = draw(st.sampled_from([b"BODY", b"BODY.PEEK", b"body.peek", b"BINARY",
                                         b"BINARY.PEEK", b"BINARY.SIZE"]))
            binary = name.startswith(b"BINARY")
            if n and draw(st.integers(0, 3)) == 0:
                spec = draw(st.sampled_from(ODD_SECTIONS))
            elif binary:
                spec = draw(st.sampled_from([b""] + PARTS))
            else:
                part = draw(st.sampled_from([b""] + PARTS))
                more = draw(st.sampled_from(PART_TEXTS if part else SECTION_TEXTS))
                spec = part + (b"." if part and more else b"") + more
            partial = b"" if name == b"BINARY.SIZE" else draw(
                _values(PARTIALS, ODD_PARTIALS, n))
            return name + b"[" + spec + b"]" + partial

        fetch_att = st.one_of(_values(FETCH_NAMES, [b"X-GM-MSGID", b"RFC822[]", b"BODY[", b"("],
                                      n), section())
        fetch_atts = arg(st.one_of(
            words(b"ALL", b"FAST", b"FULL"), fetch_att.map(lambda a: [a]),
            st.lists(fetch_att, min_size=1, max_size=8).map(
                lambda xs: [b"(" + b" ".join(xs) + b")"])))
        status_items = arg(st.lists(_values(STATUS_ITEMS, [b"BOGUS", b"("], n), min_size=1,
                                    max_size=6).map(lambda xs: [b"(" + b" ".join(xs) + b")"]))

        leaf = st.one_of(
            words(b"ALL", b"NEW", b"OLD", b"SEEN", b"UNSEEN", b"DELETED", b"UNDELETED", b"FLAGGED",
                  b"ANSWERED", b"DRAFT", b"RECENT", b"UNANSWERED", b"UNDRAFT", b"UNFLAGGED"),
            seqsets.map(lambda s: [s]),
            cat(words(b"FROM", b"TO", b"CC", b"BCC", b"SUBJECT", b"BODY", b"TEXT", b"subject"),
                text),
            cat(words(b"BODY", b"TEXT"), text),  # decode every text part: again
            cat(words(b"HEADER"), words(b"Message-ID", b"X-Foo", b"Subject"), text),
            cat(words(b"BEFORE", b"ON", b"SINCE", b"SENTBEFORE", b"SENTON", b"SENTSINCE"),
                _values(DATES, ODD_DATES, n).map(lambda d: [d])),
            cat(words(b"LARGER", b"SMALLER", b"OLDER", b"YOUNGER", b"MODSEQ"),
                _values([b"1", b"100", b"4294967295"], NUMBERS, n).map(lambda d: [d])),
            cat(words(b"UID"), seqsets.map(lambda s: [s])),
            cat(words(b"KEYWORD", b"UNKEYWORD"), _values([b"$Label1", b"Junk"], [b"\\Seen"], n).map(
                lambda f: [f])),
            words(b'MODSEQ "/flags/\\\\seen" all 5', b'MODSEQ "/flags/$label1" priv 1'),
        )
        search_key = st.recursive(leaf, lambda inner: st.one_of(
            inner.map(lambda k: [b"NOT "] + k),
            cat(words(b"OR"), inner, inner),
            st.lists(inner, min_size=1, max_size=4).map(lambda ks: [b"("] + join(ks) + [b")"]),
        ), max_leaves=12)
        search = cat(
            optional(st.lists(_values([b"MIN", b"MAX", b"ALL", b"COUNT", b"SAVE", b"PARTIAL 1:10",
                                       b"UPDATE", b"CONTEXT"],
                                      [b"X", b"PARTIAL 0:1"], n),
                              max_size=4).map(lambda xs: [b"RETURN (" + b" ".join(xs) + b")"])),
            optional(_values(SEARCH_CHARSETS, ODD_SEARCH_CHARSETS, n).map(
                lambda c: [b"CHARSET " + c])),
            st.lists(search_key, min_size=1, max_size=4).map(join))
        # RFC 5256 SORT / THREAD, RFC 5267 ESORT
        sort = cat(
            optional(st.lists(_values([b"MIN", b"MAX", b"ALL", b"COUNT", b"SAVE", b"PARTIAL 2:5",
                                       b"UPDATE", b"CONTEXT"],
                                      [b"X", b"PARTIAL 5"], n),
                              max_size=3).map(lambda xs: [b"RETURN (" + b" ".join(xs) + b")"])),
            st.lists(_values([b"ARRIVAL", b"CC", b"DATE", b"FROM", b"SIZE", b"SUBJECT", b"TO",
                              b"DISPLAYFROM", b"DISPLAYTO", b"REVERSE DATE", b"reverse subject"],
                             [b"REVERSE", b"X"], n), min_size=1, max_size=4).map(
                lambda xs: [b"(" + b" ".join(xs) + b")"]),
            _values(SEARCH_CHARSETS, ODD_SEARCH_CHARSETS, n).map(lambda c: [c]),
            st.lists(search_key, min_size=1, max_size=3).map(join))
        thread = cat(
            _values([b"REFERENCES", b"ORDEREDSUBJECT", b"references"], [b"JWZ"], n).map(
                lambda a: [a]),
            _values(SEARCH_CHARSETS, ODD_SEARCH_CHARSETS, n).map(lambda c: [c]),
            st.lists(search_key, min_size=1, max_size=3).map(join))

        pattern = astr(st.one_of(
            st.sampled_from([b"*", b"%", b"INBOX", b"inbox", b"Shared/%", b"Shared/*", b"%/%", b"",
                             b"Trash", b"*/Archive", b"&AOk-%", b"INBOX/%"]),
            st.text("abINBOX/%*&-", max_size=12).map(str.encode)))
        list_args = cat(
            optional(st.lists(_values([b"SUBSCRIBED", b"REMOTE", b"RECURSIVEMATCH", b"SPECIAL-USE"],
                                      [b"X"], n), max_size=3).map(
                lambda xs: [b"(" + b" ".join(xs) + b")"])),
            astr(st.sampled_from([b"", b"Shared/", b"INBOX", b"Dossiers/", b"%", b"/"])),
            st.one_of(pattern, paren(pattern, 3, min_size=1)),
            optional(st.lists(_values([b"SUBSCRIBED", b"CHILDREN", b"SPECIAL-USE", b"MYRIGHTS",
                                       b"STATUS (MESSAGES UNSEEN)", b"STATUS (SIZE DELETED)"],
                                      [b"STATUS ()", b"X"], n), max_size=3).map(
                lambda xs: [b"RETURN (" + b" ".join(xs) + b")"])))

        with_charset = st.builds(
            lambda cs, body: b"Subject: cs\r\nContent-Type: text/plain; charset=" + cs
            + b"\r\n\r\n" + body, st.sampled_from(BODY_CHARSETS),
            st.sampled_from([b"hello world\r\n", b"\xe9t\xe9\r\n", b"\xff\xfe\x00h\r\n", b""]))
        message = st.one_of(st.sampled_from(MESSAGES), with_charset) if not n else st.one_of(
            st.sampled_from(MESSAGES), with_charset, st.binary(max_size=200), long_runs)
        append_literal = st.builds(
            lambda data, marker, delta: [Lit(data, marker, delta)], message,
            st.sampled_from(["{}", "{+}", "{+}", "~{}", "~{+}"]),
            st.sampled_from([0, 0, 0, -2, 5] if n else [0]))
        # RFC 4469 CATENATE parts, RFC 6855 UTF8 (literal8), RFC 3502 several
        # messages in one APPEND.
        urls = st.sampled_from([b"/INBOX/;UID=1", b"/INBOX;UIDVALIDITY=1/;UID=1/;SECTION=1",
                                b"/Sent/;UID=2/;SECTION=HEADER", b"/INBOX/;UID=1/;PARTIAL=0.10",
                                b"imap://mx.hopital.test/INBOX/;UID=1", b"/INBOX/;UID=999"]
                               + ([b"/INBOX", b"/a]b/;UID=1", b"imap://x/;UID=1"] if n else []))
        utf8_item = cat(words(b"UTF8 ("), append_literal, words(b")"), sep=b"")
        cat_part = st.one_of(cat(words(b"TEXT"), append_literal), cat(words(b"URL"), astr(urls)),
                             utf8_item)
        catenate = cat(words(b"CATENATE ("), st.lists(cat_part, min_size=1, max_size=3).map(
            lambda xs: join(xs)), words(b")"), sep=b"")
        append_message = cat(
            optional(flag_list),
            optional(_values(DATE_TIMES, ODD_DATE_TIMES, n).map(lambda d: [d])),
            arg(st.one_of(append_literal, append_literal, append_literal, catenate, utf8_item)))
        append = cat(self.mailbox, st.lists(append_message, min_size=1, max_size=3).map(
            lambda xs: join(xs)))

        select_params = optional(st.one_of(
            words(b"(CONDSTORE)", b"(QRESYNC (1 1))", b"(QRESYNC (1 5 1:*))",
                  b"(QRESYNC (1 5 1:4 (1:2 1:2)))"),
            words(b"(QRESYNC (0 0))", b"(FOO)", b"()") if n else st.nothing()))
        select = cat(self.mailbox, select_params)

        pair = cat(st.builds(lambda a, form: [quote(a)] if form else [Lit(a)], atoms,
                             st.booleans()) if not n else astr(atoms), st.one_of(astr(st.one_of(atoms, junk if n else atoms)),
                                          words(b"NIL")))
        identifier = astr(_values([b"secretaire@hopital.test", b"accueil@hopital.test", b"anyone",
                                   b"nobody@x.test", b"-anyone"], [b""], n))
        rights = astr(_values([b"lr", b"+s", b"-w", b"lrswipkxtea", b"lrs"],
                              [b"abc", b"", b"+", b"\xff"], n))
        store = cat(seqset, optional(_values([b"(UNCHANGEDSINCE 1)", b"(UNCHANGEDSINCE 99)"],
                                             [b"(UNCHANGEDSINCE 0)", b"(X 1)"], n).map(
            lambda m: [m])),
            _values([b"FLAGS", b"FLAGS.SILENT", b"+FLAGS", b"+FLAGS.SILENT", b"-FLAGS",
                     b"-FLAGS.SILENT", b"+flags"], [b"LABELS", b"+FLAGS.NOISY"], n).map(
                lambda i: [i]),
            arg(st.one_of(flag_list, st.lists(flag, min_size=1, max_size=4).map(
                lambda fs: [b" ".join(fs)]))))
        fetch = cat(seqset, fetch_atts, optional(_values(
            [b"(CHANGEDSINCE 1)"], [b"(CHANGEDSINCE 1 VANISHED)", b"(VANISHED)", b"(X)", b"()"],
            n).map(lambda m: [m])))
        no_args = st.just([])
        # NOTIFY (RFC 5465): groups valid and not (BAD, NO [BADEVENT]).
        events = st.one_of(st.just(b"NONE"), st.lists(_values(
            [b"MessageNew MessageExpunge", b"MessageNew MessageExpunge FlagChange",
             b"MailboxName", b"SubscriptionChange", b"messagenew messageexpunge",
             b"MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge"],
            [b"MessageNew", b"AnnotationChange", b"XFOO", b"MessageNew (FOO) MessageExpunge"], n),
            min_size=1, max_size=3).map(lambda xs: b"(" + b" ".join(xs) + b")"))
        notify_group = st.one_of(
            st.builds(lambda f, e: b"(" + f + b" " + e + b")", _values(
                [b"selected", b"SELECTED-DELAYED", b"personal", b"inboxes", b"subscribed"],
                [b"elsewhere", b""], n), events),
            st.builds(lambda k, m, e: b"(" + k + b" " + quote(m) + b" " + e + b")",
                      st.sampled_from([b"mailboxes", b"subtree"]), st.sampled_from(MAILBOX_NAMES),
                      events))
        notify = arg(st.one_of(words(b"NONE"), st.builds(
            lambda status, groups: [b"SET " + (b"STATUS " if status else b"") + b" ".join(groups)],
            st.booleans(), st.lists(notify_group, min_size=1, max_size=4))))

        self.arguments: dict[str, S[list[Piece]]] = {
            "CAPABILITY": no_args, "NOOP": no_args, "LOGOUT": no_args, "NAMESPACE": no_args,
            "CHECK": no_args, "CLOSE": no_args, "UNSELECT": no_args, "STARTTLS": no_args,
            "EXPUNGE": no_args, "IDLE": no_args,
            "NOTIFY": notify,
            "AUTHENTICATE": cat(words(b"PLAIN", b"LOGIN", b"EXTERNAL", b"plain"), optional(
                _values([b"=", PLAIN_TOKEN, b"AA=="], [b"!!", b"X" * 20000], n).map(lambda t: [t]))),
            "ID": st.one_of(words(b"NIL"), paren(pair, 35 if n else 5)),
            "LOGIN": cat(astr(_values([SECRETARY.encode(), b"accueil@hopital.test", b"nobody"],
                                      [b""], n)),
                         astr(_values([PASSWORD.encode(), b"wrong"], [b"", b"\x00"], n))),
            "SELECT": select, "EXAMINE": select,
            "CREATE": cat(created, optional(_values(
                [b"(USE (\\Drafts))", b"(USE (\\Sent \\Trash))", b"(USE (\\Archive))"],
                [b"(USE (\\Important))", b"(USE ())", b"(FOO)"], n).map(lambda u: [u]))),
            "DELETE": self.mailbox, "SUBSCRIBE": self.mailbox, "UNSUBSCRIBE": self.mailbox,
            "GETACL": self.mailbox, "MYRIGHTS": self.mailbox, "GETQUOTAROOT": self.mailbox,
            "RENAME": cat(self.mailbox, created),
            "LIST": list_args,
            "LSUB": cat(astr(st.sampled_from([b"", b"Shared/"])), pattern),
            "STATUS": cat(self.mailbox, status_items),
            "APPEND": append,
            "ENABLE": st.lists(_values([b"CONDSTORE", b"QRESYNC", b"UTF8=ACCEPT", b"IMAP4rev2"],
                                       [b"X", b"\xff"], n), min_size=1, max_size=4).map(
                lambda xs: [b" ".join(xs)]),
            "SETACL": cat(self.mailbox, identifier, rights),
            "DELETEACL": cat(self.mailbox, identifier),
            "LISTRIGHTS": cat(self.mailbox, identifier),
            "GETQUOTA": astr(st.sampled_from([b"", b"INBOX", f"Shared/{CARDIO}".encode(), b"x"])),
            "SETQUOTA": cat(astr(st.sampled_from([b"", b"INBOX"])),
                            numbers.map(lambda v: [b"(STORAGE " + v + b")"])),
            # RFC 5267 4.3.5: the tags of updating searches, quoted
            "CANCELUPDATE": st.lists(_values([b'"f1"', b'"A02"', b'"x.3"', b'"t]1"'],
                                             [b"f1", b'""', b'"f1" x'], n),
                                     min_size=1, max_size=3).map(lambda xs: [b" ".join(xs)]),
            "SEARCH": search, "SORT": sort, "THREAD": thread, "FETCH": fetch, "STORE": store,
            "COPY": cat(seqset, self.mailbox), "MOVE": cat(seqset, self.mailbox),
        }
        self.uid_arguments = {**{k: self.arguments[k] for k in UID_COMMANDS if k != "EXPUNGE"},
                              "EXPUNGE": seqset}


UID_COMMANDS = ("FETCH", "STORE", "SEARCH", "SORT", "THREAD", "COPY", "MOVE", "EXPUNGE")
VALID = Grammar(noisy=False)
NOISY = Grammar(noisy=True)
COMMAND_NAMES = sorted(KNOWN_COMMANDS - EXCLUDED_COMMANDS - {"UID"})
# The commands that read or change messages come up more often.
_WEIGHTED_NAMES = COMMAND_NAMES + ["FETCH", "SEARCH", "STORE", "APPEND", "COPY", "SELECT",
                                   "LIST", "STATUS", "EXPUNGE"] * 3


def _sasl_line(noisy: bool) -> S[bytes]:
    good = [PLAIN_TOKEN, base64.b64encode(f"{SECRETARY}\0{SECRETARY}\0wrong".encode()),
            base64.b64encode(SECRETARY.encode()), b"=", b"*"]
    if not noisy:
        return st.sampled_from(good)
    return st.one_of(st.sampled_from(good + [b"!!notbase64", b"A" * 5000]),
                     st.binary(max_size=20).map(base64.b64encode), junk)


@st.composite
def _case(draw: Any, word: bytes) -> bytes:
    how = draw(st.sampled_from(["upper", "upper", "lower", "mixed"]))
    if how == "lower":
        return word.lower()
    if how == "mixed":
        return bytes(c ^ 0x20 if 0x61 <= (c | 0x20) <= 0x7A and i % 2 else c
                     for i, c in enumerate(word))
    return word


@st.composite
def grammar_command(draw: Any, noisy: bool) -> tuple[str, list[Piece], tuple[bytes, ...]]:
    """(label, pieces after the tag, continuation lines)."""
    grammar = NOISY if noisy else VALID
    kind = draw(st.sampled_from(["cmd"] * 8 + ["uid", "uid"] + (["unknown"] if noisy else [])))
    if kind == "unknown":
        name = draw(st.one_of(atoms, st.sampled_from([b"UID", b"UID FROB", b"X-FOO", b"COMPRES",
                                                      b"\xc3\xa9"])))
        return "?", [name] + draw(optional(garbage().map(lambda g: [b" "] + g))), ()
    if kind == "uid":
        sub = draw(st.sampled_from(UID_COMMANDS))
        word = draw(st.sampled_from([b"UID ", b"uid ", b"Uid "])) + draw(_case(sub.encode()))
        return "UID " + sub, [word, b" "] + draw(grammar.uid_arguments[sub]), ()
    name = draw(st.sampled_from(_WEIGHTED_NAMES))
    pieces: list[Piece] = [draw(_case(name.encode()))]
    args = draw(grammar.arguments[name])
    if args:
        pieces += [b" "] + args
    if noisy and draw(st.integers(0, 5)) == 0:  # an extra argument: BAD, never a crash
        pieces += [b" "] + draw(garbage())
    if name in ("LIST", "LSUB"):
        pieces = cap_wildcards(pieces)
    then: tuple[bytes, ...] = ()
    if name == "AUTHENTICATE":
        # What the client answers if asked (then "*" if asked again).
        then = tuple(draw(_sasl_line(noisy)) + b"\r\n" for _ in range(draw(st.integers(0, 2))))
    elif name == "IDLE":
        done = draw(_values([b"DONE", b"done"], [b"DONE ", b"", b"NOOP", b"x" * 70000], noisy))
        then = (done + b"\r\n",)
    return name, pieces, then


# ------------------------------------------------------------ real clients


def _client_lines() -> list[bytes]:
    """Real client command lines (tests/unit/test_imap_parser_clients.py:
    Thunderbird, Outlook, mbsync, curl, imaplib) and what the protocol
    transcripts send (tests/protocol/test_imap_thunderbird.py and others)."""
    path = Path(__file__).resolve().parent.parent / "unit" / "test_imap_parser_clients.py"
    spec = importlib.util.spec_from_file_location("_imap_client_lines", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.CLIENT_LINES) + TRANSCRIPT_LINES


TRANSCRIPT_LINES = [
    b"a NAMESPACE", b'a ID ("name" "Thunderbird" "version" "153.0")',
    b'a LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)', b'a LIST "" "Trash"',
    b"a UID FETCH 1:1 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
    b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To "
    b"Received)])",
    b"a UID FETCH 1 (UID RFC822.SIZE BODY[]<0.65536>)", b"a FETCH 1 (BODY.PEEK[] BODY[TEXT])",
    b"a FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.5>)",
    b"a FETCH 1:* (ENVELOPE BODYSTRUCTURE RFC822.SIZE)", b"a FETCH 1:* (UID FLAGS MODSEQ)",
    b"a FETCH 2 (BODY[2.3.HEADER] BODY[2.2.MIME] BINARY[2.2] BINARY.SIZE[2.1])",
    b"a STORE 1 +FLAGS.SILENT (\\Answered)", b"a STORE 1 FLAGS (\\Seen $Label1)",
    b"a UID STORE 1 +FLAGS (\\Draft)", b"a STORE 1,2 (UNCHANGEDSINCE 3) +FLAGS (\\Seen)",
    b'a SEARCH CHARSET UTF-8 SUBJECT "rendu"', b"a SEARCH OR FLAGGED SEEN",
    b"a UID SEARCH UID 2:3 TEXT gamma", b"a SEARCH NOT SEEN 2:*", b"a SEARCH FROM dr.martin LARGER 10",
    b"a SEARCH RETURN (MIN MAX COUNT) BODY hello", b"a SEARCH RETURN (SAVE) FLAGGED",
    b"a FETCH $ (FLAGS)", b"a CREATE Modeles (USE (\\Drafts))", b"a CREATE Projets/2026",
    b"a SUBSCRIBE Projets/2026", b'a CREATE "Dossiers/Ann&AOk-e"', b'a LIST "Dossiers/" "%"',
    b'a LSUB "" "Projets/*"', b"a RENAME Projets Archives2", b"a DELETE Projets/2026",
    b"a STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)",
    b'a LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN UIDVALIDITY))',
    b'a MYRIGHTS "Shared/cardiologie@hopital.test/INBOX"',
    b'a UID MOVE 1 "Shared/cardiologie@hopital.test/Archive"', b"a GETQUOTAROOT INBOX",
    b'a GETQUOTA ""', b"a SETACL INBOX accueil@hopital.test lr", b"a GETACL INBOX",
    b"a DELETEACL INBOX accueil@hopital.test", b"a LISTRIGHTS INBOX accueil@hopital.test",
    b"a SELECT INBOX (QRESYNC (1 1))", b"a ENABLE QRESYNC", b"a UID COPY 1:2 Archive",
    b"a COPY 1:* Trash", b"a MOVE 2 Trash", b"a APPEND INBOX {20+}\r\nSubject: x\r\n\r\nhello!",
    b"a EXPUNGE", b"a CHECK", b"a UNSELECT", b"a CLOSE", b"a EXAMINE Trash", b"a LOGOUT",
]
CLIENT_LINES = _client_lines()


@st.composite
def client_command(draw: Any, noisy: bool) -> list[Piece]:
    """A real client line without its tag, as pieces; mutated when noisy."""
    line = draw(st.sampled_from(CLIENT_LINES))
    body = line.split(b" ", 1)[1] if b" " in line else b""
    pieces: list[Piece] = []
    pos = 0
    for m in re.finditer(rb"(~?)\{(\d+)(\+?)\}\r\n", body):
        pieces.append(body[pos : m.start()])
        size = int(m.group(2))
        marker = m.group(1).decode() + "{" + m.group(3).decode() + "}"
        pieces.append(Lit(body[m.end() : m.end() + size], marker))
        pos = m.end() + size
    pieces.append(body[pos:])
    if noisy:
        pieces = [draw(mutated(p, framing=False)) if isinstance(p, bytes) else
                  Lit(draw(mutated(p.data, framing=True)), p.marker,
                      draw(st.sampled_from([0, 0, -1, 2])), b")")
                  for p in pieces]
    text = b"".join(p if isinstance(p, bytes) else p.data for p in pieces)
    if re.search(rb"(?i)l(ist|sub)", text):
        pieces = cap_wildcards(pieces)
    return pieces


TAG_PREFIXES = ["f", "A0", "x.", "9", "t]", "#", "_", "~"]


@st.composite
def imap_units(draw: Any, max_units: int = 10) -> list[Unit]:
    """A session's commands: from the grammar (valid or noisy) or from real
    clients (as sent or mutated), each under a unique tag."""
    prefix = draw(st.sampled_from(TAG_PREFIXES))
    units = []
    for i in range(draw(st.integers(1, max_units))):
        tag = f"{prefix}{i + 1}"
        source = draw(st.sampled_from(["valid"] * 4 + ["noisy"] * 3 + ["client"] * 2
                                      + ["mutated"]))
        noisy = source in ("noisy", "mutated")
        terminator = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r\r\n"])) if noisy else b"\r\n"
        if source in ("client", "mutated"):
            units.append(build_unit(tag, draw(client_command(noisy)), terminator, label=source))
            continue
        name, pieces, then = draw(grammar_command(noisy))
        units.append(build_unit(tag, pieces, terminator, label=name, then=then))
    return units
