"""storage.mime.parse_message: envelope, structure, byte offsets, robustness."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mime_corpus import (
    ALTERNATIVE,
    BOUNDARY_NOT_FOUND,
    BROKEN_MULTIPART,
    CORPUS,
    DIGEST,
    EIGHT_BIT,
    FOLDED,
    GARBAGE_CT,
    GROUPS,
    LF_ONLY,
    MISSING_HEADERS,
    MIXED_ATTACHMENTS,
    NESTED_RFC822,
    NO_HEADERS,
    NO_SEPARATOR,
    RFC3501_MULTIPART,
    SIMPLE,
    TOP_RFC822,
    UNCLOSED_MULTIPART,
    walk,
)

from storage.mime import (
    MAX_DEPTH,
    _parse_addresses,
    decode_transfer,
    find_part,
    parse_addresses,
    parse_message,
)


def body_of(raw: bytes, part: dict) -> bytes:
    return raw[part["body_start"] : part["body_end"]]


def header_of(raw: bytes, part: dict) -> bytes:
    return raw[part["header_start"] : part["header_end"]]


# ------------------------------------------------------------------ envelope


def test_envelope_of_rfc3501_example() -> None:
    env = parse_message(SIMPLE)["envelope"]
    gray = [["Terry Gray", None, "gray", "cac.washington.edu"]]
    assert env == {
        "date": "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
        "subject": "IMAP4rev1 WG mtg summary and minutes",
        "from": gray,
        "sender": gray,
        "reply_to": gray,
        "to": [[None, None, "imap", "cac.washington.edu"]],
        "cc": [
            [None, None, "minutes", "CNRI.Reston.VA.US"],
            ["John Klensin", None, "KLENSIN", "MIT.EDU"],
        ],
        "bcc": None,
        "in_reply_to": None,
        "message_id": "<B27397-0100000@cac.washington.edu>",
    }


def test_envelope_keeps_encoded_words_raw() -> None:
    env = parse_message(ALTERNATIVE)["envelope"]
    assert env["subject"] == "=?utf-8?b?UsOpc3VsdGF0cyBkJ2FuYWx5c2U=?="
    assert env["from"] == [
        ["=?utf-8?q?Dr_Andr=C3=A9_Martin?=", None, "andre.martin", "hopital.test"]
    ]


def test_envelope_groups_routes_comments_and_empty_defaults() -> None:
    env = parse_message(GROUPS)["envelope"]
    real = [["Real Name", None, "user", "domain"]]
    assert env["from"] == real
    # empty Sender: / Reply-To: default to From (RFC 3501 7.4.2)
    assert env["sender"] == real and env["reply_to"] == real
    assert env["to"] == [
        [None, None, "group", None],
        [None, None, "g1", "d1.org"],
        [None, None, "g2", "d2.org"],
        [None, None, None, None],
        [None, None, "group2", None],
        [None, None, "g3", "d3.org"],
        [None, None, None, None],
    ]
    assert env["cc"] == [[None, None, "undisclosed-recipients", None], [None, None, None, None]]
    assert env["bcc"] == [[None, "@route1,@route2", "user", "domain"]]


def test_envelope_missing_headers_are_nil() -> None:
    env = parse_message(MISSING_HEADERS)["envelope"]
    assert all(v is None for v in env.values())


def test_envelope_eight_bit_is_kept_as_octets() -> None:
    env = parse_message(EIGHT_BIT)["envelope"]
    assert env["subject"].encode("latin-1") == b"caf\xc3\xa9 cr\xc3\xa8me"
    assert env["from"][0][0].encode("latin-1") == b"\xe9l\xe8ve"


def test_envelope_folded_headers_are_unfolded() -> None:
    env = parse_message(FOLDED)["envelope"]
    assert env["subject"] == "a very long subject  folded over two lines"
    assert env["from"] == [["Folded", None, "folded", "example.org"]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b", [[None, None, "a", "b"]]),
        ('"Doe, John" <jd@x.org>', [["Doe, John", None, "jd", "x.org"]]),
        (
            "Joe Q. Public <john.q.public@example.com>",
            [["Joe Q. Public", None, "john.q.public", "example.com"]],
        ),
        (
            '"Giant; \\"Big\\" Box" <sysservices@example.net>',
            [['Giant; "Big" Box', None, "sysservices", "example.net"]],
        ),
        (
            "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
            [["Pete", None, "pete", "silly.test"]],
        ),
        ("<user-from (comment)@ (comment) domain.org>", [[None, None, "user-from", "domain.org"]]),
        ("a@b (Al), c@d", [["Al", None, "a", "b"], [None, None, "c", "d"]]),
        ("just-local", [[None, None, "just-local", ""]]),
        ("<a@b>  ,  ,", [[None, None, "a", "b"]]),
        ("", None),
        ("  ", None),
        ("g: ; (trailing comment)", [[None, None, "g", None], [None, None, None, None]]),
        (
            "unterminated: a@b",
            [[None, None, "unterminated", None], [None, None, "a", "b"], [None, None, None, None]],
        ),
        ('"unterminated <a@b>', [[None, None, "unterminated <a@b>", ""]]),
        ("Name <unclosed@angle", [["Name", None, "unclosed", "angle"]]),
        ("x@[127.0.0.1]", [[None, None, "x", "[127.0.0.1]"]]),
        # RFC 3501 9: addr-mailbox is the local part without its RFC 822 quoting
        ('"quoted local"@example.org', [[None, None, "quoted local", "example.org"]]),
        ('"a\\"b"@example.org', [[None, None, 'a"b', "example.org"]]),
    ],
)
def test_parse_addresses(value: str, expected: list | None) -> None:
    assert parse_addresses(value) == expected


# ------------------------------------------------------------------ structure


def test_rfc3501_single_part_structure() -> None:
    meta = parse_message(SIMPLE)
    body = meta["body"]
    assert (body["type"], body["subtype"], body["params"]) == (
        "TEXT",
        "PLAIN",
        [["CHARSET", "US-ASCII"]],
    )
    assert (body["encoding"], body["size"], body["lines"]) == ("7BIT", 3028, 92)
    assert SIMPLE[: meta["header_end"]].endswith(b"CHARSET=US-ASCII\r\n\r\n")
    assert body_of(SIMPLE, body).startswith(b"line000")


def test_rfc3501_multipart_structure_and_offsets() -> None:
    meta = parse_message(RFC3501_MULTIPART)
    body = meta["body"]
    assert body["subtype"] == "MIXED"
    p1, p2 = body["parts"]
    assert (p1["size"], p1["lines"]) == (1152, 23)
    assert (p2["size"], p2["lines"], p2["encoding"]) == (4554, 73, "BASE64")
    assert p2["params"] == [["CHARSET", "US-ASCII"], ["NAME", "cc.diff"]]
    assert p2["id"] == "<960723163407.20117h@cac.washington.edu>"
    assert p2["description"] == "Compiler diff"
    # the CRLF before a boundary is not part of the body (RFC 2046 5.1.1)
    assert RFC3501_MULTIPART[p1["body_end"] :].startswith(b"\r\n--8323328")
    assert header_of(RFC3501_MULTIPART, p1) == b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
    assert body_of(RFC3501_MULTIPART, body).startswith(b"This is a preamble.")
    assert body_of(RFC3501_MULTIPART, body).endswith(b"epilogue\r\n")


def test_multipart_mixed_with_attachments() -> None:
    raw = MIXED_ATTACHMENTS
    meta = parse_message(raw)
    alt, pdf, png = meta["body"]["parts"]
    assert alt["subtype"] == "alternative" and len(alt["parts"]) == 2
    assert body_of(raw, alt["parts"][0]) == b"Voir la piece jointe zebracorn."
    assert body_of(raw, alt["parts"][1]) == b"<p>Voir la piece jointe.</p>"
    # boundary "outer" must not match "--outer-inner"
    assert body_of(raw, alt).endswith(b"--outer-inner--\r\n")
    assert pdf["disposition"] == ["attachment", [["filename", "cr.pdf"], ["size", "6"]]]
    assert pdf["language"] == ["fr", "en"]
    assert pdf["location"] == "http://example.org/cr.pdf"
    assert pdf["md5"] == "Q2hlY2sgSW50ZWdyaXR5IQ=="
    assert decode_transfer(body_of(raw, pdf), pdf["encoding"]) == b"%PDF-\n"
    assert pdf["lines"] == 0  # only text/* and message/rfc822 have lines
    assert png["disposition"] == ["inline", []]
    assert png["params"] == []


def test_nested_message_rfc822() -> None:
    raw = NESTED_RFC822
    meta = parse_message(raw)
    text, msg = meta["body"]["parts"]
    assert (msg["type"], msg["subtype"]) == ("message", "rfc822")
    assert header_of(raw, msg) == b"Content-Type: message/rfc822\r\nX-Part-Header: yes\r\n\r\n"
    assert body_of(raw, msg).startswith(b"From: Original Sender")
    assert msg["envelope"]["subject"] == "original"
    assert msg["envelope"]["message_id"] == "<orig@example.org>"
    inner = msg["message"]
    assert header_of(raw, inner).endswith(b"boundary=b2\r\n\r\n")
    assert [body_of(raw, p) for p in inner["parts"]] == [
        b"inner plain quokka",
        b"<b>inner html</b>",
    ]
    # the last line ("--b2--") has no CRLF of its own but is still a line
    assert msg["lines"] == body_of(raw, msg).count(b"\n") + 1


def test_digest_parts_default_to_message_rfc822() -> None:
    meta = parse_message(DIGEST)
    m1, m2 = meta["body"]["parts"]
    assert (m1["type"], m1["subtype"]) == ("message", "rfc822")
    assert header_of(DIGEST, m1) == b"\r\n"
    assert header_of(DIGEST, m2) == b"X-Mime: m2 header\r\n\r\n"
    assert m2["envelope"]["subject"] == "m2"
    assert body_of(DIGEST, m2["message"]) == b"m2 body\r\n"


def test_lf_only_message() -> None:
    meta = parse_message(LF_ONLY)
    one, two = meta["body"]["parts"]
    assert body_of(LF_ONLY, one) == b"one" and body_of(LF_ONLY, two) == b"two"
    assert header_of(LF_ONLY, two) == b"\n"
    assert meta["envelope"]["subject"] == "bare LF"


@pytest.mark.parametrize("raw", [BROKEN_MULTIPART, BOUNDARY_NOT_FOUND, GARBAGE_CT, NO_HEADERS])
def test_broken_mime_falls_back_to_text_plain(raw: bytes) -> None:
    body = parse_message(raw)["body"]
    assert (body["type"].lower(), body["subtype"].lower()) == ("text", "plain")
    assert "parts" not in body
    assert ["charset", "us-ascii"] in body["params"]
    data = body_of(raw, body)
    assert body["lines"] == data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def test_unclosed_multipart_last_part_runs_to_the_end() -> None:
    meta = parse_message(UNCLOSED_MULTIPART)
    (part,) = meta["body"]["parts"]
    assert body_of(UNCLOSED_MULTIPART, part) == b"never closed\r\n"


def test_no_separator_is_all_header() -> None:
    meta = parse_message(NO_SEPARATOR)
    assert meta["header_end"] == len(NO_SEPARATOR)
    assert meta["body"]["size"] == 0
    assert meta["envelope"]["subject"] == "no body"


def test_top_level_message_rfc822() -> None:
    meta = parse_message(TOP_RFC822)
    assert meta["body"]["envelope"]["subject"] == "submsg"
    assert body_of(TOP_RFC822, meta["body"]["message"]) == b"Hello world\r\n"


def test_garbage_encoding_comment_is_removed() -> None:
    assert parse_message(GARBAGE_CT)["body"]["encoding"] == "8bit"


def test_boundary_folded_and_with_transport_padding() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="foo\r\n bar"\r\n\r\n'
        b"--foo bar  \r\nContent-Type: text/x-myown; charset=us-ascii\r\n\r\nhello\r\n\r\n--foo bar--\r\n"
    )
    meta = parse_message(raw)
    (part,) = meta["body"]["parts"]
    assert (part["subtype"], part["size"], part["lines"]) == ("x-myown", 7, 1)


def test_depth_is_capped() -> None:
    depth = MAX_DEPTH + 30
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    raw = head + b"\r\nleaf\r\n" + b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    meta = parse_message(raw)
    levels, part = 0, meta["body"]
    while "parts" in part:
        part = part["parts"][0]
        levels += 1
    assert levels <= MAX_DEPTH
    assert part["type"] == "text" and part["subtype"] == "plain"
    json.dumps(meta)


def test_many_parts_are_capped() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nx\r\n" * 5000
        + b"--b--\r\n"
    )
    meta = parse_message(raw)
    assert len(meta["body"]["parts"]) <= 2001
    assert meta["body"]["parts"][-1]["body_end"] <= len(raw)


def test_huge_header_does_not_bloat_metadata() -> None:
    raw = b"Subject: " + b"x" * 2_000_000 + b"\r\nTo: " + b"a@b, " * 20000 + b"\r\n\r\nbody"
    meta = parse_message(raw)
    assert len(json.dumps(meta)) < 200_000
    assert meta["body"]["body_start"] == len(raw) - 4


# ------------------------------------------------------------------ find_part


@pytest.mark.parametrize(
    ("raw", "path", "expected_body"),
    [
        (SIMPLE, (1,), "whole"),
        (SIMPLE, (2,), None),
        (SIMPLE, (1, 1), None),
        (NESTED_RFC822, (1,), b"see attached"),
        (NESTED_RFC822, (2, 1), b"inner plain quokka"),
        (NESTED_RFC822, (2, 2), b"<b>inner html</b>"),
        (NESTED_RFC822, (2, 3), None),
        (NESTED_RFC822, (3,), None),
        (NESTED_RFC822, (0,), None),
        (TOP_RFC822, (1, 1), b"Hello world\r\n"),
        (DIGEST, (1, 1), b"m1 body\r\n"),
    ],
)
def test_find_part(raw: bytes, path: tuple[int, ...], expected_body: bytes | str | None) -> None:
    meta = parse_message(raw)
    part = find_part(meta, path)
    if expected_body is None:
        assert part is None
    elif expected_body == "whole":
        assert part is meta["body"]
    else:
        assert part is not None and body_of(raw, part) == expected_body


# ------------------------------------------------------------------ robustness


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_never_raises_on_random_bytes(raw: bytes) -> None:
    meta = parse_message(raw)
    json.dumps(meta)
    for part in walk(meta["body"]):
        assert 0 <= part["header_start"] <= part["body_start"] <= part["body_end"] <= len(raw)


_FRAGMENTS = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=a\r\n",
        b"Content-Type: multipart/digest; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: text/plain; charset="utf-8\r\n',
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Disposition: attachment; filename*0*=utf-8''%E9; x=\"\r\n",
        b'From: "a <b@c>, (d, e:;\r\n',
        b"To: g: h@i, <@j:k@l>;\r\n",
        b" folded\r\n",
        b"\r\n",
        b"\n",
        b"--a\r\n",
        b"--a--\r\n",
        b"--b\r\n",
        b"--b--",
        b"body text\r\n",
        b"\xff\xfe\x00",
        b"=?utf-8?q?x?=",
        b"(((((",
        b'"',
        b":",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FRAGMENTS, max_size=40))
def test_never_raises_on_mime_like_input(fragments: list[bytes]) -> None:
    raw = b"".join(fragments)
    meta = parse_message(raw)
    json.dumps(meta)
    for part in walk(meta["body"]):
        assert 0 <= part["header_start"] <= part["body_start"] <= part["body_end"] <= len(raw)
        assert part["size"] == part["body_end"] - part["body_start"]


def test_corpus_is_fast_enough() -> None:
    # Generous bound (shared CI machine); the target is ~100 us per small message.
    start = time.perf_counter()
    for _ in range(50):
        for raw in CORPUS.values():
            parse_message(raw)
    per_message = (time.perf_counter() - start) / (50 * len(CORPUS))
    assert per_message < 0.002


def test_ten_megabyte_attachment_is_cheap() -> None:
    payload = base64.encodebytes(os.urandom(7_500_000)).replace(b"\n", b"\r\n")
    raw = MIXED_ATTACHMENTS.replace(b"JVBERi0K\r\n", payload)
    start = time.perf_counter()
    meta = parse_message(raw)
    elapsed = time.perf_counter() - start
    pdf = meta["body"]["parts"][1]
    assert pdf["size"] == len(payload) - 2
    assert elapsed < 0.5


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="aZ9.-_=? <>@,\r\n\té", max_size=60),
        st.text(alphabet='aZ9.-_=? <>@,\r\n\t"();:[]\\é', max_size=60),
        st.lists(
            st.sampled_from(["a@b.c", " N. Ame <x.y@z>", "<q@r>", "=?utf-8?q?x?= <e@f>", " ", ""]),
            max_size=5,
        ).map(",".join),
    )
)
def test_address_fast_path_agrees_with_the_tokenizer(value: str) -> None:
    assert parse_addresses(value) == _parse_addresses(value)


# ------------------------------------------------------------------ message/global (RFC 6532)

GLOBAL = (
    "From: a@b.test\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: message/global\r\n\r\n"
    "Subject: Re\u00e7u\r\nFrom: Jos\u00e9 <jos\u00e9@h\u00f4pital.test>\r\n\r\nline1\r\nline2\r\n"
    "--b\r\nContent-Type: message/global\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode("Subject: cach\u00e9\r\n\r\nx\r\n".encode()).decode() + "\r\n"
    "--b--\r\n"
).encode()


def test_message_global_is_parsed_like_message_rfc822() -> None:
    """RFC 9051 7.5.2 shows message/global with its envelope, structure and
    lines: they are computed at delivery, as for message/rfc822."""
    meta = parse_message(GLOBAL)
    plain, encoded = meta["body"]["parts"]
    assert (plain["type"], plain["subtype"]) == ("message", "global")
    assert plain["envelope"]["subject"] == "Re\u00e7u".encode().decode("latin-1")
    assert body_of(GLOBAL, plain["message"]) == b"line1\r\nline2"
    assert plain["lines"] == 5  # counted as for message/rfc822
    # Base64 hides the message: that part stays a leaf.
    assert "message" not in encoded and "envelope" not in encoded


@pytest.mark.parametrize(
    ("path", "message_global", "expected_body"),
    [
        ((1,), False, "Subject: Re\u00e7u\r\n".encode()),  # a leaf in IMAP4rev1
        ((1, 1), False, None),
        ((1, 1), True, b"line1\r\nline2"),  # IMAP4rev2: numbers go on inside it
        ((2, 1), True, None),
    ],
)
def test_find_part_in_message_global(
    path: tuple[int, ...], message_global: bool, expected_body: bytes | None
) -> None:
    meta = parse_message(GLOBAL)
    part = find_part(meta, path, message_global=message_global)
    if expected_body is None:
        assert part is None
    else:
        assert part is not None and body_of(GLOBAL, part).startswith(expected_body)
