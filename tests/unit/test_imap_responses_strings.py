"""imapd.responses owns the one choice between quoted string and literal, and
the one number-set formatter: edge cases pinned here (the builders of
untagged lines rely on them)."""

from __future__ import annotations

import pytest

from imapd import responses as r
from imapd.parser.items import parse_sequence_set
from imapd.parser.tokens import Cursor


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("", b'""'),
        ("plain", b'"plain"'),
        ('say "hi"', b'"say \\"hi\\""'),
        ("back\\slash", b'"back\\\\slash"'),
        ('\\"', b'"\\\\\\""'),
        ("tab\tok", b'"tab\tok"'),  # TEXT-CHAR: a tab may be quoted
        ("a\r\nb", b"{4}\r\na\r\nb"),
        ("lf\n", b"{3}\r\nlf\n"),
        ("cr\r", b"{3}\r\ncr\r"),
        ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),  # 8-bit: a literal, never a quoted string
        (b"\x80", b"{1}\r\n\x80"),
    ],
)
def test_string_quotes_or_makes_a_literal(value: str | bytes, wire: bytes) -> None:
    assert r.string(value) == wire


def test_quoted_and_nquoted() -> None:
    assert r.quoted("") == b'""'
    assert r.quoted('a"b\\c') == b'"a\\"b\\\\c"'
    assert r.nquoted(None) == b"NIL"
    assert r.nquoted("NIL") == b'"NIL"'  # a string NIL is never the atom


@pytest.mark.parametrize(
    ("name", "utf8", "wire"),
    [
        ("INBOX", False, b'"INBOX"'),
        ("", False, b'""'),
        ("Bo\u00eete", False, b'"Bo&AO4-te"'),  # modified UTF-7
        ("a&b", False, b'"a&-b"'),
        ("Bo\u00eete", True, b'"Bo\xc3\xaete"'),  # UTF8=ACCEPT: quoted UTF-8, not a literal
        ('a"b\\c', False, b'"a\\"b\\\\c"'),
        ('a"b\\c', True, b'"a\\"b\\\\c"'),
    ],
)
def test_mailbox_names_are_always_quoted(name: str, utf8: bool, wire: bytes) -> None:
    assert r.mailbox(name, utf8) == wire


def test_message_strings_are_stricter_than_server_strings() -> None:
    # Header octets from any sender: a control character forces a literal
    # and a NUL is dropped (no literal may hold one); a server string is
    # quoted with its tab and keeps its octets.
    assert r.nstring("tab\there") == b"{8}\r\ntab\there"
    assert r.string("tab\there") == b'"tab\there"'
    assert r.istring(b"nul\x00") == b"{3}\r\nnul"
    assert r.nstring(None) == b"NIL"
    assert r.nstring("") == b'""'


@pytest.mark.parametrize(
    ("values", "sort", "wire"),
    [
        ([7], True, b"7"),
        ([1, 3, 4, 5, 7], True, b"1,3:5,7"),
        ([9, 8, 2, 1], True, b"1:2,8:9"),
        ([4, 4, 5], True, b"4:5"),
        ([9, 8, 2, 1], False, b"9,8,2,1"),  # kept order: only ascending runs merge
        ([2, 3, 1, 2], False, b"2:3,1:2"),
        ([4294967294, 4294967295], True, b"4294967294:4294967295"),
    ],
)
def test_sequence_set_runs_and_singles(values: list[int], sort: bool, wire: bytes) -> None:
    assert r.sequence_set(values, sort=sort) == wire


def _parse(text: bytes) -> list[tuple[int, int]]:
    return parse_sequence_set(Cursor([text], [])).merged_bounds(largest=5)


def test_sequence_set_reads_back_and_matches_star() -> None:
    # What the server sends, the parser reads as the same numbers; the whole
    # of a 5-message folder is what a client's 1:* names.
    assert r.sequence_set(range(1, 6)) == b"1:5"
    assert _parse(b"1:*") == _parse(r.sequence_set(range(1, 6))) == [(1, 5)]
    assert _parse(r.sequence_set([5, 1, 2, 4])) == [(1, 2), (4, 5)]


def test_sequence_set_cannot_be_empty() -> None:
    with pytest.raises(ValueError):
        r.sequence_set([])


def test_lines_use_the_same_formatters() -> None:
    assert r.vanished([5, 3, 4, 1]) == b"* VANISHED 1,3:5\r\n"
    assert r.vanished([2], earlier=True) == b"* VANISHED (EARLIER) 2\r\n"
    assert r.esearch_update("A1", True, "ADDTO", [(0, [3, 1, 2])], ordered=False) == (
        b'* ESEARCH (TAG "A1") UID ADDTO (0 1:3)\r\n')
    assert r.esearch_update("A1", False, "ADDTO", [(2, [3, 1, 2])], ordered=True) == (
        b'* ESEARCH (TAG "A1") ADDTO (2 3,1:2)\r\n')
    assert r.list_(["\\HasNoChildren"], "/", r.mailbox("Bo\u00eete")) == (
        b'* LIST (\\HasNoChildren) "/" "Bo&AO4-te"\r\n')
    assert r.listrights(r.mailbox("INBOX"), "a\r\nb", "", ["l", "r"]) == (
        b'* LISTRIGHTS "INBOX" {4}\r\na\r\nb "" l r\r\n')
    assert r.fetch_flags(3, None, frozenset({"$Label", "\\Seen"}), 9) == (
        b"* 3 FETCH (FLAGS (\\Seen $Label) MODSEQ (9))\r\n")
    assert r.fetch_flags(3, 7, None, 9) == b"* 3 FETCH (UID 7 MODSEQ (9))\r\n"
