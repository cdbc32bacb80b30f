"""FETCH (RFC 3501 6.4.5, 6.4.8, 7.4.2, 9 seq-number; imaptest `fetch`, `fetch-body`)."""

from __future__ import annotations

import re

import compliance_support
import pytest
from compliance_support import (
    ImapEnv,
    fetch_lines,
    selected,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3


def test_sequence_ranges_any_order(env3: ImapEnv) -> None:
    """imaptest `fetch`: 1:3, 3:1, 1,*, *, *:1 (RFC 3501 9 sequence-set)."""
    c = selected(env3)
    expected = b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n"
    assert c.ok("FETCH 1:3 UID") == expected
    assert c.ok("FETCH 3:1 UID") == expected
    assert c.ok("FETCH *:1 UID") == expected
    assert c.ok("FETCH 1,* UID") == b"* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\n"
    assert c.ok("FETCH * UID") == b"* 3 FETCH (UID 3)\r\n"


def test_uid_range_beyond_last_uid_returns_last(env3: ImapEnv) -> None:
    """imaptest `fetch`: "uid fetch 4:* uid" -> the last message (RFC 3501 6.4.8:
    n:* with n > the largest UID still matches the last message)."""
    c = selected(env3)
    assert c.ok("UID FETCH 4:* UID") == b"* 3 FETCH (UID 3)\r\n"
    assert c.ok("UID FETCH 100 UID") == b""


def test_uid_fetch_after_expunge_breaks_seq_uid_map(env3: ImapEnv) -> None:
    """imaptest `fetch`: after expunging 2, UID 2 is gone and UID 3 is seq 2."""
    c = selected(env3)
    c.ok("STORE 2 FLAGS.SILENT (\\Deleted)")
    assert c.ok("EXPUNGE") == b"* 2 EXPUNGE\r\n"
    assert c.ok("UID FETCH 4:* UID") == b"* 2 FETCH (UID 3)\r\n"
    assert c.ok("UID FETCH 2 UID") == b""
    assert c.ok("UID FETCH 1,* UID") == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n"


def test_uid_fetch_always_includes_uid(env3: ImapEnv) -> None:
    """RFC 3501 6.4.8: the UID item is included in every FETCH response of UID FETCH."""
    c = selected(env3)
    for line in fetch_lines(c.ok("UID FETCH 1:* (FLAGS RFC822.SIZE)")):
        assert b"UID " in line, line


def test_macros_fast_all_full(env3: ImapEnv) -> None:
    """RFC 3501 6.4.5: ALL/FAST/FULL expand to their items (imaptest `fetch`)."""
    c = selected(env3)
    fast = c.ok("FETCH 1 FAST")
    assert re.fullmatch(rb'\* 1 FETCH \(FLAGS \([^)]*\) INTERNALDATE "[^"]+" RFC822.SIZE \d+\)\r\n', fast)
    all_ = c.ok("FETCH 1 ALL")
    assert b"ENVELOPE (" in all_ and b"BODY (" not in all_
    full = c.ok("FETCH 1 FULL")
    assert b"ENVELOPE (" in full and b" BODY (" in full and b"BODYSTRUCTURE" not in full


def test_internaldate_format(env3: ImapEnv) -> None:
    """RFC 3501 9 date-time: DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
    c = selected(env3)
    out = c.ok("FETCH 1 INTERNALDATE")
    assert re.fullmatch(rb'\* 1 FETCH \(INTERNALDATE "[ \d]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"\)\r\n', out)


def test_body_peek_does_not_set_seen(env3: ImapEnv) -> None:
    """RFC 3501 6.4.5 BODY.PEEK: "An alternate form of BODY[<section>] that does not
    implicitly set the \\Seen flag"."""
    c = selected(env3)
    out = c.ok("FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] RFC822.HEADER RFC822.SIZE)")
    assert b"FLAGS" not in out
    assert c.ok("FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Recent))\r\n"


@pytest.mark.parametrize("item, label", [
    ("BODY[]", b"BODY[]"),
    ("BODY[TEXT]", b"BODY[TEXT]"),
    ("BODY[HEADER]", b"BODY[HEADER]"),
    ("RFC822", b"RFC822"),
    ("RFC822.TEXT", b"RFC822.TEXT"),
])
def test_implicit_seen_is_reported_with_flags(env3: ImapEnv, item: str, label: bytes) -> None:
    """RFC 3501 6.4.5: BODY[...] and RFC822/RFC822.TEXT set \\Seen; the change must
    be reported by an untagged FETCH FLAGS (imaptest `fetch-body`)."""
    c = selected(env3)
    out = c.ok(f"FETCH 1 {item}")
    assert b"* 1 FETCH (" + label + b" {" in out
    assert b"\\Seen" in out and b"FLAGS (" in out
    assert b"\\Seen" in c.ok("FETCH 1 FLAGS")


def test_rfc822_header_does_not_set_seen(env3: ImapEnv) -> None:
    """RFC 3501 6.4.5: RFC822.HEADER is BODY.PEEK[HEADER]."""
    c = selected(env3)
    out = c.ok("FETCH 1 RFC822.HEADER")
    assert out.startswith(b"* 1 FETCH (RFC822.HEADER {")
    assert b"\\Seen" not in c.ok("FETCH 1 FLAGS")


def test_partial_fetch_labels_and_slices(env3: ImapEnv) -> None:
    """RFC 3501 6.4.5 / 7.4.2: BODY[]<origin.count> is answered as BODY[]<origin>
    with exactly the requested octets (imaptest `fetch-body` partial fetches)."""
    c = selected(env3)
    assert c.ok("FETCH 2 BODY.PEEK[TEXT]<0.3>") == b"* 2 FETCH (BODY[TEXT]<0> {3}\r\nbod)\r\n"
    assert c.ok("FETCH 2 BODY.PEEK[TEXT]<3.3>") == b"* 2 FETCH (BODY[TEXT]<3> {3}\r\ny b)\r\n"
    # "body c\r\n" is 8 octets: a slice past the end is cut, far past it is empty.
    assert c.ok("FETCH 3 BODY.PEEK[TEXT]<6.5>") == b"* 3 FETCH (BODY[TEXT]<6> {2}\r\n\r\n)\r\n"
    assert c.ok("FETCH 3 BODY.PEEK[TEXT]<100.3>") == b"* 3 FETCH (BODY[TEXT]<100> {0}\r\n)\r\n"
    out = c.ok("FETCH 1 BODY.PEEK[]<0.4>")
    assert out == b"* 1 FETCH (BODY[]<0> {4}\r\nFrom)\r\n"


def test_partial_without_count_is_a_syntax_error(env3: ImapEnv) -> None:
    """RFC 3501 9: section-partial = "<" number "." nz-number ">" (in the request)."""
    c = selected(env3)
    _, done = c.tagged("FETCH 1 BODY[]<0>")
    assert b" BAD " in done


def test_header_fields_and_not(env3: ImapEnv) -> None:
    """RFC 3501 6.4.5 HEADER.FIELDS / HEADER.FIELDS.NOT (imaptest `fetch-body`):
    matching header lines then the blank line; no match -> just CRLF."""
    c = selected(env3)
    out = c.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]")
    assert re.fullmatch(
        rb"\* 1 FETCH \(BODY\[HEADER\.FIELDS \(FROM SUBJECT\)\] \{56\}\r\n"
        rb"From: Dr Martin <dr\.martin@hopital\.test>\r\nSubject: a\r\n\r\n\)\r\n", out, re.I)
    out = c.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (XYZ)]")
    assert re.fullmatch(rb"\* 1 FETCH \(BODY\[HEADER\.FIELDS \(XYZ\)\] \{2\}\r\n\r\n\)\r\n", out, re.I)
    out = c.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (DATE MESSAGE-ID)]")
    assert b"Date:" not in out and b"Message-ID:" not in out and b"Subject: a\r\n" in out


def test_envelope_bodystructure_body(env3: ImapEnv) -> None:
    """RFC 3501 7.4.2 ENVELOPE / BODY / BODYSTRUCTURE of a text/plain message."""
    c = selected(env3)
    out = c.ok("FETCH 1 ENVELOPE")
    assert out.startswith(b'* 1 FETCH (ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "a" '
                          b'(("Dr Martin" NIL "dr.martin" "hopital.test"))')
    out = c.ok("FETCH 1 BODYSTRUCTURE")
    assert out.startswith(b'* 1 FETCH (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 8 1')
    out = c.ok("FETCH 1 BODY")
    assert out == b'* 1 FETCH (BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 8 1))\r\n'


def test_rfc822_size_matches_body_length(env3: ImapEnv) -> None:
    """RFC 3501 7.4.2: RFC822.SIZE is the size of BODY[] in octets."""
    c = selected(env3)
    size = int(re.search(rb"RFC822.SIZE (\d+)", c.ok("FETCH 1 RFC822.SIZE")).group(1))  # type: ignore[union-attr]
    lit = int(re.search(rb"\{(\d+)\}", c.ok("FETCH 1 BODY.PEEK[]")).group(1))  # type: ignore[union-attr]
    assert size == lit


def test_sequence_number_out_of_range_is_bad(env3: ImapEnv) -> None:
    """RFC 3501 9 (seq-number note): "The server should respond with a tagged BAD
    response to a command that uses a message sequence number greater than the
    number of messages" (Dovecot: "BAD Error in IMAP command FETCH: Invalid messageset")."""
    c = selected(env3)
    for cmd in ("FETCH 4 UID", "FETCH 2:5 UID", "FETCH 5:* UID", "STORE 4 +FLAGS (\\Seen)", "COPY 4 Trash"):
        _, done = c.tagged(cmd)
        assert b" BAD " in done, (cmd, done)
    _, done = c.tagged("FETCH 0 UID")
    assert b" BAD " in done


def test_uid_set_on_empty_mailbox_is_ok(env: ImapEnv) -> None:
    """RFC 3501 9: for UIDs, * on an empty mailbox is UIDNEXT; UID FETCH 1:* is a
    plain OK without responses."""
    c = selected(env)
    assert c.ok("UID FETCH 1:* FLAGS") == b""
    assert c.ok("UID SEARCH ALL") == b"* SEARCH\r\n"
    assert c.ok("SEARCH ALL") == b"* SEARCH\r\n"


def test_sequence_set_on_empty_mailbox_is_bad(env: ImapEnv) -> None:
    """RFC 3501 9 seq-number: "This includes "*" if the selected mailbox is empty."
    Dovecot (msgset_is_valid): with no messages all message sets are invalid."""
    c = selected(env)
    for cmd in ("FETCH 1:* FLAGS", "FETCH * UID", "STORE 1:* +FLAGS (\\Seen)", "COPY 1:* Trash"):
        _, done = c.tagged(cmd)
        assert b" BAD " in done, (cmd, done)


def test_fetch_syntax_errors_are_bad(env3: ImapEnv) -> None:
    """RFC 3501 7.1.3: a command with a syntax error gets BAD."""
    for cmd in ("FETCH 1 BOGUS", "FETCH 1 (UID", "FETCH", "FETCH 1 ENVELOPE BODY"):
        c = selected(env3)
        _, done = c.tagged(cmd)
        assert b" BAD " in done, (cmd, done)


def test_body_section_numbers_of_single_part(env3: ImapEnv) -> None:
    """RFC 3501 6.4.5: a non-multipart message has part 1 = its body."""
    c = selected(env3)
    assert c.ok("FETCH 1 BODY.PEEK[1]") == b"* 1 FETCH (BODY[1] {8}\r\nbody a\r\n)\r\n"


def test_multiple_body_items_in_one_fetch(env3: ImapEnv) -> None:
    """RFC 3501 7.4.2: several items in one FETCH response, each under its own label."""
    c = selected(env3)
    out = c.ok("FETCH 1 (BODY.PEEK[TEXT]<0.2> BODY.PEEK[HEADER.FIELDS (SUBJECT)] UID)")
    assert out.startswith(b"* 1 FETCH (")
    assert b"BODY[TEXT]<0> {2}\r\nbo" in out and b"Subject: a\r\n\r\n" in out and b"UID 1" in out
