"""SMTP replies to decisions that live in `Policy` (the postmaster alias) and
in the reply catalogue (`reply_for_reason`, including the peer operator
check): the protocol asks and maps, the client sees the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smtp_transcript import add_user, codes, inbox, make_env

from mssmtpd.replies import R

DOMAIN = "hopital.test"
MSG = b"From: <a@remote.example>\r\nSubject: policy\r\n\r\nhello\r\n"


def test_bare_postmaster_and_its_full_address_are_one_recipient(tmp_path: Path,
                                                                store: Any) -> None:
    add_user(store, f"postmaster@{DOMAIN}")
    env = make_env(tmp_path, store)
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<postmaster>\r\n"
                    + f"RCPT TO:<postmaster@{DOMAIN}>\r\nDATA\r\n".encode())
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    assert len(inbox(store, f"postmaster@{DOMAIN}")) == 1
    rcpts = [e for e in env.audit.events if e.action == "rcpt"]
    assert [(e.target, e.result) for e in rcpts] == [(f"postmaster@{DOMAIN}", "allow")]


def test_bare_postmaster_is_the_first_served_domain(tmp_path: Path, store: Any) -> None:
    store.add_domain("clinique.test")
    add_user(store, "postmaster@clinique.test")
    env = make_env(tmp_path, store, domains=["clinique.test", DOMAIN])
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<postmaster>\r\nDATA\r\n")
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    assert len(inbox(store, "postmaster@clinique.test")) == 1


def test_mx_peer_without_certificate_is_not_trusted(tmp_path: Path, store: Any) -> None:
    """The peer check's "no-certificate" is the operator's refusal at MAIL
    (550 5.7.1), not the AUTH EXTERNAL reply (530) the same reason gets."""
    add_user(store, f"dr.martin@{DOMAIN}")
    env = make_env(tmp_path, store, policy={"mx_require_client_cert": True})
    conv = env.connect("mx")
    conv.ehlo()
    out = conv.cmd("MAIL FROM:<a@remote.example>")
    assert out == R.PEER_NOT_TRUSTED.to_bytes()
    peer = [e for e in env.audit.events if e.action == "peer"]
    assert [(e.result, e.details["reason"]) for e in peer] == [("deny", "no-certificate")]
