"""A development PKI shaped like the national health PKI (IGC-Santé).

`make_dev_pki` writes, into one directory, a root CA ("AC RACINE IGC-SANTE
DEV"), two issuing CAs (persons: smart cards; organisations: servers and
applications), a server certificate usable for both sides of mutual TLS
between operators, one CRL per CA and, with ``demo=True``, client
certificates whose subjects copy the real card and organisation shapes (see
REFERENCE.md), including a revoked card listed in the persons CRL.

Nothing here is for production: keys are written unencrypted (mode 0600) and
the PKCS#12 password is printed in `DevPKI.p12_password`.

Speed matters (tests build one PKI per session, `mssctl init` one per run):
CA and client keys are EC P-256; only the server key is RSA 2048 because the
trust-space suites are ECDHE-*RSA*.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

ROOT_CN = "AC RACINE IGC-SANTE DEV"
PERSONS_CA_CN = "AC IGC-SANTE DEV PERSONNES"
ORGANISATIONS_CA_CN = "AC IGC-SANTE DEV ORGANISATIONS"
PKI_ORGANISATION = "MSS-DEV (not for production)"

# Demo identities (REFERENCE.md shapes). Tests import these instead of
# repeating literals.
DEMO_PRACTITIONER_IDNAT = "810002813839"
DEMO_PRACTITIONER_LOGIN = "dr.martin"  # + "@" + domain
DEMO_EMPLOYEE_IDNAT = "3760021832/000000018"
DEMO_EMPLOYEE_LOGIN = "secretariat.dupont"  # + "@" + domain
DEMO_APP_LOGIN = "labo"  # + "@" + domain
DEMO_REVOKED_IDNAT = "810000000999"
EMPLOYEE_CARD_TITLE = "Carte de service santé ou social"

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class IssuedCert:
    """One end-entity certificate on disk."""

    cert: Path  # PEM: the certificate, then its issuing CA
    key: Path  # PEM, PKCS#8, unencrypted, mode 0600
    p12: Path | None = None  # PKCS#12 protected by DevPKI.p12_password
    p12_nopass: Path | None = None  # PKCS#12 without password (some tools want it)
    subject: str = ""  # RFC 4514 as certs.identity.rfc4514_subject prints it
    serial: int = 0


@dataclass(frozen=True)
class DevPKI:
    """Paths of everything `make_dev_pki` wrote (all absolute)."""

    directory: Path
    ca_bundle: Path  # ca.pem: root + issuing CAs: what clients and peers trust
    root_cert: Path  # root-ca.pem
    root_key: Path
    persons_ca_cert: Path  # persons-ca.pem
    persons_ca_key: Path
    organisations_ca_cert: Path  # organisations-ca.pem
    organisations_ca_key: Path
    crl: Path  # crl.pem: the three CRLs concatenated (what TLSSettings.crl_files lists)
    crl_files: tuple[Path, ...]  # root-ca.crl.pem, persons-ca.crl.pem, organisations-ca.crl.pem
    server: IssuedCert  # server.pem (leaf + chain) / server.key
    hostnames: tuple[str, ...]
    domain: str
    p12_password: str
    # demo=True only:
    practitioner: IssuedCert | None = None  # dr.martin@<domain>'s CPS card
    employee: IssuedCert | None = None  # employee card (CPE), no IdNat_PS prefix 8
    organisation: IssuedCert | None = None  # APP box labo@<domain>
    revoked: IssuedCert | None = None  # a card listed in the persons CRL
    peer_operator: IssuedCert | None = None  # another operator's MTA (mutual TLS tests)

    @property
    def server_cert(self) -> Path:
        return self.server.cert

    @property
    def server_key(self) -> Path:
        return self.server.key


@dataclass(frozen=True)
class _CA:
    cert: x509.Certificate
    key: PrivateKey


def _now() -> dt.datetime:
    # Backdated a little: clocks of test clients and containers drift.
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(*rdns: Sequence[tuple[x509.ObjectIdentifier, str]]) -> x509.Name:
    """RDNs in DER order (country first); a tuple with several pairs is a
    multi-valued RDN."""
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns]
    )


def _builder(
    subject: x509.Name, issuer: _CA | None, key: PrivateKey, days: int,
    not_before: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    now = not_before or _now()
    issuer_name = issuer.cert.subject if issuer is not None else subject
    signing_pub = issuer.key.public_key() if issuer is not None else key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_pub), critical=False
        )
    )


def _make_ca(cn: str, parent: _CA | None) -> _CA:
    key = _ec_key()
    subject = _name(
        [(NameOID.COUNTRY_NAME, "FR")],
        [(NameOID.ORGANIZATION_NAME, PKI_ORGANISATION)],
        [(NameOID.ORGANIZATIONAL_UNIT_NAME, "IGC-SANTE DEV")],
        [(NameOID.COMMON_NAME, cn)],
    )
    b = (
        _builder(subject, parent, key, days=3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if parent is None else 0),
                       critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    signer = parent.key if parent is not None else key
    return _CA(b.sign(signer, hashes.SHA256()), key)


def _leaf(
    ca: _CA,
    subject: x509.Name,
    key: PrivateKey,
    *,
    eku: Iterable[x509.ObjectIdentifier],
    san: list[x509.GeneralName] | None = None,
    email: str | None = None,
    not_before: dt.datetime | None = None,
    days: int = 825,
) -> x509.Certificate:
    key_encipherment = isinstance(key, rsa.RSAPrivateKey)
    b = (
        _builder(subject, ca, key, days=days, not_before=not_before)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=key_encipherment, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    )
    names: list[x509.GeneralName] = list(san or [])
    if email:
        names.append(x509.RFC822Name(email))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(ca.key, hashes.SHA256())


def _crl(
    ca: _CA,
    revoked_serials: Iterable[int],
    *,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    last = last_update or _now()
    nxt = next_update or (last + dt.timedelta(days=30))
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(last)
        .next_update(nxt)
        .add_extension(x509.CRLNumber(int(last.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    for serial in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(last)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    return b.sign(ca.key, hashes.SHA256())


def make_crl(
    ca_cert: Path,
    ca_key: Path,
    out: Path,
    revoked_serials: Iterable[int] = (),
    *,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
) -> Path:
    """(Re)issue a CRL for a CA on disk; tests use it for expired or updated CRLs."""
    crl = _crl(_load_ca(ca_cert, ca_key), revoked_serials, last_update=last_update,
               next_update=next_update)
    out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return out


def _load_ca(ca_cert: Path, ca_key: Path) -> _CA:
    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("unsupported CA key type")
    return _CA(cert, key)


def make_root_ca(directory: Path, stem: str, cn: str) -> tuple[Path, Path]:
    """A self-signed CA written as `<stem>.pem` / `<stem>.key`: for tests, a
    PKI the server does not trust."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(cn, None)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert.write_bytes(_pem(ca.cert))
    _write_key(key, ca.key)
    return cert, key


def issue_card(
    directory: Path,
    stem: str,
    *,
    ca_cert: Path,
    ca_key: Path,
    idnat: str,
    surname: str,
    given_name: str,
    not_before: dt.datetime | None = None,
    days: int = 825,
) -> IssuedCert:
    """A practitioner card (CPS subject shape) issued by the CA on disk, as
    `<stem>.pem` (card, then the CA) / `<stem>.key`. `not_before` and
    `days` make expired or not-yet-valid cards for tests."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _load_ca(ca_cert, ca_key)
    key = _ec_key()
    name = _name(
        [(NameOID.COUNTRY_NAME, "FR")],
        [(NameOID.TITLE, "Médecin")],
        [(NameOID.COMMON_NAME, idnat), (NameOID.SURNAME, surname),
         (NameOID.GIVEN_NAME, given_name)],
    )
    cert = _leaf(ca, name, key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH], not_before=not_before,
                 days=days)
    return _write_issued(directory, stem, cert, key, ca, p12_password=None,
                         friendly_name=f"{surname} {given_name}")


def issue_organisation_certificate(
    ca_cert: Path,
    ca_key: Path,
    directory: Path,
    stem: str,
    *,
    common_name: str,
    structure_id: str,
    organisation: str = "Hopital de demonstration",
) -> IssuedCert:
    """One more organisation (APP) client certificate from a CA on disk,
    e.g. a second certificate of the same structure (same OU) to test that
    certificate pinning tells them apart. Writes DIR/STEM.pem (leaf, then
    the CA) and DIR/STEM.key."""
    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("unsupported CA key type")
    ca = _CA(cert, key)
    leaf_key = _ec_key()
    name = _name(
        [(NameOID.COUNTRY_NAME, "FR")],
        [(NameOID.ORGANIZATION_NAME, organisation)],
        [(NameOID.ORGANIZATIONAL_UNIT_NAME, structure_id)],
        [(NameOID.COMMON_NAME, common_name)],
    )
    leaf = _leaf(ca, name, leaf_key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    directory.mkdir(parents=True, exist_ok=True)
    return _write_issued(directory, stem, leaf, leaf_key, ca, p12_password=None,
                         friendly_name=common_name)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # also when the file already existed


def _write_issued(
    directory: Path,
    stem: str,
    cert: x509.Certificate,
    key: PrivateKey,
    ca: _CA,
    *,
    p12_password: str | None,
    friendly_name: str,
) -> IssuedCert:
    from certs.identity import rfc4514_subject

    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(_pem(cert) + _pem(ca.cert))
    _write_key(key_path, key)
    p12 = p12_nopass = None
    if p12_password is not None:
        p12 = directory / f"{stem}.p12"
        p12_nopass = directory / f"{stem}-nopass.p12"
        name = friendly_name.encode("utf-8")
        # Legacy-compatible PBES so older clients (and Thunderbird) import it.
        enc = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(p12_password.encode())
        )
        p12.write_bytes(pkcs12.serialize_key_and_certificates(name, key, cert, [ca.cert], enc))
        p12_nopass.write_bytes(
            pkcs12.serialize_key_and_certificates(
                name, key, cert, [ca.cert], serialization.NoEncryption()
            )
        )
        os.chmod(p12, 0o600)
        os.chmod(p12_nopass, 0o600)
    return IssuedCert(cert_path, key_path, p12, p12_nopass, rfc4514_subject(cert),
                      cert.serial_number)


def _san_for(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in hostnames:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def _is_ip(h: str) -> bool:
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return False
    return True


def operator_name(
    fqdn: str, *, structure_id: str, organisation: str, departement: str
) -> x509.Name:
    """`CN=<MTA FQDN>,OU=<structure id>,O=<organisation>,ST=<département>,C=FR`."""
    return _name(
        [(NameOID.COUNTRY_NAME, "FR")],
        [(NameOID.STATE_OR_PROVINCE_NAME, departement)],
        [(NameOID.ORGANIZATION_NAME, organisation)],
        [(NameOID.ORGANIZATIONAL_UNIT_NAME, structure_id)],
        [(NameOID.COMMON_NAME, fqdn)],
    )


def make_dev_pki(
    directory: Path,
    *,
    hostnames: list[str],
    domain: str,
    demo: bool,
    organisation: str = "Hopital de demonstration",
    structure_id: str = "1750000001",
    departement: str = "Paris (75)",
    p12_password: str | None = None,
) -> DevPKI:
    """Write a fresh PKI into `directory` (created; existing files replaced).

    `hostnames`: the server certificate's names; the first non-IP entry is the
    CN (the MTA's FQDN). Include "localhost" and "127.0.0.1" for local clients.
    """
    if not hostnames:
        raise ValueError("at least one host name is needed")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    domain = domain.lower()
    password = p12_password or secrets.token_urlsafe(12)

    # The domain in every CA name: two instances' CAs differ by name, so a
    # peer's CA can sit next to ours in `tls.ca_files` and a refusal says whose.
    root = _make_ca(f"{ROOT_CN} {domain}", None)
    persons = _make_ca(f"{PERSONS_CA_CN} {domain}", root)
    orgs = _make_ca(f"{ORGANISATIONS_CA_CN} {domain}", root)

    ca_bundle = directory / "ca.pem"
    ca_bundle.write_bytes(_pem(root.cert) + _pem(persons.cert) + _pem(orgs.cert))
    ca_paths = {}
    for stem, ca in (("root-ca", root), ("persons-ca", persons), ("organisations-ca", orgs)):
        (directory / f"{stem}.pem").write_bytes(_pem(ca.cert))
        _write_key(directory / f"{stem}.key", ca.key)
        ca_paths[stem] = (directory / f"{stem}.pem", directory / f"{stem}.key")

    fqdn = next((h for h in hostnames if not _is_ip(h)), hostnames[0])
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server_cert = _leaf(
        orgs,
        operator_name(fqdn, structure_id=structure_id, organisation=organisation,
                      departement=departement),
        server_key,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        san=_san_for(hostnames),
    )
    server = _write_issued(directory, "server", server_cert, server_key, orgs,
                           p12_password=None, friendly_name=fqdn)

    extra: dict[str, IssuedCert] = {}
    revoked_persons: list[int] = []
    if demo:
        client_eku = [ExtendedKeyUsageOID.CLIENT_AUTH]

        def card(stem: str, name: x509.Name, ca: _CA, email: str | None,
                 friendly: str) -> tuple[IssuedCert, x509.Certificate]:
            key = _ec_key()
            cert = _leaf(ca, name, key, eku=client_eku, email=email)
            return _write_issued(directory, stem, cert, key, ca, p12_password=password,
                                 friendly_name=friendly), cert

        # CPS card: CN=810002813839+SN=MARTIN+GN=PAUL,title=Médecin,C=FR
        extra["practitioner"], _ = card(
            "practitioner",
            _name(
                [(NameOID.COUNTRY_NAME, "FR")],
                [(NameOID.TITLE, "Médecin")],
                [(NameOID.COMMON_NAME, DEMO_PRACTITIONER_IDNAT), (NameOID.SURNAME, "MARTIN"),
                 (NameOID.GIVEN_NAME, "PAUL")],
            ),
            persons, f"{DEMO_PRACTITIONER_LOGIN}@{domain}", "MARTIN PAUL (CPS dev)",
        )
        # CPE card: C, O, OU, title, pseudonym, CN=<structure>/<number>
        extra["employee"], _ = card(
            "employee",
            _name(
                [(NameOID.COUNTRY_NAME, "FR")],
                [(NameOID.ORGANIZATION_NAME, organisation)],
                [(NameOID.ORGANIZATIONAL_UNIT_NAME, structure_id)],
                [(NameOID.TITLE, EMPLOYEE_CARD_TITLE)],
                [(NameOID.PSEUDONYM, "DUPONT CLAIRE")],
                [(NameOID.COMMON_NAME, DEMO_EMPLOYEE_IDNAT)],
            ),
            persons, None, "DUPONT CLAIRE (CPE dev)",
        )
        # Organisation certificate of an application (APP box).
        extra["organisation"], _ = card(
            "organisation",
            _name(
                [(NameOID.COUNTRY_NAME, "FR")],
                [(NameOID.ORGANIZATION_NAME, organisation)],
                [(NameOID.ORGANIZATIONAL_UNIT_NAME, structure_id)],
                [(NameOID.COMMON_NAME, f"{DEMO_APP_LOGIN}.{domain}")],
            ),
            orgs, f"{DEMO_APP_LOGIN}@{domain}", f"{DEMO_APP_LOGIN}.{domain} (dev)",
        )
        extra["revoked"], revoked_cert = card(
            "revoked",
            _name(
                [(NameOID.COUNTRY_NAME, "FR")],
                [(NameOID.TITLE, "Médecin")],
                [(NameOID.COMMON_NAME, DEMO_REVOKED_IDNAT), (NameOID.SURNAME, "REVOQUE"),
                 (NameOID.GIVEN_NAME, "JEAN")],
            ),
            persons, None, "REVOQUE JEAN (revoked, dev)",
        )
        revoked_persons.append(revoked_cert.serial_number)
        # Another operator's MTA, for inbound mutual TLS and whitelist tests.
        peer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        peer_cert = _leaf(
            orgs,
            operator_name("mx.operateur-pair.test", structure_id="1690000002",
                          organisation="Operateur pair de demonstration",
                          departement="Rhone (69)"),
            peer_key,
            eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            san=_san_for(["mx.operateur-pair.test", "localhost", "127.0.0.1"]),
        )
        extra["peer_operator"] = _write_issued(directory, "peer-operator", peer_cert, peer_key,
                                               orgs, p12_password=None,
                                               friendly_name="mx.operateur-pair.test")

    crl_files: list[Path] = []
    crl_bundle = b""
    for stem, ca, revoked in (
        ("root-ca", root, []),
        ("persons-ca", persons, revoked_persons),
        ("organisations-ca", orgs, []),
    ):
        pem = _crl(ca, revoked).public_bytes(serialization.Encoding.PEM)
        path = directory / f"{stem}.crl.pem"
        path.write_bytes(pem)
        crl_files.append(path)
        crl_bundle += pem
    crl = directory / "crl.pem"
    crl.write_bytes(crl_bundle)

    return DevPKI(
        directory=directory,
        ca_bundle=ca_bundle,
        root_cert=ca_paths["root-ca"][0],
        root_key=ca_paths["root-ca"][1],
        persons_ca_cert=ca_paths["persons-ca"][0],
        persons_ca_key=ca_paths["persons-ca"][1],
        organisations_ca_cert=ca_paths["organisations-ca"][0],
        organisations_ca_key=ca_paths["organisations-ca"][1],
        crl=crl,
        crl_files=tuple(crl_files),
        server=server,
        hostnames=tuple(hostnames),
        domain=domain,
        p12_password=password,
        **extra,
    )


__all__ = [
    "DEMO_APP_LOGIN",
    "DEMO_EMPLOYEE_IDNAT",
    "DEMO_EMPLOYEE_LOGIN",
    "DEMO_PRACTITIONER_IDNAT",
    "DEMO_PRACTITIONER_LOGIN",
    "DEMO_REVOKED_IDNAT",
    "DevPKI",
    "IssuedCert",
    "issue_card",
    "issue_organisation_certificate",
    "make_crl",
    "make_dev_pki",
    "make_root_ca",
    "operator_name",
]
