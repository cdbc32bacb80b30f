"""SMTP transcripts: client sends / server answers, on StringTransport, real store."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from smtp_transcript import PASSWORD, SmtpEnv, add_user, codes, inbox, make_env

from conf.settings import LimitSettings
from mssmtpd import parser as p
from mssmtpd.protocol import HANDLERS
from mssmtpd.replies import R, Reply

DOMAIN = "hopital.test"
MSG = (b"From: Sender <sender@remote.example>\r\nTo: dr.martin@hopital.test\r\n"
       b"Subject: hello\r\n\r\nBody line 1\r\n..leading dot\r\nlast\r\n")
MSG_ON_WIRE = MSG.replace(b"\r\n..leading", b"\r\n...leading")


def c(*replies: Reply) -> list[str]:
    return [f"{r.code} {r.status}" if r.status else str(r.code) for r in replies]


@pytest.fixture
def env(tmp_path: Path, store: Any) -> SmtpEnv:
    add_user(store, f"dr.martin@{DOMAIN}")
    add_user(store, f"secretariat@{DOMAIN}")
    return make_env(tmp_path, store)


def test_every_command_type_has_a_handler() -> None:
    assert set(HANDLERS) == set(p.COMMAND_TYPES)


def test_greeting_and_ehlo_advertise_extensions(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    assert conv.greeting.startswith(b"220 mx.hopital.test ESMTP")
    out = conv.ehlo().decode()
    for ext in ("PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN",
                "SMTPUTF8"):
        assert f"250-{ext}\r\n" in out or f"250 {ext}\r\n" in out
    assert "AUTH" not in out  # never on MX
    assert out.endswith("\r\n") and out.splitlines()[-1].startswith("250 ")


def test_mx_delivers_to_inbox_with_trace_headers(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    assert codes(conv.cmd("MAIL FROM:<sender@remote.example>")) == c(R.SENDER_OK)
    assert codes(conv.cmd("RCPT TO:<dr.martin@hopital.test>")) == c(R.RCPT_OK)
    assert codes(conv.cmd("DATA")) == ["354"]
    out = conv.send(MSG_ON_WIRE + b".\r\n")
    assert codes(out) == c(R.DELIVERED)
    (stored,) = inbox(env.store, "dr.martin@hopital.test")
    assert stored.startswith(b"Return-Path: <sender@remote.example>\r\nReceived: from client.example")
    assert b"with ESMTP id" in stored
    assert stored.endswith(MSG)  # byte-identical apart from the trace headers
    actions = [(e.action, e.result) for e in env.audit.events]
    assert ("rcpt", "allow") in actions and ("deliver", "ok") in actions


def test_pipelined_transaction_replies_in_order(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(
        b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<nobody@hopital.test>\r\n"
        b"RCPT TO:<dr.martin@hopital.test>\r\nRCPT TO:<secretariat@hopital.test>\r\nDATA\r\n"
    )
    assert codes(out) == c(R.SENDER_OK, R.RCPT_UNKNOWN, R.RCPT_OK, R.RCPT_OK) + ["354"]
    assert codes(conv.send(MSG + b".\r\nQUIT\r\n")) == c(R.DELIVERED, R.BYE)
    assert conv.closed
    assert len(inbox(env.store, "dr.martin@hopital.test")) == 1
    assert len(inbox(env.store, "secretariat@hopital.test")) == 1


def test_same_recipient_twice_gets_one_copy(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\n"
              b"RCPT TO:<DR.MARTIN@hopital.test>\r\nDATA\r\n")
    assert codes(conv.send(MSG + b".\r\n")) == c(R.DELIVERED)
    assert len(inbox(env.store, "dr.martin@hopital.test")) == 1


def test_mx_is_not_an_open_relay(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.cmd("MAIL FROM:<a@remote.example>")
    assert codes(conv.cmd("RCPT TO:<victim@elsewhere.example>")) == c(R.RELAY_DENIED)
    assert codes(conv.cmd("RCPT TO:<victim%elsewhere.example@hopital.test>")) == c(R.RCPT_UNKNOWN)
    assert codes(conv.cmd("DATA")) == c(R.NEED_RCPT)


def test_sequence_errors(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    assert codes(conv.cmd("MAIL FROM:<a@remote.example>")) == c(R.NEED_HELO)
    conv.ehlo()
    assert codes(conv.cmd("RCPT TO:<dr.martin@hopital.test>")) == c(R.NEED_MAIL)
    assert codes(conv.cmd("DATA")) == c(R.NEED_MAIL)
    conv.cmd("MAIL FROM:<a@remote.example>")
    assert codes(conv.cmd("MAIL FROM:<a@remote.example>")) == c(R.NESTED_MAIL)
    assert codes(conv.cmd("RSET")) == c(R.RESET)
    assert codes(conv.cmd("RCPT TO:<dr.martin@hopital.test>")) == c(R.NEED_MAIL)
    assert codes(conv.cmd("AUTH PLAIN")) == c(R.AUTH_NOT_ALLOWED)
    assert codes(conv.cmd("VRFY dr.martin")) == c(R.VRFY_DISABLED)
    assert codes(conv.cmd("BOGUS")) == c(R.SYNTAX_ERROR)


def test_declared_size_and_real_size_are_enforced(tmp_path: Path, store: Any) -> None:
    add_user(store, "dr.martin@hopital.test")
    env = make_env(tmp_path, store, limits=LimitSettings(message_size=2048))
    conv = env.connect("mx")
    conv.ehlo()
    assert codes(conv.cmd("MAIL FROM:<a@remote.example> SIZE=4096")) == c(R.MESSAGE_TOO_BIG)
    conv.send(b"MAIL FROM:<a@remote.example> SIZE=100\r\nRCPT TO:<dr.martin@hopital.test>\r\n")
    conv.cmd("DATA")
    big = b"Subject: x\r\n\r\n" + b"y" * 70 + b"\r\n"
    assert codes(conv.send(big * 40 + b".\r\n")) == c(R.MESSAGE_TOO_BIG)
    assert inbox(store, "dr.martin@hopital.test") == []
    # The session goes on: a small message passes.
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    assert codes(conv.send(big + b".\r\n")) == c(R.DELIVERED)


def test_too_many_recipients(tmp_path: Path, store: Any) -> None:
    for i in range(3):
        add_user(store, f"u{i}@hopital.test")
    env = make_env(tmp_path, store, limits=LimitSettings(recipients=2))
    conv = env.connect("mx")
    conv.ehlo()
    conv.cmd("MAIL FROM:<a@remote.example>")
    out = conv.send(b"".join(f"RCPT TO:<u{i}@hopital.test>\r\n".encode() for i in range(3)))
    assert codes(out) == c(R.RCPT_OK, R.RCPT_OK, R.TOO_MANY_RECIPIENTS)


def test_bare_lf_in_data_rejects_the_whole_message(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    smuggle = (b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<ceo@hopital.test>\n"
               b"RCPT TO:<secretariat@hopital.test>\nDATA\nSubject: spoofed\n\nx\n.\n")
    out = conv.send(smuggle)
    assert out == b""  # still inside DATA: nothing was taken as a command
    assert codes(conv.send(b"\r\n.\r\n")) == c(R.MESSAGE_BARE_LINE_ENDING)
    assert inbox(env.store, "secretariat@hopital.test") == []
    assert inbox(env.store, "dr.martin@hopital.test") == []
    refused = [e for e in env.audit.events if e.action == "data"]
    assert refused[-1].result == "deny" and refused[-1].details["reason"] == "554 5.6.0"
    assert refused[-1].actor == "192.0.2.10"


def test_normalise_mode_keeps_smuggled_text_inside_one_message(tmp_path: Path, store: Any) -> None:
    add_user(store, "dr.martin@hopital.test")
    add_user(store, "secretariat@hopital.test")
    env = make_env(tmp_path, store, limits=LimitSettings(bare_line_endings="normalise"))
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    assert conv.send(b"Subject: one\r\n\r\nfirst\n.\nRCPT TO:<secretariat@hopital.test>\r\n") == b""
    assert codes(conv.send(b".\r\n")) == c(R.DELIVERED)
    (stored,) = inbox(store, "dr.martin@hopital.test")
    assert stored.endswith(b"first\r\n.\r\nRCPT TO:<secretariat@hopital.test>\r\n")
    assert inbox(store, "secretariat@hopital.test") == []


def test_over_long_data_line_never_becomes_commands(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    # 1000 octets of padding, then what a naive server would read as a new line.
    out = conv.send(b"Subject: x\r\n\r\n" + b"A" * 1000 + b"QUIT\r\nRSET\r\nMAIL FROM:<x@y.example>\r\n")
    assert out == b"" and not conv.closed
    assert codes(conv.send(b".\r\n")) == c(R.MESSAGE_LINE_TOO_LONG)
    assert inbox(env.store, "dr.martin@hopital.test") == []


def test_over_long_command_line(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    out = conv.send(b"EHLO " + b"a" * 5000 + b"\r\nNOOP\r\n")
    assert codes(out) == c(R.LINE_TOO_LONG, R.NOOP)


def test_bare_lf_command_is_refused(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    assert codes(conv.send(b"EHLO x.example\n")) == c(R.BARE_LINE_ENDING)


def test_bad_command_limit_disconnects(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    out = conv.send(b"FOO\r\n" * 10)
    assert codes(out)[-1] == "421 4.7.0" and conv.closed


def test_commands_before_mail_limit(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    out = conv.send(b"NOOP\r\n" * 25)
    assert codes(out)[-1] == c(R.TOO_MANY_COMMANDS)[0] and conv.closed


def test_idle_timeout(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    env.clock.advance(env.settings.limits.smtp_idle_timeout - 1)
    assert not conv.closed
    # A client trickling bytes of an unfinished line is not active.
    conv.send(b"NO")
    env.clock.advance(2)
    assert codes(conv.take()) == c(R.IDLE_TIMEOUT) and conv.closed
    assert env.audit.events[-1].details["reason"] == "idle-timeout"


def test_connections_per_ip(tmp_path: Path, store: Any) -> None:
    env = make_env(tmp_path, store, limits=LimitSettings(connections_per_ip=2))
    a, b = env.connect("mx"), env.connect("mx")
    third = env.connect("mx")
    assert codes(third.greeting) == c(R.TOO_MANY_CONNECTIONS) and third.closed
    third.close()
    a.close()
    fourth = env.connect("mx")
    assert fourth.greeting.startswith(b"220 ")
    assert env.connect("mx", ip="192.0.2.99").greeting.startswith(b"220 ")
    b.close()


def _plain(login: str, password: str = PASSWORD, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode()).decode()


def test_submission_requires_auth_and_checks_sender(env: SmtpEnv) -> None:
    conv = env.connect("submission")
    out = conv.ehlo().decode()
    assert "AUTH PLAIN LOGIN" in out
    assert codes(conv.cmd("MAIL FROM:<dr.martin@hopital.test>")) == c(R.AUTH_REQUIRED)
    assert codes(conv.cmd("AUTH PLAIN " + _plain("dr.martin@hopital.test"))) == c(R.AUTH_OK)
    assert codes(conv.cmd("AUTH PLAIN " + _plain("dr.martin@hopital.test"))) == c(
        R.ALREADY_AUTHENTICATED)
    assert codes(conv.cmd("MAIL FROM:<secretariat@hopital.test>")) == c(R.SENDER_NOT_OWNED)
    conv.send(b"MAIL FROM:<dr.martin@hopital.test>\r\nRCPT TO:<secretariat@hopital.test>\r\nDATA\r\n")
    forged = b"From: <secretariat@hopital.test>\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
    assert codes(conv.send(forged)) == c(R.FROM_NOT_OWNED)
    conv.send(b"MAIL FROM:<dr.martin@hopital.test>\r\nRCPT TO:<secretariat@hopital.test>\r\nDATA\r\n")
    good = b"From: Dr Martin <dr.martin@hopital.test>\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
    assert codes(conv.send(good)) == c(R.DELIVERED)
    (stored,) = inbox(env.store, "secretariat@hopital.test")
    assert b"with ESMTPA id" in stored and b"(authenticated as dr.martin@hopital.test by password)" in stored
    assert stored.endswith(good[:-3])


def test_auth_login_and_failures_disconnect(env: SmtpEnv) -> None:
    conv = env.connect("submission")
    conv.ehlo()
    assert conv.cmd("AUTH LOGIN").startswith(b"334 VXNlcm5hbWU6")
    assert conv.cmd(base64.b64encode(b"dr.martin@hopital.test").decode()).startswith(b"334 ")
    assert codes(conv.cmd(base64.b64encode(PASSWORD.encode()).decode())) == c(R.AUTH_OK)
    conv2 = env.connect("submission")
    conv2.ehlo()
    assert codes(conv2.cmd("AUTH PLAIN")) == ["334"]
    assert codes(conv2.cmd("*")) == c(R.AUTH_CANCELLED)
    for _ in range(2):
        assert codes(conv2.cmd("AUTH PLAIN " + _plain("dr.martin@hopital.test", "wrong"))) == c(
            R.AUTH_FAILED)
    assert not conv2.closed
    out = conv2.cmd("AUTH PLAIN " + _plain("nobody@hopital.test"))
    assert codes(out) == c(R.AUTH_FAILED, R.TOO_MANY_ERRORS) and conv2.closed
    # Proxy authorisation is refused.
    conv3 = env.connect("submission")
    conv3.ehlo()
    out = conv3.cmd("AUTH PLAIN " + _plain("dr.martin@hopital.test", authzid="secretariat@hopital.test"))
    assert codes(out) == c(R.AUTH_FAILED)


def test_external_without_certificate_fails(env: SmtpEnv) -> None:
    conv = env.connect("submission")
    conv.ehlo()
    assert codes(conv.cmd("AUTH EXTERNAL =")) == c(R.AUTH_FAILED)


def test_remote_recipient_is_queued_with_dsn_params(env: SmtpEnv) -> None:
    conv = env.connect("submission")
    conv.ehlo()
    conv.cmd("AUTH PLAIN " + _plain("dr.martin@hopital.test"))
    out = conv.send(
        b"MAIL FROM:<dr.martin@hopital.test> RET=HDRS ENVID=abc+2Bdef\r\n"
        b"RCPT TO:<confrere@clinique.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;confrere+40clinique.test\r\n"
        b"RCPT TO:<secretariat@hopital.test>\r\nDATA\r\n")
    assert codes(out) == c(R.SENDER_OK, R.RCPT_RELAY_OK, R.RCPT_OK) + ["354"]
    assert codes(conv.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")) == c(R.DELIVERED)
    (entry,) = env.store.list_queue()
    assert entry.sender == "dr.martin@hopital.test"
    assert entry.recipients == ("confrere@clinique.test",)
    assert entry.dsn.ret == "HDRS" and entry.dsn.envid == "abc+def"
    assert entry.dsn.notify == {"confrere@clinique.test": "SUCCESS,FAILURE"}
    assert entry.dsn.orcpt == {"confrere@clinique.test": "rfc822;confrere@clinique.test"}
    queued = env.store.queue_body(entry.id)
    assert queued.startswith(b"Received: ") and b"Return-Path" not in queued
    assert len(inbox(env.store, "secretariat@hopital.test")) == 1


def test_notify_success_for_local_delivery_sends_dsn_to_sender(env: SmtpEnv) -> None:
    conv = env.connect("submission")
    conv.ehlo()
    conv.cmd("AUTH PLAIN " + _plain("dr.martin@hopital.test"))
    conv.send(b"MAIL FROM:<dr.martin@hopital.test> ENVID=E1\r\n"
              b"RCPT TO:<secretariat@hopital.test> NOTIFY=SUCCESS\r\nDATA\r\n")
    assert codes(conv.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")) == c(R.DELIVERED)
    (dsn,) = inbox(env.store, "dr.martin@hopital.test")
    assert b"multipart/report; report-type=delivery-status" in dsn
    assert b"Action: delivered" in dsn and b"Original-Envelope-Id: E1" in dsn
    assert dsn.startswith(b"Return-Path: <>\r\n")


def test_store_busy_answers_temporary_failure(tmp_path: Path, store: Any) -> None:
    from conftest import store_paths

    from storage import open_store

    add_user(store, "dr.martin@hopital.test")
    url, key_file = store_paths(tmp_path)
    impatient = open_store(url, key_file, busy_timeout=0.1)
    env = make_env(tmp_path, impatient)
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    locker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        out = conv.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert codes(out) == c(R.STORE_UNAVAILABLE)
    assert b"Traceback" not in out and b"locked" not in out
    assert inbox(store, "dr.martin@hopital.test") == []
    impatient.close()


def test_bdat_chunks_make_one_message(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    assert "CHUNKING" in conv.ehlo().decode()
    out = conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\n")
    assert codes(out) == c(R.SENDER_OK, R.RCPT_OK)
    part1 = b"Subject: chunked\r\n\r\nline one\r\n.\r\nMAIL FROM:<x@y.example>\r\n"
    part2 = b"last line\r\n"
    out = conv.send(b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert codes(out) == c(R.BDAT_OK, R.DELIVERED)
    (stored,) = inbox(env.store, "dr.martin@hopital.test")
    assert stored.endswith(part1 + part2)  # a "." line inside a chunk is just data
    assert codes(conv.cmd("DATA")) == c(R.NEED_MAIL)


def test_refused_bdat_still_swallows_its_octets(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    payload = b"RSET\r\nQUIT\r\n"
    out = conv.send(b"BDAT %d LAST\r\n" % len(payload) + payload + b"NOOP\r\n")
    assert codes(out) == c(R.NEED_MAIL, R.NOOP) and not conv.closed


def test_bdat_with_bare_lf_is_refused_and_data_after_bdat_too(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\n")
    chunk = b"Subject: x\r\n\r\na\n.\nb\r\n"
    assert codes(conv.send(b"BDAT %d\r\n" % len(chunk) + chunk)) == c(R.BDAT_OK)
    assert codes(conv.cmd("DATA")) == c(R.BDAT_MIXED)
    assert codes(conv.send(b"BDAT 0 LAST\r\n")) == c(R.MESSAGE_BARE_LINE_ENDING)
    assert inbox(env.store, "dr.martin@hopital.test") == []


def test_smtputf8_addresses_need_the_parameter(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.cmd("MAIL FROM:<a@remote.example>")
    assert codes(conv.cmd("RCPT TO:<élodie@hopital.test>")) == c(R.SMTPUTF8_REQUIRED)
    conv.cmd("RSET")
    assert codes(conv.cmd("MAIL FROM:<élodie@remote.example> SMTPUTF8")) == c(R.SENDER_OK)
    assert codes(conv.cmd("RCPT TO:<élodie@hopital.test>")) == c(R.RCPT_UNKNOWN)


def test_helo_client_gets_plain_smtp_trace(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    assert codes(conv.cmd("HELO old.example")) == ["250"]
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    assert codes(conv.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")) == c(R.DELIVERED)
    (stored,) = inbox(env.store, "dr.martin@hopital.test")
    assert b"with SMTP id" in stored and b"from old.example ([192.0.2.10])" in stored


def test_trickling_data_does_not_keep_the_connection(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    idle = env.settings.limits.smtp_idle_timeout
    conv.send(b"Subject: slow\r\n")
    env.clock.advance(idle - 1)
    conv.send(b"x\r\n")  # a few bytes are not progress
    env.clock.advance(2)
    assert codes(conv.take()) == c(R.IDLE_TIMEOUT) and conv.closed


def test_steady_data_keeps_the_connection(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<dr.martin@hopital.test>\r\nDATA\r\n")
    idle = env.settings.limits.smtp_idle_timeout
    conv.send(b"Subject: big\r\n\r\n")
    for _ in range(3):
        env.clock.advance(idle - 1)
        conv.send((b"y" * 70 + b"\r\n") * 60)
    assert not conv.closed
    assert codes(conv.send(b".\r\n")) == c(R.DELIVERED)
