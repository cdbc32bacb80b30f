"""The flow matrix at each stage of an SMTP transaction: at MAIL FROM when a
rule on the source alone decides (every recipient would get it), at RCPT with
the size declared by SIZE=, and once more after DATA with the real size for
the rules that look at it (`max_size`). Each refusal answers with the rule's
reply and names the rule in the audit."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from smtp_transcript import PASSWORD, SmtpEnv, add_user, codes, inbox, make_env

from policy.flows import FlowMatrixHolder, listener_roles

D = "hopital.test"
DOCTOR = f"dr.martin@{D}"
LABO = f"labo@{D}"

MATRIX = """\
version: 1
default: deny
rules:
  - id: no-spam-example
    from: {role: mx, sender: spam.example}
    action: deny
    reply: "550 5.7.1 Senders of spam.example are refused here"
  - id: labo-quiet-hours
    from: {account: labo@hopital.test}
    action: tempfail
    reply: "451 4.7.1 The lab submits at night only"
  - id: small-to-local
    to: {local: true}
    max_size: 2000
    action: allow
  - id: big-to-local
    to: {local: true}
    action: deny
    reply: "552 5.3.4 Local mail is limited to 2000 bytes by the flow matrix"
"""


@pytest.fixture
def env(tmp_path: Path, store: Any) -> SmtpEnv:
    add_user(store, DOCTOR)
    add_user(store, LABO)
    env = make_env(tmp_path, store)
    path = tmp_path / "flows.yaml"
    path.write_text(MATRIX, encoding="utf-8")
    env.policy.flows = FlowMatrixHolder.load(path, listener_roles(env.settings))
    return env


def _events(env: SmtpEnv, action: str) -> list[tuple[str, str, Any, Any]]:
    return [(e.target, e.result, e.details.get("reason"), e.details.get("flow_rule"))
            for e in env.audit.events if e.action == action]


def _message(size: int) -> bytes:
    head = f"From: <a@example.org>\r\nTo: <{DOCTOR}>\r\nSubject: x\r\n\r\n".encode()
    line = b"x" * 70 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body + b".\r\n"


def test_a_source_rule_refuses_at_mail_from_with_its_reply(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.cmd("MAIL FROM:<someone@spam.example>")
    assert out == b"550 5.7.1 Senders of spam.example are refused here\r\n"
    assert _events(env, "mail")[-1] == ("someone@spam.example", "deny", "flow-denied",
                                        "no-spam-example")
    # No transaction was opened, and another sender is not concerned.
    assert codes(conv.cmd(f"RCPT TO:<{DOCTOR}>")) == ["503 5.5.1"]
    assert codes(conv.cmd("MAIL FROM:<someone@elsewhere.example>")) == ["250 2.1.0"]


def test_a_tempfail_source_rule_answers_4xx_at_mail_from(env: SmtpEnv) -> None:
    conv = env.connect("submission")
    conv.ehlo()
    plain = base64.b64encode(f"\0{LABO}\0{PASSWORD}".encode()).decode()
    assert codes(conv.cmd("AUTH PLAIN " + plain)) == ["235 2.7.0"]
    assert conv.cmd(f"MAIL FROM:<{LABO}>") == b"451 4.7.1 The lab submits at night only\r\n"
    assert _events(env, "mail")[-1] == (LABO, "deny", "flow-tempfail", "labo-quiet-hours")


def test_a_rule_on_the_recipient_is_not_decided_at_mail_from(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    assert codes(conv.cmd("MAIL FROM:<a@example.org>")) == ["250 2.1.0"]
    assert [e for e in _events(env, "mail") if e[1] == "deny"] == []


def test_declared_size_is_decided_at_rcpt(env: SmtpEnv) -> None:
    conv = env.connect("mx")
    conv.ehlo()
    assert codes(conv.cmd("MAIL FROM:<a@example.org> SIZE=50000")) == ["250 2.1.0"]
    out = conv.cmd(f"RCPT TO:<{DOCTOR}>")
    assert out == b"552 5.3.4 Local mail is limited to 2000 bytes by the flow matrix\r\n"
    assert _events(env, "rcpt")[-1][1:] == ("deny", "flow-denied", "big-to-local")


def test_the_real_size_is_decided_again_after_data(env: SmtpEnv, store: Any) -> None:
    """Declared small (or not at all), sent big: refused at the end of DATA
    with the rule's reply; nothing delivered. A small one goes through."""
    for declared in (" SIZE=100", ""):
        conv = env.connect("mx")
        conv.ehlo()
        out = conv.send(f"MAIL FROM:<a@example.org>{declared}\r\nRCPT TO:<{DOCTOR}>\r\n"
                        "DATA\r\n".encode())
        assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
        out = conv.send(_message(10_000))
        assert out == b"552 5.3.4 Local mail is limited to 2000 bytes by the flow matrix\r\n"
    assert inbox(store, DOCTOR) == []
    refused = _events(env, "data")
    assert [(t, r, why, rule) for t, r, why, rule in refused] == [
        (DOCTOR, "deny", "flow-denied", "big-to-local")] * 2
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(f"MAIL FROM:<a@example.org>\r\nRCPT TO:<{DOCTOR}>\r\nDATA\r\n".encode())
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    assert codes(conv.send(_message(500))) == ["250 2.0.0"]
    assert len(inbox(store, DOCTOR)) == 1
