"""The APPEND extensions in the pure parser: the reader's limits on one
MULTIAPPEND (RFC 3502), and the IMAP URLs of CATENATE (RFC 4469, RFC 5092).
The grammar tables of APPEND itself are in test_imap_parser_commands.py and
test_imap_parser_errors.py."""

from __future__ import annotations

import pytest

from imapd.parser import (
    Append,
    AppendMessage,
    CommandReader,
    CommandReady,
    Event,
    LiteralTooLarge,
    NeedContinuation,
    Noop,
    ParseFailure,
    Partial,
    Section,
    SectionText,
)
from imapd.parser.imapurl import ImapUrl, parse_imap_url
from imapd.parser.reader import MAX_LITERALS_PER_APPEND, MAX_LITERALS_PER_COMMAND
from imapd.parser.tokens import ParseError


def drain(reader: CommandReader) -> list[Event]:
    out: list[Event] = []
    while (event := reader.next_event()) is not None:
        out.append(event)
    return out


# ------------------------------------------------------------ reader limits


def test_multiappend_within_the_total_is_one_command() -> None:
    reader = CommandReader(max_literal=10, max_append_total=15)
    reader.feed(b"a APPEND INBOX {10}\r\n")
    assert drain(reader) == [NeedContinuation("a", 10)]
    reader.feed(b"0123456789 {5}\r\n")
    assert drain(reader) == [NeedContinuation("a", 5)]
    reader.feed(b"abcde\r\n")
    assert drain(reader) == [CommandReady(Append("a", "INBOX", (
        AppendMessage(message=b"0123456789"), AppendMessage(message=b"abcde"))))]


def test_sync_literal_past_the_total_ends_the_command_unread() -> None:
    reader = CommandReader(max_literal=10, max_append_total=15)
    reader.feed(b"a APPEND INBOX {10}\r\n")
    drain(reader)
    reader.feed(b"0123456789 {6}\r\n")
    # The client gets "a NO [LIMIT]" instead of "+" and sends nothing more
    # for this command: nothing of it is stored.
    assert drain(reader) == [LiteralTooLarge("a", 6, synchronizing=True, total=True)]
    assert not reader.in_command and reader.buffered == 0
    reader.feed(b"b NOOP\r\n")
    assert drain(reader) == [CommandReady(Noop("b"))]


def test_non_sync_literal_past_the_total_is_skipped_then_reported() -> None:
    reader = CommandReader(max_literal=100, max_append_total=150)
    reader.feed(b"a APPEND INBOX {100+}\r\n" + b"x" * 100 + b" {60+}\r\n")
    assert drain(reader) == []
    # The skipped octets are dropped as they come, never buffered.
    reader.feed(b"y" * 60)
    assert drain(reader) == [] and reader.buffered == 0
    reader.feed(b" {1+}\r\nz\r\nb NOOP\r\n")
    assert drain(reader) == [LiteralTooLarge("a", 60, synchronizing=False, total=True),
                             CommandReady(Noop("b"))]


def test_one_literal_over_max_literal_is_toobig_not_limit() -> None:
    reader = CommandReader(max_literal=10, max_append_total=1000)
    reader.feed(b"a APPEND INBOX {5}\r\n")
    drain(reader)
    reader.feed(b"hello {11}\r\n")
    assert drain(reader) == [LiteralTooLarge("a", 11, synchronizing=True, total=False)]


def test_without_a_total_one_message_is_the_limit() -> None:
    reader = CommandReader(max_literal=10)
    reader.feed(b"a APPEND INBOX {10+}\r\n0123456789 {1}\r\n")
    assert drain(reader) == [LiteralTooLarge("a", 1, synchronizing=True, total=True)]


def test_appends_may_have_more_literals_than_other_commands() -> None:
    count = MAX_LITERALS_PER_COMMAND + 10
    data = b"a APPEND INBOX" + b" {1+}\r\nx" * count + b"\r\n"
    reader = CommandReader(max_append_total=10_000)
    reader.feed(data)
    (event,) = drain(reader)
    assert isinstance(event, CommandReady) and isinstance(event.command, Append)
    assert len(event.command.messages) == count
    reader = CommandReader(max_append_total=100_000)
    reader.feed(b"a APPEND INBOX" + b" {1+}\r\nx" * (MAX_LITERALS_PER_APPEND + 1) + b"\r\n")
    (event,) = drain(reader)
    assert event == ParseFailure("a", "Too many literals")


def test_multiappend_byte_by_byte() -> None:
    data = b'a APPEND INBOX (\\Seen) {2+}\r\nab "07-Feb-1994 21:52:25 +0000" ~{2+}\r\n\x00\x01\r\n'
    reader = CommandReader()
    events: list[Event] = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        events.extend(drain(reader))
    (event,) = events
    assert isinstance(event, CommandReady) and isinstance(event.command, Append)
    first, second = event.command.messages
    assert first.flags == ("\\Seen",) and first.message == b"ab" and not first.binary
    assert second.message == b"\x00\x01" and second.binary


# ------------------------------------------------------------ IMAP URLs

URLS: list[tuple[str, ImapUrl]] = [
    # RFC 4469 section 5
    ("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER",
     ImapUrl("Drafts", 20, 385759045, Section(text=SectionText.HEADER))),
    ("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME",
     ImapUrl("Drafts", 20, 385759045, Section((1,), SectionText.MIME))),
    ("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1",
     ImapUrl("Drafts", 20, 385759045, Section((1,)))),
    ("/Drafts;UIDVALIDITY=385759045/;UID=30", ImapUrl("Drafts", 30, 385759045)),
    # RFC 5092 section 7 (the first example, with its user)
    ("imap://michael@example.org/INBOX/;UID=20/;SECTION=1.2",
     ImapUrl("INBOX", 20, None, Section((1, 2)), "michael", "example.org")),
    ("imap://minbari.example.org:143/gray-council;UIDVALIDITY=385759045/;UID=20/;PARTIAL=0.1024",
     ImapUrl("gray-council", 20, 385759045, Section(partial=Partial(0, 1024)), None,
             "minbari.example.org")),
    ("/inbox/;uid=1/;partial=10", ImapUrl("INBOX", 1, None,
                                         Section(partial=Partial(10, 2**32 - 1)))),
    ("/Shared/cardiologie@hopital.test/INBOX/;UID=7",
     ImapUrl("Shared/cardiologie@hopital.test/INBOX", 7)),
    # %-encoded: UTF-8 (RFC 5092), or modified UTF-7 as RFC 2192 had it
    ("/Dossiers%20r%C3%A9sum%C3%A9s/;UID=3", ImapUrl("Dossiers résumés", 3)),
    ("/Dossiers%20r&AOk-sum&AOk-s/;UID=3", ImapUrl("Dossiers résumés", 3)),
    ("/INBOX/;UID=4/;SECTION=HEADER.FIELDS%20(SUBJECT%20FROM)",
     ImapUrl("INBOX", 4, None, Section(text=SectionText.HEADER_FIELDS,
                                       headers=("SUBJECT", "FROM")))),
]


@pytest.mark.parametrize(("url", "expected"), URLS, ids=[u for u, _ in URLS])
def test_parse_imap_url(url: str, expected: ImapUrl) -> None:
    assert parse_imap_url(url) == expected


BAD_URLS = [
    "",
    "INBOX/;UID=1",  # neither absolute nor server-relative
    "//host/INBOX/;UID=1",
    "http://example.org/INBOX/;UID=1",
    "imap://example.org",
    "imap:///INBOX/;UID=1",
    "imap://example.org:x/INBOX/;UID=1",
    "imap://fred;AUTH=*@example.org/INBOX/;UID=1",
    "/INBOX",  # no message
    "/INBOX/",
    "/;UID=1",
    "/INBOX/;UID=0",
    "/INBOX/;UID=4294967296",
    "/INBOX/;UID=x",
    "/INBOX;UIDVALIDITY=/;UID=1",
    "/INBOX;FOO=1/;UID=1",
    "/INBOX/;SECTION=1",  # no UID
    "/INBOX/;SECTION=1/;UID=1",  # out of order
    "/INBOX/;UID=1/;UID=2",
    "/INBOX/;UID=1/;SECTION=",
    "/INBOX/;UID=1/;SECTION=FOO",
    "/INBOX/;UID=1/;SECTION=1.2.",
    "/INBOX/;UID=1/;SECTION=%00",
    "/INBOX/;UID=1/;PARTIAL=a",
    "/INBOX/;UID=1/;PARTIAL=1.0",
    "/INBOX/;UID=1/;URLAUTH=anonymous:internal:91354a473744909de610943775f92038",
    "/INBOX/;UID=1/;EXPIRE=2026-12-31T00:00:00Z",
    "/INBOX/;UID=1/extra",
    "/IN BOX/;UID=1",  # not a URL character
    '/INBOX"/;UID=1',
    "/INBOX\u00e9/;UID=1",
    "/r&AOk/;UID=1",  # broken modified UTF-7
    "/%FF/;UID=1",  # neither UTF-8 nor modified UTF-7
    "/a%00b/;UID=1",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_imap_url(url: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_imap_url(url)
    assert info.value.message and url not in info.value.message or not url
