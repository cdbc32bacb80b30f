"""Certificate pinning: fingerprints (certs.identity), the mapping
(policy.certmap) and Policy.authenticate_certificate with pins, against a
real SQLite store and certificates of the dev PKI."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certs.devpki import issue_organisation_certificate
from certs.identity import certificate_fingerprint, name_to_rfc4514, parse_fingerprint
from conf.settings import ListenerRole, PolicySettings
from policy.audit import FileAuditSink
from policy.certmap import match_certificate
from policy.decisions import Peer, Policy
from storage.interface import AccountClass

D = "hopital.test"
OU = "1750000042"


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


@pytest.fixture(scope="module")
def same_ou(dev_pki: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """Two organisation certificates of one structure (same OU, same CA)."""
    directory = tmp_path_factory.mktemp("org-certs")
    return tuple(  # type: ignore[return-value]
        issue_organisation_certificate(
            dev_pki.organisations_ca_cert, dev_pki.organisations_ca_key, directory, stem,
            common_name=f"{stem}.{D}", structure_id=OU)
        for stem in ("app1", "app2"))


def peer(cert: x509.Certificate | None) -> Peer:
    return Peer("192.0.2.30", 40000, "imaps", ListenerRole.IMAP, tls=True, client_cert=cert)


def make_policy(tmp_path: Path, settings_factory: Any, store: Any, **policy: Any
                ) -> tuple[Policy, FileAuditSink]:
    audit = FileAuditSink(None)
    settings = settings_factory(tmp_path, policy=PolicySettings(**policy))
    return Policy(settings, store, audit), audit


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_is_what_openssl_prints(same_ou: Any) -> None:
    app1 = same_ou[0]
    fp = certificate_fingerprint(load(app1.cert))
    assert len(fp) == 64 and fp == fp.lower()
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                          str(app1.cert)], capture_output=True, text=True, check=True).stdout
    assert parse_fingerprint(out) == fp


@pytest.mark.parametrize("text", [
    "AB" * 32, "ab" * 32, ":".join(["AB"] * 32), "sha256 Fingerprint=" + ":".join(["aB"] * 32),
    "SHA256:" + "ab" * 32, "  " + "ab" * 32 + "\n",
])
def test_parse_fingerprint_forms(text: str) -> None:
    assert parse_fingerprint(text) == "ab" * 32


@pytest.mark.parametrize("text", ["", "ab" * 31, "ab" * 33, "zz" * 32, "ab:" * 32, "sha1:" + "ab" * 20])
def test_parse_fingerprint_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fingerprint(text)


# ---------------------------------------------------------------- the mapping


def test_without_pins_any_certificate_of_the_structure_maps(store: Any, same_ou: Any) -> None:
    """What pinning is for: the OU alone lets every certificate in."""
    app = store.add_account(f"app@{D}", "App", AccountClass.SYSTEM, cert_subject=OU)
    for issued in same_ou:
        m = match_certificate(store, load(issued.cert), require_org_pinning=False)
        assert (m.account, m.refusal, m.pinned) == (app, None, False)


def test_a_pinned_account_takes_only_its_certificate(store: Any, same_ou: Any) -> None:
    app1, app2 = (load(i.cert) for i in same_ou)
    app = store.add_account(f"app@{D}", "App", AccountClass.SYSTEM, cert_subject=OU,
                            cert_pins=[certificate_fingerprint(app1)])
    m = match_certificate(store, app1, require_org_pinning=False)
    assert (m.account, m.refusal, m.pinned) == (app, None, True)
    m = match_certificate(store, app2, require_org_pinning=False)
    assert (m.account, m.refusal, m.pinned) == (app, "certificate-not-pinned", False)
    assert m.fingerprint == certificate_fingerprint(app2)


def test_two_boxes_of_one_structure_each_with_its_certificate(store: Any, same_ou: Any) -> None:
    """Pins map first: two APP boxes sharing the OU each get their own."""
    app1, app2 = (load(i.cert) for i in same_ou)
    a = store.add_account(f"app-a@{D}", "A", AccountClass.SYSTEM, cert_subject=OU,
                          cert_pins=[certificate_fingerprint(app1)])
    b = store.add_account(f"app-b@{D}", "B", AccountClass.SYSTEM, cert_subject=OU,
                          cert_pins=[certificate_fingerprint(app2)])
    assert match_certificate(store, app1, require_org_pinning=True).account == a
    assert match_certificate(store, app2, require_org_pinning=True).account == b


def test_required_pinning_spares_person_cards(store: Any, dev_pki: Any, same_ou: Any) -> None:
    martin = store.add_account(f"dr.martin@{D}", "M", AccountClass.PRACTITIONER,
                               idnat="810002813839")
    app = store.add_account(f"app@{D}", "App", AccountClass.SYSTEM, cert_subject=OU)
    m = match_certificate(store, load(dev_pki.practitioner.cert), require_org_pinning=True)
    assert (m.account, m.refusal) == (martin, None)
    m = match_certificate(store, load(same_ou[0].cert), require_org_pinning=True)
    assert (m.account, m.refusal) == (app, "certificate-not-pinned")
    # Also an organisation certificate bound by its exact subject.
    labo = store.add_account(f"labo@{D}", "L", AccountClass.SYSTEM,
                             cert_subject=dev_pki.organisation.subject)
    m = match_certificate(store, load(dev_pki.organisation.cert), require_org_pinning=True)
    assert (m.account, m.refusal) == (labo, "certificate-not-pinned")


# ---------------------------------------------------------------- through Policy


def test_policy_refuses_and_audits_an_unpinned_certificate(
    tmp_path: Path, settings_factory: Any, store: Any, same_ou: Any, dev_pki: Any
) -> None:
    app1, app2 = (load(i.cert) for i in same_ou)
    store.add_account(f"app@{D}", "App", AccountClass.SYSTEM, cert_subject=OU,
                      cert_pins=[certificate_fingerprint(app1)])
    policy, audit = make_policy(tmp_path, settings_factory, store)
    ok = policy.authenticate_certificate(peer(app1), f"app@{D}")
    assert ok.identity is not None and ok.identity.name == f"app@{D}"
    before = len(audit.events)
    r = policy.authenticate_certificate(peer(app2), None)
    assert r.identity is None and r.decision.reason == "certificate-not-pinned"
    (ev,) = audit.events[before:]
    assert (ev.actor, ev.action, ev.result) == (same_ou[1].subject, "login", "deny")
    assert ev.details["reason"] == "certificate-not-pinned"
    assert ev.details["fingerprint"] == certificate_fingerprint(app2)
    assert ev.details["issuer"] == name_to_rfc4514(load(dev_pki.organisations_ca_cert).subject)
    assert ev.details["account"] == f"app@{D}"
    # Nothing secret: no key material, no certificate body.
    assert "BEGIN" not in repr(ev.details) and same_ou[1].key.read_text() not in repr(ev.details)
    # A refused certificate counts against its address (policy.throttle).
    (addr,) = store.list_login_failures()
    assert addr.subject == "192.0.2.30" and len(addr.recent) == 1


def test_require_org_cert_pinning_setting(
    tmp_path: Path, settings_factory: Any, store: Any, same_ou: Any
) -> None:
    app1 = load(same_ou[0].cert)
    store.add_account(f"app@{D}", "App", AccountClass.SYSTEM, cert_subject=OU)
    loose, _ = make_policy(tmp_path, settings_factory, store)
    strict, _ = make_policy(tmp_path, settings_factory, store, require_org_cert_pinning=True)
    assert loose.authenticate_certificate(peer(app1), None).identity is not None
    assert strict.authenticate_certificate(peer(app1), None).decision.reason == \
        "certificate-not-pinned"
    store.add_cert_pin(f"app@{D}", certificate_fingerprint(app1))
    assert strict.authenticate_certificate(peer(app1), None).identity is not None
    # Unpinned again: refused again.
    store.remove_cert_pins(f"app@{D}")
    assert strict.authenticate_certificate(peer(app1), None).decision.reason == \
        "certificate-not-pinned"
