"""Grammar-level checks behind tests/protocol/test_smtp_compliance.py (pure: no Twisted)."""

from __future__ import annotations

import pytest

from mssmtpd import parser as p
from mssmtpd.framing import LineReader, LineTooLong
from mssmtpd.replies import R


@pytest.mark.parametrize(("line", "limit"), [
    (b"NOOP", 512), (b"EHLO x", 512), (b"HELP", 512), (b"DATA", 512),  # RFC 5321 4.5.3.1.4
    (b"MAIL FROM:<a@b>", 2048), (b"rcpt to:<a@b>", 2048),  # + RFC 1870/3461/4954 5 allowances
    (b"AUTH PLAIN x", 12290), (b"auth login", 12290),  # RFC 4954 4: 12288 + CRLF
    (b"MAILFROM:<a@b>", 512),
])
def test_line_limit_per_command(line: bytes, limit: int) -> None:
    assert p.line_limit(line) == limit


@pytest.mark.parametrize(("line", "want"), [
    # RFC 5321 4.1.2 / RFC 5322 3.4.1: a quoted dot-string is the same mailbox.
    (b'RCPT TO:<"dr.martin"@hopital.test>', p.RcptTo("dr.martin@hopital.test")),
    (b'RCPT TO:<"dr\\.martin"@hopital.test>', p.RcptTo("dr.martin@hopital.test")),
    (b'RCPT TO:<"dr martin"@hopital.test>', p.RcptTo('"dr martin"@hopital.test')),
    (b'RCPT TO:<"a..b"@hopital.test>', p.RcptTo('"a..b"@hopital.test')),
    (b'MAIL FROM:<"x"@remote.example>', p.MailFrom("x@remote.example")),
    (b"RCPT TO:<@a.example,@b.example:x@hopital.test>", p.RcptTo("x@hopital.test")),
])
def test_addresses(line: bytes, want: object) -> None:
    assert p.parse_command(line) == want


@pytest.mark.parametrize(("line", "want"), [
    (b"EHLO DESKTOP_42", p.Ehlo("DESKTOP_42")),
    (b"HELO pc_7.chu.example", p.Helo("pc_7.chu.example")),
    (b"EHLO a..b", p.ParseError(R.HELO_SYNTAX)),
    (b"EHLO -x", p.ParseError(R.HELO_SYNTAX)),
    (b"EHLO " + b"a" * 256, p.ParseError(R.HELO_SYNTAX)),
    (b"EHLO a b", p.ParseError(R.HELO_SYNTAX)),
])
def test_helo_names(line: bytes, want: object) -> None:
    assert p.parse_command(line) == want


@pytest.mark.parametrize("verb", sorted(p.UNIMPLEMENTED_VERBS))
def test_known_unimplemented_verbs_are_502(verb: str) -> None:
    # RFC 5321 4.2.4.
    assert p.parse_command(verb.encode()) == p.ParseError(R.NOT_IMPLEMENTED)
    assert p.parse_command(verb.lower().encode() + b" x") == p.ParseError(R.NOT_IMPLEMENTED)


def test_too_long_line_keeps_its_head_for_the_reply() -> None:
    reader = LineReader(64)
    reader.feed(b"AUTH PLAIN " + b"Q" * 100)
    item = reader.next_line()
    assert isinstance(item, LineTooLong) and item.head.startswith(b"AUTH ")
    assert item == LineTooLong()  # the head is not part of equality
    reader.feed(b"QQ\r\nNOOP\r\n")
    line = reader.next_line()
    assert line is not None and not isinstance(line, LineTooLong) and line.text == b"NOOP"


def test_dsn_for_an_smtputf8_sender_is_a_global_delivery_status() -> None:
    # RFC 6533 3 ("utf-8" address type), 6 (message/global-delivery-status):
    # a DSN to or about a non-ASCII address must not fail to build.
    import email

    from mssmtpd.queue import RecipientStatus, build_dsn
    from storage.interface import DSNParams

    original = "From: <élodie@hôpital.test>\r\nSubject: é\r\n\r\nbody\r\n".encode()
    raw = build_dsn(reporting_mta="mx.hopital.test", sender="élodie@hôpital.test",
                    statuses=[RecipientStatus("zoé@clinique.test", "failed", "5.1.1")],
                    dsn=DSNParams(ret="HDRS", orcpt={"zoé@clinique.test": "utf-8;zoé@clinique.test"}),
                    original=original)
    msg = email.message_from_bytes(raw)
    assert msg.get_param("report-type") == "global-delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert [x.get_content_type() for x in parts] == [
        "text/plain", "message/global-delivery-status", "message/global-headers"]
    assert "Final-Recipient: utf-8; zoé@clinique.test".encode() in raw
    assert "Original-Recipient: utf-8; zoé@clinique.test".encode() in raw
    assert "To: <élodie@hôpital.test>".encode() in raw
    # ASCII stays RFC 3464.
    ascii_raw = build_dsn(reporting_mta="mx", sender="a@hopital.test",
                          statuses=[RecipientStatus("b@x.test", "failed", "5.1.1")],
                          dsn=DSNParams(), original=b"Subject: x\r\n\r\ny\r\n")
    assert b"report-type=delivery-status" in ascii_raw and b"rfc822; b@x.test" in ascii_raw


@pytest.mark.parametrize(("content", "count"), [
    (b"Received: a\r\nreceived: b\r\nRECEIVED:c\r\n\r\nReceived: body\r\n", 3),
    (b"Subject: x\r\nX-Received: y\r\n\r\n", 0),
    (b"Subject: x\r\n Received: folded\r\n\r\n", 0),
    (b"Received: only headers\r\n", 1),
])
def test_received_count(content: bytes, count: int) -> None:
    from mssmtpd.framing import received_count

    assert received_count(content) == count
