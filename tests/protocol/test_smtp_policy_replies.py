"""SMTP replies to decisions that live in `Policy` (the postmaster alias) and
in the reply catalogue (`reply_for_reason`, including the peer operator
check): the protocol asks and maps, the client sees the same answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cryptography import x509
from smtp_transcript import Conversation, SmtpEnv, add_user, codes, inbox, make_env

from mssmtpd.replies import R
from policy.whitelist import Whitelist

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


def _peer_env(tmp_path: Path, store: Any, dev_pki: Any) -> SmtpEnv:
    add_user(store, f"dr.martin@{DOMAIN}")
    env = make_env(tmp_path, store, policy={"mx_require_client_cert": True})
    env.policy.whitelist = Whitelist.parse(
        b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
        b"<DateDeGeneration>x</DateDeGeneration><ListeDomaines>"
        b"<Domaine><Nom>operateur-pair.test</Nom><DNCertificatOperateur>"
        + dev_pki.peer_operator.subject.encode()
        + b"</DNCertificatOperateur></Domaine></ListeDomaines></ListeBlancheMSSante>")
    return env


def _mx_with_certificate(env: SmtpEnv, cert: x509.Certificate | None) -> Conversation:
    conv = env.connect("mx")
    if cert is not None:
        session = conv.protocol.session
        session.peer = dataclasses.replace(session.peer, tls=True, client_cert=cert)
        session.tls = True
    conv.ehlo()
    return conv


def _peer_reasons(env: SmtpEnv) -> list[tuple[str, str | None]]:
    return [(e.result, e.details.get("reason")) for e in env.audit.events if e.action == "peer"]


def test_mx_peer_without_certificate_is_told_a_certificate_is_required(
        tmp_path: Path, store: Any, dev_pki: Any) -> None:
    """No certificate: 530 saying one is required (the peer's configuration
    to fix), not the 550 of an operator whose DN is not listed."""
    env = _peer_env(tmp_path, store, dev_pki)
    conv = _mx_with_certificate(env, None)
    out = conv.cmd("MAIL FROM:<a@operateur-pair.test>")
    assert out == R.PEER_CERT_REQUIRED.to_bytes()
    assert out.startswith(b"530 5.7.0 A client certificate is required")
    assert _peer_reasons(env) == [("deny", "no-certificate")]
    # Nothing was opened: RCPT still wants a MAIL.
    assert conv.cmd(f"RCPT TO:<dr.martin@{DOMAIN}>") == R.NEED_MAIL.to_bytes()


def test_mx_peer_whose_dn_is_not_listed_for_the_domain_is_not_trusted(
        tmp_path: Path, store: Any, dev_pki: Any) -> None:
    env = _peer_env(tmp_path, store, dev_pki)
    conv = _mx_with_certificate(env, _cert(dev_pki.peer_operator.cert))
    # Listed, but for another domain than the sender's.
    assert conv.cmd("MAIL FROM:<a@autre.test>") == R.PEER_NOT_TRUSTED.to_bytes()
    # A certificate of the trust space that is no operator's.
    conv2 = _mx_with_certificate(env, _cert(dev_pki.practitioner.cert))
    assert conv2.cmd("MAIL FROM:<a@operateur-pair.test>") == R.PEER_NOT_TRUSTED.to_bytes()
    assert _peer_reasons(env) == [("deny", "not-whitelisted"), ("deny", "not-whitelisted")]


def test_mx_peer_listed_for_the_sender_domain_sends(
        tmp_path: Path, store: Any, dev_pki: Any) -> None:
    env = _peer_env(tmp_path, store, dev_pki)
    conv = _mx_with_certificate(env, _cert(dev_pki.peer_operator.cert))
    out = conv.send(b"MAIL FROM:<a@operateur-pair.test>\r\n"
                    + f"RCPT TO:<dr.martin@{DOMAIN}>\r\nDATA\r\n".encode())
    assert codes(out) == ["250 2.1.0", "250 2.1.5", "354"]
    assert codes(conv.send(MSG + b".\r\n")) == ["250 2.0.0"]
    assert len(inbox(store, f"dr.martin@{DOMAIN}")) == 1
    assert _peer_reasons(env) == [("allow", None)]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]
