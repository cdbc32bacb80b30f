"""RFC 3464 DSN construction, RFC 3461 NOTIFY semantics, client dot-stuffing."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email.message import Message

from mssmtpd.client import dot_stuff
from mssmtpd.framing import DataReader
from mssmtpd.queue import (
    RecipientStatus,
    build_dsn,
    is_expired,
    wants_failure_dsn,
    wants_success_dsn,
)
from storage.interface import DSNParams, QueueEntry

ORIGINAL = b"From: <a@hopital.test>\r\nSubject: results\r\n\r\nsecret clinical body\r\n"


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def test_failure_dsn_structure_full() -> None:
    dsn = DSNParams(ret="FULL", envid="ENV1", orcpt={"b@clinique.test": "rfc822;B@clinique.test"})
    raw = build_dsn(reporting_mta="mx.hopital.test", sender="a@hopital.test",
                    statuses=[RecipientStatus("b@clinique.test", "failed", "4.4.7",
                                              "451 4.4.1 cannot connect")],
                    dsn=dsn, original=ORIGINAL, arrival=datetime(2026, 1, 1, tzinfo=UTC))
    msg = _parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    status = raw.split(b"message/delivery-status", 1)[1]
    assert b"Reporting-MTA: dns; mx.hopital.test" in status
    assert b"Original-Envelope-Id: ENV1" in status
    assert b"Original-Recipient: rfc822; B@clinique.test" in status
    assert b"Final-Recipient: rfc822; b@clinique.test" in status
    assert b"Action: failed\r\nStatus: 4.4.7" in status
    assert b"Diagnostic-Code: smtp; 451 4.4.1 cannot connect" in status
    assert b"secret clinical body" in raw
    assert msg["Auto-Submitted"] == "auto-replied"


def test_ret_hdrs_returns_headers_only() -> None:
    raw = build_dsn(reporting_mta="mx", sender="a@hopital.test",
                    statuses=[RecipientStatus("b@x.test", "failed", "5.1.1")],
                    dsn=DSNParams(ret="HDRS"), original=ORIGINAL)
    assert b"text/rfc822-headers" in raw and b"Subject: results" in raw
    assert b"secret clinical body" not in raw


def test_diagnostic_cannot_inject_headers() -> None:
    raw = build_dsn(reporting_mta="mx", sender="a@hopital.test",
                    statuses=[RecipientStatus("b@x.test", "failed", "5.0.0",
                                              "550 bad\r\nBcc: victim@x.test")],
                    dsn=DSNParams(), original=ORIGINAL)
    assert b"\r\nBcc:" not in raw


def test_notify_semantics() -> None:
    dsn = DSNParams(notify={"never@x": "NEVER", "s@x": "SUCCESS", "f@x": "FAILURE,DELAY"})
    assert wants_failure_dsn(dsn, "default@x") and not wants_success_dsn(dsn, "default@x")
    assert not wants_failure_dsn(dsn, "never@x") and not wants_success_dsn(dsn, "never@x")
    assert wants_success_dsn(dsn, "s@x") and not wants_failure_dsn(dsn, "s@x")
    assert wants_failure_dsn(dsn, "f@x")


def test_expiry() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    entry = QueueEntry(id=1, sender="a@x", recipients=("b@y",), created=now - timedelta(hours=2),
                       next_attempt=now, attempts=3, last_error=None, size=1, dsn=DSNParams())
    assert is_expired(entry, now, 3600) and not is_expired(entry, now, 3 * 3600)


def test_dot_stuffing_round_trips_through_our_reader() -> None:
    body = b"Subject: x\r\n\r\n.\r\n..two\r\n.three\r\nend"
    wire = dot_stuff(body)
    assert wire.endswith(b"\r\n.\r\n") and b"\r\n..\r\n" in wire
    reader = DataReader(max_size=10_000, max_line=1000, normalise=False)
    assert reader.feed(wire) == b""
    assert reader.result().content == body + b"\r\n"
