"""certs.devpki: shapes, chains, CRLs, PKCS#12, speed."""

from __future__ import annotations

import ipaddress
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.devpki import make_dev_pki
from certs.trust import TrustStore, load_crls


def load(path):
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_complete(tmp_path):
    # Its speed is not asserted here (a timed test fails on a loaded machine):
    # `make run` and the e2e start-up figures show it.
    pki = make_dev_pki(tmp_path / "pki", hostnames=["mx.demo.test", "localhost", "127.0.0.1"],
                       domain="Demo.Test", demo=True)
    assert pki.domain == "demo.test"
    for f in (pki.ca_bundle, pki.crl, pki.server.cert, pki.server.key, *pki.crl_files,
              pki.practitioner.p12, pki.practitioner.p12_nopass, pki.employee.cert,
              pki.organisation.cert, pki.revoked.cert, pki.peer_operator.cert):
        assert f.is_file() and f.is_absolute()
    for key in (pki.server.key, pki.root_key, pki.practitioner.key, pki.practitioner.p12):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_without_demo_no_client_certs(tmp_path):
    pki = make_dev_pki(tmp_path, hostnames=["mx.a.test"], domain="a.test", demo=False)
    assert pki.practitioner is None and pki.revoked is None and pki.organisation is None
    assert all(len(c) == 0 for f in pki.crl_files for c in load_crls(f))


def test_ca_shapes(dev_pki):
    root, persons, orgs = load(dev_pki.ca_bundle)
    cn = lambda c: c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value  # noqa: E731
    assert cn(root) == "AC RACINE IGC-SANTE DEV hopital.test"  # unique to the instance
    assert cn(persons) == "AC IGC-SANTE DEV PERSONNES hopital.test"
    assert cn(orgs) == "AC IGC-SANTE DEV ORGANISATIONS hopital.test"
    for ca in (persons, orgs):
        ca.verify_directly_issued_by(root)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_certificate(dev_pki):
    leaf, issuer = load(dev_pki.server.cert)
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)  # ECDHE-RSA suites
    assert leaf.public_key().key_size == 2048
    leaf.verify_directly_issued_by(issuer)
    assert issuer.subject == load(dev_pki.organisations_ca_cert)[0].subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"mx.hopital.test", "localhost"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
    assert dev_pki.server.subject == (
        "CN=mx.hopital.test,OU=1750000001,O=Hopital de demonstration,ST=Paris (75),C=FR")


def test_practitioner_card_subject_is_multivalued(dev_pki):
    leaf, issuer = load(dev_pki.practitioner.cert)
    rdns = list(leaf.subject.rdns)
    assert len(rdns) == 3
    assert {a.oid for a in rdns[-1]} == {NameOID.COMMON_NAME, NameOID.SURNAME, NameOID.GIVEN_NAME}
    assert leaf.subject.get_attributes_for_oid(NameOID.TITLE)[0].value == "Médecin"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["dr.martin@hopital.test"]
    assert issuer.subject == load(dev_pki.persons_ca_cert)[0].subject


def test_pkcs12_bundles(dev_pki):
    blob = dev_pki.practitioner.p12.read_bytes()
    key, cert, extra = pkcs12.load_key_and_certificates(blob, dev_pki.p12_password.encode())
    assert cert == load(dev_pki.practitioner.cert)[0]
    assert len(extra) == 1
    key2, cert2, _ = pkcs12.load_key_and_certificates(dev_pki.practitioner.p12_nopass.read_bytes(), None)
    assert cert2 == cert
    import pytest

    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(blob, b"wrong")


def test_crls_revoke_only_the_revoked_card(dev_pki):
    trust = TrustStore([dev_pki.ca_bundle], dev_pki.crl_files)
    assert trust.problems() == []
    assert len(trust.crls()) == 3
    revoked = load(dev_pki.revoked.cert)[0]
    assert trust.is_revoked(revoked)
    for ic in (dev_pki.practitioner, dev_pki.employee, dev_pki.organisation, dev_pki.server):
        assert not trust.is_revoked(load(ic.cert)[0])
    # crl.pem is the bundle of the three
    assert len(load_crls(dev_pki.crl)) == 3
