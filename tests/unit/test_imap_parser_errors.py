"""Parser tables: every malformed command gives one BAD with the right tag, then resyncs."""

from __future__ import annotations

import pytest

from imapd.parser import (
    CommandReader,
    CommandReady,
    Event,
    NeedContinuation,
    Noop,
    ParseFailure,
)


def events_of(data: bytes, *, chunk: int | None = None) -> list[Event]:
    reader = CommandReader(max_line=8192, max_literal=1 << 20)
    out: list[Event] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            out.append(event)
    return out


BAD: list[tuple[bytes, str | None]] = [
    # tags and framing
    (b"", None),
    (b"a", None),
    (b"a ", "a"),
    (b" NOOP", None),
    (b"+a NOOP", None),
    (b"a+ NOOP", None),
    (b"a{ NOOP", None),
    (b"a* NOOP", None),
    (b"a% NOOP", None),
    (b'a" NOOP', None),
    (b"a( NOOP", None),
    (b"\xc3\xa9 NOOP", None),
    (b"a\x01 NOOP", None),
    (b"a FOO", "a"),
    (b"a NOOPX", "a"),
    (b"a NOOP extra", "a"),
    (b"a NOOP ", "a"),
    (b"a  NOOP", "a"),
    (b"a\tNOOP", None),
    (b"a CAPABILITY x", "a"),
    (b"a LOGOUT now", "a"),
    # LOGIN / AUTHENTICATE / STARTTLS
    (b"a LOGIN", "a"),
    (b"a LOGIN fred", "a"),
    (b"a LOGIN fred ", "a"),
    (b"a LOGIN fred pw x", "a"),
    (b'a LOGIN "fred pw', "a"),
    (b'a LOGIN "fr\\ed" pw', "a"),
    (b"a LOGIN fred p\xc3\xa9", "a"),
    (b"a LOGIN fred (pw)", "a"),
    (b"a LOGIN fred pw*", "a"),
    (b"a LOGIN fred %", "a"),
    (b"a LOGIN {3}\r\n\xff\xfe\xfd pw", "a"),
    (b"a LOGIN {3}\r\na\x00b pw", "a"),
    (b"a LOGIN {3}\r\nabc", "a"),
    (b"a LOGIN {3}\r\nabc{3}\r\ndef", "a"),
    (b"a AUTHENTICATE", "a"),
    (b"a AUTHENTICATE PLAIN ***", "a"),
    (b"a AUTHENTICATE PLAIN AGZ", "a"),
    (b"a AUTHENTICATE PLAIN dGVzdA== x", "a"),
    (b"a AUTHENTICATE PLAIN  dGVzdA==", "a"),
    (b"a STARTTLS now", "a"),
    # mailbox names
    (b"a SELECT", "a"),
    (b"a SELECT ", "a"),
    # (7-bit names that are not modified UTF-7 are well-formed: NO, not BAD,
    # see test_imap_parser_codecs.py)
    (b"a SELECT \xff", "a"),
    (b'a SELECT "a\x00b"', "a"),
    (b"a SELECT INBOX (FOO)", "a"),
    (b"a SELECT INBOX (CONDSTORE", "a"),
    (b"a SELECT INBOX CONDSTORE", "a"),
    (b"a SELECT INBOX (QRESYNC)", "a"),
    (b"a SELECT INBOX (QRESYNC (0 1))", "a"),
    (b"a SELECT INBOX (QRESYNC (1))", "a"),
    (b"a SELECT INBOX (QRESYNC (1 2 (1:2)))", "a"),
    (b"a EXAMINE", "a"),
    (b"a CREATE", "a"),
    (b"a CREATE x (USE)", "a"),
    (b"a CREATE x (FOO (\\Drafts))", "a"),
    (b"a DELETE", "a"),
    (b"a DELETE a b", "a"),
    (b"a RENAME a", "a"),
    (b"a SUBSCRIBE", "a"),
    (b"a UNSUBSCRIBE", "a"),
    # LIST / LSUB / STATUS
    (b"a LIST", "a"),
    (b'a LIST ""', "a"),
    (b'a LIST "" ', "a"),
    (b'a LIST (FOO) "" *', "a"),
    (b'a LIST (RECURSIVEMATCH) "" *', "a"),
    (b'a LIST "" * RETURN (FOO)', "a"),
    (b'a LIST "" * RETURN', "a"),
    (b'a LIST "" * RETURN (STATUS ())', "a"),
    (b'a LIST "" * RETURN (STATUS (FOO))', "a"),
    (b'a LIST "" ()', "a"),
    (b'a LIST "" * FOO (x)', "a"),
    (b'a LIST "" "*', "a"),
    (b"a LSUB", "a"),
    (b'a LSUB ""', "a"),
    (b"a STATUS INBOX", "a"),
    (b"a STATUS INBOX ()", "a"),
    (b"a STATUS INBOX (FOO)", "a"),
    (b"a STATUS INBOX MESSAGES", "a"),
    (b"a STATUS INBOX (MESSAGES", "a"),
    # APPEND
    (b"a APPEND", "a"),
    (b"a APPEND INBOX", "a"),
    (b"a APPEND INBOX (\\Seen)", "a"),
    (b"a APPEND INBOX hello", "a"),
    (b'a APPEND INBOX "hello" {1}\r\nx', "a"),
    (b'a APPEND INBOX "32-Feb-1994 21:52:25 -0800" {1}\r\nx', "a"),
    (b'a APPEND INBOX "07-Feb-1994 25:52:25 -0800" {1}\r\nx', "a"),
    (b'a APPEND INBOX "07-Feb-1994 21:52:25 0800" {1}\r\nx', "a"),
    (b'a APPEND INBOX "07-Feb-1994 21:52:25" {1}\r\nx', "a"),
    (b'a APPEND INBOX "07-Feb-94 21:52:25 +0000" {1}\r\nx', "a"),
    (b"a APPEND INBOX (\\Seen {1}\r\nx", "a"),
    (b"a APPEND INBOX {1}\r\nx extra", "a"),
    (b"a APPEND INBOX {1}\r\nx{1}\r\ny", "a"),  # MULTIAPPEND: SP between messages
    (b"a APPEND INBOX {1}\r\nx ", "a"),
    (b"a APPEND INBOX {1}\r\nx (\\Seen)", "a"),
    (b"a APPEND INBOX {1}\r\n\x00", "a"),  # NUL only in literal8 (RFC 3516)
    (b"a APPEND INBOX {1}\r\nx {1}\r\n\x00", "a"),
    (b"a APPEND INBOX CATENATE ()", "a"),  # RFC 4469: at least one part
    (b"a APPEND INBOX CATENATE", "a"),
    (b"a APPEND INBOX CATENATE (TEXT)", "a"),
    (b"a APPEND INBOX CATENATE (TEXT \"x\")", "a"),  # TEXT takes a literal
    (b"a APPEND INBOX CATENATE (URL)", "a"),
    (b"a APPEND INBOX CATENATE (FOO {1}\r\nx)", "a"),
    (b"a APPEND INBOX CATENATE (TEXT {1}\r\nx", "a"),
    (b"a APPEND INBOX CATENATE (TEXT {1}\r\n\x00)", "a"),
    (b"a APPEND INBOX CATENATE (URL \"/INBOX/;UID=1\"  TEXT {1}\r\nx)", "a"),
    (b"a APPEND INBOX UTF8 {1}\r\nx", "a"),  # RFC 6855: UTF8 "(" literal8 ")"
    (b"a APPEND INBOX UTF8 (~{1}\r\nx", "a"),
    (b"a APPEND INBOX UTF8 (\"x\")", "a"),
    (b"a APPEND INBOX (\\Seen) CATENATE (URL \"/x/;UID=1\") x", "a"),
    (b"a APPEND ~{5}\r\nINBOX {1}\r\nx", "a"),  # literal8 only for message data
    (b"a APPEND INBOX (\\) {1}\r\nx", "a"),
    # misc authenticated
    (b"a NAMESPACE x", "a"),
    (b"a ENABLE", "a"),
    (b"a ENABLE ", "a"),
    (b"a IDLE x", "a"),
    (b"a ID", "a"),
    (b'a ID ("a")', "a"),
    (b'a ID ("a" "b"', "a"),
    (b"a ID (a b)", "a"),
    (b"a ID " + b"(" + b" ".join(b'"k%d" "v"' % i for i in range(31)) + b")", "a"),
    (b"a COMPRESS", "a"),
    (b"a COMPRESS DEFLATE x", "a"),
    (b"a GETACL", "a"),
    (b"a SETACL INBOX fred", "a"),
    (b"a DELETEACL INBOX", "a"),
    (b"a LISTRIGHTS INBOX", "a"),
    (b"a MYRIGHTS", "a"),
    (b"a GETQUOTA", "a"),
    (b"a GETQUOTAROOT", "a"),
    (b'a SETQUOTA ""', "a"),
    (b'a SETQUOTA "" (STORAGE)', "a"),
    (b'a SETQUOTA "" (STORAGE x)', "a"),
    (b'a SETQUOTA "" STORAGE 1', "a"),
    # selected: EXPUNGE, UID
    (b"a EXPUNGE 1", "a"),
    (b"a CHECK x", "a"),
    (b"a CLOSE x", "a"),
    (b"a UNSELECT x", "a"),
    (b"a UID", "a"),
    (b"a UID ", "a"),
    (b"a UID FOO 1", "a"),
    (b"a UID NOOP", "a"),
    (b"a UID EXPUNGE", "a"),
    (b"a UID EXPUNGE x", "a"),
    # sequence sets
    (b"a FETCH", "a"),
    (b"a FETCH 1", "a"),
    (b"a FETCH 0 FLAGS", "a"),
    (b"a FETCH 1:0 FLAGS", "a"),
    (b"a FETCH 1: FLAGS", "a"),
    (b"a FETCH :1 FLAGS", "a"),
    (b"a FETCH 1,,2 FLAGS", "a"),
    (b"a FETCH 1, FLAGS", "a"),
    (b"a FETCH ,1 FLAGS", "a"),
    (b"a FETCH 1:2:3 FLAGS", "a"),
    (b"a FETCH 4294967296 FLAGS", "a"),
    (b"a FETCH 99999999999999999999999 FLAGS", "a"),
    (b"a FETCH -1 FLAGS", "a"),
    (b"a FETCH 1** FLAGS", "a"),
    (b"a FETCH $,1 FLAGS", "a"),
    (b"a FETCH 1,$ FLAGS", "a"),
    (b"a FETCH x FLAGS", "a"),
    # FETCH items
    (b"a FETCH 1 (FLAGS", "a"),
    (b"a FETCH 1 ()", "a"),
    (b"a FETCH 1 (FLAGS )", "a"),
    (b"a FETCH 1 ( FLAGS)", "a"),
    (b"a FETCH 1 FOO", "a"),
    (b"a FETCH 1 (ALL)", "a"),
    (b"a FETCH 1 ALL FLAGS", "a"),
    (b"a FETCH 1 FLAGS UID", "a"),
    (b"a FETCH 1 RFC822.FOO", "a"),
    (b"a FETCH 1 BODY.PEEK", "a"),
    (b"a FETCH 1 BODY[", "a"),
    (b"a FETCH 1 BODY[TEXT", "a"),
    (b"a FETCH 1 BODY[FOO]", "a"),
    (b"a FETCH 1 BODY[MIME]", "a"),
    (b"a FETCH 1 BODY[0]", "a"),
    (b"a FETCH 1 BODY[1.0]", "a"),
    (b"a FETCH 1 BODY[1.]", "a"),
    (b"a FETCH 1 BODY[.1]", "a"),
    (b"a FETCH 1 BODY[1.FOO]", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS]", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS (a:b)]", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS (From]", "a"),
    (b"a FETCH 1 BODY[HEADER (From)]", "a"),
    (b"a FETCH 1 BODY[TEXT.HEADER]", "a"),
    (b"a FETCH 1 BODY[]<0>", "a"),
    (b"a FETCH 1 BODY[]<0.0>", "a"),
    (b"a FETCH 1 BODY[]<.5>", "a"),
    (b"a FETCH 1 BODY[]<0.5", "a"),
    (b"a FETCH 1 BODY[]<x.5>", "a"),
    (b"a FETCH 1 BODY [TEXT]", "a"),
    (b"a FETCH 1 BINARY[HEADER]", "a"),
    (b"a FETCH 1 BINARY[1.MIME]", "a"),
    (b"a FETCH 1 BINARY.SIZE[TEXT]", "a"),
    (b"a FETCH 1 BINARY.SIZE", "a"),
    (b"a FETCH 1 UID[1]", "a"),
    (b"a FETCH 1 FLAGS (VANISHED)", "a"),
    (b"a UID FETCH 1 FLAGS (VANISHED)", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE x)", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE)", "a"),
    (b"a FETCH 1 FLAGS (FOO)", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 99999999999999999999)", "a"),
    # STORE
    (b"a STORE", "a"),
    (b"a STORE 1", "a"),
    (b"a STORE 1 FLAGS", "a"),
    (b"a STORE 1 FLAGS ", "a"),
    (b"a STORE 1 XFLAGS (\\Seen)", "a"),
    (b"a STORE 1 +FLAGS.NOISY (\\Seen)", "a"),
    (b"a STORE 1 +FLAGS (\\Seen", "a"),
    (b"a STORE 1 +FLAGS ()x", "a"),
    (b"a STORE 1 FLAGS (\\)", "a"),
    (b"a STORE 1 FLAGS (\\*)", "a"),
    (b"a STORE 1 FLAGS (a b c", "a"),
    (b"a STORE 1 FLAGS (a) b", "a"),
    (b"a STORE 1 FLAGS \\Seen  \\Draft", "a"),
    (b"a STORE 1 (UNCHANGEDSINCE) FLAGS (x)", "a"),
    (b"a STORE 1 (FOO 1) FLAGS (x)", "a"),
    (b"a STORE 1 (UNCHANGEDSINCE 1) (x)", "a"),
    # COPY / MOVE
    (b"a COPY", "a"),
    (b"a COPY 1", "a"),
    (b"a COPY 1 ", "a"),
    (b"a COPY INBOX", "a"),
    (b"a MOVE 1", "a"),
    (b"a UID MOVE 1:*", "a"),
    # SEARCH
    (b"a SEARCH", "a"),
    (b"a SEARCH ", "a"),
    (b"a SEARCH FOO", "a"),
    (b"a SEARCH SEEN FOO", "a"),
    (b"a SEARCH OR SEEN", "a"),
    (b"a SEARCH OR", "a"),
    (b"a SEARCH NOT", "a"),
    (b"a SEARCH (SEEN", "a"),
    (b"a SEARCH SEEN)", "a"),
    (b"a SEARCH ()", "a"),
    (b"a SEARCH ( SEEN)", "a"),
    (b"a SEARCH SEEN  DRAFT", "a"),
    (b"a SEARCH BEFORE", "a"),
    (b"a SEARCH BEFORE 32-Jan-2000", "a"),
    (b"a SEARCH BEFORE 29-Feb-2023", "a"),
    (b"a SEARCH BEFORE 1-Foo-2000", "a"),
    (b"a SEARCH BEFORE 2000-01-01", "a"),
    (b"a SEARCH BEFORE 1-Jan-00", "a"),
    (b"a SEARCH BEFORE 123-Jan-2000", "a"),
    (b'a SEARCH BEFORE "1-Jan-2000', "a"),
    (b"a SEARCH ON 1-Jan-2000x", "a"),
    (b"a SEARCH LARGER", "a"),
    (b"a SEARCH LARGER x", "a"),
    (b"a SEARCH SMALLER -1", "a"),
    (b"a SEARCH HEADER", "a"),
    (b"a SEARCH HEADER Subject", "a"),
    (b'a SEARCH HEADER "a:b" x', "a"),
    (b'a SEARCH HEADER "" x', "a"),
    (b"a SEARCH FROM", "a"),
    (b"a SEARCH KEYWORD", "a"),
    (b"a SEARCH KEYWORD \\Seen", "a"),
    (b"a SEARCH UID", "a"),
    (b"a SEARCH UID x", "a"),
    (b"a SEARCH 0", "a"),
    (b"a SEARCH CHARSET", "a"),
    (b"a SEARCH CHARSET UTF-8", "a"),
    (b"a SEARCH CHARSET UTF-8 ", "a"),
    (b"a SEARCH CHARSET UTF-8 TEXT {2}\r\n\xff\xff", "a"),
    (b"a SEARCH TEXT {2}\r\n\xff\xff", "a"),
    (b"a SEARCH CHARSET US-ASCII ALL CHARSET UTF-8", "a"),
    (b"a SEARCH RETURN (FOO) ALL", "a"),
    (b"a SEARCH RETURN (MIN)", "a"),
    (b"a SEARCH MODSEQ", "a"),
    (b"a SEARCH MODSEQ x", "a"),
    (b'a SEARCH MODSEQ "/flags/\\\\draft" bogus 5', "a"),
    (b'a SEARCH MODSEQ "/flags/\\\\draft" all', "a"),
    (b"a SEARCH OLDER 0", "a"),
    (b"a SEARCH YOUNGER", "a"),
    (b"a SEARCH " + b"(" * 150 + b"ALL" + b")" * 150, "a"),
    (b"a SEARCH " + b"NOT " * 150 + b"ALL", "a"),
    # NOTIFY (RFC 5465 5, 6.1, 8)
    (b"a NOTIFY", "a"),
    (b"a NOTIFY SET", "a"),
    (b"a NOTIFY SET STATUS", "a"),
    (b"a NOTIFY RESET", "a"),
    (b"a NOTIFY NONE (personal NONE)", "a"),
    (b"a NOTIFY SET (selected (MessageNew))", "a"),
    (b"a NOTIFY SET (selected (MessageExpunge))", "a"),
    (b"a NOTIFY SET (personal (FlagChange MessageNew))", "a"),
    (b"a NOTIFY SET (personal (AnnotationChange))", "a"),
    (b"a NOTIFY SET (selected (SubscriptionChange))", "a"),
    (b"a NOTIFY SET (selected NONE) (selected-delayed NONE)", "a"),
    (b"a NOTIFY SET (selected NONE) (selected NONE)", "a"),
    (b"a NOTIFY SET (everything (MailboxName))", "a"),
    (b"a NOTIFY SET (subtree (MailboxName))", "a"),
    (b"a NOTIFY SET (mailboxes () (MailboxName))", "a"),
    (b"a NOTIFY SET (personal ())", "a"),
    (b"a NOTIFY SET (personal (MailboxName)", "a"),
    (b"a NOTIFY SET (personal (MailboxName))(inboxes NONE)", "a"),
    (b"a NOTIFY SET (selected (MessageNew (bogus) MessageExpunge))", "a"),
    (b"a NOTIFY SET (personal (MessageNew (UID) MessageExpunge))", "a"),
    (b"a NOTIFY SET " + b"(personal NONE) " * 40 + b"(inboxes NONE)", "a"),
]


@pytest.mark.parametrize(("line", "tag"), BAD, ids=[b[0][:50].decode("latin-1") for b in BAD])
def test_bad_command_then_resync(line: bytes, tag: str | None) -> None:
    events = [e for e in events_of(line + b"\r\nb NOOP\r\n") if not isinstance(e, NeedContinuation)]
    assert len(events) == 2, events
    failure, after = events
    assert isinstance(failure, ParseFailure), failure
    assert failure.tag == tag
    assert not failure.fatal
    assert failure.message and "\r" not in failure.message and "\n" not in failure.message
    assert after == CommandReady(Noop("b"))


@pytest.mark.parametrize(
    ("line", "tag"), BAD[::7], ids=[b[0][:50].decode("latin-1") for b in BAD[::7]]
)
def test_bad_command_one_byte_at_a_time(line: bytes, tag: str | None) -> None:
    whole = [e for e in events_of(line + b"\r\nb NOOP\r\n") if not isinstance(e, NeedContinuation)]
    bytewise = [
        e
        for e in events_of(line + b"\r\nb NOOP\r\n", chunk=1)
        if not isinstance(e, NeedContinuation)
    ]
    assert bytewise == whole


def test_failure_messages_never_echo_client_data() -> None:
    secret = b"S3cr3tPassw0rd"
    for line in (
        b"a LOGIN " + secret,
        b"a FOO" + secret,
        b"a SEARCH " + secret,
        b"a LOGIN fred " + secret + b" extra",
        b"a FETCH 1 " + secret,
    ):
        (failure, *_) = events_of(line + b"\r\n")
        assert isinstance(failure, ParseFailure)
        assert secret.decode() not in failure.message
