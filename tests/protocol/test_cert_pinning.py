"""Certificate pinning through both protocols (SASL EXTERNAL): of two
organisation certificates of one structure (same OU), only the one pinned to
the APP account logs in; the other is answered like an unknown certificate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from imap_transcript import ImapEnv
from smtp_transcript import SmtpEnv, codes

from certs.devpki import issue_organisation_certificate
from certs.identity import certificate_fingerprint
from conf.settings import PolicySettings
from storage.interface import AccountClass, MailboxType

APP = "app@hopital.test"
OU = "1750000042"
LISTENERS = [
    {"name": "imap", "port": 0, "role": "imap", "tls": "none"},
    {"name": "submission", "port": 0, "role": "submission", "tls": "none"},
]


@pytest.fixture(scope="module")
def certs(dev_pki: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, x509.Certificate]:
    directory = tmp_path_factory.mktemp("pinning")
    out = {
        stem: x509.load_pem_x509_certificates(issue_organisation_certificate(
            dev_pki.organisations_ca_cert, dev_pki.organisations_ca_key, directory, stem,
            common_name=f"{stem}.hopital.test", structure_id=OU).cert.read_bytes())[0]
        for stem in ("pinned", "other")
    }
    out["stranger"] = x509.load_pem_x509_certificates(
        dev_pki.peer_operator.cert.read_bytes())[0]
    return out


@pytest.fixture
def envs(tmp_path: Path, store: Any, certs: Any) -> tuple[ImapEnv, SmtpEnv]:
    from conftest import make_settings

    settings = make_settings(tmp_path, listeners=LISTENERS,
                             policy=PolicySettings(require_org_cert_pinning=True))
    app = store.add_account(APP, "Application", AccountClass.SYSTEM, cert_subject=OU,
                            cert_pins=[certificate_fingerprint(certs["pinned"])])
    store.add_mailbox(APP, MailboxType.APP, owner_account_id=app.id)
    return ImapEnv(settings, store), SmtpEnv(settings, store)


def imap_external(env: ImapEnv, cert: x509.Certificate) -> bytes:
    c = env.connect()
    session = c.proto.session
    session.tls = True
    session.peer = dataclasses.replace(session.peer, tls=True, client_cert=cert)
    return c.cmd("x AUTHENTICATE EXTERNAL =")


def smtp_external(env: SmtpEnv, cert: x509.Certificate) -> bytes:
    conv = env.connect("submission")
    session = conv.protocol.session
    session.peer = dataclasses.replace(session.peer, tls=True, client_cert=cert)
    session.tls = True
    conv.ehlo()
    return conv.cmd("AUTH EXTERNAL =")


def test_only_the_pinned_certificate_of_the_structure_logs_in(
    envs: tuple[ImapEnv, SmtpEnv], certs: Any
) -> None:
    imap, smtp = envs
    assert imap_external(imap, certs["pinned"]).startswith(b"x OK ")
    assert codes(smtp_external(smtp, certs["pinned"])) == ["235 2.7.0"]
    # The other certificate of the same OU: answered exactly like a
    # certificate that names no account.
    unknown_imap = imap_external(imap, certs["stranger"])
    assert unknown_imap == b"x NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert imap_external(imap, certs["other"]) == unknown_imap
    assert smtp_external(smtp, certs["other"]) == smtp_external(smtp, certs["stranger"])
    refused = [e for e in imap.audit.events + smtp.audit.events
               if e.details.get("reason") == "certificate-not-pinned"]
    assert len(refused) == 2
    for ev in refused:
        assert ev.details["fingerprint"] == certificate_fingerprint(certs["other"])
        assert ev.details["account"] == APP and ev.actor.startswith("CN=other.hopital.test")
