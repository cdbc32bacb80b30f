"""Who a certificate says it is: health-card and organisation subjects.

Pure functions over `cryptography` certificates (no TLS, no storage), so the
policy can map a verified client certificate onto an account.

Subject shapes handled (REFERENCE.md):
- practitioner card (CPS): ``CN=810002813839+SN=MARTIN+GN=PAUL,title=Médecin,C=FR``,
  the CN being IdNat_PS ("8" + RPPS, "0" + ADELI, 1/3/4/5/6 other staff);
- older cards: ``GN=…+SN=…+CN=00B7010446,OU=Masseur-Kinésithérapeute,…`` (the
  profession in OU rather than title);
- employee card (CPE): ``…,O=<establishment>,OU=<structure id>,title=Carte de
  service santé ou social,pseudonym=…,CN=3760021832/000000018``;
- organisation (APP) and server/operator certificates:
  ``CN=<fqdn>,OU=<structure id>,O=<organisation>[,ST=<département>],C=FR``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CardKind = Literal["practitioner-card", "employee-card", "organisation", "server", "unknown"]
IdNatKind = Literal["RPPS", "ADELI", "other"]

# Attribute names as the national PKI writes them; without these overrides
# `cryptography` prints e.g. "2.5.4.4=MARTIN" for SN.
_NAMES: dict[x509.ObjectIdentifier, str] = {
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "title",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}

# IdNat_PS of a person card: a type digit then the number (ADELI numbers may
# carry letters, e.g. Corsica "2A"/"2B", and old cards "00B7010446").
_IDNAT_PERSON = re.compile(r"[0-9][0-9A-Z]{5,20}")
# Employee card: "<type digit + structure number>/<internal number>".
_IDNAT_EMPLOYEE = re.compile(r"([0-9][0-9A-Z]{5,20})/([0-9A-Z]{1,30})")
# Structure identifiers in OU: FINESS/SIREN/SIRET-like, upper-case and digits,
# sometimes grouped with spaces ("0002 187512751").
_STRUCTURE_ID = re.compile(r"[0-9A-Z][0-9A-Z ./-]*[0-9A-Z]|[0-9A-Z]")
_IDNAT_PREFIX_KIND: dict[str, IdNatKind] = {"8": "RPPS", "0": "ADELI"}
EMPLOYEE_CARD_TITLE = "Carte de service santé ou social"


@dataclass(frozen=True, slots=True)
class CertIdentity:
    subject: str  # RFC 4514, most specific RDN first (see rfc4514_subject)
    idnat: str | None  # IdNat_PS for cards, else None
    kind: CardKind
    organisation_id: str | None  # structure id (OU), or the employee card's structure part
    common_name: str | None
    profession: str | None = None  # title (or OU on older cards)
    idnat_kind: IdNatKind | None = None  # RPPS / ADELI / other staff, for person cards
    surname: str | None = None
    given_name: str | None = None
    organisation: str | None = None  # O
    issuer: str = ""
    serial: int = 0


def rfc4514_subject(cert: x509.Certificate) -> str:
    """The subject as one canonical RFC 4514 string, the form stored in
    `Account.cert_subject` and compared with whitelist DNs."""
    return name_to_rfc4514(cert.subject)


# Inside a multi-valued RDN, DER sorts the attributes by encoding (so a card
# parses as GN+SN+CN); print them the way the national PKI documents them.
_RDN_ORDER = {NameOID.COMMON_NAME: 0, NameOID.SURNAME: 1, NameOID.GIVEN_NAME: 2}


def name_to_rfc4514(name: x509.Name) -> str:
    """RFC 4514, most specific RDN first, readable attribute names, and
    multi-valued RDNs in the order CN, SN, GN, others."""
    rdns = []
    for rdn in reversed(name.rdns):
        attrs = sorted(rdn, key=lambda a: _RDN_ORDER.get(a.oid, 3))
        rdns.append("+".join(a.rfc4514_string(_NAMES) for a in attrs))
    return ",".join(rdns)


_PARSE_NAMES = {v: k for k, v in _NAMES.items()} | {"G": NameOID.GIVEN_NAME,
                                                      "S": NameOID.STATE_OR_PROVINCE_NAME}


def canonical_subject(dn: str) -> str:
    """A typed DN (e.g. ``mssctl account add --cert-subject``) in the form
    `rfc4514_subject` prints, so that it matches at login. Raises ValueError."""
    return name_to_rfc4514(x509.Name.from_rfc4514_string(dn.strip(), _PARSE_NAMES))


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, 64 lower-case hex digits: the form
    pinned to accounts (`mssctl account pin`)."""
    return cert.fingerprint(hashes.SHA256()).hex()


_HEX_GROUPS = re.compile(r"[0-9a-f]{2}(?:[: ]?[0-9a-f]{2}){31}")


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as people copy it (``openssl x509 -fingerprint
    -sha256`` prints ``sha256 Fingerprint=AB:CD:…``; bare hex, with or
    without colons) in the stored form. Raises ValueError."""
    value = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        if value.startswith(prefix):
            value = value[len(prefix):].strip()
    if not _HEX_GROUPS.fullmatch(value):
        raise ValueError("not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return value.replace(":", "").replace(" ", "")


def _values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    out = []
    for attr in name.get_attributes_for_oid(oid):
        v = attr.value
        out.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
    return out


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = _values(name, oid)
    return values[0].strip() if values else None


def _is_structure_id(value: str) -> bool:
    return bool(_STRUCTURE_ID.fullmatch(value)) and any(c.isdigit() for c in value)


def _has_server_auth(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in eku


def classify_idnat(idnat: str) -> IdNatKind:
    return _IDNAT_PREFIX_KIND.get(idnat[:1], "other")


def identity_from_certificate(cert: x509.Certificate) -> CertIdentity:
    """Read a certificate's subject; never raises on odd subjects (kind
    "unknown" then). The chain must have been verified by the caller."""
    name = cert.subject
    cn = _first(name, NameOID.COMMON_NAME)
    ous = [v.strip() for v in _values(name, NameOID.ORGANIZATIONAL_UNIT_NAME)]
    structure_ous = [v for v in ous if _is_structure_id(v)]
    other_ous = [v for v in ous if not _is_structure_id(v)]
    title = _first(name, NameOID.TITLE)
    organisation = _first(name, NameOID.ORGANIZATION_NAME)
    organisation_id = structure_ous[0] if structure_ous else None

    kind: CardKind = "unknown"
    idnat: str | None = None
    idnat_kind: IdNatKind | None = None
    profession: str | None = None
    employee = _IDNAT_EMPLOYEE.fullmatch(cn or "")

    if _has_server_auth(cert):
        # Operator MTAs: serverAuth (+clientAuth for mutual TLS); never a person.
        kind = "server"
    elif employee is not None or (title or "").casefold() == EMPLOYEE_CARD_TITLE.casefold():
        kind = "employee-card"
        if employee is not None:
            idnat = cn
            idnat_kind = classify_idnat(employee.group(1))
            organisation_id = organisation_id or employee.group(1)
        profession = title
    elif cn is not None and _IDNAT_PERSON.fullmatch(cn):
        kind = "practitioner-card"
        idnat = cn
        idnat_kind = classify_idnat(cn)
        # Older cards carry the profession in OU, newer ones in title.
        profession = title or (other_ous[0] if other_ous else None)
    elif organisation is not None or organisation_id is not None:
        kind = "organisation"

    return CertIdentity(
        subject=rfc4514_subject(cert),
        idnat=idnat,
        kind=kind,
        organisation_id=organisation_id,
        common_name=cn,
        profession=profession,
        idnat_kind=idnat_kind,
        surname=_first(name, NameOID.SURNAME),
        given_name=_first(name, NameOID.GIVEN_NAME),
        organisation=organisation,
        issuer=name_to_rfc4514(cert.issuer),
        serial=cert.serial_number,
    )


__all__ = [
    "CardKind",
    "CertIdentity",
    "canonical_subject",
    "certificate_fingerprint",
    "classify_idnat",
    "identity_from_certificate",
    "name_to_rfc4514",
    "parse_fingerprint",
    "rfc4514_subject",
]
