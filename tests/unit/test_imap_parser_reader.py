"""CommandReader: literals (sync, LITERAL+, literal8), limits, resync, raw lines, buffers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imapd.parser import (
    Append,
    AppendMessage,
    Authenticate,
    CommandReader,
    CommandReady,
    Event,
    Idle,
    LiteralTooLarge,
    Login,
    NeedContinuation,
    Noop,
    ParseFailure,
    RawLine,
    Search,
    SearchText,
    StartTls,
    decode_sasl,
)
from imapd.parser.reader import MAX_LITERALS_PER_COMMAND
from imapd.parser.tokens import ParseError


def drain(reader: CommandReader) -> list[Event]:
    out: list[Event] = []
    while (event := reader.next_event()) is not None:
        out.append(event)
    return out


def events_of(data: bytes, *, chunk: int | None = None, **limits: int) -> list[Event]:
    reader = CommandReader(**limits)
    out: list[Event] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        reader.feed(piece)
        out += drain(reader)
    return out


# ------------------------------------------------------------ synchronising


def test_sync_literal_asks_for_continuation_once_then_waits() -> None:
    reader = CommandReader()
    reader.feed(b"a1 LOGIN {4}\r\n")
    assert drain(reader) == [NeedContinuation("a1", 4)]
    assert reader.in_command
    reader.feed(b"fr")
    assert drain(reader) == []
    reader.feed(b"ed {2}\r\n")
    assert drain(reader) == [NeedContinuation("a1", 2)]
    reader.feed(b"pw\r\n")
    assert drain(reader) == [CommandReady(Login("a1", "fred", "pw"))]
    assert not reader.in_command
    assert reader.idle


def test_literal_may_contain_crlf_and_brackets() -> None:
    data = b"a APPEND INBOX {12}\r\nx\r\n{3}\r\nabc)\r\n\r\n"
    assert events_of(data) == [
        NeedContinuation("a", 12),
        CommandReady(Append("a", "INBOX", (AppendMessage(message=b"x\r\n{3}\r\nabc)"),))),
        ParseFailure(None, "Empty command line"),
    ]


def test_reject_literal_forgets_the_command() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {4}\r\n")
    assert drain(reader) == [NeedContinuation("a", 4)]
    reader.reject_literal()
    # The client saw "a NO ..." and goes on with another command.
    reader.feed(b"b NOOP\r\n")
    assert drain(reader) == [CommandReady(Noop("b"))]


def test_reject_literal_outside_a_literal_is_harmless() -> None:
    reader = CommandReader()
    reader.reject_literal()
    reader.feed(b"b NOOP\r\n")
    assert drain(reader) == [CommandReady(Noop("b"))]


# ------------------------------------------------------------ LITERAL+


def test_non_sync_literal_needs_no_continuation() -> None:
    assert events_of(b"a LOGIN {4+}\r\nfred {2+}\r\npw\r\nb NOOP\r\n") == [
        CommandReady(Login("a", "fred", "pw")),
        CommandReady(Noop("b")),
    ]


def test_literal8_only_for_append() -> None:
    assert events_of(b"a APPEND INBOX ~{2+}\r\n\x00\x01\r\n") == [
        CommandReady(Append("a", "INBOX", (AppendMessage(message=b"\x00\x01", binary=True),)))
    ]
    (failure,) = events_of(b"a LOGIN ~{4+}\r\nfred pw\r\n")
    assert isinstance(failure, ParseFailure) and failure.tag == "a"


# ------------------------------------------------------------ APPEND limits


def test_append_sync_literal_too_large_is_refused_without_reading() -> None:
    reader = CommandReader(max_literal=1000)
    reader.feed(b"A1 APPEND INBOX (\\Seen) {1001}\r\n")
    assert drain(reader) == [LiteralTooLarge("A1", 1001, synchronizing=True)]
    assert not reader.in_command
    # The client got "A1 NO [TOOBIG]" and did not send the message.
    reader.feed(b"A2 NOOP\r\n")
    assert drain(reader) == [CommandReady(Noop("A2"))]


def test_append_at_the_limit_is_accepted() -> None:
    reader = CommandReader(max_literal=5)
    reader.feed(b"A1 APPEND INBOX {5}\r\n")
    assert drain(reader) == [NeedContinuation("A1", 5)]
    reader.feed(b"hello\r\n")
    assert drain(reader) == [CommandReady(Append("A1", "INBOX", (AppendMessage(message=b"hello"),)))]


def test_append_literal_plus_too_large_is_skipped_without_buffering() -> None:
    size = 10 * 1024 * 1024
    reader = CommandReader(max_literal=1024 * 1024)
    reader.feed(b"A1 APPEND INBOX {%d+}\r\n" % size)
    assert drain(reader) == []
    chunk = b"x" * 65536
    high_water = 0
    for _ in range(size // len(chunk)):
        reader.feed(chunk)
        assert drain(reader) == []
        high_water = max(high_water, reader.buffered)
    assert high_water == 0
    reader.feed(b"\r\nA2 NOOP\r\n")
    assert drain(reader) == [
        LiteralTooLarge("A1", size, synchronizing=False),
        CommandReady(Noop("A2")),
    ]


def test_append_literal_plus_too_large_fed_in_one_piece() -> None:
    data = b"A1 APPEND INBOX {20+}\r\n" + b"y" * 20 + b"\r\nA2 NOOP\r\n"
    expected = [LiteralTooLarge("A1", 20, synchronizing=False), CommandReady(Noop("A2"))]
    assert events_of(data, max_literal=10) == expected
    assert events_of(data, max_literal=10, chunk=1) == expected
    assert events_of(data, max_literal=10, chunk=7) == expected


def test_huge_literal_size_is_too_large_not_a_crash() -> None:
    size = 10**30
    assert events_of(b"A1 APPEND INBOX {%d}\r\nA2 NOOP\r\n" % size) == [
        LiteralTooLarge("A1", 2**64, synchronizing=True),
        CommandReady(Noop("A2")),
    ]


# ------------------------------------------------------------ other literals


def test_non_append_sync_literal_over_the_line_budget_is_bad() -> None:
    assert events_of(b"a LOGIN {5000}\r\nb NOOP\r\n", max_line=1024) == [
        ParseFailure("a", "Literal too large"),
        CommandReady(Noop("b")),
    ]


def test_non_append_literal_plus_over_the_budget_is_skipped_then_bad() -> None:
    data = b"a LOGIN {5000+}\r\n" + b"z" * 5000 + b" pw\r\nb NOOP\r\n"
    expected = [ParseFailure("a", "Literal too large"), CommandReady(Noop("b"))]
    assert events_of(data, max_line=1024) == expected
    assert events_of(data, max_line=1024, chunk=100) == expected


def test_many_small_literals_hit_the_command_budget() -> None:
    data = b"a SEARCH" + b" TEXT {600+}\r\n" + b"q" * 600
    data = data * 3 + b"\r\nb NOOP\r\n"
    events = events_of(data, max_line=1024)
    assert events[0] == ParseFailure("a", "Literal too large")
    assert events[-1] == CommandReady(Noop("b"))


def test_continuation_lines_hit_the_command_budget_and_skip_a_literal_plus() -> None:
    # Each line is short, but together they exceed max_line.
    data = b"a SEARCH TEXT {1+}\r\nq" + b" TEXT q" * 80 + b" TEXT {1+}\r\n"
    data += b"q" + b" TEXT q" * 80 + b" TEXT {300+}\r\n" + b"w" * 300 + b"\r\nb NOOP\r\n"
    expected = [ParseFailure("a", "Command too long"), CommandReady(Noop("b"))]
    assert events_of(data, max_line=1024) == expected
    assert events_of(data, max_line=1024, chunk=5) == expected


def test_too_many_literals() -> None:
    data = b"a SEARCH" + b" TEXT {1+}\r\nq" * (MAX_LITERALS_PER_COMMAND + 1) + b"\r\nb NOOP\r\n"
    events = events_of(data, max_line=1 << 20)
    assert events[0] == ParseFailure("a", "Too many literals")
    assert events[-1] == CommandReady(Noop("b"))


def test_literal_after_untaggable_line() -> None:
    assert events_of(b"+++ LOGIN {3+}\r\nabc\r\nb NOOP\r\n") == [
        ParseFailure(None, "Invalid tag"),
        CommandReady(Noop("b")),
    ]


def test_search_with_utf8_literal() -> None:
    assert events_of(b"a SEARCH CHARSET UTF-8 TEXT {2+}\r\n\xc3\xa9\r\n") == [
        CommandReady(Search("a", SearchText("é"), "UTF-8"))
    ]


# ------------------------------------------------------------ line limits


def test_long_line_is_bad_and_never_buffered() -> None:
    reader = CommandReader(max_line=1024)
    reader.feed(b"a1 LOGIN ")
    for _ in range(100):
        reader.feed(b"x" * 1000)
        assert drain(reader) == []
        assert reader.buffered <= 2048
    reader.feed(b"\r\na2 NOOP\r\n")
    assert drain(reader) == [
        ParseFailure("a1", "Command line too long"),
        CommandReady(Noop("a2")),
    ]


def test_long_line_arriving_whole() -> None:
    data = b"a1 NOOP " + b"x" * 2000 + b"\r\na2 NOOP\r\n"
    expected = [ParseFailure("a1", "Command line too long"), CommandReady(Noop("a2"))]
    assert events_of(data, max_line=1024) == expected
    assert events_of(data, max_line=1024, chunk=1) == expected


def test_line_of_exactly_max_line_is_accepted() -> None:
    line = b"a1 LOGIN fred " + b"p" * (1024 - 14)
    assert len(line) == 1024
    for chunk in (None, 1, 1023, 1025):
        (event,) = events_of(line + b"\r\n", max_line=1024, chunk=chunk)
        assert event == CommandReady(Login("a1", "fred", "p" * 1010))
        (event,) = events_of(line + b"p\r\n", max_line=1024, chunk=chunk)
        assert event == ParseFailure("a1", "Command line too long")


def test_long_line_ending_in_literal_plus_skips_the_literal() -> None:
    data = b"a1 LOGIN " + b"x" * 3000 + b" {5+}\r\nhello\r\na2 NOOP\r\n"
    expected = [ParseFailure("a1", "Command line too long"), CommandReady(Noop("a2"))]
    assert events_of(data, max_line=1024) == expected
    assert events_of(data, max_line=1024, chunk=1) == expected
    assert events_of(data, max_line=1024, chunk=333) == expected


def test_long_continuation_line_keeps_the_tag() -> None:
    data = b"a1 LOGIN {4+}\r\nfred " + b"x" * 3000 + b"\r\na2 NOOP\r\n"
    assert events_of(data, max_line=1024) == [
        ParseFailure("a1", "Command line too long"),
        CommandReady(Noop("a2")),
    ]


def test_untagged_long_line() -> None:
    data = b"x" * 3000 + b"\r\na2 NOOP\r\n"
    assert events_of(data, max_line=1024) == [
        ParseFailure(None, "Command line too long"),
        CommandReady(Noop("a2")),
    ]


# ------------------------------------------------------------ line endings


def test_bare_lf_is_tolerated() -> None:
    assert events_of(b"a NOOP\nb NOOP\r\n") == [CommandReady(Noop("a")), CommandReady(Noop("b"))]


def test_cr_split_from_lf() -> None:
    assert events_of(b"a NOOP\r\nb NOOP\r\n", chunk=7) == [
        CommandReady(Noop("a")),
        CommandReady(Noop("b")),
    ]


def test_empty_line_is_bad() -> None:
    assert events_of(b"\r\na NOOP\r\n") == [
        ParseFailure(None, "Empty command line"),
        CommandReady(Noop("a")),
    ]


def test_pipelined_commands_come_one_at_a_time() -> None:
    reader = CommandReader()
    reader.feed(b"a NOOP\r\nb NOOP\r\nc NOOP")
    assert reader.next_event() == CommandReady(Noop("a"))
    assert reader.next_event() == CommandReady(Noop("b"))
    assert reader.next_event() is None
    reader.feed(b"\r\n")
    assert reader.next_event() == CommandReady(Noop("c"))


# ------------------------------------------------------------ raw lines


def test_idle_then_done_in_the_same_packet() -> None:
    reader = CommandReader()
    reader.feed(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    assert reader.next_event() == CommandReady(Idle("a"))
    reader.next_line_raw()
    assert reader.next_event() == RawLine(b"DONE")
    assert reader.next_event() == CommandReady(Noop("b"))


def test_raw_line_waits_for_its_end() -> None:
    reader = CommandReader()
    reader.next_line_raw()
    reader.feed(b"AGZy")
    assert reader.next_event() is None
    reader.feed(b"ZWQAdGVzdA==\r\n")
    event = reader.next_event()
    assert isinstance(event, RawLine)
    assert event == RawLine(b"AGZyZWQAdGVzdA==")
    assert decode_sasl(event.data) == b"\x00fred\x00test"


def test_raw_line_may_be_empty_or_a_cancel() -> None:
    reader = CommandReader()
    reader.feed(b"\r\n*\r\n")
    reader.next_line_raw()
    assert reader.next_event() == RawLine(b"")
    reader.next_line_raw()
    assert reader.next_event() == RawLine(b"*")


def test_raw_line_too_long() -> None:
    reader = CommandReader(max_line=1024)
    reader.next_line_raw()
    reader.feed(b"A" * 5000 + b"\r\nb NOOP\r\n")
    assert drain(reader) == [
        ParseFailure(None, "Command line too long"),
        CommandReady(Noop("b")),
    ]


def test_cancel_raw() -> None:
    reader = CommandReader()
    reader.next_line_raw()
    reader.cancel_raw()
    reader.feed(b"b NOOP\r\n")
    assert drain(reader) == [CommandReady(Noop("b"))]


def test_authenticate_with_initial_response_then_raw_continuation() -> None:
    reader = CommandReader()
    reader.feed(b"a AUTHENTICATE PLAIN\r\n")
    assert reader.next_event() == CommandReady(Authenticate("a", "PLAIN"))
    reader.next_line_raw()
    reader.feed(b"=\r\n")
    event = reader.next_event()
    assert event == RawLine(b"=")
    assert decode_sasl(b"=") == b""


@pytest.mark.parametrize("bad", [b"***", b"AGZ", b"AGZy ZWQ=", b"=="])
def test_decode_sasl_rejects_garbage(bad: bytes) -> None:
    with pytest.raises(ParseError):
        decode_sasl(bad)


# ------------------------------------------------------------ buffers


def test_starttls_leaves_injected_commands_for_the_server_to_discard() -> None:
    reader = CommandReader()
    reader.feed(b"a STARTTLS\r\nb LOGIN evil evil\r\n")
    assert reader.next_event() == CommandReady(StartTls("a"))
    assert not reader.idle
    assert reader.take_buffered() == b"b LOGIN evil evil\r\n"
    assert reader.idle
    assert reader.next_event() is None


def test_take_buffered_for_compress() -> None:
    reader = CommandReader()
    reader.feed(b"a COMPRESS DEFLATE\r\n\x78\x9c\x01")
    assert isinstance(reader.next_event(), CommandReady)
    assert reader.take_buffered() == b"\x78\x9c\x01"


# ------------------------------------------------------------ splitting


CORPUS = (
    b"a1 CAPABILITY\r\n"
    b"a2 LOGIN {4}\r\nfred {6+}\r\nsecret\r\n"
    b'a3 SELECT "INBOX" (CONDSTORE)\r\n'
    b"a4 UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)]<0.512>) (CHANGEDSINCE 7)\r\n"
    b'a5 APPEND Drafts (\\Draft) "27-Nov-2026 13:00:00 +0100" {9+}\r\nabc\r\ndef\r\n'
    b"a6 SEARCH CHARSET UTF-8 OR SUBJECT {2+}\r\n\xc3\xa9 NOT UID 5:* SINCE 1-Jan-2026\r\n"
    b"a7 BOGUS\r\n"
    b"a8 UID STORE 1,3 +FLAGS.SILENT (\\Seen $Label1)\r\n"
    b"a9 APPEND INBOX {50+}\r\n" + b"z" * 50 + b"\r\n"
    b"b1 LOGIN " + b"l" * 300 + b"\r\n"
    b'b2 LIST (SUBSCRIBED) "" ("*" "%") RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES))\r\n'
    b"b3 LOGOUT\r\n"
)


def test_corpus_events() -> None:
    events = [e for e in events_of(CORPUS, max_line=256, max_literal=40)]
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "CommandReady",
        "NeedContinuation",
        "CommandReady",
        "CommandReady",
        "CommandReady",
        "CommandReady",
        "CommandReady",
        "ParseFailure",
        "CommandReady",
        "LiteralTooLarge",
        "ParseFailure",
        "CommandReady",
        "CommandReady",
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(CORPUS) - 1), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    whole = events_of(CORPUS, max_line=256, max_literal=40)
    reader = CommandReader(max_line=256, max_literal=40)
    got: list[Event] = []
    last = 0
    for cut in sorted(set(cuts)) + [len(CORPUS)]:
        reader.feed(CORPUS[last:cut])
        got += drain(reader)
        last = cut
    assert got == whole


def test_corpus_one_byte_at_a_time() -> None:
    assert events_of(CORPUS, max_line=256, max_literal=40, chunk=1) == events_of(
        CORPUS, max_line=256, max_literal=40
    )


ALPHABET = b'aA1 *%()[]<>{}+~"\\\r\n.:,$-=\x00\xc3\xa9' + b"FETCH BODY LOGIN SEARCH APPEND "


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(ALPHABET)), max_size=400).map(bytes))
def test_garbage_never_raises_and_stays_bounded(data: bytes) -> None:
    reader = CommandReader(max_line=64, max_literal=64)
    for i in range(0, len(data), 13):
        reader.feed(data[i : i + 13])
        for event in drain(reader):
            if isinstance(event, NeedContinuation):
                assert event.size <= 64
            if isinstance(event, ParseFailure):
                assert event.message
        assert reader.buffered <= 64 + 13 + 128


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    reader = CommandReader(max_line=128, max_literal=128)
    reader.feed(data + b"\r\n")
    drain(reader)
    assert reader.buffered <= 2 * 128 + 4
    if not reader.in_command and not reader.closed:
        # Whatever came before, a fresh line after a CRLF is understood.
        reader.feed(b"z NOOP\r\n")
        assert drain(reader)[-1] == CommandReady(Noop("z"))


# ------------------------------------------------------------ cross-protocol


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"post /login HTTP/1.0\r\n",
    ],
)
def test_other_protocols_are_fatal(data: bytes) -> None:
    reader = CommandReader()
    reader.feed(data)
    events = drain(reader)
    assert len(events) == 1
    assert isinstance(events[0], ParseFailure) and events[0].fatal and events[0].tag is None
    assert reader.closed
    reader.feed(b"a NOOP\r\n")
    assert drain(reader) == []
    assert reader.buffered == 0


def test_tls_bytes_inside_a_literal_are_data() -> None:
    assert events_of(b"a APPEND INBOX {3+}\r\n\x16\x03x\r\n") == [
        CommandReady(Append("a", "INBOX", (AppendMessage(message=b"\x16\x03x"),)))
    ]


def test_command_name_while_reading() -> None:
    reader = CommandReader()
    assert reader.command_name is None
    reader.feed(b"a append INBOX {10}\r\n")
    assert drain(reader) == [NeedContinuation("a", 10)]
    assert reader.command_name == "APPEND"
    reader.reject_literal()
    assert reader.command_name is None


def test_max_literal_can_be_lowered_before_authentication() -> None:
    reader = CommandReader(max_literal=1 << 20)
    reader.max_literal = 0
    reader.feed(b"a APPEND INBOX {10}\r\n")
    assert drain(reader) == [LiteralTooLarge("a", 10, synchronizing=True)]


def test_rfc3501_section_8_sample() -> None:
    data = (
        b"a001 login mrc secret\r\n"
        b"a002 select inbox\r\n"
        b"a003 fetch 12 full\r\n"
        b"a004 fetch 12 body[header]\r\n"
        b"a005 store 12 +flags \\deleted\r\n"
        b"a006 logout\r\n"
    )
    events = events_of(data)
    assert [type(e) for e in events] == [CommandReady] * 6
    commands = [e.command for e in events if isinstance(e, CommandReady)]
    assert [c.name for c in commands] == ["LOGIN", "SELECT", "FETCH", "FETCH", "STORE", "LOGOUT"]
    assert commands[0] == Login("a001", "mrc", "secret")
