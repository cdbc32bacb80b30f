"""Denial-of-service regressions on the SMTP engine: a long message in many
BDAT chunks, and clients that pipeline without reading their replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from smtp_transcript import SmtpEnv, add_user, codes, inbox, make_env
from ticking_clock import TickingClock

from mssmtpd.protocol import INPUT_HIGH_WATER
from mssmtpd.replies import R

DOMAIN = "hopital.test"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> SmtpEnv:
    add_user(store, f"dr.martin@{DOMAIN}")
    return make_env(tmp_path, store)


def test_a_message_in_many_bdat_chunks_is_not_cut_off(env: SmtpEnv) -> None:
    """2 MB in 64 KiB chunks used to end at chunk 21 with "421 Too many
    commands without a transaction": chunks are the transaction itself."""
    conv = env.connect("mx")
    conv.ehlo()
    assert codes(conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\n"))[-1] == "250 2.1.5"
    body = b"Subject: chunks\r\n\r\n" + b"".join(b"line %06d %s\r\n" % (i, b"x" * 50)
                                                for i in range(32 * 1024))
    chunk = 64 * 1024
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    assert len(pieces) > 30
    out = b""
    for i, piece in enumerate(pieces):
        last = b" LAST" if i == len(pieces) - 1 else b""
        out += conv.send(b"BDAT %d%s\r\n" % (len(piece), last) + piece)
    replies = codes(out)
    assert replies[:-1] == [f"{R.BDAT_OK.code} {R.BDAT_OK.status}"] * (len(pieces) - 1), replies[-3:]
    assert replies[-1] == f"{R.DELIVERED.code} {R.DELIVERED.status}" and not conv.closed
    (stored,) = inbox(env.store, f"dr.martin@{DOMAIN}")
    assert stored.endswith(body)


def test_commands_outside_a_transaction_still_count(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(b"NOOP\r\n" * (env.settings.limits.commands_before_mail + 1))
    assert codes(out)[-1] == f"{R.TOO_MANY_COMMANDS.code} {R.TOO_MANY_COMMANDS.status}"
    assert conv.closed


def _ticking_env(tmp_path: Path, store: Any) -> SmtpEnv:
    from conftest import make_settings
    from smtp_transcript import LISTENERS

    add_user(store, f"dr.martin@{DOMAIN}")
    return SmtpEnv(make_settings(tmp_path, listeners=LISTENERS), store, clock=TickingClock())


def test_a_pipelined_rcpt_flood_from_a_client_that_does_not_read(tmp_path: Path, store: Any) -> None:
    """Replies to a pipelined RCPT flood used to pile up with no back-pressure
    (+154 MiB in 64 s). Now no command runs while the client reads none of
    our replies, and its input stops being read past INPUT_HIGH_WATER."""
    env = _ticking_env(tmp_path, store)
    conv = env.connect("mx")
    conv.ehlo()
    conv.cmd("MAIL FROM:<a@remote.example>")
    flood = b"RCPT TO:<dr.martin@hopital.test>\r\n" * 2000  # 68 KB
    conv.protocol.dataReceived(flood)
    env.clock.run_due()  # its turns on the reactor
    assert len(codes(conv.take())) == 2000
    assert conv.transport.producerState == "producing"
    conv.protocol.pauseProducing()  # what the transport does once its buffer is full
    sent = 0
    while conv.transport.producerState != "paused" and sent < 50 * 1024 * 1024:
        conv.protocol.dataReceived(flood)
        sent += len(flood)
    assert conv.transport.producerState == "paused", "the socket is still read"
    assert sent <= INPUT_HIGH_WATER + 2 * len(flood)
    assert conv.take() == b""  # nothing was processed for a client that reads nothing
    conv.protocol.resumeProducing()
    for _ in range(10_000):
        if conv.transport.producerState != "paused":
            break
        env.clock.advance(0)
    assert conv.transport.producerState == "producing"
    assert len(codes(conv.take())) == sent // len(b"RCPT TO:<dr.martin@hopital.test>\r\n")


def test_one_flood_yields_the_reactor(tmp_path: Path, store: Any) -> None:
    env = _ticking_env(tmp_path, store)
    conv = env.connect("mx")
    conv.ehlo()
    conv.cmd("MAIL FROM:<a@remote.example>")
    flood = b"RCPT TO:<dr.martin@hopital.test>\r\n" * 20_000
    conv.protocol.dataReceived(flood)
    first = len(codes(conv.take()))
    assert 0 < first < 1000, first  # the rest waits for the next turns
    other = env.connect("mx", ip="192.0.2.11")
    assert codes(other.ehlo())[-1] == "250"
    assert env.clock.run_due() > 10
    assert first + len(codes(conv.take())) == 20_000


def test_a_recipient_flood_over_the_limit_is_audited_once_per_transaction(
        tmp_path: Path, store: Any) -> None:
    from conf.settings import LimitSettings

    for i in range(3):
        add_user(store, f"u{i}@{DOMAIN}")
    env = make_env(tmp_path, store, limits=LimitSettings(recipients=2))
    conv = env.connect("mx")
    conv.ehlo()
    conv.cmd("MAIL FROM:<a@remote.example>")
    out = conv.send(b"".join(b"RCPT TO:<u%d@hopital.test>\r\n" % min(i, 2) for i in range(50)))
    assert codes(out).count(f"{R.TOO_MANY_RECIPIENTS.code} {R.TOO_MANY_RECIPIENTS.status}") >= 48
    excess = [e for e in env.audit.events if e.details.get("reason") == "too-many-recipients"]
    assert len(excess) == 1
    conv.cmd("RSET")
    conv.cmd("MAIL FROM:<a@remote.example>")
    conv.send(b"".join(b"RCPT TO:<u%d@hopital.test>\r\n" % min(i, 2) for i in range(5)))
    excess = [e for e in env.audit.events if e.details.get("reason") == "too-many-recipients"]
    assert len(excess) == 2


def test_a_disabled_account_submits_no_more_in_its_open_session(env: SmtpEnv) -> None:
    import base64

    from smtp_transcript import PASSWORD

    conv = env.connect("submission")
    conv.ehlo()
    plain = base64.b64encode(f"\0dr.martin@{DOMAIN}\0{PASSWORD}".encode()).decode()
    assert codes(conv.cmd("AUTH PLAIN " + plain)) == [f"{R.AUTH_OK.code} {R.AUTH_OK.status}"]
    out = conv.send(b"MAIL FROM:<dr.martin@hopital.test>\r\nRCPT TO:<dr.martin@hopital.test>\r\n"
                    b"DATA\r\n")
    assert codes(conv.send(b"Subject: one\r\n\r\nfirst\r\n.\r\n")) == [
        f"{R.DELIVERED.code} {R.DELIVERED.status}"], out
    env.store.set_account_active(f"dr.martin@{DOMAIN}", False)
    out = conv.send(b"MAIL FROM:<dr.martin@hopital.test>\r\nRCPT TO:<dr.martin@hopital.test>\r\n"
                    b"DATA\r\nSubject: two\r\n\r\nsecond\r\n.\r\n")
    assert codes(out)[0] == f"{R.ACCOUNT_DISABLED.code} {R.ACCOUNT_DISABLED.status}"
    assert conv.closed
    assert len(inbox(env.store, f"dr.martin@{DOMAIN}")) == 1
    denied = [e for e in env.audit.events if e.action == "mail" and e.result == "deny"]
    assert denied[-1].details["reason"] == "account-disabled"
