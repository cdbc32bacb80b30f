"""certs.identity on every subject shape of REFERENCE.md."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.identity import (
    canonical_subject,
    classify_idnat,
    identity_from_certificate,
    rfc4514_subject,
)

_KEY = ec.generate_private_key(ec.SECP256R1())
_OVERRIDES = {
    "SN": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "title": NameOID.TITLE,
    "pseudonym": NameOID.PSEUDONYM,
}


def cert_for(subject: str, *, server: bool = False) -> x509.Certificate:
    name = x509.Name.from_rfc4514_string(subject, _OVERRIDES)
    now = dt.datetime.now(dt.UTC)
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        eku.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name.from_rfc4514_string("CN=AC TEST,C=FR"))
        .public_key(_KEY.public_key())
        .serial_number(42)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .sign(_KEY, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("subject", "kind", "idnat", "idnat_kind", "org_id", "profession"),
    [
        # practitioner card, multi-valued RDN, RPPS
        ("CN=810002813839+SN=DUPONT+GN=MARIE,title=Médecin,C=FR",
         "practitioner-card", "810002813839", "RPPS", None, "Médecin"),
        # same, ADELI prefix 0
        ("CN=0751234567+SN=DURAND+GN=LEA,title=Infirmier,C=FR",
         "practitioner-card", "0751234567", "ADELI", None, "Infirmier"),
        # other staff prefix (3)
        ("CN=3123456789+SN=PETIT+GN=LUC,title=Pharmacien,C=FR",
         "practitioner-card", "3123456789", "other", None, "Pharmacien"),
        # older card: GN+SN+CN, profession in OU
        ("GN=JEAN+SN=ROBERT+CN=00B7010446,OU=Masseur-Kinésithérapeute,O=CPS,C=FR",
         "practitioner-card", "00B7010446", "ADELI", None, "Masseur-Kinésithérapeute"),
        # employee card (X.500 order as printed in REFERENCE.md: C first, CN last)
        ("CN=3760021832/000000018,pseudonym=DUPONT CLAIRE,"
         "title=Carte de service santé ou social,OU=1750000001,O=CH DE DEMO,C=FR",
         "employee-card", "3760021832/000000018", "other", "1750000001",
         "Carte de service santé ou social"),
        # employee card without OU: the structure comes from the CN
        ("CN=3760021832/000000019,title=Carte de service santé ou social,O=CH DE DEMO,C=FR",
         "employee-card", "3760021832/000000019", "other", "3760021832",
         "Carte de service santé ou social"),
        # organisation (APP box) certificate
        ("CN=labo.hopital.test,OU=1750000001,O=Laboratoire de demo,C=FR",
         "organisation", None, None, "1750000001", None),
        # organisation id with spaces as in real OU values
        ("CN=dpi.hopital.test,OU=0002 187512751,O=ASIP DEMO,C=FR",
         "organisation", None, None, "0002 187512751", None),
        # a subject with nothing we recognise
        ("CN=someone", "unknown", None, None, None, None),
    ],
)
def test_subject_shapes(subject, kind, idnat, idnat_kind, org_id, profession):
    ident = identity_from_certificate(cert_for(subject))
    assert ident.kind == kind
    assert ident.idnat == idnat
    assert ident.idnat_kind == idnat_kind
    assert ident.organisation_id == org_id
    assert ident.profession == profession
    assert ident.serial == 42
    assert ident.issuer == "CN=AC TEST,C=FR"


def test_operator_server_dn_is_server_kind():
    dn = "CN=mx.hopital.test,OU=1750000001,O=Hopital de demo,ST=Paris (75),C=FR"
    ident = identity_from_certificate(cert_for(dn, server=True))
    assert ident.kind == "server"
    assert ident.idnat is None
    assert ident.common_name == "mx.hopital.test"
    assert ident.organisation_id == "1750000001"
    # The operator DN round-trips exactly: the whitelist compares this string.
    assert ident.subject == dn


def test_practitioner_names_and_subject_labels():
    c = cert_for("CN=810002813839+SN=MARTIN+GN=PAUL,title=Médecin,C=FR")
    ident = identity_from_certificate(c)
    assert (ident.surname, ident.given_name, ident.common_name) == ("MARTIN", "PAUL", "810002813839")
    subject = rfc4514_subject(c)
    # Readable labels, never dotted OIDs; the accent is kept.
    assert "2.5.4" not in subject
    # the documented shape, although DER sorts the RDN as GN+SN+CN
    assert subject == "CN=810002813839+SN=MARTIN+GN=PAUL,title=Médecin,C=FR"
    # Stable: the same certificate always gives the same string (store lookups).
    assert rfc4514_subject(c) == ident.subject


@pytest.mark.parametrize("typed", [
    "CN=810002813839+SN=MARTIN+GN=PAUL,title=Médecin,C=FR",
    "GN=PAUL+SN=MARTIN+CN=810002813839,title=Médecin,C=FR",
    " GN=PAUL+SN=MARTIN+CN=810002813839,title=Médecin,C=FR ",
])
def test_canonical_subject_matches_the_certificate(typed):
    c = cert_for("CN=810002813839+SN=MARTIN+GN=PAUL,title=Médecin,C=FR")
    assert canonical_subject(typed) == rfc4514_subject(c)


def test_canonical_subject_rejects_garbage():
    with pytest.raises(ValueError):
        canonical_subject("this is not a DN")


def test_subject_escaping_is_rfc4514():
    c = cert_for(r"CN=Labo\, site Nord,OU=1750000001,O=Lab,C=FR")
    assert rfc4514_subject(c).startswith(r"CN=Labo\, site Nord,")


def test_server_eku_wins_over_numeric_cn():
    # A server certificate is never taken for a card even with a digit CN.
    ident = identity_from_certificate(cert_for("CN=810002813839,O=X,C=FR", server=True))
    assert ident.kind == "server"
    assert ident.idnat is None


@pytest.mark.parametrize(("idnat", "kind"), [("8100", "RPPS"), ("0123", "ADELI"),
                                             ("1234", "other"), ("6xyz", "other")])
def test_classify_idnat(idnat, kind):
    assert classify_idnat(idnat) == kind


def test_dev_pki_certificates(dev_pki):
    def load(p):
        return x509.load_pem_x509_certificate(p.read_bytes())

    prac = identity_from_certificate(load(dev_pki.practitioner.cert))
    assert (prac.kind, prac.idnat, prac.profession) == ("practitioner-card", "810002813839", "Médecin")
    emp = identity_from_certificate(load(dev_pki.employee.cert))
    assert (emp.kind, emp.idnat, emp.organisation_id) == (
        "employee-card", "3760021832/000000018", "1750000001")
    org = identity_from_certificate(load(dev_pki.organisation.cert))
    assert (org.kind, org.common_name, org.organisation_id) == (
        "organisation", "labo.hopital.test", "1750000001")
    srv = identity_from_certificate(load(dev_pki.server.cert))
    assert srv.kind == "server"
    assert srv.subject == dev_pki.server.subject
