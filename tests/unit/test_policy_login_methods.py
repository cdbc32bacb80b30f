"""Per-class login methods (`policy.login_methods`) and password + one-time
code logins, on Policy with a real SQLite store and the dev PKI."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509

from conf.settings import AuthMethod, ListenerRole, LoginMethodSettings, PolicySettings
from policy import totp
from policy.audit import FileAuditSink
from policy.decisions import Peer, Policy
from policy.passwords import hash_password
from storage.interface import AccountClass

D = "hopital.test"
PW = "battery staple 2"
NOW = dt.datetime(2026, 12, 7, 10, 0, 0, tzinfo=dt.UTC)
SECRET = b"\x07" * 20


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def peer(cert: Any = None) -> Peer:
    return Peer("127.0.0.1", 40000, "imaps", ListenerRole.IMAP, tls=True, client_cert=cert)


def cert_of(issued: Any) -> x509.Certificate:
    return x509.load_pem_x509_certificates(issued.cert.read_bytes())[0]


@pytest.fixture
def make(tmp_path, dev_pki, settings_factory, store):
    audits: list[FileAuditSink] = []

    def _make(**methods: list[str]) -> tuple[Policy, FileAuditSink, Clock]:
        settings = settings_factory(tmp_path, policy=PolicySettings(
            login_methods=LoginMethodSettings(**methods)))
        audit = FileAuditSink(None)
        audits.append(audit)
        clock = Clock()
        return Policy(settings, store, audit, clock=clock), audit, clock

    h = hash_password(PW, n=2**4)
    store.add_account(f"sec.durand@{D}", "S", AccountClass.STAFF, password_hash=h)
    store.add_account(f"dr.martin@{D}", "M", AccountClass.PRACTITIONER,
                      idnat="810002813839", password_hash=h)
    store.add_account(f"labo@{D}", "L", AccountClass.SYSTEM,
                      cert_subject=dev_pki.organisation.subject, password_hash=h)
    store.add_account(f"sec.dupont@{D}", "C", AccountClass.STAFF, idnat="3760021832/000000018")
    yield _make
    for a in audits:
        a.close()


def code(clock: Clock, delta_steps: int = 0) -> str:
    return totp.code_at(SECRET, totp.time_step(clock.now.timestamp()) + delta_steps)


def last(audit: FileAuditSink) -> Any:
    return audit.events[-1]


# ---------------------------------------------------------------- defaults


def test_production_defaults() -> None:
    m = LoginMethodSettings()
    assert m.allowed("practitioner") == {AuthMethod.CARD}
    assert m.allowed("system") == {AuthMethod.ORG_CERTIFICATE}
    assert m.allowed("staff") == {AuthMethod.PASSWORD_TOTP, AuthMethod.TOKEN}
    assert m.allowed("admin") == {AuthMethod.CARD, AuthMethod.PASSWORD_TOTP}
    assert AuthMethod.PASSWORD not in set().union(*(m.allowed(c) for c in
                                                    ("practitioner", "staff", "system", "admin")))


def test_password_login_classes_is_migrated_with_a_warning() -> None:
    p = PolicySettings(password_login_classes=["staff", "system"])
    assert p.login_methods.allowed("staff") == {AuthMethod.PASSWORD_TOTP, AuthMethod.TOKEN,
                                                AuthMethod.PASSWORD}
    assert p.login_methods.allowed("system") == {AuthMethod.ORG_CERTIFICATE, AuthMethod.PASSWORD}
    assert p.login_methods.allowed("practitioner") == {AuthMethod.CARD}
    assert "deprecated" in p.deprecations()[0]
    assert PolicySettings().deprecations() == []


# ---------------------------------------------------------------- method-not-allowed


@pytest.mark.parametrize(("login", "methods", "reason"), [
    (f"sec.durand@{D}", {"staff": ["password"]}, None),
    (f"sec.durand@{D}", {"staff": ["token", "password+totp"]}, "method-not-allowed"),
    (f"dr.martin@{D}", {}, "method-not-allowed"),  # practitioners: card only
    (f"labo@{D}", {}, "method-not-allowed"),  # systems: organisation certificate only
    (f"labo@{D}", {"system": ["org-certificate", "password"]}, None),
])
def test_password_alone(make, login, methods, reason) -> None:
    policy, audit, _ = make(**methods)
    r = policy.authenticate_password(peer(), login, PW)
    assert (r.decision.reason if r.identity is None else None) == reason
    ev = last(audit)
    assert ev.result == ("allow" if reason is None else "deny")
    if reason:
        assert ev.details["reason"] == reason and ev.details["auth_method"] == "password"
    else:
        assert ev.details["auth_method"] == "password"


def test_method_not_allowed_is_checked_after_the_password(make) -> None:
    """A wrong password is "bad-credentials" whatever the class allows:
    the method check reveals nothing to someone without the password."""
    policy, _, _ = make()
    r = policy.authenticate_password(peer(), f"dr.martin@{D}", "wrong")
    assert r.decision.reason == "bad-credentials"


@pytest.mark.parametrize(("who", "login", "methods", "reason", "auth_method"), [
    ("practitioner", f"dr.martin@{D}", {}, None, "card"),
    ("practitioner", f"dr.martin@{D}", {"practitioner": ["password"]}, "method-not-allowed", "card"),
    ("organisation", f"labo@{D}", {}, None, "org-certificate"),
    ("organisation", f"labo@{D}", {"system": ["card"]}, "method-not-allowed", "org-certificate"),
    ("employee", f"sec.dupont@{D}", {}, "method-not-allowed", "card"),  # staff: no card by default
    ("employee", f"sec.dupont@{D}", {"staff": ["card"]}, None, "card"),
])
def test_certificates_by_kind(make, dev_pki, who, login, methods, reason, auth_method) -> None:
    policy, audit, _ = make(**methods)
    r = policy.authenticate_certificate(peer(cert_of(getattr(dev_pki, who))), None)
    if reason is None:
        assert r.identity is not None and r.identity.name == login
    else:
        assert r.identity is None and r.decision.reason == reason
    ev = last(audit)
    assert ev.details["auth_method"] == auth_method
    assert ev.result == ("allow" if reason is None else "deny")


# ---------------------------------------------------------------- password + code


@pytest.fixture
def coded(make, store):
    policy, audit, clock = make(staff=["password+totp"])
    store.set_totp_secret(store.get_account(f"sec.durand@{D}").id, SECRET)
    return policy, audit, clock


def test_password_then_code(coded) -> None:
    policy, audit, clock = coded
    r = policy.authenticate_password(peer(), f"sec.durand@{D}", PW + code(clock))
    assert r.identity is not None and r.identity.method == "password+totp"
    ev = last(audit)
    assert ev.result == "allow" and ev.details["auth_method"] == "password+totp"


def test_a_code_is_accepted_once(coded) -> None:
    policy, audit, clock = coded
    login = f"sec.durand@{D}"
    assert policy.authenticate_password(peer(), login, PW + code(clock)).identity
    r = policy.authenticate_password(peer(), login, PW + code(clock))
    assert r.identity is None and r.decision.reason == "totp-replayed"
    assert last(audit).details["reason"] == "totp-replayed"
    # The previous step's code is older than the one used: refused too.
    r = policy.authenticate_password(peer(), login, PW + code(clock, -1))
    assert r.decision.reason == "totp-replayed"
    # The next step's code is fine (clock drift), once.
    assert policy.authenticate_password(peer(), login, PW + code(clock, +1)).identity
    clock.now += dt.timedelta(seconds=totp.PERIOD * 2)
    assert policy.authenticate_password(peer(), login, PW + code(clock)).identity


@pytest.mark.parametrize(("suffix", "reason"), [
    ("", "totp-missing"),  # the right password, no code
    ("000000", "totp-invalid"),  # (unless it happens to be the code)
    ("12345", "bad-credentials"),  # not 6 digits: the whole text is the password
])
def test_code_refusals(coded, suffix, reason) -> None:
    policy, audit, clock = coded
    if suffix == "000000" and code(clock) in ("000000",):
        pytest.fail("unlucky clock: pick another NOW")
    r = policy.authenticate_password(peer(), f"sec.durand@{D}", PW + suffix)
    assert r.identity is None and r.decision.reason == reason
    assert last(audit).details["reason"] == reason


def test_code_too_old_or_too_new(coded) -> None:
    policy, _, clock = coded
    for delta in (-2, 2):
        r = policy.authenticate_password(peer(), f"sec.durand@{D}", PW + code(clock, delta))
        assert r.decision.reason == "totp-invalid"


def test_wrong_password_with_the_right_code(coded) -> None:
    policy, _, clock = coded
    r = policy.authenticate_password(peer(), f"sec.durand@{D}", "wrong" + code(clock))
    assert r.decision.reason == "bad-credentials"


def test_without_a_secret_password_totp_alone_is_not_enough(make) -> None:
    policy, audit, _ = make(staff=["password+totp"])
    r = policy.authenticate_password(peer(), f"sec.durand@{D}", PW)
    assert r.decision.reason == "method-not-allowed"
    assert last(audit).details["auth_method"] == "password"


def test_enrolled_account_always_gives_its_code(make, store) -> None:
    """Where both "password" and "password+totp" are allowed, an account
    with a secret must still append its code."""
    policy, _, clock = make(staff=["password", "password+totp"])
    store.set_totp_secret(store.get_account(f"sec.durand@{D}").id, SECRET)
    assert policy.authenticate_password(peer(), f"sec.durand@{D}", PW).decision.reason == \
        "totp-missing"
    assert policy.authenticate_password(peer(), f"sec.durand@{D}", PW + code(clock)).identity


def test_codes_are_not_read_where_the_class_does_not_use_them(make, store) -> None:
    policy, _, _ = make(staff=["password"])
    store.set_totp_secret(store.get_account(f"sec.durand@{D}").id, SECRET)
    assert policy.authenticate_password(peer(), f"sec.durand@{D}", PW).identity


def test_audit_never_holds_the_password_or_code(coded) -> None:
    policy, audit, clock = coded
    c = code(clock)
    policy.authenticate_password(peer(), f"sec.durand@{D}", PW + c)
    policy.authenticate_password(peer(), f"sec.durand@{D}", PW + c)
    text = repr([(e.actor, e.details) for e in audit.events])
    assert PW not in text and c not in text and SECRET.hex() not in text
    assert all(e.result in ("allow", "deny") for e in audit.events)
    assert [e.details.get("reason") for e in audit.events] == [None, "totp-replayed"]
