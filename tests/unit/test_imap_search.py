"""imapd.search: SEARCH keys over index entries and stored metadata.

Queries go through the real command parser, so these tables read like the
client side of a transcript. Several follow Dovecot's imaptest search-* scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mime_corpus import ALTERNATIVE, MIXED_ATTACHMENTS, NESTED_RFC822, crlf

from imapd.parser import commands as c
from imapd.parser.grammar import parse_command
from imapd.search import compile_key, decode_header_value, leaves, matches, needs_body, sent_date
from storage.interface import MessageInfo
from storage.mime import parse_message


@dataclass
class Mailbox:
    raws: list[bytes]
    flags: list[frozenset[str]]
    dates: list[datetime]
    uids: list[int]
    modseqs: list[int]
    loads: int = 0

    def infos(self) -> list[MessageInfo]:
        return [
            MessageInfo(
                uid=uid,
                modseq=modseq,
                flags=flags,
                size=len(raw),
                internal_date=when,
                metadata=parse_message(raw),
            )
            for raw, flags, when, uid, modseq in zip(
                self.raws, self.flags, self.dates, self.uids, self.modseqs, strict=True
            )
        ]


def make_box(
    raws: Sequence[bytes],
    *,
    flags: Sequence[Sequence[str]] | None = None,
    dates: Sequence[datetime] | None = None,
    uids: Sequence[int] | None = None,
) -> Mailbox:
    n = len(raws)
    return Mailbox(
        raws=list(raws),
        flags=[frozenset(f) for f in (flags or [()] * n)],
        dates=list(dates or [datetime(2024, 1, 1, 12, tzinfo=UTC)] * n),
        uids=list(uids or range(1, n + 1)),
        modseqs=[10 * (i + 1) for i in range(n)],
    )


def search(
    box: Mailbox,
    query: str,
    *,
    recent: frozenset[int] = frozenset(),
    now: datetime | None = None,
    forbid_body: bool = False,
) -> list[int]:
    command = parse_command([b"A1 SEARCH " + query.encode("utf-8")], [])
    assert isinstance(command, c.Search)
    key = command.key
    infos = box.infos()
    out = []
    for seq, info in enumerate(infos, start=1):

        def loader(raw: bytes = box.raws[seq - 1]) -> bytes:
            if forbid_body:
                raise AssertionError("body loaded for a header-only key")
            box.loads += 1
            return raw

        if matches(
            key,
            info,
            seq,
            loader,
            max_seq=len(infos),
            max_uid=max(box.uids),
            recent=recent,
            now=now,
        ):
            out.append(seq)
    return out


def parse_key(query: str) -> c.SearchKey:
    command = parse_command([b"A1 SEARCH " + query.encode("utf-8")], [])
    assert isinstance(command, c.Search)
    return command.key


# ------------------------------------------------------------------ addresses (imaptest)

ADDRESS_BOX = make_box(
    [
        crlf(
            "From: user-from@domain.org\nTo: user-to@domain.org\nCc: user-cc@domain.org\n"
            "Bcc: user-bcc@domain.org\n\nbody\n"
        ),
        crlf(
            "From: RealFrom <user-from@domain.org>\nTo: RealTo <user-to@domain.org>\n"
            "Cc: RealCc <user-cc@domain.org>\nBcc: RealBcc <user-bcc@domain.org>\n\nbody2\n"
        ),
        crlf(
            "From: <user-from (comment)@ (comment) domain.org>\nTo: <user-to@domain.org>\n"
            "Cc: <user-cc@domain.org>\nBcc: <user-bcc@domain.org>\n\nbody3\n"
        ),
        crlf(
            "From: user-from@domain.org (RealFrom)\nTo: user-to@domain.org (RealTo)\n"
            "Cc: user-cc@domain.org (RealCc)\nBcc: user-bcc@domain.org (RealBcc)\n\nbody4\n"
        ),
        crlf(
            "From: user-from1@domain.org, user-from2@domain.org\nCc: user-cc@domain.org\n\nbody5\n"
        ),
        crlf(
            "To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\n"
            "  groupname2: groupuser3@domain.org;\n\nbody5\n"
        ),
    ]
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from user-from@domain.org", [1, 2, 3, 4]),
        ("to user-to@domain.org", [1, 2, 3, 4]),
        ("cc user-cc@domain.org", [1, 2, 3, 4, 5]),
        ("bcc user-bcc@domain.org", [1, 2, 3, 4]),
        ("from realfrom", [2, 4]),
        ("to realto", [2, 4]),
        ("cc realcc", [2, 4]),
        ("bcc realbcc", [2, 4]),
        ('header from ""', [1, 2, 3, 4, 5]),
        ('header to ""', [1, 2, 3, 4, 6]),
        ('header cc ""', [1, 2, 3, 4, 5]),
        ('header bcc ""', [1, 2, 3, 4]),
        ("from ser-fro", [1, 2, 3, 4, 5]),
        ("to ser-t", [1, 2, 3, 4]),
        ("bcc ser-bc", [1, 2, 3, 4]),
        ("from ealfro", [2, 4]),
        ("bcc ealbc", [2, 4]),
        ("from user-from1", [5]),
        ("from user-from2", [5]),
        ("to groupname", [6]),
        ("to groupname2", [6]),
        ("to groupuser3", [6]),
        ("to groupuser4", []),
        ("FROM USER-FROM@DOMAIN.ORG", [1, 2, 3, 4]),
    ],
)
def test_address_searches(query: str, expected: list[int]) -> None:
    assert search(ADDRESS_BOX, query, forbid_body=True) == expected


# ------------------------------------------------------------------ headers (imaptest)

HEADER_BOX = make_box(
    [
        crlf("Subject: hello beautiful world\n\nbody\n"),
        crlf("X-Extra: hello beautiful header\n\nbody\n"),
    ]
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("subject hello", [1]),
        ("subject beautiful", [1]),
        ('subject "hello beautiful world"', [1]),
        ('subject "eautiful worl"', [1]),
        ('header subject ""', [1]),
        ('not header subject ""', [2]),
        ('header x-extra ""', [2]),
        ('not header x-extra ""', [1]),
        ("header x-extra hello", [2]),
        ('header X-EXTRA "eautiful head"', [2]),
    ],
)
def test_header_searches(query: str, expected: list[int]) -> None:
    assert search(HEADER_BOX, query) == expected


def test_encoded_words_and_eight_bit_headers_are_decoded() -> None:
    box = make_box(
        [
            ALTERNATIVE,
            b"Subject: caf\xc3\xa9 cr\xc3\xa8me\r\nX-Latin: caf\xe9\r\n\r\nbody\r\n",
            crlf("Subject: =?iso-8859-1?q?caf=E9?= =?utf-8?b?IGNyw6htZQ==?=\n\nbody\n"),
        ]
    )
    # 8-bit quoted strings: the parser accepts them as UTF-8
    assert search(box, 'CHARSET UTF-8 subject "résultats"') == [1]
    assert search(box, 'CHARSET UTF-8 from "andré"') == [1]
    assert search(box, 'CHARSET UTF-8 subject "café crème"') == [2, 3]
    assert search(box, 'CHARSET UTF-8 subject "CAFÉ"') == [2, 3]
    assert search(box, 'CHARSET UTF-8 header x-latin "café"') == [2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("=?utf-8?q?a_b?=", "a b"),
        ("=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=", "éé"),
        ("x =?utf-8?q?=C3=A9?= y", "x é y"),
        ("=?unknown-charset?q?abc?=", "=?unknown-charset?q?abc?="),
        ("=?utf-8*fr?q?abc?=", "abc"),
        ("=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="),
    ],
)
def test_decode_header_value(raw: str, expected: str) -> None:
    assert decode_header_value(raw) == expected


# ------------------------------------------------------------------ bodies

BODY_BOX = make_box(
    [
        crlf("Subject: asdfghjkl\n\nzxcvbnm\n"),
        crlf("Subject: qwertyuiop\n\nasdfghjkl\n"),
        ALTERNATIVE,
        MIXED_ATTACHMENTS,
        NESTED_RFC822,
    ]
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("text asdfghjkl", [1, 2]),
        ("body asdfghjkl", [2]),
        ("text zxcvbnm", [1]),
        ("body xcvbn", [1]),
        ("body qwertyuiop", []),
        ("text qwertyuiop", [2]),
        # quoted-printable and base64 text parts are decoded, with their charset
        ('CHARSET UTF-8 body "résultats de la numération"', [3]),
        ('CHARSET UTF-8 body "résultats en html"', [3]),
        # a nested text/alternative part; not the binary attachment
        ("body zebracorn", [4]),
        ("body secretword", []),
        ("body JVBERi0K", []),
        # an attached message's headers and text are part of the body
        ("body quokka", [5]),
        ('body "Original Sender"', [5]),
        ('text "Fwd: original"', [5]),
        ('body "Fwd: original"', []),
    ],
)
def test_body_and_text(query: str, expected: list[int]) -> None:
    assert search(BODY_BOX, query) == expected


def test_body_is_loaded_at_most_once_and_only_when_needed() -> None:
    box = make_box([crlf("Subject: x\n\nneedle\n")] * 3, flags=[("\\Seen",), (), ()])
    assert search(box, "seen body needle text needle") == [1]
    assert box.loads == 1  # unseen messages fail on the flag first
    assert search(box, "or body needle text other", forbid_body=False) == [1, 2, 3]
    assert box.loads == 4


# ------------------------------------------------------------------ flags, sizes, sets


FLAG_BOX = make_box(
    [crlf(f"Subject: {i}\n\nb\n") + b"x" * (i * 100) for i in range(1, 7)],
    flags=[
        ("\\Seen", "\\Answered"),
        ("\\Deleted",),
        ("\\Draft", "$Label1"),
        ("\\Flagged", "\\Seen"),
        (),
        ("\\seen", "$label1"),
    ],
    uids=[3, 7, 8, 20, 21, 40],
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("all", [1, 2, 3, 4, 5, 6]),
        ("seen", [1, 4, 6]),
        ("unseen", [2, 3, 5]),
        ("answered", [1]),
        ("unanswered", [2, 3, 4, 5, 6]),
        ("deleted", [2]),
        ("undeleted", [1, 3, 4, 5, 6]),
        ("draft", [3]),
        ("undraft", [1, 2, 4, 5, 6]),
        ("flagged", [4]),
        ("unflagged", [1, 2, 3, 5, 6]),
        ("keyword $Label1", [3, 6]),
        ("keyword $LABEL1", [3, 6]),
        ("unkeyword $label1", [1, 2, 4, 5]),
        ("recent", [2, 5]),
        ("new", [2, 5]),
        ("old", [1, 3, 4, 6]),
        ("not recent", [1, 3, 4, 6]),
        ("1:3,5", [1, 2, 3, 5]),
        ("4:2", [2, 3, 4]),
        ("*", [6]),
        ("7:*", [6]),
        ("*:4", [4, 5, 6]),
        ("1,4,*", [1, 4, 6]),
        ("uid 7:20", [2, 3, 4]),
        ("uid 20:7", [2, 3, 4]),
        ("uid *", [6]),
        ("uid 100:*", [6]),
        ("uid 1,21", [5]),
        ("1:3 not uid 7", [1, 3]),
        ("not 2,4", [1, 3, 5, 6]),
        ("or 1 uid 8", [1, 3]),
        ("or seen flagged", [1, 4, 6]),
        ("(seen unanswered)", [4, 6]),
        ("not (seen unanswered)", [1, 2, 3, 5]),
        ("larger 300", [3, 4, 5, 6]),
        ("smaller 250", [1, 2]),
        ("larger 250 smaller 450", [3, 4]),
        ("modseq 40", [4, 5, 6]),
        ('modseq "/flags/\\\\draft" all 50', [5, 6]),
    ],
)
def test_flags_sizes_and_sets(query: str, expected: list[int]) -> None:
    sizes = [len(r) for r in FLAG_BOX.raws]
    assert sizes == sorted(sizes)
    assert search(FLAG_BOX, query, recent=frozenset({7, 21}), forbid_body=True) == expected


def test_saved_result_set() -> None:
    key = c.SearchUid(c.SequenceSet((), saved=True))
    infos = FLAG_BOX.infos()
    hits = [
        seq
        for seq, info in enumerate(infos, 1)
        if matches(key, info, seq, lambda: b"", max_seq=6, max_uid=40, saved=frozenset({8, 40}))
    ]
    assert hits == [3, 6]


# ------------------------------------------------------------------ dates


def test_sent_dates_ignore_time_zone() -> None:
    # Around a daylight-saving change, as in imaptest search-date.
    box = make_box(
        [
            crlf("Date: Sat, 24 Mar 2007 23:00:00 +0200\n\nx\n"),
            crlf("Date: Sun, 25 Mar 2007 00:00:00 +0200\n\nx\n"),
            crlf("Date: Sun, 25 Mar 2007 23:59:59 +0300\n\nx\n"),
            crlf("Date: 26 Mar 07 01:00 EEST\n\nx\n"),
            crlf("X-No-Date: 1\n\nx\n"),
        ],
        dates=[datetime(2007, 3, 20, 12, tzinfo=UTC)] * 5,
    )
    assert search(box, "sentbefore 24-mar-2007", forbid_body=True) == [5]
    assert search(box, "sentbefore 25-mar-2007", forbid_body=True) == [1, 5]
    assert search(box, "senton 25-mar-2007", forbid_body=True) == [2, 3]
    assert search(box, "sentsince 25-mar-2007", forbid_body=True) == [2, 3, 4]
    assert search(box, "sentsince 26-mar-2007", forbid_body=True) == [4]
    assert search(box, "senton 26-mar-2007", forbid_body=True) == [4]


def test_internal_dates_use_their_own_day() -> None:
    plus2 = timezone(timedelta(hours=2))
    box = make_box(
        [crlf("Subject: x\n\nx\n")] * 3,
        dates=[
            datetime(2024, 5, 1, 23, 30, tzinfo=plus2),
            datetime(2024, 5, 2, 0, 30, tzinfo=plus2),
            datetime(2024, 5, 3, 12, 0, tzinfo=UTC),
        ],
    )
    assert search(box, "on 1-May-2024") == [1]
    assert search(box, "before 2-May-2024") == [1]
    assert search(box, "since 2-May-2024") == [2, 3]
    assert search(box, "since 2-may-2024 before 3-May-2024") == [2]


def test_older_and_younger() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    box = make_box(
        [crlf("Subject: x\n\nx\n")] * 3,
        dates=[now - timedelta(seconds=10), now - timedelta(hours=1), now - timedelta(days=3)],
    )
    assert search(box, "younger 60", now=now) == [1]
    assert search(box, "older 60", now=now) == [2, 3]
    assert search(box, "older 3600", now=now) == [2, 3]
    assert search(box, "younger 3600", now=now) == [1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)", date(1996, 7, 17)),
        ("17 Jul 96 02:23 GMT", date(1996, 7, 17)),
        ("1 jan 2001", date(2001, 1, 1)),
        ("Thu, 31 Feb 2019 10:00:00 +0000", None),
        ("garbage", None),
        ("2024-02-29T10:00:00Z", date(2024, 2, 29)),
        ("2023-02-29", None),
        (None, None),
    ],
)
def test_sent_date(value: str | None, expected: date | None) -> None:
    assert sent_date(value) == expected


# ------------------------------------------------------------------ needs_body


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("all", False),
        ("from x to y cc z bcc w subject s", False),
        ("header message-id <a@b>", False),
        ("header in-reply-to <a@b>", False),
        ("header date 2020", False),
        ("header x-spam yes", True),
        ("header sender x", True),
        ("body x", True),
        ("text x", True),
        ("not body x", True),
        ("or seen text x", True),
        ("(seen (flagged (body x)))", True),
        ("seen uid 1:* larger 5 sentbefore 1-jan-2020", False),
    ],
)
def test_needs_body(query: str, expected: bool) -> None:
    assert needs_body(parse_key(query)) is expected


def test_header_only_keys_never_load() -> None:
    box = make_box([crlf("Message-ID: <id-1@x>\nIn-Reply-To: <p@x>\nSubject: s\n\nb\n")])
    assert search(box, "header message-id id-1", forbid_body=True) == [1]
    assert search(box, "header in-reply-to <p@x>", forbid_body=True) == [1]
    assert search(box, "not header message-id nope", forbid_body=True) == [1]


# ------------------------------------------------------------------ robustness

_SEARCH_PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=a\r\n",
        b"Content-Type: text/plain; charset=x-unknown\r\n",
        b"Content-Type: text/plain; charset=utf-16\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Subject: =?bogus?x?y?= =?utf-8?b?@@@?=\xff\r\n",
        b"Date: 99 Foo 99999\r\n",
        b"From: <>\r\n",
        b"\r\n",
        b"--a\r\n",
        b"=\xff=zz needle\r\n",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_SEARCH_PIECES, max_size=25))
def test_search_never_raises(pieces: list[bytes]) -> None:
    box = make_box([b"".join(pieces)])
    for query in (
        "text needle",
        "body needle",
        "subject x",
        "from x",
        "sentbefore 1-jan-2000",
        'header x-none ""',
        'or larger 1 text "é"',
    ):
        search(box, query)


def test_compiled_keys_are_reused_per_key_object() -> None:
    key = parse_key("unseen larger 10")
    assert compile_key(key) is compile_key(key)
    other = parse_key("unseen larger 10")
    assert compile_key(other).key is other
    assert compile_key(key).needs_body is False


def test_missing_metadata_falls_back_to_the_raw_message() -> None:
    raw = NESTED_RFC822
    info = MessageInfo(1, 1, frozenset(), len(raw), datetime(2024, 1, 1, tzinfo=UTC), {})
    for query, expected in [
        ("body quokka", True),
        ("from forwarder", True),
        ("subject original", True),
        ("to nobody", False),
        ("sentbefore 1-jan-2000", False),
    ]:
        hit = matches(parse_key(query), info, 1, lambda: raw, max_seq=1, max_uid=1)
        assert hit is expected, query


def test_leaves_take_nested_keys_apart_in_order_without_recursion() -> None:
    key = c.SearchAnd((c.SearchNot(c.SearchBody("a")),
                       c.SearchOr(c.SearchFlag("\\Seen", True), c.SearchLarger(5))))
    assert list(leaves(key)) == [c.SearchBody("a"), c.SearchFlag("\\Seen", True),
                                 c.SearchLarger(5)]
    deep: c.SearchKey = c.SearchLarger(1)
    for _ in range(20_000):  # far past Python's recursion limit
        deep = c.SearchNot(deep)
    assert list(leaves(deep)) == [c.SearchLarger(1)] and not needs_body(deep)
