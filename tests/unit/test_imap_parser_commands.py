"""Parser tables: every command, its variants, and the typed result (RFC 3501 + extensions)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from imapd.parser import (
    ALL_COMMANDS,
    Append,
    AppendMessage,
    Authenticate,
    CancelUpdate,
    Capability,
    CatenateText,
    CatenateUrl,
    Check,
    Close,
    Command,
    CommandReader,
    CommandReady,
    Compress,
    Copy,
    Create,
    DateField,
    DateRelation,
    Delete,
    DeleteAcl,
    Enable,
    Event,
    Examine,
    Expunge,
    Fetch,
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
    GetAcl,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    ListRights,
    Login,
    Logout,
    Lsub,
    Move,
    MyRights,
    Namespace,
    NeedContinuation,
    Noop,
    Notify,
    NotifyFilter,
    NotifyGroup,
    Partial,
    QResync,
    Rename,
    Search,
    SearchAll,
    SearchAnd,
    SearchBody,
    SearchDate,
    SearchFlag,
    SearchHeader,
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
    Select,
    SeqRange,
    SequenceSet,
    SetAcl,
    SetQuota,
    Sort,
    SortCriterion,
    SortKey,
    StartTls,
    State,
    Status,
    StatusItem,
    Store,
    StoreMode,
    Subscribe,
    Thread,
    ThreadAlgorithm,
    Unselect,
    Unsubscribe,
)
from imapd.parser.grammar import parse_command
from imapd.parser.tokens import ParseError


def events_of(data: bytes, *, chunk: int | None = None) -> list[Event]:
    reader = CommandReader(max_line=8192, max_literal=1 << 20)
    out: list[Event] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            out.append(event)
    return out


def parse(data: bytes) -> Command:
    """The single command in ``data`` (continuation requests are skipped)."""
    data += b"\r\n"
    events = [e for e in events_of(data) if not isinstance(e, NeedContinuation)]
    assert len(events) == 1, events
    assert isinstance(events[0], CommandReady), events[0]
    return events[0].command


def ss(*ranges: tuple[int | None, int | None] | int | None) -> SequenceSet:
    out = []
    for r in ranges:
        out.append(SeqRange(*r) if isinstance(r, tuple) else SeqRange(r, r))
    return SequenceSet(tuple(out))


def body(
    part: tuple[int, ...] = (),
    text: SectionText | None = None,
    headers: tuple[str, ...] = (),
    partial: tuple[int, int] | None = None,
    peek: bool = False,
) -> FetchBodySection:
    return FetchBodySection(
        Section(part, text, headers, Partial(*partial) if partial else None), peek=peek
    )


PST = timezone(timedelta(hours=-8))

CASES: list[tuple[bytes, Command]] = [
    # ---- any state (RFC 3501 6.1)
    (b"a001 CAPABILITY", Capability("a001")),
    (b"a001 capability", Capability("a001")),
    (b"a002 NOOP", Noop("a002")),
    (b"A023 LOGOUT", Logout("A023")),
    (b"a ID NIL", Id("a", None)),
    (
        b'a023 ID ("name" "sodr" "version" "19.34" "vendor" NIL)',
        Id("a023", (("name", "sodr"), ("version", "19.34"), ("vendor", None))),
    ),
    (b"a ID ()", Id("a", ())),
    # ---- not authenticated (6.2)
    (b"a001 STARTTLS", StartTls("a001")),
    (b"A001 AUTHENTICATE GSSAPI", Authenticate("A001", "GSSAPI", None)),
    (b"a AUTHENTICATE plain", Authenticate("a", "PLAIN", None)),
    (b"a AUTHENTICATE EXTERNAL =", Authenticate("a", "EXTERNAL", b"")),
    (
        b"a AUTHENTICATE PLAIN AGZyZWQAdGVzdA==",
        Authenticate("a", "PLAIN", b"\x00fred\x00test"),
    ),
    (b"a001 LOGIN SMITH SESAME", Login("a001", "SMITH", "SESAME")),
    (b'a LOGIN "fred" "pa ss\\"w\\\\d"', Login("a", "fred", 'pa ss"w\\d')),
    (b"a LOGIN {4}\r\nfred {3}\r\n\xc3\xa9t", Login("a", "fred", "ét")),
    (b"a LOGIN {4+}\r\nfred {0+}\r\n", Login("a", "fred", "")),
    (b"a LOGIN fred]x pw", Login("a", "fred]x", "pw")),
    # ---- authenticated (6.3)
    (b"A142 SELECT INBOX", Select("A142", "INBOX")),
    (b"A142 SELECT inbox", Select("A142", "INBOX")),
    (b'A142 SELECT "InBoX"', Select("A142", "INBOX")),
    (b"a SELECT INBOX/Sub", Select("a", "INBOX/Sub")),
    (b"a SELECT inboxes", Select("a", "inboxes")),
    (b"a SELECT Envoy&AOk-s", Select("a", "Envoyés")),
    (b'a SELECT "&ZeVnLIqe-"', Select("a", "日本語")),
    (b"a SELECT &-x", Select("a", "&x")),
    (b"a SELECT INBOX (CONDSTORE)", Select("a", "INBOX", condstore=True)),
    (b"a select INBOX (condstore)", Select("a", "INBOX", condstore=True)),
    (
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        Select(
            "A02",
            "INBOX",
            qresync=QResync(67890007, 20050715194045000, ss(41, (43, 211), (214, 541))),
        ),
    ),
    (
        b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))",
        Select(
            "B04",
            "INBOX",
            qresync=QResync(
                67890007,
                90060115194045000,
                ss((1, 29997)),
                (
                    ss(5000, 7500, 9000, (9990, 9999)),
                    ss(
                        15000,
                        22500,
                        27000,
                        29970,
                        29973,
                        29976,
                        29979,
                        29982,
                        29985,
                        29988,
                        29991,
                        29994,
                        29997,
                    ),
                ),
            ),
        ),
    ),
    (
        b"a SELECT INBOX (QRESYNC (1 2))",
        Select("a", "INBOX", qresync=QResync(1, 2)),
    ),
    (b"A932 EXAMINE blurdybloop", Examine("A932", "blurdybloop")),
    (b"a EXAMINE INBOX (CONDSTORE)", Examine("a", "INBOX", condstore=True)),
    (b"A003 CREATE owatagusiam/", Create("A003", "owatagusiam/")),
    (b"A004 CREATE owatagusiam/blurdybloop", Create("A004", "owatagusiam/blurdybloop")),
    (b"a CREATE Stuff (USE (\\Archive))", Create("a", "Stuff", ("\\Archive",))),
    (
        b't1 CREATE "Important Messages" (USE (\\Important \\Drafts))',
        Create("t1", "Important Messages", ("\\Important", "\\Drafts")),
    ),
    (b"A683 DELETE blurdybloop", Delete("A683", "blurdybloop")),
    (b"A682 RENAME blurdybloop sarasota", Rename("A682", "blurdybloop", "sarasota")),
    (b"a RENAME inbox Old", Rename("a", "INBOX", "Old")),
    (b"A002 SUBSCRIBE #news.comp.mail.mime", Subscribe("A002", "#news.comp.mail.mime")),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime", Unsubscribe("A002", "#news.comp.mail.mime")),
    (b'A101 LIST "" ""', List("A101", "", ("",))),
    (b'A102 LIST #news.comp.mail.misc ""', List("A102", "#news.comp.mail.misc", ("",))),
    (b'A103 LIST /usr/staff/jones ""', List("A103", "/usr/staff/jones", ("",))),
    (b"A202 LIST ~/Mail/ %", List("A202", "~/Mail/", ("%",))),
    (b'a LIST "" *', List("a", "", ("*",))),
    (b'a LIST "" INBOX*]', List("a", "", ("INBOX*]",))),
    (b'a LIST "" Envoy&AOk-s', List("a", "", ("Envoyés",))),
    (b'a LIST "" {1}\r\n*', List("a", "", ("*",))),
    (
        b'A01 LIST (SUBSCRIBED) "" "*"',
        List("A01", "", ("*",), select_subscribed=True, extended=True),
    ),
    (
        b'A02 LIST (SUBSCRIBED REMOTE) "" "*"',
        List("A02", "", ("*",), select_subscribed=True, select_remote=True, extended=True),
    ),
    (
        b'A03 LIST () "" "%" RETURN (CHILDREN)',
        List("A03", "", ("%",), return_children=True, extended=True),
    ),
    (
        b'A04 LIST (REMOTE) "" "%" RETURN (CHILDREN)',
        List("A04", "", ("%",), select_remote=True, return_children=True, extended=True),
    ),
    (
        b'A05 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (SUBSCRIBED)',
        List(
            "A05",
            "",
            ("%",),
            select_subscribed=True,
            select_recursive_match=True,
            return_subscribed=True,
            extended=True,
        ),
    ),
    (
        b'A06 LIST "" ("INBOX" "Drafts" "Sent/%")',
        List("A06", "", ("INBOX", "Drafts", "Sent/%"), extended=True),
    ),
    (
        b't1 LIST "" "%" RETURN (SPECIAL-USE)',
        List("t1", "", ("%",), return_special_use=True, extended=True),
    ),
    (
        b't3 LIST (SPECIAL-USE) "" "*"',
        List("t3", "", ("*",), select_special_use=True, extended=True),
    ),
    (
        b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))',
        List(
            "A01",
            "",
            ("%",),
            return_status=(StatusItem.MESSAGES, StatusItem.UNSEEN),
            extended=True,
        ),
    ),
    (
        b'a LIST "" "*" RETURN (SPECIAL-USE CHILDREN SUBSCRIBED STATUS (UIDNEXT UIDVALIDITY HIGHESTMODSEQ))',
        List(
            "a",
            "",
            ("*",),
            return_special_use=True,
            return_children=True,
            return_subscribed=True,
            return_status=(StatusItem.UIDNEXT, StatusItem.UIDVALIDITY, StatusItem.HIGHESTMODSEQ),
            extended=True,
        ),
    ),
    (b'a LIST "" % RETURN ()', List("a", "", ("%",), extended=True)),
    (b'A002 LSUB "#news." "comp.mail.*"', Lsub("A002", "#news.", "comp.mail.*")),
    (b'a LSUB "" %', Lsub("a", "", "%")),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
        Status("A042", "blurdybloop", (StatusItem.UIDNEXT, StatusItem.MESSAGES)),
    ),
    (
        b"a STATUS inbox (messages recent uidnext uidvalidity unseen highestmodseq size deleted deleted-storage appendlimit)",
        Status("a", "INBOX", tuple(StatusItem)),
    ),
    (b"a STATUS INBOX (UNSEEN UNSEEN)", Status("a", "INBOX", (StatusItem.UNSEEN,))),
    (
        b"A003 APPEND saved-messages (\\Seen) {11}\r\nhello world",
        Append("A003", "saved-messages", (AppendMessage(("\\Seen",), None, b"hello world"),)),
    ),
    (
        b'A003 APPEND saved-messages (\\Seen) "07-Feb-1994 21:52:25 -0800" {5}\r\nhello',
        Append(
            "A003",
            "saved-messages",
            (AppendMessage(("\\Seen",), datetime(1994, 2, 7, 21, 52, 25, tzinfo=PST), b"hello"),),
        ),
    ),
    (
        b'a APPEND INBOX " 7-Feb-1994 21:52:25 +0000" {2+}\r\nhi',
        Append("a", "INBOX", (AppendMessage((), datetime(1994, 2, 7, 21, 52, 25, tzinfo=UTC), b"hi"),)),
    ),
    (b"a APPEND INBOX {0}\r\n", Append("a", "INBOX", (AppendMessage(),))),
    (b"a APPEND INBOX () {1+}\r\nx", Append("a", "INBOX", (AppendMessage(message=b"x"),))),
    (
        b"a APPEND Drafts (\\Draft $MDNSent \\SEEN) {3+}\r\na\r\n",
        Append("a", "Drafts", (AppendMessage(("\\Draft", "$MDNSent", "\\Seen"), None, b"a\r\n"),)),
    ),
    (b"a APPEND INBOX ~{3}\r\na\x00b",
     Append("a", "INBOX", (AppendMessage(message=b"a\x00b", binary=True),))),
    (b"a APPEND {5}\r\ninbox {1}\r\nx", Append("a", "INBOX", (AppendMessage(message=b"x"),))),
    # RFC 3502 MULTIAPPEND (section 6's example, shortened)
    (
        b'A003 APPEND saved-messages (\\Seen) {5}\r\nhello'
        b' " 7-Feb-1994 22:43:04 -0800" {5}\r\nworld',
        Append("A003", "saved-messages", (
            AppendMessage(("\\Seen",), None, b"hello"),
            AppendMessage((), datetime(1994, 2, 7, 22, 43, 4, tzinfo=PST), b"world"),
        )),
    ),
    (b"a APPEND INBOX {1+}\r\nx ~{1+}\r\n\x00 () {1+}\r\nz", Append("a", "INBOX", (
        AppendMessage(message=b"x"), AppendMessage(message=b"\x00", binary=True),
        AppendMessage(message=b"z")))),
    # RFC 4469 CATENATE (section 5's examples)
    (
        b'A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE'
        b' (URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER"'
        b' TEXT {4}\r\n\r\nhi URL "/Drafts;UIDVALIDITY=385759045/;UID=30")',
        Append("A003", "Drafts", (AppendMessage(("\\Seen", "\\Draft", "$MDNSent"), catenate=(
            CatenateUrl("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER"),
            CatenateText(b"\r\nhi"),
            CatenateUrl("/Drafts;UIDVALIDITY=385759045/;UID=30"),
        )),)),
    ),
    (b"a APPEND INBOX catenate (text ~{1}\r\n\x00) {1}\r\nx", Append("a", "INBOX", (
        AppendMessage(catenate=(CatenateText(b"\x00", binary=True),)),
        AppendMessage(message=b"x")))),
    (b"a APPEND INBOX CATENATE (URL {13}\r\n/INBOX/;UID=1)", Append("a", "INBOX", (
        AppendMessage(catenate=(CatenateUrl("/INBOX/;UID=1"),)),))),
    # RFC 6855 UTF8 data item, alone and as a CATENATE part
    (b"a APPEND INBOX UTF8 (~{2}\r\n\xc3\xa9)", Append("a", "INBOX", (
        AppendMessage(message=b"\xc3\xa9", binary=True, utf8=True),))),
    (b"a APPEND INBOX () CATENATE (UTF8 (~{1+}\r\nx) URL /INBOX/;UID=2)", Append("a", "INBOX", (
        AppendMessage(catenate=(CatenateText(b"x", binary=True, utf8=True),
                                CatenateUrl("/INBOX/;UID=2"))),))),
    (b"A02 NAMESPACE", Namespace("A02")),
    (b"t2 ENABLE CONDSTORE X-GOOD-IDEA", Enable("t2", ("CONDSTORE", "X-GOOD-IDEA"))),
    (b"a ENABLE qresync condstore", Enable("a", ("QRESYNC", "CONDSTORE"))),
    (b"a ENABLE UTF8=ACCEPT", Enable("a", ("UTF8=ACCEPT",))),
    # ---- NOTIFY (RFC 5465): the RFC's examples, case-insensitive names
    (b"a NOTIFY NONE", Notify("a")),
    (
        b"a NOTIFY SET STATUS (selected (MessageNew (uid body.peek[header.fields "
        b"(from to subject)]) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge "
        b"MailboxName)) (mailboxes (Misc \"a b\") (messageNew messageExpunge))",
        Notify("a", (
            NotifyGroup(NotifyFilter.SELECTED, (), ("MessageNew", "MessageExpunge"),
                        (FetchUid(), FetchBodySection(Section((), SectionText.HEADER_FIELDS,
                                                              ("from", "to", "subject")),
                                                      peek=True))),
            NotifyGroup(NotifyFilter.SUBTREE, ("Lists",),
                        ("MessageNew", "MessageExpunge", "MailboxName")),
            NotifyGroup(NotifyFilter.MAILBOXES, ("Misc", "a b"),
                        ("MessageNew", "MessageExpunge")),
        ), status=True),
    ),
    (
        b"a NOTIFY SET (selected-delayed (MessageNew MessageExpunge FlagChange)) "
        b"(personal (MailboxName SubscriptionChange)) (inboxes NONE) (subscribed (XEXT))",
        Notify("a", (
            NotifyGroup(NotifyFilter.SELECTED_DELAYED, (),
                        ("MessageNew", "MessageExpunge", "FlagChange")),
            NotifyGroup(NotifyFilter.PERSONAL, (), ("MailboxName", "SubscriptionChange")),
            NotifyGroup(NotifyFilter.INBOXES),
            NotifyGroup(NotifyFilter.SUBSCRIBED, (), ("XEXT",)),
        )),
    ),
    (b"a NOTIFY SET (mailboxes inbox NONE)",
     Notify("a", (NotifyGroup(NotifyFilter.MAILBOXES, ("INBOX",)),))),
    (b"a002 IDLE", Idle("a002")),
    (b"t1 COMPRESS DEFLATE", Compress("t1", "DEFLATE")),
    (b"a compress deflate", Compress("a", "DEFLATE")),
    # ---- ACL (RFC 4314)
    (b"A002 GETACL INBOX", GetAcl("A002", "INBOX")),
    (b"A001 SETACL INBOX/Drafts David lrswida", SetAcl("A001", "INBOX/Drafts", "David", "lrswida")),
    (b"A005 SETACL INBOX/Drafts Chris +cda", SetAcl("A005", "INBOX/Drafts", "Chris", "+cda")),
    (b'a SETACL INBOX "-anyone" -w', SetAcl("a", "INBOX", "-anyone", "-w")),
    (b"A004 DELETEACL INBOX/Drafts Chris", DeleteAcl("A004", "INBOX/Drafts", "Chris")),
    (b"a LISTRIGHTS ~/Mail/saved smith", ListRights("a", "~/Mail/saved", "smith")),
    (b"A003 MYRIGHTS INBOX", MyRights("A003", "INBOX")),
    # ---- QUOTA (RFC 9208)
    (b'G0001 GETQUOTA "!partition/sda4"', GetQuota("G0001", "!partition/sda4")),
    (b'a GETQUOTA ""', GetQuota("a", "")),
    (b"A003 GETQUOTAROOT INBOX", GetQuotaRoot("A003", "INBOX")),
    (
        b'S0000 SETQUOTA "#user/alice" (STORAGE 510)',
        SetQuota("S0000", "#user/alice", (("STORAGE", 510),)),
    ),
    (
        b'a SETQUOTA "" (storage 10 MESSAGE 100)',
        SetQuota("a", "", (("STORAGE", 10), ("MESSAGE", 100))),
    ),
    (b'a SETQUOTA "" ()', SetQuota("a", "", ())),
    # ---- selected (6.4)
    (b"FXXZ CHECK", Check("FXXZ")),
    (b"A341 CLOSE", Close("A341")),
    (b"a UNSELECT", Unselect("a")),
    (b'a CANCELUPDATE "B01"', CancelUpdate("a", ("B01",))),
    (b'a CANCELUPDATE "B01" "C02" "B01"', CancelUpdate("a", ("B01", "C02"))),
    (b"A202 EXPUNGE", Expunge("A202")),
    (b"A003 UID EXPUNGE 3000:3002", Expunge("A003", uid=True, uids=ss((3000, 3002)))),
    # RFC 5256 SORT / THREAD
    (b"A282 SORT (SUBJECT) UTF-8 ALL",
     Sort("A282", (SortCriterion(SortKey.SUBJECT),), "UTF-8", SearchAll())),
    (b"A283 UID THREAD REFERENCES US-ASCII ALL",
     Thread("A283", ThreadAlgorithm.REFERENCES, "US-ASCII", SearchAll(), True)),
    (b"a uid expunge 1,3:*", Expunge("a", uid=True, uids=ss(1, (3, None)))),
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        Fetch(
            "A654",
            ss((2, 4)),
            (FetchFlags(), body(text=SectionText.HEADER_FIELDS, headers=("DATE", "FROM"))),
        ),
    ),
    (
        b"A999 UID FETCH 4827313:4828442 FLAGS",
        Fetch("A999", ss((4827313, 4828442)), (FetchFlags(),), uid=True),
    ),
    (
        b"a FETCH 1 ALL",
        Fetch("a", ss(1), (FetchFlags(), FetchInternalDate(), FetchRfc822Size(), FetchEnvelope())),
    ),
    (b"a FETCH 1 fast", Fetch("a", ss(1), (FetchFlags(), FetchInternalDate(), FetchRfc822Size()))),
    (
        b"a FETCH 1 FULL",
        Fetch(
            "a",
            ss(1),
            (
                FetchFlags(),
                FetchInternalDate(),
                FetchRfc822Size(),
                FetchEnvelope(),
                FetchBodyStructure(extensible=False),
            ),
        ),
    ),
    (b"a FETCH * UID", Fetch("a", ss(None), (FetchUid(),))),
    (b"a FETCH $ UID", Fetch("a", SequenceSet((), saved=True), (FetchUid(),))),
    (b"a FETCH 1:* (UID FLAGS)", Fetch("a", ss((1, None)), (FetchUid(), FetchFlags()))),
    (b"a FETCH 1 (uid flags uid)", Fetch("a", ss(1), (FetchUid(), FetchFlags()))),
    (b"a FETCH 1 BODYSTRUCTURE", Fetch("a", ss(1), (FetchBodyStructure(),))),
    (b"a FETCH 1 BODY", Fetch("a", ss(1), (FetchBodyStructure(extensible=False),))),
    (b"a FETCH 1 ENVELOPE", Fetch("a", ss(1), (FetchEnvelope(),))),
    (b"a FETCH 1 INTERNALDATE", Fetch("a", ss(1), (FetchInternalDate(),))),
    (b"a FETCH 1 RFC822", Fetch("a", ss(1), (FetchRfc822(),))),
    (b"a FETCH 1 RFC822.HEADER", Fetch("a", ss(1), (FetchRfc822Header(),))),
    (b"a FETCH 1 RFC822.TEXT", Fetch("a", ss(1), (FetchRfc822Text(),))),
    (b"a FETCH 1 RFC822.SIZE", Fetch("a", ss(1), (FetchRfc822Size(),))),
    (b"a FETCH 1 MODSEQ", Fetch("a", ss(1), (FetchModSeq(),))),
    (b"a FETCH 1 BODY[]", Fetch("a", ss(1), (body(),))),
    (b"a FETCH 1 body.peek[]", Fetch("a", ss(1), (body(peek=True),))),
    (b"a FETCH 1 BODY[]<0.2048>", Fetch("a", ss(1), (body(partial=(0, 2048)),))),
    (b"a FETCH 1 BODY.PEEK[]<100.10>", Fetch("a", ss(1), (body(partial=(100, 10), peek=True),))),
    (b"a FETCH 1 BODY[HEADER]", Fetch("a", ss(1), (body(text=SectionText.HEADER),))),
    (b"a FETCH 1 BODY[header]", Fetch("a", ss(1), (body(text=SectionText.HEADER),))),
    (b"a FETCH 1 BODY[TEXT]", Fetch("a", ss(1), (body(text=SectionText.TEXT),))),
    (b"a FETCH 1 BODY[1]", Fetch("a", ss(1), (body(part=(1,)),))),
    (b"a FETCH 1 BODY[4.2.2.1]", Fetch("a", ss(1), (body(part=(4, 2, 2, 1)),))),
    (b"a FETCH 1 BODY[3.HEADER]", Fetch("a", ss(1), (body(part=(3,), text=SectionText.HEADER),))),
    (b"a FETCH 1 BODY[3.TEXT]", Fetch("a", ss(1), (body(part=(3,), text=SectionText.TEXT),))),
    (b"a FETCH 1 BODY[4.1.MIME]", Fetch("a", ss(1), (body(part=(4, 1), text=SectionText.MIME),))),
    (
        b"a FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Received X-Spam)]",
        Fetch(
            "a",
            ss(1),
            (body(text=SectionText.HEADER_FIELDS_NOT, headers=("Received", "X-Spam"), peek=True),),
        ),
    ),
    (
        b'a FETCH 1 BODY[2.HEADER.FIELDS ("Subject" {2}\r\nTo)]<0.10>',
        Fetch(
            "a",
            ss(1),
            (
                body(
                    part=(2,),
                    text=SectionText.HEADER_FIELDS,
                    headers=("Subject", "To"),
                    partial=(0, 10),
                ),
            ),
        ),
    ),
    (
        b"a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])",
        Fetch(
            "a",
            ss((1, None)),
            (
                FetchUid(),
                FetchRfc822Size(),
                FetchFlags(),
                body(
                    text=SectionText.HEADER_FIELDS,
                    headers=tuple(
                        "From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To".split()
                    ),
                    peek=True,
                ),
            ),
            uid=True,
        ),
    ),
    (b"a FETCH 1 BINARY[]", Fetch("a", ss(1), (FetchBinary(Section()),))),
    (
        b"a FETCH 1 BINARY.PEEK[1.2]<0.5>",
        Fetch("a", ss(1), (FetchBinary(Section((1, 2), partial=Partial(0, 5)), peek=True),)),
    ),
    (b"a FETCH 1 BINARY.SIZE[3]", Fetch("a", ss(1), (FetchBinarySize((3,)),))),
    (
        b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
        Fetch("s100", ss((1, None)), (FetchFlags(),), uid=True, changed_since=12345),
    ),
    (
        b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        Fetch(
            "s100", ss((300, 500)), (FetchFlags(),), uid=True, changed_since=12345, vanished=True
        ),
    ),
    (b"a FETCH 2,4:7,9,12:* FLAGS", Fetch("a", ss(2, (4, 7), 9, (12, None)), (FetchFlags(),))),
    (b"a FETCH 7:4 FLAGS", Fetch("a", ss((7, 4)), (FetchFlags(),))),
    (b"a FETCH *:4 FLAGS", Fetch("a", ss((None, 4)), (FetchFlags(),))),
    (b"a FETCH 4294967295 FLAGS", Fetch("a", ss(4294967295), (FetchFlags(),))),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)",
        Store("A003", ss((2, 4)), StoreMode.ADD, False, ("\\Deleted",)),
    ),
    (b"a STORE 1 FLAGS ()", Store("a", ss(1), StoreMode.REPLACE, False, ())),
    (b"a STORE 1 FLAGS.SILENT (\\Seen)", Store("a", ss(1), StoreMode.REPLACE, True, ("\\Seen",))),
    (b"a STORE 1 -flags.silent \\SEEN", Store("a", ss(1), StoreMode.REMOVE, True, ("\\Seen",))),
    (
        b"a STORE 1 +FLAGS \\Flagged $Label1 NonJunk",
        Store("a", ss(1), StoreMode.ADD, False, ("\\Flagged", "$Label1", "NonJunk")),
    ),
    (
        b"a UID STORE 5:7 -FLAGS (\\Answered \\answered)",
        Store("a", ss((5, 7)), StoreMode.REMOVE, False, ("\\Answered",), uid=True),
    ),
    (
        b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
        Store("d105", ss(7, 5, 9), StoreMode.ADD, True, ("\\Deleted",), unchanged_since=320162338),
    ),
    (
        b"a UID STORE 1 (unchangedsince 0) FLAGS (x)",
        Store("a", ss(1), StoreMode.REPLACE, False, ("x",), uid=True, unchanged_since=0),
    ),
    (b"A003 COPY 2:4 MEETING", Copy("A003", ss((2, 4)), "MEETING")),
    (b"a UID COPY 1:* Trash", Copy("a", ss((1, None)), "Trash", uid=True)),
    (b"a COPY 1 inbox", Copy("a", ss(1), "INBOX")),
    (b"a MOVE 1:3 Trash", Move("a", ss((1, 3)), "Trash")),
    (b"a UID MOVE 42 &AOk-", Move("a", ss(42), "é", uid=True)),
    # ---- tags
    (b"abc.def NOOP", Noop("abc.def")),
    (b"A]1 NOOP", Noop("A]1")),
    (b"0 NOOP", Noop("0")),
]


@pytest.mark.parametrize(
    ("line", "expected"), CASES, ids=[c[0][:60].decode("latin-1") for c in CASES]
)
def test_parses(line: bytes, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"), CASES, ids=[c[0][:60].decode("latin-1") for c in CASES]
)
def test_parses_one_byte_at_a_time(line: bytes, expected: Command) -> None:
    events = [e for e in events_of(line + b"\r\n", chunk=1) if not isinstance(e, NeedContinuation)]
    assert events == [CommandReady(expected)]


def dt(d: str) -> date:
    return datetime.strptime(d, "%Y-%m-%d").date()


SEEN = SearchFlag("\\Seen")

SEARCH_CASES: list[tuple[bytes, object]] = [
    (b"ALL", SearchAll()),
    (b"all", SearchAll()),
    (b"ANSWERED", SearchFlag("\\Answered")),
    (b"UNANSWERED", SearchFlag("\\Answered", False)),
    (b"DELETED", SearchFlag("\\Deleted")),
    (b"UNDELETED", SearchFlag("\\Deleted", False)),
    (b"DRAFT", SearchFlag("\\Draft")),
    (b"UNDRAFT", SearchFlag("\\Draft", False)),
    (b"FLAGGED", SearchFlag("\\Flagged")),
    (b"UNFLAGGED", SearchFlag("\\Flagged", False)),
    (b"SEEN", SEEN),
    (b"UNSEEN", SearchFlag("\\Seen", False)),
    (b"RECENT", SearchFlag("\\Recent")),
    (b"OLD", SearchFlag("\\Recent", False)),
    (b"NEW", SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))),
    (b"KEYWORD $Forwarded", SearchFlag("$Forwarded")),
    (b"UNKEYWORD Junk", SearchFlag("Junk", False)),
    (b"BCC smith", SearchHeader("BCC", "smith")),
    (b"CC smith", SearchHeader("CC", "smith")),
    (b'FROM "Smith"', SearchHeader("FROM", "Smith")),
    (b"TO {5}\r\nsmith", SearchHeader("TO", "smith")),
    (b'SUBJECT ""', SearchHeader("SUBJECT", "")),
    (b'HEADER Message-ID "<x@y>"', SearchHeader("Message-ID", "<x@y>")),
    (b'HEADER "X-Prio" ""', SearchHeader("X-Prio", "")),
    (b"BODY hello", SearchBody("hello")),
    (b'TEXT "string not in mailbox"', SearchText("string not in mailbox")),
    (b"BEFORE 1-Feb-1994", SearchDate(DateField.INTERNAL, DateRelation.BEFORE, dt("1994-02-01"))),
    (b'ON "12-Mar-2026"', SearchDate(DateField.INTERNAL, DateRelation.ON, dt("2026-03-12"))),
    (b"SINCE 01-jan-2000", SearchDate(DateField.INTERNAL, DateRelation.SINCE, dt("2000-01-01"))),
    (b"SENTBEFORE 1-Feb-1994", SearchDate(DateField.SENT, DateRelation.BEFORE, dt("1994-02-01"))),
    (b"SENTON 29-Feb-2024", SearchDate(DateField.SENT, DateRelation.ON, dt("2024-02-29"))),
    (b"SENTSINCE 31-Dec-1999", SearchDate(DateField.SENT, DateRelation.SINCE, dt("1999-12-31"))),
    (b"LARGER 1000", SearchLarger(1000)),
    (b"SMALLER 0", SearchSmaller(0)),
    (b"UID 1:*", SearchUid(ss((1, None)))),
    (b"UID $", SearchUid(SequenceSet((), saved=True))),
    (b"1:3,5", SearchSeqSet(ss((1, 3), 5))),
    (b"*", SearchSeqSet(ss(None))),
    (b"NOT SEEN", SearchNot(SEEN)),
    (b"NOT NOT SEEN", SearchNot(SearchNot(SEEN))),
    (b"OR SEEN DRAFT", SearchOr(SEEN, SearchFlag("\\Draft"))),
    (
        b"OR OR SEEN DRAFT FLAGGED",
        SearchOr(SearchOr(SEEN, SearchFlag("\\Draft")), SearchFlag("\\Flagged")),
    ),
    (b"(SEEN)", SEEN),
    (b"(SEEN DRAFT)", SearchAnd((SEEN, SearchFlag("\\Draft")))),
    (b"((SEEN))", SEEN),
    (
        b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        SearchAnd(
            (
                SearchFlag("\\Flagged"),
                SearchDate(DateField.INTERNAL, DateRelation.SINCE, dt("1994-02-01")),
                SearchNot(SearchHeader("FROM", "Smith")),
            )
        ),
    ),
    (
        b"OR (FROM a TO b) NOT (1:2 LARGER 5)",
        SearchOr(
            SearchAnd((SearchHeader("FROM", "a"), SearchHeader("TO", "b"))),
            SearchNot(SearchAnd((SearchSeqSet(ss((1, 2))), SearchLarger(5)))),
        ),
    ),
    (b"MODSEQ 20010715194045007", SearchModSeq(20010715194045007)),
    (
        b'MODSEQ "/flags/\\\\draft" all 620162338',
        SearchModSeq(620162338, "/flags/\\draft", "all"),
    ),
    (b"OLDER 3600", SearchOlder(3600)),
    (b"YOUNGER 60", SearchYounger(60)),
]


@pytest.mark.parametrize(
    ("keys", "expected"), SEARCH_CASES, ids=[c[0].decode("latin-1") for c in SEARCH_CASES]
)
def test_search_keys(keys: bytes, expected: object) -> None:
    command = parse(b"a SEARCH " + keys)
    assert command == Search("a", expected)  # type: ignore[arg-type]
    command = parse(b"a UID SEARCH CHARSET UTF-8 " + keys)
    assert command == Search("a", expected, "UTF-8", uid=True)  # type: ignore[arg-type]


def test_search_charset_and_utf8_literal() -> None:
    cmd = parse(b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXX\xc3\xa9")
    assert cmd == Search("A284", SearchText("XXXXé"), "UTF-8")


def test_search_charset_is_uppercased_and_other_charsets_decoded() -> None:
    cmd = parse(b"a SEARCH charset iso-8859-1 SUBJECT {1}\r\n\xe9")
    assert isinstance(cmd, Search)
    assert cmd.charset == "ISO-8859-1"
    assert cmd.key == SearchHeader("SUBJECT", "é")


def test_search_unknown_charset_still_parses_for_badcharset() -> None:
    cmd = parse(b"a SEARCH CHARSET X-UNKNOWN-42 TEXT abc")
    assert isinstance(cmd, Search)
    assert cmd.charset == "X-UNKNOWN-42"


def test_search_return_options() -> None:
    cmd = parse(b"a SEARCH RETURN (MIN MAX COUNT) UNSEEN")
    assert cmd == Search("a", SearchFlag("\\Seen", False), return_options=("MIN", "MAX", "COUNT"))
    # RFC 4731 3.1: RETURN () is RETURN (ALL)
    cmd = parse(b"a UID SEARCH RETURN () ALL")
    assert cmd == Search("a", SearchAll(), uid=True, return_options=("ALL",))
    cmd = parse(b"a SEARCH RETURN (PARTIAL 10:1 save) ALL")
    assert cmd == Search("a", SearchAll(), return_options=("PARTIAL", "SAVE"), partial=(1, 10))
    for bad in (b"a SEARCH RETURN (PARTIAL 0:5) ALL", b"a SEARCH RETURN (PARTIAL 5) ALL",
                b"a SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL", b"a SEARCH RETURN (NOTIFY) ALL"):
        with pytest.raises(ParseError):
            parse_command([bad], [])
    # RFC 5267 4.2, 4.3: CONTEXT and UPDATE, on SEARCH and SORT alike
    cmd = parse(b"B01 UID SEARCH RETURN (UPDATE COUNT context) DELETED")
    assert cmd == Search("B01", SearchFlag("\\Deleted", True), uid=True,
                         return_options=("UPDATE", "COUNT", "CONTEXT"))
    cmd = parse(b"C01 UID SORT RETURN (UPDATE PARTIAL 1:50) (DATE) UTF-8 ALL")
    assert isinstance(cmd, Sort)
    assert cmd.return_options == ("UPDATE", "PARTIAL") and cmd.partial == (1, 50)


@pytest.mark.parametrize("line", [
    b"a CANCELUPDATE", b"a CANCELUPDATE B01", b'a CANCELUPDATE ""', b'a CANCELUPDATE "B01" C',
    b'a CANCELUPDATE "B01"  "C01"', b'a CANCELUPDATE {3}',
])
def test_cancelupdate_errors(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse_command([line], [])


@pytest.mark.parametrize(("line", "criteria", "charset", "options"), [
    (b"a SORT (SUBJECT) UTF-8 ALL", ((SortKey.SUBJECT, False),), "UTF-8", None),
    (b"a SORT (reverse date FROM) us-ascii ALL",
     ((SortKey.DATE, True), (SortKey.FROM, False)), "US-ASCII", None),
    (b"a SORT (ARRIVAL CC SIZE TO DISPLAYFROM REVERSE DISPLAYTO) UTF-8 ALL",
     ((SortKey.ARRIVAL, False), (SortKey.CC, False), (SortKey.SIZE, False),
      (SortKey.TO, False), (SortKey.DISPLAYFROM, False), (SortKey.DISPLAYTO, True)),
     "UTF-8", None),
    (b"a SORT RETURN (MIN MAX) (DATE) UTF-8 ALL", ((SortKey.DATE, False),), "UTF-8",
     ("MIN", "MAX")),
    (b'a SORT RETURN () (DATE) "UTF-8" ALL', ((SortKey.DATE, False),), "UTF-8", ("ALL",)),
    # a key again cannot change the order: only its first is kept
    (b"a SORT (SUBJECT REVERSE DATE SUBJECT REVERSE SUBJECT DATE) UTF-8 ALL",
     ((SortKey.SUBJECT, False), (SortKey.DATE, True)), "UTF-8", None),
])
def test_sort(line: bytes, criteria: tuple[tuple[SortKey, bool], ...], charset: str,
              options: tuple[str, ...] | None) -> None:
    cmd = parse(line)
    assert isinstance(cmd, Sort)
    assert tuple((c.key, c.reverse) for c in cmd.criteria) == criteria
    assert cmd.charset == charset and cmd.return_options == options and cmd.key == SearchAll()
    uid = parse(b"a UID " + line[2:])
    assert isinstance(uid, Sort) and uid.uid


def test_thousands_of_sort_criteria_are_at_most_one_per_key() -> None:
    # Found by review: 8,000 criteria in one line were 8,000 sorts of the folder.
    line = b"a SORT (" + b" ".join([b"SIZE", b"REVERSE SUBJECT"] * 2500) + b") UTF-8 ALL"
    cmd = parse_command([line], [])  # the grammar alone: past the reader's line limit
    assert isinstance(cmd, Sort)
    assert [(c.key, c.reverse) for c in cmd.criteria] == [(SortKey.SIZE, False),
                                                         (SortKey.SUBJECT, True)]


@pytest.mark.parametrize("line", [
    b"a SORT (SUBJECT) ALL", b"a SORT () UTF-8 ALL", b"a SORT (REVERSE) UTF-8 ALL",
    b"a SORT (REVERSE REVERSE DATE) UTF-8 ALL", b"a SORT (DATE", b"a SORT DATE UTF-8 ALL",
    b"a SORT (SUBJECT) UTF-8", b"a SORT (ORDER) UTF-8 ALL", b"a THREAD REFERENCES ALL",
    b"a THREAD JWZ UTF-8 ALL", b"a THREAD UTF-8 ALL", b"a THREAD REFERENCES UTF-8",
])
def test_sort_and_thread_errors(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse_command([line], [])


def test_thread() -> None:
    cmd = parse(b"a UID THREAD orderedsubject UTF-8 SINCE 5-MAR-2000")
    assert isinstance(cmd, Thread)
    assert cmd.algorithm is ThreadAlgorithm.ORDEREDSUBJECT and cmd.uid and cmd.charset == "UTF-8"
    assert isinstance(cmd.key, SearchDate)
    cmd = parse(b"a THREAD REFERENCES US-ASCII TEXT gewp")
    assert isinstance(cmd, Thread) and cmd.algorithm is ThreadAlgorithm.REFERENCES


def test_every_command_type_is_covered_by_the_tables() -> None:
    seen = {type(cmd) for _, cmd in CASES} | {Search}
    assert seen == set(ALL_COMMANDS)


def test_every_command_declares_its_states() -> None:
    for cls in ALL_COMMANDS:
        assert cls.name, cls
        assert cls.allowed_states, cls
    assert Login.allowed_states == {State.NOT_AUTHENTICATED}
    assert Fetch.allowed_states == {State.SELECTED}
    assert Select.allowed_states == {State.AUTHENTICATED, State.SELECTED}
    assert Capability.allowed_states == set(State)


def test_login_password_is_not_in_repr() -> None:
    assert "SESAME" not in repr(parse(b"a LOGIN smith SESAME"))
