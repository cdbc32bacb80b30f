"""Modified UTF-7, dates, sequence-set semantics, section labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapd.parser import (
    CommandReader,
    CommandReady,
    FetchBinary,
    FetchBinarySize,
    FetchBodySection,
    FetchFlags,
    FetchRfc822,
    FetchRfc822Header,
    FetchRfc822Text,
    Partial,
    Section,
    SectionText,
    Select,
    SeqRange,
    SequenceSet,
    sets_seen,
)
from imapd.parser.dates import parse_date_time_text
from imapd.parser.mutf7 import (
    MUTF7Error,
    UndecodableName,
    decode,
    decode_mailbox,
    encode,
    mailbox_or_undecodable,
    normalise_inbox,
)
from imapd.parser.tokens import ParseError

MUTF7 = [
    ("INBOX", b"INBOX"),
    ("", b""),
    ("&", b"&-"),
    ("a&b", b"a&-b"),
    ("Envoyés", b"Envoy&AOk-s"),
    ("Éléments supprimés", b"&AMk-l&AOk-ments supprim&AOk-s"),
    ("日本語", b"&ZeVnLIqe-"),
    ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Ärzte & Pflege", b"&AMQ-rzte &- Pflege"),
    ("😀", b"&2D3eAA-"),
    ("a b", b"a b"),
    ("x/y.z", b"x/y.z"),
]


@pytest.mark.parametrize(("text", "wire"), MUTF7)
def test_mutf7_round_trip(text: str, wire: bytes) -> None:
    assert encode(text) == wire
    assert decode(wire) == text


@pytest.mark.parametrize(
    "bad",
    [
        b"&",
        b"&Jjo",
        b"&AGE-",
        b"&U,BTFw",
        b"&Jjo!-",
        b"&AAA-",
        b"&2D0-",
        b"a\x01b",
        b"\xff",
        b"&A-",
    ],
)
def test_mutf7_rejects(bad: bytes) -> None:
    with pytest.raises(MUTF7Error):
        decode(bad)


@pytest.mark.parametrize(
    "wire", [b"&Jjo", b"&AGE-", b"&U,BTF2XlZyyKng", b"&Jjo!-", b"&AAA-", b'"a\x01b"'])
def test_mailbox_not_modified_utf7_parses_as_undecodable(wire: bytes) -> None:
    """A 7-bit astring that is not modified UTF-7 is a well-formed command
    (answered NO by the handlers, not BAD): the name comes out marked."""
    reader = CommandReader(max_line=8192, max_literal=1 << 20)
    reader.feed(b"a SELECT " + wire + b"\r\n")
    event = reader.next_event()
    assert isinstance(event, CommandReady), event
    assert isinstance(event.command, Select)
    assert isinstance(event.command.mailbox, UndecodableName)
    # a NUL or 8-bit octets that are not UTF-8 stay syntax errors
    assert decode_mailbox(b"INBOX") == "INBOX" and not isinstance(
        mailbox_or_undecodable(b"inbox"), UndecodableName)
    for bad in (b"a\x00b", b"\xff"):
        with pytest.raises(MUTF7Error):
            mailbox_or_undecodable(bad)


def test_mutf7_accepts_utf8_from_careless_clients() -> None:
    assert decode("Envoyés".encode()) == "Envoyés"


@given(
    st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_categories=["Cs"]), max_size=30)
)
def test_mutf7_round_trip_property(text: str) -> None:
    if any(0x7F <= ord(c) < 0xA0 for c in text):
        return
    wire = encode(text)
    assert all(0x20 <= b < 0x7F for b in wire)
    assert decode(wire) == text


@given(st.binary(max_size=30).map(lambda b: bytes(c & 0x7F for c in b).replace(b"&", b"")))
def test_mutf7_decodes_a_plain_ascii_name_as_itself_or_refuses_it(raw: bytes) -> None:
    # The fast path for names without '&': every octet 0x20-0x7E is itself,
    # any other 7-bit octet is refused, as the character loop does.
    if all(0x20 <= c <= 0x7E for c in raw):
        assert decode(raw) == raw.decode("ascii")
        assert decode(raw + b"&-") == raw.decode("ascii") + "&"  # the loop's path
    else:
        with pytest.raises(MUTF7Error):
            decode(raw)
        with pytest.raises(MUTF7Error):
            decode(raw + b"&-")


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("inbox", "INBOX"),
        ("InBoX", "INBOX"),
        ("inbox/Sub", "INBOX/Sub"),
        ("inboxes", "inboxes"),
        ("Other/inbox", "Other/inbox"),
        ("INBOX", "INBOX"),
    ],
)
def test_inbox_normalisation(name: str, normal: str) -> None:
    assert normalise_inbox(name) == normal
    assert decode_mailbox(name.encode()) == normal


# ------------------------------------------------------------------ dates

PST = timezone(timedelta(hours=-8))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"17-Jul-1996 02:44:25 -0700",
            datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7))),
        ),
        (b" 7-Feb-1994 21:52:25 -0800", datetime(1994, 2, 7, 21, 52, 25, tzinfo=PST)),
        (b"07-feb-1994 21:52:25 -0800", datetime(1994, 2, 7, 21, 52, 25, tzinfo=PST)),
        (b"27-Nov-2026 13:00:00 +0000", datetime(2026, 11, 27, 13, 0, tzinfo=UTC)),
        (
            b"01-Jan-2000 00:00:00 +0530",
            datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        (b"31-Dec-1999 23:59:60 +0000", datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_date_time(text: bytes, expected: datetime) -> None:
    assert parse_date_time_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"17-Jul-1996",
        b"17-Jul-1996 02:44:25",
        b"17-Jul-1996 02:44 -0700",
        b"17-Jux-1996 02:44:25 -0700",
        b"30-Feb-1996 02:44:25 -0700",
        b"17-Jul-96 02:44:25 -0700",
        b"17-Jul-1996 24:00:00 -0700",
        b"17-Jul-1996 02:60:00 -0700",
        b"17-Jul-1996 02:44:25 -07000",
        b"17-Jul-1996 02:44:25 -0760",
        b"17-Jul-1996 02:44:25 0700",
        b"17-Jul-1996  02:44:25 -0700",
        b"17-Jul-1996 2:44:25 -0700",
    ],
)
def test_bad_date_time(text: bytes) -> None:
    with pytest.raises(ParseError):
        parse_date_time_text(text)


# ------------------------------------------------------------ sequence sets


def seqset(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(SeqRange(a, b) for a, b in ranges))


@pytest.mark.parametrize(
    ("ranges", "largest", "members"),
    [
        (((1, None),), 5, {1, 2, 3, 4, 5}),
        (((None, None),), 5, {5}),
        (((None, 3),), 5, {3, 4, 5}),
        (((7, 4),), 10, {4, 5, 6, 7}),
        (((2, 2), (4, 6)), 10, {2, 4, 5, 6}),
        # "UID 10:*" when the largest UID is 8 still includes 8 (RFC 3501 6.4.8).
        (((10, None),), 8, {8}),
    ],
)
def test_sequence_set_membership(
    ranges: tuple[tuple[int | None, int | None], ...], largest: int, members: set[int]
) -> None:
    s = seqset(*ranges)
    assert {n for n in range(0, largest + 1) if s.contains(n, largest)} == members


def test_merged_bounds() -> None:
    s = seqset((5, 7), (1, 2), (3, 3), (10, None), (6, 9))
    assert s.merged_bounds(12) == [(1, 3), (5, 12)]
    assert seqset((1, 3), (4, None)).merged_bounds(6) == [(1, 6)]
    assert seqset((1, 2), (4, 5)).merged_bounds(9) == [(1, 2), (4, 5)]
    assert seqset((1, 4294967295)).merged_bounds(3) == [(1, 4294967295)]
    assert seqset((None, None)).uses_star and not seqset((1, 2)).uses_star


# ------------------------------------------------------------ sections


@pytest.mark.parametrize(
    ("att", "label"),
    [
        (FetchBodySection(Section()), "BODY[]"),
        (FetchBodySection(Section(partial=Partial(0, 10))), "BODY[]<0>"),
        (FetchBodySection(Section((1, 2), SectionText.TEXT), peek=True), "BODY[1.2.TEXT]"),
        (FetchBodySection(Section((), SectionText.HEADER)), "BODY[HEADER]"),
        (
            FetchBodySection(Section((3,), SectionText.MIME, partial=Partial(5, 1))),
            "BODY[3.MIME]<5>",
        ),
        (
            FetchBodySection(Section((), SectionText.HEADER_FIELDS, ("From", "X-Y"))),
            "BODY[HEADER.FIELDS (From X-Y)]",
        ),
        (
            FetchBodySection(Section((2,), SectionText.HEADER_FIELDS_NOT, ("Received",))),
            "BODY[2.HEADER.FIELDS.NOT (Received)]",
        ),
        (FetchBinary(Section((1,), partial=Partial(0, 3))), "BINARY[1]<0>"),
        (FetchBinarySize((1, 2)), "BINARY.SIZE[1.2]"),
    ],
)
def test_response_labels(att: FetchBodySection | FetchBinary | FetchBinarySize, label: str) -> None:
    assert att.label() == label


def test_sets_seen() -> None:
    assert sets_seen(FetchBodySection(Section()))
    assert not sets_seen(FetchBodySection(Section(), peek=True))
    assert sets_seen(FetchBinary(Section()))
    assert not sets_seen(FetchBinary(Section(), peek=True))
    assert sets_seen(FetchRfc822())
    assert sets_seen(FetchRfc822Text())
    assert not sets_seen(FetchRfc822Header())
    assert not sets_seen(FetchFlags())


@given(st.text(alphabet=st.sampled_from(list("abcXYZ&-/ ~.\u00e9\u65e5\x7f\x1f\U0001f600")),
               max_size=16))
def test_mutf7_encode_of_printable_ascii_is_the_name_with_escaped_ampersands(text: str) -> None:
    # The fast path (printable ASCII) and the general one give one encoding,
    # and it decodes back.
    wire = encode(text)
    if text.isascii() and text.isprintable():
        assert wire == text.encode().replace(b"&", b"&-")
    if all(" " <= c <= "~" or c > "\x9f" for c in text):
        assert decode(wire) == text
