"""ENVELOPE, BODYSTRUCTURE and MIME sections over real messages (RFC 3501
6.4.5, 7.4.2; imaptest `fetch-envelope`, `fetch-bodystructure`, `fetch-body-mime`)."""

from __future__ import annotations

import re

import compliance_support
from compliance_support import (
    SECRETARY,
    ImapEnv,
    deliver,
    selected,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3

ENVELOPE_MBOX = [
    b"Message-ID: <msg@id>\r\nIn-Reply-To: <reply@to.id>\r\nDate: Sat, 01 Feb 2007 01:02:03 +0200\r\n"
    b"Subject: subject header\r\nFrom: From Real <fromuser@fromdomain.org>\r\n"
    b"To: To Real <touser@todomain.org>\r\nCc: Cc Real <ccuser@ccdomain.org>\r\n"
    b"Bcc: Bcc Real <bccuser@bccdomain.org>\r\nSender: Sender Real <senderuser@senderdomain.org>\r\n"
    b"Reply-To: ReplyTo Real <replytouser@replytodomain.org>\r\n\r\nbody\r\n",
    b"Date: Sat, 01 Feb 2007 01:02:03 +0200\r\nFrom: user@domain\r\n\r\nbody\r\n",
    b"Date: Sat, 01 Feb 2007 01:02:03 +0200\r\nFrom: user@domain (Real Name)\r\n"
    b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n\r\nbody\r\n",
    b"Date: Sat, 01 Feb 2007 01:02:03 +0200\r\nFrom: user@domain (Real Name)\r\nSender: \r\n"
    b"Reply-To: \r\n\r\nbody\r\n",
    b"Date: Sat, 01 Feb 2007 01:02:03 +0200\r\nFrom: <@route:user@domain>\r\n\r\nbody\r\n",
]

ENVELOPES = [
    b'("Sat, 01 Feb 2007 01:02:03 +0200" "subject header" (("From Real" NIL "fromuser" "fromdomain.org")) '
    b'(("Sender Real" NIL "senderuser" "senderdomain.org")) (("ReplyTo Real" NIL "replytouser" "replytodomain.org")) '
    b'(("To Real" NIL "touser" "todomain.org")) (("Cc Real" NIL "ccuser" "ccdomain.org")) '
    b'(("Bcc Real" NIL "bccuser" "bccdomain.org")) "<reply@to.id>" "<msg@id>")',
    b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL ((NIL NIL "user" "domain")) ((NIL NIL "user" "domain")) '
    b'((NIL NIL "user" "domain")) NIL NIL NIL NIL NIL)',
    b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) '
    b'(("Real Name" NIL "user" "domain")) ((NIL NIL "group" NIL) (NIL NIL "g1" "d1.org") (NIL NIL "g2" "d2.org") '
    b'(NIL NIL NIL NIL) (NIL NIL "group2" NIL) (NIL NIL "g3" "d3.org") (NIL NIL NIL NIL)) NIL NIL NIL NIL)',
    b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) '
    b'(("Real Name" NIL "user" "domain")) NIL NIL NIL NIL NIL)',
    b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) '
    b'((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL)',
]


def test_imaptest_fetch_envelope(env: ImapEnv) -> None:
    """imaptest `fetch-envelope` / RFC 3501 7.4.2 ENVELOPE: field order, sender and
    reply-to default to from, group syntax, comments as display names, routes."""
    for raw in ENVELOPE_MBOX:
        deliver(env.store, SECRETARY, raw)
    c = selected(env)
    for i, want in enumerate(ENVELOPES, start=1):
        out = c.ok(f"FETCH {i} ENVELOPE")
        # address = "(" ... ")" and env-to = "(" 1*address ")": no space is required
        # between addresses; compare with spaces between ")" "(" removed.
        norm = out.upper().replace(b") (", b")(")
        assert norm == (b"* %d FETCH (ENVELOPE " % i + want + b")\r\n").upper().replace(b") (", b")("), (i, out)


MULTIPART = (
    b"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nSubject: mp\r\n"
    b"Mime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"foo\r\n bar\"\r\n\r\n"
    b"preamble\r\n--foo bar\r\nContent-Type: text/html; charset=us-ascii\r\n\r\nhello\r\n"
    b"--foo bar\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: inner@domain.org\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ninner body\r\n"
    b"--foo bar--\r\nepilogue\r\n"
)


def test_multipart_body_and_folded_boundary(env: ImapEnv) -> None:
    """imaptest `fetch-bodystructure`: a folded boundary parameter is unfolded;
    RFC 3501 7.4.2 BODY of multipart/mixed with text/html and message/rfc822."""
    deliver(env.store, SECRETARY, MULTIPART)
    c = selected(env)
    out = c.ok("FETCH 1 BODY")
    want = (b'* 1 FETCH (BODY (("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 7 1)'
            b'("message" "rfc822" NIL NIL NIL "7bit" 81 (NIL "inner" (("" NIL "inner" "domain.org")) '
            b'(("" NIL "inner" "domain.org")) (("" NIL "inner" "domain.org")) NIL NIL NIL NIL NIL) '
            b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 1) 5) "mixed"))\r\n')
    assert out.startswith(b'* 1 FETCH (BODY (("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 7 1)'.upper()) or \
        out.upper().startswith(want[:70].upper()), out
    assert b'"MIXED"))' in out.upper()
    assert b'"RFC822" NIL NIL NIL "7BIT"' in out.upper()


def test_multipart_bodystructure_extension_data(env: ImapEnv) -> None:
    """RFC 3501 7.4.2: multipart extension data = parameters (boundary), disposition,
    language, location."""
    deliver(env.store, SECRETARY, MULTIPART)
    c = selected(env)
    out = c.ok("FETCH 1 BODYSTRUCTURE").upper()
    assert b'"MIXED" ("BOUNDARY" "FOO BAR") NIL NIL NIL))\r\n' in out, out


def test_multipart_sections(env: ImapEnv) -> None:
    """RFC 3501 6.4.5 section numbers: 1 (html part body), 1.MIME, 2 (the
    message/rfc822 part), 2.HEADER, 2.TEXT, 2.1 (the inner text part), TEXT."""
    deliver(env.store, SECRETARY, MULTIPART)
    c = selected(env)
    assert c.ok("FETCH 1 BODY.PEEK[1]") == b"* 1 FETCH (BODY[1] {5}\r\nhello)\r\n"
    assert c.ok("FETCH 1 BODY.PEEK[1.MIME]") == (
        b"* 1 FETCH (BODY[1.MIME] {45}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n)\r\n")
    out = c.ok("FETCH 1 BODY.PEEK[2.HEADER]")
    assert out.startswith(b"* 1 FETCH (BODY[2.HEADER] {") and b"Subject: inner\r\n" in out and out.endswith(b"utf-8\r\n\r\n)\r\n")
    # RFC 2046 5.1.1: the CRLF before a boundary belongs to the delimiter.
    assert c.ok("FETCH 1 BODY.PEEK[2.TEXT]") == b"* 1 FETCH (BODY[2.TEXT] {10}\r\ninner body)\r\n"
    assert c.ok("FETCH 1 BODY.PEEK[2.1]") == b"* 1 FETCH (BODY[2.1] {10}\r\ninner body)\r\n"
    out = c.ok("FETCH 1 BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]")
    assert b"Subject: inner\r\n\r\n" in out
    out = c.ok("FETCH 1 BODY.PEEK[TEXT]")
    assert out.startswith(b"* 1 FETCH (BODY[TEXT] {") and b"preamble\r\n--foo bar" in out


def test_nonexistent_section_is_empty(env: ImapEnv) -> None:
    """RFC 3501 6.4.5 leaves a missing part undefined; Dovecot answers it as an
    empty string (NIL is also seen). It must not be a BAD/NO for the whole FETCH."""
    deliver(env.store, SECRETARY, MULTIPART)
    c = selected(env)
    out = c.ok("FETCH 1 BODY.PEEK[5]")
    assert out in (b"* 1 FETCH (BODY[5] NIL)\r\n", b'* 1 FETCH (BODY[5] "")\r\n',
                   b"* 1 FETCH (BODY[5] {0}\r\n)\r\n")


def test_envelope_keeps_encoded_words_and_unfolds(env: ImapEnv) -> None:
    """RFC 3501 7.4.2: ENVELOPE strings are the raw header values (RFC 2047
    encoded-words are not decoded), unfolded; quoted display names are
    unquoted; 8-bit values are sent as literals, not quoted strings (RFC 3501 4.3).
    RFC 3501 6.4.4: SEARCH matches the decoded text (CHARSET UTF-8)."""
    deliver(env.store, SECRETARY, b"From: =?utf-8?q?J=C3=A9r=C3=B4me?= <j@x.fr>\r\n"
            b"Subject: =?utf-8?q?R=C3=A9union?=\r\nTo: \"Dr \\\"Quote\\\" X\" <q@x.fr>\r\n\r\nbody\r\n")
    deliver(env.store, SECRETARY, b"From: j@x.fr\r\nSubject: R\xc3\xa9union 8bit\r\n\r\nbody\r\n")
    deliver(env.store, SECRETARY, b"Subject: multi\r\n line\r\n\r\nbody\r\n")
    c = selected(env)
    out = c.ok("FETCH 1 ENVELOPE")
    assert b'"=?utf-8?q?R=C3=A9union?=" (("=?utf-8?q?J=C3=A9r=C3=B4me?=" NIL "j" "x.fr"))' in out
    assert b'(("Dr \\"Quote\\" X" NIL "q" "x.fr"))' in out
    out = c.ok("FETCH 2 ENVELOPE")
    assert b"{13}\r\nR\xc3\xa9union 8bit" in out
    assert b'(NIL "multi line" NIL' in c.ok("FETCH 3 ENVELOPE")
    assert c.send(b"s1 SEARCH CHARSET UTF-8 SUBJECT {8+}\r\nR\xc3\xa9union\r\n").startswith(b"* SEARCH 1 2\r\n")
    assert c.send(b"s2 SEARCH CHARSET UTF-8 FROM {6+}\r\nJ\xc3\xa9r\xc3\xb4\r\n").startswith(b"* SEARCH 1\r\n")


RFC822_TOP = (
    b"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\n\r\n"
    b"From: sub@domain.org\r\nDate: Sun, 12 Aug 2012 12:34:56 +0300\r\nSubject: submsg\r\n\r\n"
    b"Hello world\r\n"
)
INNER = b"From: sub@domain.org\r\nDate: Sun, 12 Aug 2012 12:34:56 +0300\r\nSubject: submsg\r\n\r\nHello world\r\n"


def test_imaptest_fetch_body_message_rfc822(env: ImapEnv) -> None:
    """imaptest `fetch-body-message-rfc822` / RFC 3501 6.4.5: a top-level
    message/rfc822: TEXT and 1 are the embedded message; 1.HEADER, 1.TEXT and
    1.HEADER.FIELDS(.NOT) address its parts."""
    deliver(env.store, SECRETARY, RFC822_TOP)
    c = selected(env)

    def body(item: str) -> bytes:
        out = c.ok(f"FETCH 1 (BODY.PEEK[{item}])")
        m = re.match(rb"\* 1 FETCH \(BODY\[[^\]]*\] \{(\d+)\}\r\n", out, re.I)
        assert m, out
        n = int(m.group(1))
        return out[m.end():m.end() + n]

    assert body("") == RFC822_TOP
    assert body("TEXT") == INNER
    assert body("1") == INNER
    assert body("1.HEADER") == INNER.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert body("1.HEADER.FIELDS (from subject X-foo)") == b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"
    assert body("1.HEADER.FIELDS.NOT (from subject X-foo)") == b"Date: Sun, 12 Aug 2012 12:34:56 +0300\r\n\r\n"
    assert body("1.TEXT") == b"Hello world\r\n"
