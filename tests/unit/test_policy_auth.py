"""policy.auth: the twisted.cred portal over Policy (InlineRunner: synchronous)."""

from __future__ import annotations

import pytest
from cryptography import x509
from twisted.cred.error import UnhandledCredentials
from twisted.python.failure import Failure

from conf.settings import ListenerRole
from policy.audit import FileAuditSink
from policy.auth import Authenticator, CertificateCredentials, LoginRefused, PasswordCredentials
from policy.decisions import Identity, Peer, Policy
from policy.passwords import hash_password
from storage.interface import AccountClass, MailboxType, StoreUnavailable
from storage.threaded import InlineRunner

D = "hopital.test"


def outcome(d):
    out = []
    d.addBoth(out.append)
    assert out, "InlineRunner must fire synchronously"
    return out[0]


@pytest.fixture
def env(tmp_path, dev_pki, settings_factory, store):
    acc = store.add_account(f"sec.durand@{D}", "S", AccountClass.STAFF,
                            password_hash=hash_password("pw", n=2**10))
    store.add_mailbox(acc.login, MailboxType.PER, owner_account_id=acc.id)
    store.add_account(f"dr.martin@{D}", "M", AccountClass.PRACTITIONER, idnat="810002813839")
    audit = FileAuditSink(tmp_path / "audit.log")
    policy = Policy(settings_factory(tmp_path), store, audit)
    yield Authenticator(policy, InlineRunner()), audit, dev_pki, store
    audit.close()


def peer(cert=None):
    return Peer("127.0.0.1", 1234, "imap", ListenerRole.IMAP, tls=True, client_cert=cert)


def test_password_login(env):
    auth, audit, _, _ = env
    ident = outcome(auth.login(PasswordCredentials(peer(), f"sec.durand@{D}", "pw")))
    assert isinstance(ident, Identity) and ident.name == f"sec.durand@{D}"
    assert audit.events[-1].result == "allow"


def test_password_refused_carries_reason(env):
    auth, audit, _, _ = env
    f = outcome(auth.login(PasswordCredentials(peer(), f"sec.durand@{D}", "nope")))
    assert isinstance(f, Failure) and f.check(LoginRefused)
    assert f.value.decision.reason == "bad-credentials"
    assert len(audit.events) == 1


def test_certificate_login(env):
    auth, _, pki, _ = env
    card = x509.load_pem_x509_certificates(pki.practitioner.cert.read_bytes())[0]
    ident = outcome(auth.login(CertificateCredentials(peer(card), f"dr.martin@{D}")))
    assert ident.name == f"dr.martin@{D}" and ident.method == "external"
    f = outcome(auth.login(CertificateCredentials(peer(card), f"sec.durand@{D}")))
    assert f.check(LoginRefused) and f.value.decision.reason == "authzid-mismatch"
    f = outcome(auth.login(CertificateCredentials(peer(None), None)))
    assert f.value.decision.reason == "no-certificate"


def test_unknown_credentials_type(env):
    auth, _, _, _ = env

    class Other:
        pass

    f = outcome(auth.login(Other()))
    assert f.check(UnhandledCredentials)


def test_store_failure_is_not_a_refusal(env, tmp_path):
    """A broken database must surface as an error (protocols answer 4xx /
    NO [UNAVAILABLE]), never as "bad credentials"."""
    auth, audit, _, store = env
    store.close()  # drops pooled connections; the next call opens the file again...
    for p in tmp_path.glob("mss.db*"):
        p.unlink()  # ...and finds no schema
    f = outcome(auth.login(PasswordCredentials(peer(), f"sec.durand@{D}", "pw")))
    assert isinstance(f, Failure)
    assert f.check(StoreUnavailable) and not f.check(LoginRefused)
    assert audit.events == []  # no decision was made
