"""A corpus of messages shared by the MIME / FETCH / SEARCH tests.

Each entry is raw bytes with CRLF line endings unless its name says "lf".
The module also checks a few invariants over the whole corpus.
"""

from __future__ import annotations

import json

import pytest

from storage.mime import parse_message


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def lines_of(total: int, count: int, *, last_terminated: bool = False) -> str:
    """`count` lines of filler whose octets (with CRLFs between them) sum to `total`.

    With last_terminated=False the last line has no CRLF (it precedes a MIME
    boundary, whose CRLF is not part of the body).
    """
    crlfs = count if last_terminated else count - 1
    chars = total - 2 * crlfs
    base, extra = divmod(chars, count)
    out = []
    for i in range(count):
        n = base + (1 if i < extra else 0)
        out.append((f"line{i:03d} " + "x" * n)[:n])
    return "\n".join(out) + ("\n" if last_terminated else "")


SIMPLE = crlf(
    "Return-Path: <gray@cac.washington.edu>\n"
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    "From: Terry Gray <gray@cac.washington.edu>\n"
    "Subject: IMAP4rev1 WG mtg summary and minutes\n"
    "To: imap@cac.washington.edu\n"
    "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n"
    "Message-Id: <B27397-0100000@cac.washington.edu>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n" + lines_of(3028, 92, last_terminated=True)
)

RFC3501_MULTIPART = crlf(
    "From: someone@example.org\n"
    "Subject: compiler diff\n"
    "MIME-Version: 1.0\n"
    'Content-Type: MULTIPART/MIXED; BOUNDARY="8323328-2120168431-824156341=:325"\n'
    "\n"
    "This is a preamble.\n"
    "--8323328-2120168431-824156341=:325\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n" + lines_of(1152, 23) + "\n"
    "--8323328-2120168431-824156341=:325\n"
    'Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME="cc.diff"\n'
    "Content-ID: <960723163407.20117h@cac.washington.edu>\n"
    "Content-Description: Compiler diff\n"
    "Content-Transfer-Encoding: BASE64\n"
    "\n" + lines_of(4554, 73) + "\n"
    "--8323328-2120168431-824156341=:325--\n"
    "epilogue\n"
)

ALTERNATIVE = crlf(
    "From: =?utf-8?q?Dr_Andr=C3=A9_Martin?= <andre.martin@hopital.test>\n"
    "To: secretariat@hopital.test\n"
    "Subject: =?utf-8?b?UsOpc3VsdGF0cyBkJ2FuYWx5c2U=?=\n"
    "Date: Fri, 27 Nov 2026 10:00:00 +0100\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/alternative; boundary="alt"\n'
    "\n"
    "--alt\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Bonjour, voici les r=C3=A9sultats de la num=C3=A9ration.\n"
    "--alt\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "PHA+Qm9uam91ciwgdm9pY2kgbGVzIHLDqXN1bHRhdHMgZW4gSFRNTC48L3A+\n"
    "--alt--\n"
)

MIXED_ATTACHMENTS = crlf(
    "From: labo@hopital.test\n"
    "To: dr.martin@hopital.test, Secrétariat <sec@hopital.test>\n"
    "Subject: Compte rendu\n"
    "Date: 3 Feb 2025 08:15:00 +0000\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed;\n"
    ' boundary="outer"\n'
    "\n"
    "--outer\n"
    'Content-Type: multipart/alternative; boundary="outer-inner"\n'
    "\n"
    "--outer-inner\n"
    "Content-Type: text/plain\n"
    "\n"
    "Voir la piece jointe zebracorn.\n"
    "--outer-inner\n"
    "Content-Type: text/html\n"
    "\n"
    "<p>Voir la piece jointe.</p>\n"
    "--outer-inner--\n"
    "\n"
    "--outer\n"
    "Content-Type: application/pdf; name=cr.pdf\n"
    'Content-Disposition: attachment; filename="cr.pdf"; size=6\n'
    "Content-Transfer-Encoding: base64\n"
    "Content-Language: fr, en\n"
    "Content-Location: http://example.org/cr.pdf\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "\n"
    "JVBERi0K\n"
    "--outer\n"
    "Content-Type: image/png\n"
    "Content-Disposition: inline\n"
    "\n"
    "PNGDATA-secretword\n"
    "--outer--\n"
)

NESTED_RFC822 = crlf(
    "From: forwarder@hopital.test\n"
    "To: archive@hopital.test\n"
    "Subject: Fwd: original\n"
    "Content-Type: multipart/mixed; boundary=b1\n"
    "\n"
    "--b1\n"
    "Content-Type: text/plain\n"
    "\n"
    "see attached\n"
    "--b1\n"
    "Content-Type: message/rfc822\n"
    "X-Part-Header: yes\n"
    "\n"
    "From: Original Sender <orig@example.org>\n"
    "To: forwarder@hopital.test\n"
    "Subject: original\n"
    "Date: Mon, 1 Jan 2024 12:00:00 +0000\n"
    "Message-ID: <orig@example.org>\n"
    "Content-Type: multipart/alternative; boundary=b2\n"
    "\n"
    "--b2\n"
    "Content-Type: text/plain\n"
    "\n"
    "inner plain quokka\n"
    "--b2\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>inner html</b>\n"
    "--b2--\n"
    "--b1--\n"
)

TOP_RFC822 = crlf(
    "From: user@domain.org\n"
    "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    "Mime-Version: 1.0\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: sub@domain.org\n"
    "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
    "Subject: submsg\n"
    "\n"
    "Hello world\n"
)

DIGEST = crlf(
    "From: sub@domain.org\n"
    'Content-Type: multipart/digest; boundary="foo"\n'
    "\n"
    "prologue\n"
    "\n"
    "--foo \n"
    "\n"
    "From: m1@example.com\n"
    "Subject: m1\n"
    "\n"
    "m1 body\n"
    "\n"
    "--foo \n"
    "X-Mime: m2 header\n"
    "\n"
    "From: m2@example.com\n"
    "Subject: m2\n"
    "\n"
    "m2 body\n"
    "\n"
    "--foo--\n"
    "\n"
    "epilogue\n"
)

GROUPS = crlf(
    "From: user@domain (Real Name)\n"
    "To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\n"
    "Cc: undisclosed-recipients:;\n"
    "Bcc: <@route1,@route2:user@domain>\n"
    "Sender: \n"
    "Reply-To: \n"
    "\n"
    "body\n"
)

MISSING_HEADERS = crlf("X-Only: this\n\nno envelope headers at all\n")

NO_SEPARATOR = b"Subject: no body\r\nFrom: a@b.c\r\n"

NO_HEADERS = b"\r\njust a body\r\n"

LF_ONLY = (
    b"From: lf@example.org\n"
    b"Subject: bare LF\n"
    b"Content-Type: multipart/mixed; boundary=zz\n"
    b"\n"
    b"--zz\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"one\n"
    b"--zz\n"
    b"\n"
    b"two\n"
    b"--zz--\n"
)

BROKEN_MULTIPART = crlf(
    "From: broken@example.org\n"
    "Content-Type: multipart/mixed\n"  # no boundary
    "\n"
    "--x\n"
    "hello\n"
)

UNCLOSED_MULTIPART = crlf(
    "From: broken@example.org\n"
    "Content-Type: multipart/mixed; boundary=x\n"
    "\n"
    "--x\n"
    "Content-Type: text/plain\n"
    "\n"
    "never closed\n"
)

BOUNDARY_NOT_FOUND = crlf("Content-Type: multipart/mixed; boundary=nothere\n\njust text\n")

GARBAGE_CT = crlf("Content-Type: ;;;garbage===\nContent-Transfer-Encoding: (c) 8bit\n\nx\n")

EIGHT_BIT = (
    b"From: \xe9l\xe8ve <eleve@example.org>\r\n"
    b"Subject: caf\xc3\xa9 cr\xc3\xa8me\r\n"
    b"X-Bin: \x00\x01\xff\r\n"
    b"\r\n"
    b"\xff\xfe body \x00\r\n"
)

FOLDED = crlf(
    "Subject: a very long subject\n"
    "  folded over two lines\n"
    "From: Folded\n"
    "\t<folded@example.org>\n"
    "X-Multi: first\n"
    "X-Multi: second\n"
    "\n"
    "body\n"
)

CORPUS: dict[str, bytes] = {
    "simple": SIMPLE,
    "rfc3501_multipart": RFC3501_MULTIPART,
    "alternative": ALTERNATIVE,
    "mixed_attachments": MIXED_ATTACHMENTS,
    "nested_rfc822": NESTED_RFC822,
    "top_rfc822": TOP_RFC822,
    "digest": DIGEST,
    "groups": GROUPS,
    "missing_headers": MISSING_HEADERS,
    "no_separator": NO_SEPARATOR,
    "no_headers": NO_HEADERS,
    "lf_only": LF_ONLY,
    "broken_multipart": BROKEN_MULTIPART,
    "unclosed_multipart": UNCLOSED_MULTIPART,
    "boundary_not_found": BOUNDARY_NOT_FOUND,
    "garbage_ct": GARBAGE_CT,
    "eight_bit": EIGHT_BIT,
    "folded": FOLDED,
    "empty": b"",
}


def walk(part: dict) -> list[dict]:
    out = [part]
    for child in part.get("parts", []):
        out.extend(walk(child))
    if "message" in part:
        out.extend(walk(part["message"]))
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_metadata_is_json_and_offsets_are_consistent(name: str) -> None:
    raw = CORPUS[name]
    meta = parse_message(raw)
    assert json.loads(json.dumps(meta)) == meta
    assert meta["size"] == len(raw)
    assert meta["body"]["header_start"] == 0
    assert meta["header_end"] == meta["body"]["header_end"]
    for part in walk(meta["body"]):
        hs, he, bs, be = (part[k] for k in ("header_start", "header_end", "body_start", "body_end"))
        assert 0 <= hs <= he == bs <= be <= len(raw)
        assert part["size"] == be - bs
        if "parts" in part:
            assert part["parts"], "a multipart always has at least one part"
            for child in part["parts"]:
                assert bs <= child["header_start"] and child["body_end"] <= be
        if "message" in part:
            assert part["message"]["header_start"] == bs
            assert part["message"]["body_end"] == be
