"""imapd.responses: wire forms of strings, lists, dates, sets and response codes
(and INTERNALDATE as `imapd.responses` renders it, read back by imaplib)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from imapd import responses as r
from imapd.parser import CommandReader, CommandReady, Login
from imapd.responses import internal_date


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("fred]x", b"fred]x"),
        ("", b'""'),
        ("NIL", b'"NIL"'),
        ("nil", b'"nil"'),
        ("a b", b'"a b"'),
        ('a"b', b'"a\\"b"'),
        ("a\\b", b'"a\\\\b"'),
        ("a*", b'"a*"'),
        ("(x)", b'"(x)"'),
        ("{3}", b'"{3}"'),
        ("é", b"{2}\r\n\xc3\xa9"),
        ("a\r\nb", b"{4}\r\na\r\nb"),
        (b"\x00", b"{1}\r\n\x00"),
    ],
)
def test_astring(value: str | bytes, wire: bytes) -> None:
    assert r.astring(value) == wire


def test_long_strings_become_literals() -> None:
    assert r.string("x" * r.MAX_QUOTED) == b'"' + b"x" * r.MAX_QUOTED + b'"'
    assert r.string("x" * (r.MAX_QUOTED + 1)).startswith(b"{%d}\r\n" % (r.MAX_QUOTED + 1))


def test_lists() -> None:
    assert r.paren([b"a", b"b"]) == b"(a b)"
    assert r.paren([]) == b"()"


def test_astring_round_trips_through_the_parser() -> None:
    for user, password in [("fred", "pw"), ("a b", 'x"y\\z'), ("NIL", "é€"), ("", "\r\n")]:
        reader = CommandReader()
        reader.feed(b"t LOGIN " + r.astring(user) + b" " + r.astring(password) + b"\r\n")
        events = []
        while (e := reader.next_event()) is not None:
            events.append(e)
        assert events[-1] == CommandReady(Login("t", user, password))


def test_flag_list_is_stable() -> None:
    assert (
        r.flag_list(["$Label1", "\\Seen", "\\Answered", "\\Seen"]) == b"(\\Answered \\Seen $Label1)"
    )
    assert r.flag_list([]) == b"()"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 27, 13, 0, tzinfo=UTC), "27-Nov-2026 13:00:00 +0000"),
        (
            datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8))),
            "07-Feb-1994 21:52:25 -0800",
        ),
        (
            datetime(2000, 1, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "01-Jan-2000 00:00:00 +0530",
        ),
        (
            datetime(2000, 1, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
            "01-Jan-2000 00:00:00 -0330",
        ),
        (datetime(2026, 5, 3, 4, 5, 6), "03-May-2026 04:05:06 +0000"),
    ],
)
def test_date_time(moment: datetime, text: str) -> None:
    assert r.format_date_time(moment) == text


@pytest.mark.parametrize(
    ("values", "sort", "wire"),
    [
        ([1], True, b"1"),
        ([1, 2, 3, 5, 9, 10], True, b"1:3,5,9:10"),
        ([5, 3, 4, 1], True, b"1,3:5"),
        ([5, 3, 4, 1], False, b"5,3:4,1"),
        ([3, 3], True, b"3"),
    ],
)
def test_sequence_set(values: list[int], sort: bool, wire: bytes) -> None:
    assert r.sequence_set(values, sort=sort) == wire


def test_sequence_set_cannot_be_empty() -> None:
    with pytest.raises(ValueError):
        r.sequence_set([])


def test_every_code_in_the_brief_is_catalogued() -> None:
    names = {c.value for c in r.Code}
    for required in (
        "ALERT BADCHARSET CAPABILITY PARSE PERMANENTFLAGS READ-ONLY READ-WRITE TRYCREATE "
        "UIDNEXT UIDVALIDITY UNSEEN APPENDUID COPYUID UIDNOTSTICKY HIGHESTMODSEQ NOMODSEQ "
        "MODIFIED CLOSED TOOBIG UNAVAILABLE AUTHENTICATIONFAILED AUTHORIZATIONFAILED "
        "PRIVACYREQUIRED CONTACTADMIN NOPERM INUSE EXPUNGEISSUED CORRUPTION SERVERBUG "
        "CLIENTBUG CANNOT LIMIT OVERQUOTA ALREADYEXISTS NONEXISTENT"
    ).split():
        assert required in names


@pytest.mark.parametrize(
    ("code", "wire"),
    [
        (r.ALERT, b"[ALERT]"),
        (r.READ_ONLY, b"[READ-ONLY]"),
        (r.READ_WRITE, b"[READ-WRITE]"),
        (r.TOOBIG, b"[TOOBIG]"),
        (r.UNAVAILABLE, b"[UNAVAILABLE]"),
        (r.NONEXISTENT, b"[NONEXISTENT]"),
        (r.UNKNOWN_CTE, b"[UNKNOWN-CTE]"),
        (r.badcharset(), b"[BADCHARSET]"),
        (r.badcharset(["UTF-8", "US-ASCII"]), b"[BADCHARSET (UTF-8 US-ASCII)]"),
        (r.capability_code(["IMAP4rev1", "IDLE"]), b"[CAPABILITY IMAP4rev1 IDLE]"),
        (
            r.permanentflags(["\\Seen", "\\Deleted"]),
            b"[PERMANENTFLAGS (\\Deleted \\Seen \\*)]",
        ),
        (r.permanentflags([], keywords_allowed=True), b"[PERMANENTFLAGS (\\*)]"),
        (r.permanentflags(["\\Seen"], keywords_allowed=False), b"[PERMANENTFLAGS (\\Seen)]"),
        (r.uidnext(4392), b"[UIDNEXT 4392]"),
        (r.uidvalidity(3857529045), b"[UIDVALIDITY 3857529045]"),
        (r.unseen(12), b"[UNSEEN 12]"),
        (r.highestmodseq(715194045007), b"[HIGHESTMODSEQ 715194045007]"),
        (r.modified([7, 9]), b"[MODIFIED 7,9]"),
        (r.appenduid(38505, [3955]), b"[APPENDUID 38505 3955]"),
        (
            r.copyuid(38505, [304, 319, 320], [3956, 3957, 3958]),
            b"[COPYUID 38505 304,319:320 3956:3958]",
        ),
    ],
)
def test_response_codes(code: r.ResponseCode, wire: bytes) -> None:
    assert code.render() == wire
    # What handlers give `imapd.errors.Reply` (which adds the brackets).
    assert code.text().encode() == wire[1:-1]


def test_copyuid_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        r.copyuid(1, [1, 2], [3])


def test_python_imaplib_reads_our_dates_and_flags() -> None:
    import imaplib
    import time

    moment = datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8)))
    parsed = imaplib.Internaldate2tuple(b"1 (INTERNALDATE " + internal_date(moment).encode() + b")")
    assert parsed is not None
    # imaplib answers in local time; mktime turns it back into an epoch.
    assert int(time.mktime(parsed)) == int(moment.timestamp())
    assert imaplib.ParseFlags(b"1 (FLAGS " + r.flag_list(["\\Seen", "$Label1"]) + b")") == (
        b"\\Seen",
        b"$Label1",
    )
