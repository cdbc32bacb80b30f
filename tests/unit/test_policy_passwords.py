"""policy.passwords: scrypt hashes and the verified-credentials cache."""

from __future__ import annotations

import pytest

from policy import passwords
from policy.passwords import VerifiedCache, hash_password, verify_password


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts real scrypt verifications."""
    calls = [0]
    real = passwords._scrypt_verify

    def spy(password: str, encoded: str) -> bool:
        calls[0] += 1
        return real(password, encoded)

    monkeypatch.setattr(passwords, "_scrypt_verify", spy)
    return calls


def test_hash_roundtrip_and_wrong_password() -> None:
    h = hash_password("s3cret", n=2**4)
    assert h.startswith("scrypt$16$8$1$")
    assert verify_password("s3cret", h, cache=VerifiedCache())
    assert not verify_password("s3cret!", h, cache=VerifiedCache())
    assert not verify_password("s3cret", "garbage", cache=VerifiedCache())
    assert not verify_password("s3cret", "bcrypt$1$2$3$4$5", cache=VerifiedCache())


def test_second_login_skips_scrypt(counting: list[int]) -> None:
    cache = VerifiedCache()
    h = hash_password("pw", n=2**4)
    assert verify_password("pw", h, cache=cache)
    assert verify_password("pw", h, cache=cache)
    assert verify_password("pw", h, cache=cache)
    assert counting[0] == 1


def test_wrong_password_refused_while_right_one_cached(counting: list[int]) -> None:
    cache = VerifiedCache()
    h = hash_password("pw", n=2**4)
    assert verify_password("pw", h, cache=cache)
    assert not verify_password("PW", h, cache=cache)
    assert not verify_password("", h, cache=cache)
    # Failures are never cached: each one costs a real verification.
    assert counting[0] == 3
    assert verify_password("pw", h, cache=cache)
    assert counting[0] == 3


def test_changed_hash_invalidates(counting: list[int]) -> None:
    cache = VerifiedCache()
    old = hash_password("old", n=2**4)
    assert verify_password("old", old, cache=cache)
    new = hash_password("new", n=2**4)  # the account row now carries this
    assert not verify_password("old", new, cache=cache)
    assert verify_password("new", new, cache=cache)
    # Re-setting the SAME password yields a new salt, so a new string: no hit.
    again = hash_password("new", n=2**4)
    before = counting[0]
    assert verify_password("new", again, cache=cache)
    assert counting[0] == before + 1


def test_entries_expire() -> None:
    now = [1000.0]
    cache = VerifiedCache(ttl=60, clock=lambda: now[0])
    h = hash_password("pw", n=2**4)
    cache.remember("pw", h)
    assert cache.hit("pw", h)
    now[0] += 61
    assert not cache.hit("pw", h)


def test_size_is_bounded() -> None:
    cache = VerifiedCache(size=2)
    hashes = [hash_password("pw", n=2**4) for _ in range(3)]
    for h in hashes:
        cache.remember("pw", h)
    assert not cache.hit("pw", hashes[0])
    assert cache.hit("pw", hashes[1]) and cache.hit("pw", hashes[2])


def test_disabled_cache_always_verifies(counting: list[int]) -> None:
    cache = VerifiedCache(ttl=0)
    h = hash_password("pw", n=2**4)
    assert verify_password("pw", h, cache=cache)
    assert verify_password("pw", h, cache=cache)
    assert counting[0] == 2


def test_cache_holds_no_password() -> None:
    cache = VerifiedCache()
    h = hash_password("very-secret-pw", n=2**4)
    cache.remember("very-secret-pw", h)
    stored = cache._entries[h][1]
    assert b"very-secret-pw" not in stored and len(stored) == 32


# ------------------------------------------------------------ through Policy


@pytest.fixture
def policy_env(tmp_path, settings_factory, store):  # type: ignore[no-untyped-def]
    from policy.audit import FileAuditSink
    from policy.decisions import Policy
    from storage.interface import AccountClass

    store.add_account("sec@hopital.test", "S", AccountClass.STAFF,
                      password_hash=hash_password("pw", n=2**4))
    audit = FileAuditSink(tmp_path / "audit.log")
    yield Policy(settings_factory(tmp_path), store, audit), store
    audit.close()


def _login(policy, password: str) -> bool:  # type: ignore[no-untyped-def]
    from conf.settings import ListenerRole
    from policy.decisions import Peer

    peer = Peer("127.0.0.1", 1234, "imap", ListenerRole.IMAP, tls=True, client_cert=None)
    return policy.authenticate_password(peer, "sec@hopital.test", password).identity is not None


def test_policy_cache_hit_still_checks_password_state_and_account(
    policy_env, counting: list[int]  # type: ignore[no-untyped-def]
) -> None:
    policy, store = policy_env
    assert _login(policy, "pw") and _login(policy, "pw")
    assert counting[0] == 1  # the second login came from the cache
    assert not _login(policy, "wrong")
    # A disabled account is refused even though its password is cached.
    store.set_account_active("sec@hopital.test", False)
    assert not _login(policy, "pw")
    store.set_account_active("sec@hopital.test", True)
    # A password change takes effect at once: the old one no longer works.
    store.set_password_hash("sec@hopital.test", hash_password("new", n=2**4))
    assert not _login(policy, "pw")
    assert _login(policy, "new")
    # Password cleared (certificate-only account): refused.
    store.set_password_hash("sec@hopital.test", None)
    assert not _login(policy, "new")


def test_unknown_login_costs_a_full_scrypt_whatever_the_password(
    policy_env, counting: list[int]  # type: ignore[no-untyped-def]
) -> None:
    """No password makes the decoy hash of unknown logins verify (and so be
    cached): every try of an unknown login costs a full scrypt."""
    from conf.settings import ListenerRole
    from policy.decisions import Peer

    policy, _ = policy_env
    peer = Peer("127.0.0.1", 1234, "imap", ListenerRole.IMAP, tls=True)
    for password in ("not a password", "not a password", "x"):
        assert policy.authenticate_password(peer, "nobody@hopital.test", password).identity is None
    assert counting[0] == 3
