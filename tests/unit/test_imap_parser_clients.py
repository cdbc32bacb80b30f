"""Command lines as Thunderbird, Outlook, mbsync, curl and imaplib send them: all parse."""

from __future__ import annotations

import pytest

from imapd.parser import (
    Append,
    Authenticate,
    CommandReader,
    CommandReady,
    Event,
    Fetch,
    FetchBodySection,
    List,
    NeedContinuation,
    Search,
    Select,
    Store,
    StoreMode,
)


def events_of(data: bytes) -> list[Event]:
    reader = CommandReader()
    reader.feed(data)
    out: list[Event] = []
    while (event := reader.next_event()) is not None:
        if not isinstance(event, NeedContinuation):
            out.append(event)
    return out


CLIENT_LINES = [
    # Thunderbird
    b"1 capability",
    b"2 authenticate PLAIN AGFsaWNlAHNlY3JldA==",
    b"2 authenticate EXTERNAL =",
    b'3 ID ("name" "Thunderbird" "version" "115.5.0")',
    b"4 namespace",
    b"5 ENABLE CONDSTORE",
    b'6 list (subscribed) "" "*" return (special-use)',
    b'7 list "" "INBOX"',
    b'8 lsub "" "*"',
    b'9 select "INBOX" (CONDSTORE)',
    b"10 UID fetch 1:* (FLAGS)",
    b"11 UID fetch 1:* (FLAGS) (CHANGEDSINCE 123)",
    b"12 UID fetch 42 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])",
    b"13 UID fetch 42 (UID RFC822.SIZE BODY.PEEK[]<0.32768>)",
    b"14 UID fetch 42 (BODYSTRUCTURE)",
    b"15 UID fetch 42 (BODY.PEEK[HEADER.FIELDS (Content-Type Content-Transfer-Encoding)] BODY.PEEK[TEXT]<0.2048>)",
    b"16 UID fetch 42 (UID RFC822.SIZE BODY.PEEK[1.2] BODY.PEEK[2.MIME])",
    b"17 uid store 42 +Flags (\\Seen)",
    b"18 uid store 42 -Flags (\\Deleted)",
    b"19 uid store 42 +Flags ($Forwarded Junk $label1)",
    b'20 UID copy 42 "Trash"',
    b'21 UID move 42:44 "Trash"',
    b"22 IDLE",
    b"23 noop",
    b"24 expunge",
    b"25 UID expunge 42",
    b'26 STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)',
    b'27 getquotaroot "INBOX"',
    b'28 myrights "INBOX"',
    b'29 getacl "INBOX"',
    b"30 uid fetch 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)",
    b'31 select "INBOX" (QRESYNC (1234 5678 1:100))',
    b"32 UID SEARCH UNDELETED HEADER Message-ID <abc.def@hopital.test>",
    b"33 UID SEARCH SINCE 1-Jan-2026",
    b"34 UID fetch 42:* (FLAGS)",
    b'35 append "Sent" (\\Seen) {5}\r\nhello',
    b"36 UNSELECT",
    b"37 close",
    b"38 logout",
    # Outlook
    b"A1 CAPABILITY",
    b"A2 AUTHENTICATE PLAIN",
    b'A3 LIST "" "*"',
    b'A4 SELECT "INBOX"',
    b"A5 UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER])",
    b"A6 UID FETCH 7 (BODY.PEEK[])",
    b"A7 UID STORE 7 +FLAGS (\\Deleted \\Seen)",
    b'A8 STATUS "Sent Items" (MESSAGES UNSEEN)',
    b"A9 UID SEARCH 1:* NOT DELETED",
    # mbsync (isync)
    b'1 LOGIN "alice@hopital.test" "s3cr\\"t"',
    b"2 NAMESPACE",
    b'3 LIST "" "*"',
    b'4 SELECT "INBOX"',
    b"5 UID FETCH 1:1000 (UID FLAGS)",
    b"6 UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (X-TUID MESSAGE-ID)])",
    b'7 APPEND "INBOX" (\\Seen) "27-Nov-2026 13:00:00 +0000" {5+}\r\nhello',
    b"8 UID STORE 5 +FLAGS.SILENT (\\Seen \\Flagged)",
    b'9 CREATE "Archive/2026"',
    b"10 UID EXPUNGE 5:7",
    b"11 UID FETCH 5 (BODY.PEEK[])",
    b'12 EXAMINE "INBOX"',
    # curl
    b"A001 CAPABILITY",
    b"A002 LOGIN alice secret",
    b'A003 LIST "" *',
    b"A003 SELECT INBOX",
    b"A004 FETCH 1 BODY[]",
    b"A004 UID FETCH 1 BODY[]",
    b"A005 EXAMINE INBOX",
    # Python imaplib
    b"NLKA1 LOGIN alice secret",
    b'NLKA2 SELECT "INBOX"',
    b"NLKA3 FETCH 1:3 (RFC822)",
    b"NLKA4 SEARCH ALL",
    b"NLKA5 SEARCH CHARSET UTF-8 SUBJECT {6}\r\nCardio",
    b"NLKA6 STORE 1 +FLAGS \\Deleted",
    b"NLKA7 COPY 1:2 Archive",
    b'NLKA8 APPEND INBOX () "27-Nov-2026 14:00:00 +0100" {5}\r\nhello',
]


@pytest.mark.parametrize("line", CLIENT_LINES, ids=[x[:50].decode() for x in CLIENT_LINES])
def test_real_client_lines_parse(line: bytes) -> None:
    events = events_of(line + b"\r\n")
    assert len(events) == 1
    assert isinstance(events[0], CommandReady), events[0]


def test_thunderbird_header_fetch_details() -> None:
    line = next(x for x in CLIENT_LINES if x.startswith(b"12 UID fetch 42"))
    (event,) = events_of(line + b"\r\n")
    assert isinstance(event, CommandReady)
    fetch = event.command
    assert isinstance(fetch, Fetch) and fetch.uid
    section = fetch.attributes[-1]
    assert isinstance(section, FetchBodySection) and section.peek
    assert section.section.headers[0] == "From"
    assert len(section.section.headers) == 14


def test_thunderbird_partial_body() -> None:
    (event,) = events_of(b"13 UID fetch 42 (UID RFC822.SIZE BODY.PEEK[]<0.32768>)\r\n")
    assert isinstance(event, CommandReady) and isinstance(event.command, Fetch)
    att = event.command.attributes[-1]
    assert isinstance(att, FetchBodySection)
    assert att.label() == "BODY[]<0>"
    assert att.section.partial is not None and att.section.partial.length == 32768


def test_selected_details() -> None:
    (event,) = events_of(b'6 list (subscribed) "" "*" return (special-use)\r\n')
    assert isinstance(event, CommandReady) and isinstance(event.command, List)
    assert event.command.select_subscribed and event.command.return_special_use
    (event,) = events_of(b'9 select "INBOX" (CONDSTORE)\r\n')
    assert isinstance(event, CommandReady) and event.command == Select("9", "INBOX", True)
    (event,) = events_of(b"8 UID STORE 5 +FLAGS.SILENT (\\Seen \\Flagged)\r\n")
    assert isinstance(event, CommandReady) and isinstance(event.command, Store)
    assert event.command.mode is StoreMode.ADD and event.command.silent
    (event,) = events_of(
        b'7 APPEND "INBOX" (\\Seen) "27-Nov-2026 13:00:00 +0000" {5+}\r\nhello\r\n'
    )
    assert isinstance(event, CommandReady) and isinstance(event.command, Append)
    (message,) = event.command.messages
    assert message.message == b"hello"
    assert message.internal_date is not None
    assert message.internal_date.isoformat() == "2026-11-27T13:00:00+00:00"
    (event,) = events_of(b"2 authenticate EXTERNAL =\r\n")
    assert isinstance(event, CommandReady)
    assert event.command == Authenticate("2", "EXTERNAL", b"")
    (event,) = events_of(b"NLKA5 SEARCH CHARSET UTF-8 SUBJECT {6}\r\nCardio\r\n")
    assert isinstance(event, CommandReady) and isinstance(event.command, Search)
    assert event.command.charset == "UTF-8"
