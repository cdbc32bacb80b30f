"""imapd.fetch: ENVELOPE / BODY / BODYSTRUCTURE rendering and BODY[section] slices."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mime_corpus import (
    CORPUS,
    DIGEST,
    EIGHT_BIT,
    GROUPS,
    MIXED_ATTACHMENTS,
    NESTED_RFC822,
    RFC3501_MULTIPART,
    SIMPLE,
    TOP_RFC822,
    crlf,
)

from imapd.fetch import (
    binary_bytes,
    binary_section,
    binary_size,
    header_fields,
    partial,
    render_bodystructure,
    render_envelope,
    section_bytes,
)
from imapd.parser.commands import Section, SectionText
from imapd.responses import istring, nstring
from storage.mime import header_bounds, iter_fields, parse_message

# ------------------------------------------------------------------ RFC 3501 examples


def test_rfc3501_envelope_example() -> None:
    assert render_envelope(parse_message(SIMPLE)) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_rfc3501_body_example() -> None:
    meta = parse_message(SIMPLE)
    assert render_bodystructure(meta, False) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    )
    assert render_bodystructure(meta, True) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )


def test_rfc3501_multipart_bodystructure_example() -> None:
    meta = parse_message(RFC3501_MULTIPART)
    assert render_bodystructure(meta, False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )
    assert render_bodystructure(meta, True).endswith(
        b' "MIXED" ("BOUNDARY" "8323328-2120168431-824156341=:325") NIL NIL NIL)'
    )


def test_bodystructure_extension_data() -> None:
    meta = parse_message(MIXED_ATTACHMENTS)
    out = render_bodystructure(meta, True)
    assert (
        b'("application" "pdf" ("name" "cr.pdf") NIL NIL "base64" 8 "Q2hlY2sgSW50ZWdyaXR5IQ==" '
        b'("attachment" ("filename" "cr.pdf" "size" "6")) ("fr" "en") "http://example.org/cr.pdf")'
    ) in out
    assert b'("image" "png" NIL NIL NIL "7BIT" 18 NIL ("inline" NIL) NIL NIL)' in out
    assert out.endswith(b' "mixed" ("boundary" "outer") NIL NIL NIL)')
    body = render_bodystructure(meta, False)
    assert b'("application" "pdf" ("name" "cr.pdf") NIL NIL "base64" 8)' in body
    assert b"attachment" not in body


def test_bodystructure_message_rfc822_has_envelope_body_and_lines() -> None:
    meta = parse_message(NESTED_RFC822)
    out = render_bodystructure(meta, False)
    assert out == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 12 1)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" 323 '
        b'("Mon, 1 Jan 2024 12:00:00 +0000" "original" '
        b'(("Original Sender" NIL "orig" "example.org")) (("Original Sender" NIL "orig" "example.org")) '
        b'(("Original Sender" NIL "orig" "example.org")) ((NIL NIL "forwarder" "hopital.test")) '
        b'NIL NIL NIL "<orig@example.org>") '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 18 1)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7BIT" 17 1) "alternative") 16) "mixed")'
    )


def test_envelope_groups_and_routes() -> None:
    out = render_envelope(parse_message(GROUPS))
    assert out == (
        b'(NIL NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) '
        b'(("Real Name" NIL "user" "domain")) '
        b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
        b'(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL "@route1,@route2" "user" "domain")) NIL NIL)'
    )


def test_envelope_eight_bit_uses_literals() -> None:
    out = render_envelope(parse_message(EIGHT_BIT))
    assert b"{12}\r\ncaf\xc3\xa9 cr\xc3\xa8me" in out
    assert b"(({5}\r\n\xe9l\xe8ve NIL " in out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_renderers_accept_the_whole_corpus(name: str) -> None:
    meta = parse_message(CORPUS[name])
    for out in (
        render_envelope(meta),
        render_bodystructure(meta, True),
        render_bodystructure(meta, False),
    ):
        assert out.startswith(b"(") and out.endswith(b")")
        assert out.count(b"(") - out.count(b")") == _literal_paren_skew(out)


def _literal_paren_skew(out: bytes) -> int:
    """Parentheses inside literals/quoted strings do not balance: count them."""
    skew, i = 0, 0
    while i < len(out):
        c = out[i : i + 1]
        if c == b'"':
            j = i + 1
            while out[j : j + 1] != b'"':
                j += 2 if out[j : j + 1] == b"\\" else 1
            inner = out[i + 1 : j]
            skew += inner.count(b"(") - inner.count(b")")
            i = j + 1
        elif c == b"{" and b"}\r\n" in out[i : i + 12]:
            close = out.index(b"}\r\n", i)
            n = int(out[i + 1 : close])
            inner = out[close + 3 : close + 3 + n]
            skew += inner.count(b"(") - inner.count(b")")
            i = close + 3 + n
        else:
            i += 1
    return skew


# ------------------------------------------------------------------ strings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"NIL"),
        ("", b'""'),
        ("plain", b'"plain"'),
        ('say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
        ("caf\xe9", b"{4}\r\ncaf\xe9"),
        ("a\rb", b"{3}\r\na\rb"),
        ("nul\x00", b"{3}\r\nnul"),
        ("x" * 2000, b"{2000}\r\n" + b"x" * 2000),
    ],
)
def test_nstring(value: str | None, expected: bytes) -> None:
    assert nstring(value) == expected


def test_istring_bytes() -> None:
    assert istring(b"NIL") == b'"NIL"'


# ------------------------------------------------------------------ sections
# Expectations follow the Dovecot imaptest fetch-body* scripts (CRLF message).

MIME_MSG = crlf(
    "From: user@domain.org\n"
    "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    "Mime-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="foo\n'
    ' bar"\n'
    "\n"
    "Root MIME prologue\n"
    "\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "\n"
    "hello\n"
    "\n"
    "--foo bar\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: sub@domain.org\n"
    "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
    "Subject: submsg\n"
    'Content-Type: multipart/alternative; boundary="sub1"\n'
    "\n"
    "Sub MIME prologue\n"
    "--sub1\n"
    "Content-Type: text/html\n"
    "\n"
    "<p>Hello world</p>\n"
    "\n"
    "--sub1\n"
    "Content-Type: text/plain\n"
    "\n"
    "Hello another world\n"
    "\n"
    "--sub1--\n"
    "Sub MIME epilogue\n"
    "\n"
    "--foo bar--\n"
    "Root MIME epilogue\n"
)

SUB_MSG = crlf(
    "From: sub@domain.org\n"
    "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
    "Subject: submsg\n"
    'Content-Type: multipart/alternative; boundary="sub1"\n'
    "\n"
    "Sub MIME prologue\n"
    "--sub1\n"
    "Content-Type: text/html\n"
    "\n"
    "<p>Hello world</p>\n"
    "\n"
    "--sub1\n"
    "Content-Type: text/plain\n"
    "\n"
    "Hello another world\n"
    "\n"
    "--sub1--\n"
    "Sub MIME epilogue\n"
)


def S(
    part: tuple[int, ...] = (), text: SectionText | None = None, headers: tuple[str, ...] = ()
) -> Section:
    return Section(part=part, text=text, headers=headers)


H, HF, HFN, T, M = (
    SectionText.HEADER,
    SectionText.HEADER_FIELDS,
    SectionText.HEADER_FIELDS_NOT,
    SectionText.TEXT,
    SectionText.MIME,
)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (S(), MIME_MSG),
        (S((1,)), crlf("hello\n")),
        (S((1,), M), crlf("Content-Type: text/x-myown; charset=us-ascii\n\n")),
        (S((2,)), SUB_MSG),
        (S((2,), M), crlf("Content-Type: message/rfc822\n\n")),
        (
            S((2,), H),
            crlf(
                "From: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n"
                'Content-Type: multipart/alternative; boundary="sub1"\n\n'
            ),
        ),
        (
            S((2,), HF, ("from", "subject", "X-foo")),
            crlf("From: sub@domain.org\nSubject: submsg\n\n"),
        ),
        (
            S((2,), HFN, ("from", "subject", "X-foo")),
            crlf(
                "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
                'Content-Type: multipart/alternative; boundary="sub1"\n\n'
            ),
        ),
        (S((2,), T), SUB_MSG[SUB_MSG.index(b"Sub MIME prologue") :]),
        (S((2, 1), M), crlf("Content-Type: text/html\n\n")),
        (S((2, 1)), crlf("<p>Hello world</p>\n")),
        (S((2, 2), M), crlf("Content-Type: text/plain\n\n")),
        (S((2, 2)), crlf("Hello another world\n")),
        (S((), T), MIME_MSG[MIME_MSG.index(b"Root MIME prologue") :]),
        (S((), HF, ("FROM",)), crlf("From: user@domain.org\n\n")),
        (S((), HF, ("xyz",)), b"\r\n"),
        (
            S((), HF, ("content-type",)),
            crlf('Content-Type: multipart/mixed; boundary="foo\n bar"\n\n'),
        ),
        # absent parts and HEADER/TEXT of a part that is not message/rfc822
        (S((3,)), b""),
        (S((1, 1)), b""),
        (S((1,), H), b""),
        (S((1,), T), b""),
    ],
)
def test_section_bytes_multipart(section: Section, expected: bytes) -> None:
    assert section_bytes(MIME_MSG, parse_message(MIME_MSG), section) == expected


def test_the_whole_message_needs_no_metadata_and_no_parse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """BODY[] (Thunderbird opening a message, offline sync) is the stored
    message itself: FETCH loads no metadata for it, and it is not parsed
    again to find what it does not need."""
    import imapd.fetch

    def no_parse(raw: bytes) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(imapd.fetch, "parse_message", no_parse)
    assert section_bytes(MIME_MSG, {}, S()) == MIME_MSG
    with pytest.raises(AssertionError, match="parsed again"):  # a part needs the structure
        section_bytes(MIME_MSG, {}, S((1,)))


def test_section_header_is_the_header_with_blank_line() -> None:
    meta = parse_message(MIME_MSG)
    header = section_bytes(MIME_MSG, meta, S((), H))
    assert header.endswith(b'bar"\r\n\r\n') and MIME_MSG.startswith(header)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (S(), TOP_RFC822),
        (S((), T), TOP_RFC822[TOP_RFC822.index(b"From: sub") :]),
        (S((1,)), TOP_RFC822[TOP_RFC822.index(b"From: sub") :]),
        (
            S((1,), H),
            crlf(
                "From: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n\n"
            ),
        ),
        (
            S((1,), HF, ("from", "subject", "X-foo")),
            crlf("From: sub@domain.org\nSubject: submsg\n\n"),
        ),
        (
            S((1,), HFN, ("from", "subject", "X-foo")),
            crlf("Date: Sun, 12 Aug 2012 12:34:56 +0300\n\n"),
        ),
        (S((1,), T), crlf("Hello world\n")),
        (S((1, 1)), crlf("Hello world\n")),
    ],
)
def test_section_bytes_top_level_message_rfc822(section: Section, expected: bytes) -> None:
    assert section_bytes(TOP_RFC822, parse_message(TOP_RFC822), section) == expected


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (S((1,)), crlf("From: m1@example.com\nSubject: m1\n\nm1 body\n")),
        (S((1, 1)), crlf("m1 body\n")),
        (S((1,), M), b"\r\n"),
        (S((1,), H), crlf("From: m1@example.com\nSubject: m1\n\n")),
        (S((1,), T), crlf("m1 body\n")),
        (S((2,), M), crlf("X-Mime: m2 header\n\n")),
        (S((2,), H), crlf("From: m2@example.com\nSubject: m2\n\n")),
        (S((2,), T), crlf("m2 body\n")),
    ],
)
def test_section_bytes_digest(section: Section, expected: bytes) -> None:
    assert section_bytes(DIGEST, parse_message(DIGEST), section) == expected


def test_section_of_single_part_message() -> None:
    meta = parse_message(SIMPLE)
    body = SIMPLE[meta["header_end"] :]
    assert section_bytes(SIMPLE, meta, S((1,))) == body
    assert section_bytes(SIMPLE, meta, S((), T)) == body
    assert section_bytes(SIMPLE, meta, S((1,), M)) == SIMPLE[: meta["header_end"]]


def test_header_fields_keeps_continuations_order_and_duplicates() -> None:
    raw = crlf(
        "Subject: a very long subject\n  folded over\nX-Multi: first\nFrom: x@y\n"
        "x-multi: second\n\tcontinued\n\nbody\n"
    )
    meta = parse_message(raw)
    assert section_bytes(raw, meta, S((), HF, ("X-MULTI", "subject"))) == crlf(
        "Subject: a very long subject\n  folded over\nX-Multi: first\nx-multi: second\n\tcontinued\n\n"
    )
    assert section_bytes(raw, meta, S((), HFN, ("x-multi", "subject"))) == crlf("From: x@y\n\n")


def test_header_fields_without_final_newline() -> None:
    raw = b"Subject: s\r\nFrom: a@b"
    assert header_fields(raw, 0, len(raw), ["from"]) == b"From: a@b\r\n\r\n"


def _header_fields_field_by_field(raw: bytes, names: list[str], not_: bool) -> bytes:
    """HEADER.FIELDS as first written: every field split out, then picked."""
    wanted = {n.lower().encode("latin-1", "replace") for n in names}
    fields_end, body = header_bounds(raw, 0, len(raw))
    out = []
    for name, fstart, fend, _value in iter_fields(raw, 0, fields_end):
        if (name.lower() in wanted) != not_:
            chunk = raw[fstart:fend]
            out.append(chunk if chunk.endswith(b"\n") else chunk + b"\r\n")
    if body > fields_end or not not_:
        out.append(b"\r\n")
    return b"".join(out)


_LINES = [b"From: a@b", b"from :x", b"FROM:\ty", b"To: c", b" folded", b"\tfolded", b"garbage",
          b"X A: z", b"X-A: q", b"Received: r", b"From-X: w", b"\xe9t\xe9: v", b"??: k", b"",
          b"a:b: c", b"Fro: n"]
_NAMES = ["From", "to", "X-A", "X A", "a:b", "", "Fro", "From-X", "\u00e9t\u00e9", "\u65e5",
          "received", "a\u00a0b"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_LINES), max_size=8), st.sampled_from([b"\r\n", b"\n"]),
       st.sampled_from([b"", b"\n", b"\n\nbody", b"\r\n\r\nbody"]),
       st.lists(st.sampled_from(_NAMES), min_size=1, max_size=5), st.booleans())
def test_header_fields_picks_what_splitting_every_field_picks(
        lines: list[bytes], sep: bytes, tail: bytes, names: list[str], not_: bool) -> None:
    # The wanted fields are found by one regex per list of names (cached);
    # the answer is byte for byte the field-by-field one, odd names included.
    raw = sep.join(lines) + tail
    assert header_fields(raw, 0, len(raw), names, not_) == _header_fields_field_by_field(
        raw, names, not_)


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [(0, 3, b"bod"), (3, 3, b"y22"), (5, 100, b"2\r\n"), (8, 1, b""), (100, 5, b""), (0, 0, b"")],
)
def test_partial(start: int, length: int, expected: bytes) -> None:
    assert partial(b"body22\r\n", start, length) == expected


# ------------------------------------------------------------------ BINARY


def test_binary_decodes_transfer_encoding() -> None:
    raw = CORPUS["alternative"]
    meta = parse_message(raw)
    assert (
        binary_bytes(raw, meta, (1,)) == "Bonjour, voici les résultats de la numération.".encode()
    )
    assert binary_bytes(raw, meta, (2,)) == "<p>Bonjour, voici les résultats en HTML.</p>".encode()
    assert binary_size(raw, meta, (2,)) == len(
        "<p>Bonjour, voici les résultats en HTML.</p>".encode()
    )
    assert binary_bytes(raw, meta, (9,)) == b""
    assert binary_bytes(raw, meta, ()) == raw


def test_binary_unknown_encoding_is_none() -> None:
    raw = crlf("Content-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n")
    meta = parse_message(raw)
    assert binary_bytes(raw, meta, (1,)) is None
    assert binary_size(raw, meta, (1,)) is None


# ------------------------------------------------------------------ damaged metadata


def test_renderers_survive_missing_metadata() -> None:
    assert render_envelope({}) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert render_bodystructure({}, True) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)'
    )


def test_sections_reparse_when_metadata_does_not_fit_the_body() -> None:
    stale = parse_message(SIMPLE)
    assert section_bytes(MIME_MSG, stale, S((2, 1))) == crlf("<p>Hello world</p>\n")
    assert section_bytes(MIME_MSG, {}, S((1,), M)) == crlf(
        "Content-Type: text/x-myown; charset=us-ascii\n\n"
    )


# Sizes from imaptest fetch-binary-mime (the same message, CRLF): every offset counts.
@pytest.mark.parametrize(
    ("section", "size"),
    [
        (S(), 602),
        (S((), T), 466),
        (S((1,)), 7),
        (S((1,), M), 48),
        (S((2,)), 298),
        (S((2,), M), 32),
        (S((2,), H), 134),
        (S((2,), HF, ("from", "subject", "x-foo")), 41),
        (S((2,), HFN, ("from", "subject", "x-foo")), 95),
        (S((2,), T), 164),
        (S((2, 1), M), 27),
        (S((2, 1)), 20),
        (S((2, 2), M), 28),
        (S((2, 2)), 21),
    ],
)
def test_binary_section_sizes_match_imaptest(section: Section, size: int) -> None:
    meta = parse_message(MIME_MSG)
    data = binary_section(MIME_MSG, meta, section)
    assert data is not None and len(data) == size
    assert data == section_bytes(MIME_MSG, meta, section)


QP_MSG = crlf(
    "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
    "Content-Transfer-Encoding: quoted-printable\n\n"
    "hello=\nbar  \nfoo=09bar\nsoft = \nbreak\nfoo_bar=3D\n--b--\n"
)


def test_binary_quoted_printable() -> None:
    meta = parse_message(QP_MSG)
    assert binary_bytes(QP_MSG, meta, (1,)) == b"hellobar\r\nfoo\tbar\r\nsoft break\r\nfoo_bar="


# ------------------------------------------------------------------ robustness

_PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=a\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b'Content-Disposition: inline; filename="x\r\n',
        b'From: "x" <a@b>, g: c@d;\r\n',
        b"Subject: =?utf-8?q?=C3=A9?= \xe9\x00\r\n",
        b"\r\n",
        b"--a\r\n",
        b"--a--\r\n",
        b"text\r\n",
        b'("\\',
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_PIECES, max_size=30),
    st.lists(st.integers(min_value=0, max_value=4), max_size=4),
    st.sampled_from([None, *SectionText]),
)
def test_renderers_and_sections_never_raise(
    pieces: list[bytes], path: list[int], text: SectionText | None
) -> None:
    raw = b"".join(pieces)
    meta = parse_message(raw)
    assert render_envelope(meta).startswith(b"(")
    assert render_bodystructure(meta, True).startswith(b"(")
    section = Section(part=tuple(path), text=text, headers=("from",) if text else ())
    data = section_bytes(raw, meta, section)
    assert len(data) <= len(raw) + 2
    binary_section(raw, meta, section)


def test_a_long_list_of_names_is_picked_field_by_field_without_a_regex() -> None:
    # Up to a command line of names: compiling a regex for it would cost
    # more than the fields (and the cache would keep it); same answer.
    from imapd import fetch as fetch_module

    raw = b"From: a\r\nX-1: one\r\nTo: b\r\nX-40: forty\r\n\r\nbody\r\n"
    many = [f"X-{i}" for i in range(1, 41)]
    long_name = ["X-1", "Y" * 2000]
    before = fetch_module._fields_named.cache_info().currsize
    assert header_fields(raw, 0, len(raw), many) == b"X-1: one\r\nX-40: forty\r\n\r\n"
    assert header_fields(raw, 0, len(raw), long_name) == b"X-1: one\r\n\r\n"
    assert fetch_module._fields_named.cache_info().currsize == before
    assert header_fields(raw, 0, len(raw), many, True) == b"From: a\r\nTo: b\r\n\r\n"
