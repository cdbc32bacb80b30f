"""A trusted CA for which no CRL is held (tls.missing_crl): refused by
default, accepted unchecked on request; either way the CA is named in a
WARNING at start and at reload, and each refusal is logged with the
listener, the peer and the direction (in-memory Twisted TLS)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pki import tls_settings
from test_certs_refusals import card_client, exchange, listener, refusals_of

from certs.devpki import IssuedCert, issue_card, make_root_ca
from certs.tls import INBOUND_MTA, ServerTLS
from certs.trust import CertificateRejected
from conf.settings import MissingCRL

CA_CN = "AC SANS LISTE DE REVOCATION"
CA_DN = f"CN={CA_CN},OU=IGC-SANTE DEV,O=MSS-DEV (not for production),C=FR"


@pytest.fixture(scope="module")
def no_crl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IssuedCert]:
    """A CA we will trust but hold no CRL of, and a card it issued."""
    d = tmp_path_factory.mktemp("nocrl")
    ca_cert, ca_key = make_root_ca(d, "nocrl-ca", CA_CN)
    card = issue_card(d, "card", ca_cert=ca_cert, ca_key=ca_key, idnat="810000000444",
                      surname="SANSCRL", given_name="D")
    return ca_cert, card


def _tls(dev_pki: Any, ca: Path, mode: MissingCRL) -> ServerTLS:
    return ServerTLS(tls_settings(dev_pki, ca_files=[dev_pki.ca_bundle, ca], missing_crl=mode))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_refuse_is_the_default(dev_pki: Any) -> None:
    assert tls_settings(dev_pki).missing_crl is MissingCRL.REFUSE


def test_refuse_mode_refuses_and_says_so(dev_pki: Any, no_crl: tuple[Path, IssuedCert],
                                         caplog: pytest.LogCaptureFixture) -> None:
    ca, card = no_crl
    with caplog.at_level(logging.WARNING):
        tls = _tls(dev_pki, ca, MissingCRL.REFUSE)
    start = _warnings(caplog)
    assert [m for m in start if CA_CN in m] == [
        f"trust: no CRL for CA {CA_DN}: every certificate it issued is refused "
        "(tls.missing_crl: refuse); add its CRL to tls.crl_files"]
    # The dev PKI's own CAs all have their CRL: only the new one is named.
    assert [c.subject.rfc4514_string() for c in tls.trust.cas_without_crl()] == [CA_DN]

    caplog.clear()
    seen = refusals_of(tls)
    with caplog.at_level(logging.WARNING):
        server, client = exchange(tls.server_context_factory(listener("smtp-mx", "mx")),
                                  card_client(dev_pki, card).client_creator("localhost"))
    assert server.data == b"" and client.lost is not None
    # The audit hook hears of it once, as a missing CRL (not an unknown CA).
    assert [(e.refusal.reason, e.direction, e.listener, e.peer) for e in seen] == [
        ("crl-missing", INBOUND_MTA, "smtp-mx", "127.0.0.1")]
    logged = _warnings(caplog)
    assert any("refused inbound-mta certificate (crl-missing) from 127.0.0.1 on smtp-mx" in m
               for m in logged), logged
    assert any(f"no CRL is held for {CA_DN}" in m for m in logged), logged
    with pytest.raises(CertificateRejected):
        tls.trust.verify(_leaf(card))


def test_accept_mode_accepts_and_warns(dev_pki: Any, no_crl: tuple[Path, IssuedCert],
                                       caplog: pytest.LogCaptureFixture) -> None:
    ca, card = no_crl
    with caplog.at_level(logging.WARNING):
        tls = _tls(dev_pki, ca, MissingCRL.ACCEPT)
    assert [m for m in _warnings(caplog) if CA_CN in m] == [
        f"trust: no CRL for CA {CA_DN}: the certificates it issued are ACCEPTED "
        "without a revocation check (tls.missing_crl: accept)"]

    caplog.clear()
    seen = refusals_of(tls)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            server, _client = exchange(tls.server_context_factory(listener("imaps", "imap")),
                                       card_client(dev_pki, card).client_creator("localhost"))
            assert server.data == b"EHLO\r\n"
    assert seen == []
    accepted = [m for m in _warnings(caplog) if "without a revocation check" in m]
    assert len(accepted) == 1, accepted  # the first of each CA, not one per connection
    assert f"CA {CA_DN}" in accepted[0]
    assert tls.trust.verify(_leaf(card))[0] == _leaf(card)

    # Revocation still holds for the CAs whose CRL is held.
    revoked, _ = exchange(tls.server_context_factory(listener("imaps", "imap")),
                          card_client(dev_pki, dev_pki.revoked).client_creator("localhost"))
    assert revoked.data == b""
    assert [e.refusal.reason for e in seen] == ["revoked"]


def test_reload_warns_again(dev_pki: Any, no_crl: tuple[Path, IssuedCert],
                            caplog: pytest.LogCaptureFixture) -> None:
    ca, _card = no_crl
    tls = _tls(dev_pki, ca, MissingCRL.REFUSE)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tls.reload()
    assert [m for m in _warnings(caplog) if CA_CN in m and "every certificate" in m]


def _leaf(card: IssuedCert) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificates(card.cert.read_bytes())[0]
