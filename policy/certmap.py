"""Which account a verified client certificate logs in as (SASL EXTERNAL).

Mapping, in order:

1. a pinned fingerprint (`mssctl account pin`): exactly this certificate was
   bound to an account;
2. a card's IdNat_PS (`Account.idnat`);
3. the exact subject (`Account.cert_subject`, as
   `certs.identity.rfc4514_subject` prints it);
4. for organisation certificates only, the organisation id (OU) in
   `Account.cert_subject`. A card never maps through its OU: an employee of
   the structure must not become the structure's APP box.

Pinning: every certificate of a structure carries its OU, so without pins
any certificate the organisation CA issues to that structure becomes its APP
account. An account with pins accepts only its pinned certificates (found
through 2-4 with another fingerprint: refused, `certificate-not-pinned`).
With `policy.require_org_cert_pinning`, a certificate that is not a person
card maps only through a pin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from certs.identity import CertIdentity, certificate_fingerprint, identity_from_certificate
from policy.reasons import Reason
from storage.interface import Account, MessageStore

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

PERSON_CARDS = ("practitioner-card", "employee-card")
NOT_PINNED = Reason.CERTIFICATE_NOT_PINNED
UNKNOWN = Reason.UNKNOWN_CERTIFICATE


@dataclass(frozen=True, slots=True)
class CertificateMatch:
    identity: CertIdentity
    fingerprint: str  # SHA-256, lower-case hex
    # The account the certificate names (also when refused as not pinned).
    account: Account | None
    pinned: bool  # found through its pin
    refusal: str | None = None  # None (mapped), UNKNOWN or NOT_PINNED


def match_certificate(
    store: MessageStore, cert: Certificate, *, require_org_pinning: bool
) -> CertificateMatch:
    cid = identity_from_certificate(cert)
    fingerprint = certificate_fingerprint(cert)
    account = store.find_account_by_cert_pin(fingerprint)
    if account is not None:
        return CertificateMatch(cid, fingerprint, account, pinned=True)
    card = cid.kind in PERSON_CARDS
    if cid.idnat and card:
        account = store.find_account_by_idnat(cid.idnat)
    if account is None:
        account = store.find_account_by_cert_subject(cid.subject)
    if account is None and cid.kind == "organisation" and cid.organisation_id:
        account = store.find_account_by_cert_subject(cid.organisation_id)
    if account is None:
        return CertificateMatch(cid, fingerprint, None, pinned=False, refusal=UNKNOWN)
    if (require_org_pinning and not card) or store.cert_pins(account.id):
        return CertificateMatch(cid, fingerprint, account, pinned=False, refusal=NOT_PINNED)
    return CertificateMatch(cid, fingerprint, account, pinned=False)


__all__ = ["NOT_PINNED", "PERSON_CARDS", "UNKNOWN", "CertificateMatch", "match_certificate"]
