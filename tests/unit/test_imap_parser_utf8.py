"""The parser once a session enabled UTF8=ACCEPT (RFC 6855 3): mailbox names
and LIST patterns are UTF-8 as sent (no modified UTF-7: "&" is itself),
quoted strings must be valid UTF-8; before, modified UTF-7 as RFC 3501 has
it. Tables, whole and byte by byte."""

from __future__ import annotations

import pytest

from imapd.parser import (
    Append,
    AppendMessage,
    Command,
    CommandReader,
    CommandReady,
    Create,
    Event,
    GetQuota,
    List,
    Login,
    NeedContinuation,
    ParseFailure,
    Select,
    Status,
    StatusItem,
)
from imapd.parser.commands import Search as SearchCommand
from imapd.parser.commands import SearchHeader


def events(data: bytes, *, utf8: bool, chunk: int | None = None) -> list[Event]:
    reader = CommandReader()
    reader.utf8 = utf8
    out: list[Event] = []
    step = chunk or len(data)
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
        while (event := reader.next_event()) is not None:
            if not isinstance(event, NeedContinuation):
                out.append(event)
    return out


# (line, parsed before ENABLE UTF8=ACCEPT, parsed after)
CASES: list[tuple[bytes, Command | None, Command | None]] = [
    (b'a SELECT "&AOk-t&AOk-"', Select("a", "\u00e9t\u00e9"), Select("a", "&AOk-t&AOk-")),
    (b'a SELECT "\xc3\xa9t\xc3\xa9"', Select("a", "\u00e9t\u00e9"), Select("a", "\u00e9t\u00e9")),
    (b"a CREATE A&B", None, Create("a", "A&B")),  # "&B" is not modified UTF-7
    (b"a CREATE A&-B", Create("a", "A&B"), Create("a", "A&-B")),
    (b'a CREATE "inbox/\xc3\xa9"', Create("a", "INBOX/\u00e9"), Create("a", "INBOX/\u00e9")),
    (b"a CREATE inbox/\xc3\xa9", None, None),  # atoms stay 7-bit (RFC 6855 extends quoted)
    (b'a LIST "" "R\xc3\xa9sum\xc3\xa9s/*"', List("a", "", ("R\u00e9sum\u00e9s/*",)),
     List("a", "", ("R\u00e9sum\u00e9s/*",))),
    (b'a LIST "&-" "%"', List("a", "&", ("%",)), List("a", "&-", ("%",))),
    (b'a STATUS "\xc3\xa9" (MESSAGES)', Status("a", "\u00e9", (StatusItem.MESSAGES,)),
     Status("a", "\u00e9", (StatusItem.MESSAGES,))),
    (b"a GETQUOTA A&B", None, GetQuota("a", "A&B")),
    # Invalid UTF-8: a quoted string (RFC 6855 3: BAD) and a mailbox name.
    (b'a SELECT "\xc3("', None, None),
    (b"a SELECT {2}\r\n\xc3(", None, None),
    (b'a LOGIN "fred" "\xff"', None, None),
    (b'a SEARCH CHARSET ISO-8859-1 SUBJECT "\xe9t\xe9"',  # 8-bit quoted: tolerated before
     SearchCommand("a", SearchHeader("SUBJECT", "\u00e9t\u00e9"), "ISO-8859-1"),
     None),
    (b'a LOGIN "fr\xc3\xa9d" "pw"', Login("a", "fr\u00e9d", "pw"), Login("a", "fr\u00e9d", "pw")),
    (b'a APPEND "\xc3\xa9" UTF8 (~{1}\r\nx)',
     Append("a", "\u00e9", (AppendMessage(message=b"x", binary=True, utf8=True),)),
     Append("a", "\u00e9", (AppendMessage(message=b"x", binary=True, utf8=True),))),
    (b"a SELECT \x01", None, None),
]


def _check(found: list[Event], expected: Command | None) -> None:
    assert len(found) == 1, found
    if expected is None:
        assert isinstance(found[0], ParseFailure) and found[0].tag == "a", found
    else:
        assert found == [CommandReady(expected)]


@pytest.mark.parametrize(("line", "before", "after"), CASES,
                         ids=[c[0][:40].decode("latin-1") for c in CASES])
@pytest.mark.parametrize("chunk", [None, 1])
def test_before_and_after_enable(line: bytes, before: Command | None, after: Command | None,
                                 chunk: int | None) -> None:
    _check(events(line + b"\r\n", utf8=False, chunk=chunk), before)
    _check(events(line + b"\r\n", utf8=True, chunk=chunk), after)
