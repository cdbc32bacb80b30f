"""certs.trust: anchors, CRL reloads that keep the last valid list, expiry."""

from __future__ import annotations

import datetime as dt

import pytest
import trustme
from cryptography import x509
from pki import copy_pki

from certs.devpki import make_crl
from certs.trust import CertificateRejected, TrustError, TrustStore


def leaf(ic):
    return x509.load_pem_x509_certificates(ic.cert.read_bytes())


def test_verify_good_chain(dev_pki):
    trust = TrustStore([dev_pki.ca_bundle], dev_pki.crl_files)
    chain = trust.verify(leaf(dev_pki.practitioner)[0])
    assert len(chain) == 3  # leaf, persons CA, root


def test_revoked_refused(dev_pki):
    trust = TrustStore([dev_pki.ca_bundle], dev_pki.crl_files)
    with pytest.raises(CertificateRejected) as ei:
        trust.verify(leaf(dev_pki.revoked)[0])
    assert ei.value.reason == "revoked"


def test_revoked_accepted_without_crl_files(dev_pki):
    # No CRL configured: chains only (dev setups); proves the refusal above comes from the CRL.
    trust = TrustStore([dev_pki.ca_bundle], [])
    assert trust.verify(leaf(dev_pki.revoked)[0])


def test_untrusted_refused(dev_pki):
    ca = trustme.CA()
    other = ca.issue_cert("mx.evil.test")
    cert = x509.load_pem_x509_certificate(other.cert_chain_pems[0].bytes())
    trust = TrustStore([dev_pki.ca_bundle], dev_pki.crl_files)
    with pytest.raises(CertificateRejected):
        trust.verify(cert)


def test_unreadable_ca_file_is_an_error(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("garbage")
    with pytest.raises(TrustError):
        TrustStore([bad])


def test_broken_crl_keeps_last_valid(dev_pki, tmp_path):
    pki = copy_pki(dev_pki, tmp_path)
    trust = TrustStore([pki.ca_bundle], pki.crl_files)
    revoked = leaf(pki.revoked)[0]
    assert trust.is_revoked(revoked)
    persons_crl = pki.crl_files[1]
    persons_crl.write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    problems = trust.reload_crls()
    assert any("persons-ca.crl.pem" in p and "keeping" in p for p in problems)
    assert trust.is_revoked(revoked)  # still refused
    with pytest.raises(CertificateRejected):
        trust.verify(revoked)
    persons_crl.unlink()
    assert trust.reload_crls()
    assert trust.is_revoked(revoked)


def test_new_crl_applies_and_older_does_not(dev_pki, tmp_path):
    pki = copy_pki(dev_pki, tmp_path)
    trust = TrustStore([pki.ca_bundle], pki.crl_files)
    prac = leaf(pki.practitioner)[0]
    revoked = leaf(pki.revoked)[0]
    now = dt.datetime.now(dt.UTC)
    make_crl(pki.persons_ca_cert, pki.persons_ca_key, pki.crl_files[1],
             [prac.serial_number, revoked.serial_number], last_update=now,
             next_update=now + dt.timedelta(days=7))
    assert trust.reload_crls() == []
    assert trust.is_revoked(prac)
    # An older CRL (a replayed download) must not un-revoke the card.
    make_crl(pki.persons_ca_cert, pki.persons_ca_key, pki.crl_files[1], [],
             last_update=now - dt.timedelta(days=3), next_update=now + dt.timedelta(days=4))
    problems = trust.reload_crls()
    assert any("older" in p for p in problems)
    assert trust.is_revoked(prac)


def test_crl_from_unknown_ca_ignored(dev_pki, tmp_path):
    pki = copy_pki(dev_pki, tmp_path)
    # A CRL with the persons CA's *name* but signed by another key.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    evil_key = tmp_path / "evil.key"
    evil_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    make_crl(pki.persons_ca_cert, evil_key, pki.crl_files[1], [])
    trust = TrustStore([pki.ca_bundle], pki.crl_files)
    assert any("not signed by a trusted CA" in p for p in trust.problems())
    assert not trust.is_revoked(leaf(pki.practitioner)[0])
    # No trustworthy CRL for the persons CA: fail closed.
    with pytest.raises(CertificateRejected, match="no CRL"):
        trust.verify(leaf(pki.practitioner)[0])


def test_expired_crl_reported_and_still_used(dev_pki, tmp_path):
    pki = copy_pki(dev_pki, tmp_path)
    revoked = leaf(pki.revoked)[0]
    now = dt.datetime.now(dt.UTC)
    make_crl(pki.persons_ca_cert, pki.persons_ca_key, pki.crl_files[1], [revoked.serial_number],
             last_update=now - dt.timedelta(days=10), next_update=now - dt.timedelta(days=1))
    trust = TrustStore([pki.ca_bundle], pki.crl_files)
    assert any("expired" in p and "PERSONNES" in p for p in trust.problems())
    assert trust.status().crls == 3
    with pytest.raises(CertificateRejected):
        trust.verify(revoked)
    assert trust.verify(leaf(pki.practitioner)[0])


def test_x509_store_has_crl_flags(dev_pki):
    from OpenSSL import crypto

    trust = TrustStore([dev_pki.ca_bundle], dev_pki.crl_files)
    store = trust.x509_store()
    ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf(dev_pki.revoked)[0]))
    with pytest.raises(crypto.X509StoreContextError):
        ctx.verify_certificate()
    ok = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf(dev_pki.employee)[0]))
    ok.verify_certificate()
