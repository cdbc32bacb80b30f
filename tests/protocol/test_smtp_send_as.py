"""Send-as on submission: an agent sends as a functional box only with the
grant's send-as right; the message then names her in Sender: (whatever
Sender: the client wrote); any other From: is refused, envelope and header
alike, each with its own audit reason; a From: that two address parsers
read differently is refused, not guessed."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from smtp_transcript import PASSWORD, SmtpEnv, add_user, codes, inbox, make_env

from mssmtpd.replies import R, Reply
from storage.interface import MailboxType

D = "hopital.test"
AGENT = f"sec.durand@{D}"
CARDIO = f"cardiologie@{D}"
DOCTOR = f"dr.martin@{D}"


def c(reply: Reply) -> str:
    return f"{reply.code} {reply.status}"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> SmtpEnv:
    agent = add_user(store, AGENT)
    add_user(store, DOCTOR)
    cardio = store.add_mailbox(CARDIO, MailboxType.ORG)
    store.set_grant(agent.id, cardio.id, "lrswipkxte", send_as=True)
    return make_env(tmp_path, store)


def _session(env: SmtpEnv) -> Any:
    conv = env.connect("submission")
    conv.ehlo()
    plain = base64.b64encode(f"\0{AGENT}\0{PASSWORD}".encode()).decode()
    assert codes(conv.cmd("AUTH PLAIN " + plain)) == [c(R.AUTH_OK)]
    return conv


def _send(conv: Any, sender: str, headers: bytes) -> list[str]:
    conv.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{DOCTOR}>\r\nDATA\r\n".encode())
    return codes(conv.send(headers + b"Subject: resultats\r\n\r\nCorps\r\n.\r\n"))


def test_sending_as_the_functional_box_names_the_agent_in_sender(env: SmtpEnv) -> None:
    conv = _session(env)
    headers = (b"From: Cardiologie <cardiologie@hopital.test>\r\n"
               b"Sender: someone@else.test\r\n (folded)\r\nMessage-ID: <sa-1@hopital.test>\r\n")
    assert _send(conv, CARDIO, headers) == [c(R.DELIVERED)]
    (stored,) = inbox(env.store, DOCTOR)
    head = stored.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"Sender:") == 1 and b"Sender: <sec.durand@hopital.test>\r\n" in head
    assert b"someone@else.test" not in stored and b"(folded)" not in stored
    (event,) = [e for e in env.audit.events if e.action == "send-as"]
    assert (event.actor, event.target, event.result) == (AGENT, CARDIO, "allow")
    assert event.details["message_id"] == "<sa-1@hopital.test>"


def test_her_own_address_gets_no_sender_header(env: SmtpEnv) -> None:
    conv = _session(env)
    assert _send(conv, AGENT, b"From: <sec.durand@hopital.test>\r\n") == [c(R.DELIVERED)]
    (stored,) = inbox(env.store, DOCTOR)
    assert b"Sender:" not in stored
    assert not [e for e in env.audit.events if e.action == "send-as"]


def test_any_other_from_is_refused_envelope_and_header_alike(env: SmtpEnv) -> None:
    conv = _session(env)
    assert codes(conv.cmd(f"MAIL FROM:<{DOCTOR}>")) == [c(R.SENDER_NOT_OWNED)]
    conv.cmd("RSET")
    assert _send(conv, AGENT, b"From: <dr.martin@hopital.test>\r\n") == [c(R.FROM_NOT_OWNED)]
    assert inbox(env.store, DOCTOR) == []
    reasons = [e.details.get("reason") for e in env.audit.events if e.result == "deny"]
    assert reasons == ["sender-not-owned", "from-not-owned"]


def test_send_as_needs_the_right_not_p(env: SmtpEnv) -> None:
    agent = env.store.get_account(AGENT)
    cardio = env.store.get_mailbox(CARDIO)
    env.store.set_grant(agent.id, cardio.id, "lrswipkxte", send_as=False)
    conv = _session(env)
    assert codes(conv.cmd(f"MAIL FROM:<{CARDIO}>")) == [c(R.SENDER_NOT_OWNED)]
    conv.cmd("RSET")
    assert _send(conv, AGENT, b"From: <cardiologie@hopital.test>\r\n") == [c(R.FROM_NOT_OWNED)]


@pytest.mark.parametrize("header", [
    b"From: <sec.durand@hopital.test>\r\nFrom: <cardiologie@hopital.test>\r\n",
    b"From: Equipe: sec.durand@hopital.test;\r\n",
    b"From: <sec.durand@hopital.test> dr.martin@hopital.test\r\n",
    b"From: sec.durand@hopital.test <dr.martin@hopital.test>\r\n",
    b"From: sec.durand\r\n",
])
def test_a_from_that_cannot_be_read_one_way_is_refused(env: SmtpEnv, header: bytes) -> None:
    conv = _session(env)
    assert _send(conv, AGENT, header) == [c(R.FROM_UNREADABLE)]
    assert inbox(env.store, DOCTOR) == []
    assert [e.details.get("reason") for e in env.audit.events if e.result == "deny"] == [
        "from-unreadable"]


def _folded(value: bytes) -> bytes:
    return b"\r\n ".join(value[i:i + 900] for i in range(0, len(value), 900))


@pytest.mark.parametrize("value", [b"(" * 5000 + b"a@b.test", b"(" * 200_000, b"x" * 20_000])
def test_a_pathological_from_is_refused_not_a_crash(env: SmtpEnv, value: bytes) -> None:
    """The standard library's address parser recurses once per "(": a From:
    folded over lines of thousands of them raised RecursionError out of the
    protocol (the client got no reply)."""
    conv = _session(env)
    assert _send(conv, AGENT, b"From: " + _folded(value) + b"\r\n") == [c(R.FROM_UNREADABLE)]
    assert codes(conv.cmd("NOOP")) == ["250 2.0.0"]
