"""policy.throttle: the lockout rule (pure, on an injected clock), and the
throttle as Policy uses it against a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from store_support import TEST_LOGIN_METHODS

from conf.settings import ListenerRole, LockoutSettings, PolicySettings
from policy import passwords
from policy.audit import FileAuditSink
from policy.decisions import Peer, Policy
from policy.passwords import hash_password
from policy.throttle import Rule
from storage import open_store
from storage.interface import AccountClass, LoginFailures, ThrottleScope

D = "hopital.test"
PW = "correct horse battery staple"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = (ThrottleScope.ACCOUNT, f"sec@{D}")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# ---------------------------------------------------------------- the rule (pure)

RULE = Rule(threshold=10, window=900.0, base_delay=60.0, max_delay=3600.0)


def fail(rule: Rule, state: LoginFailures | None, when: datetime) -> LoginFailures:
    return rule.after_failure(KEY, state, when)


def test_threshold_failures_within_the_window_lock_for_the_base_delay() -> None:
    state = None
    for i in range(9):
        state = fail(RULE, state, T0 + timedelta(seconds=i))
        assert state.locked_until is None and state.level == 0
    state = fail(RULE, state, T0 + timedelta(seconds=9))
    assert state.level == 1
    assert state.locked_until == T0 + timedelta(seconds=9 + 60)
    assert RULE.locked(state, T0 + timedelta(seconds=68))
    assert not RULE.locked(state, T0 + timedelta(seconds=69))


def test_failures_spread_wider_than_the_window_never_lock() -> None:
    # One failure every 100 s: at most 9 inside any 900 s window.
    state = None
    for i in range(200):
        state = fail(RULE, state, T0 + timedelta(seconds=100 * i))
        assert state.locked_until is None
    # Only the failures inside the window are kept.
    assert state is not None and len(state.recent) == 9
    # One every 90 s: the tenth is inside the window of the first, and locks.
    state = None
    for i in range(10):
        state = fail(RULE, state, T0 + timedelta(seconds=90 * i))
    assert state is not None and state.level == 1


def test_each_further_failure_doubles_the_lock_up_to_the_maximum() -> None:
    state = None
    for i in range(10):
        state = fail(RULE, state, T0 + timedelta(seconds=i))
    assert state is not None
    delays = [60.0]
    for _ in range(8):
        assert state.locked_until is not None
        when = state.locked_until + timedelta(seconds=1)  # just after the lock ended
        state = fail(RULE, state, when)
        assert state.locked_until is not None
        delays.append((state.locked_until - when).total_seconds())
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert state.level == 9


def test_a_failure_while_locked_counts_but_leaves_the_lock() -> None:
    state = None
    for i in range(10):
        state = fail(RULE, state, T0 + timedelta(seconds=i))
    assert state is not None
    again = fail(RULE, state, T0 + timedelta(seconds=30))
    assert (again.locked_until, again.level) == (state.locked_until, state.level)
    assert again.recent[-1] == again.last_failure == T0 + timedelta(seconds=30)
    assert RULE.counted(again, again.last_failure) == 10


def test_a_quiet_window_after_the_lock_forgets_everything() -> None:
    state = None
    for i in range(10):
        state = fail(RULE, state, T0 + timedelta(seconds=i))
    assert state is not None and state.locked_until is not None
    end = state.locked_until
    # Within a window of the lock's end: the doubling goes on.
    assert fail(RULE, state, end + timedelta(seconds=899)).level == 2
    assert not RULE.forgotten(state, end + timedelta(seconds=899))
    # A whole window of quiet after it: a fresh start.
    assert RULE.forgotten(state, end + timedelta(seconds=900))
    fresh = fail(RULE, state, end + timedelta(seconds=900))
    assert (fresh.recent, fresh.level, fresh.locked_until) == ((fresh.last_failure,), 0, None)


def test_delay_never_overflows() -> None:
    assert RULE.delay(1) == 60 and RULE.delay(10_000) == 3600


# ---------------------------------------------------------------- through Policy

FAST = {"account_failures": 3, "address_failures": 5, "window": 900.0, "base_delay": 60.0,
        "max_delay": 3600.0, "address_max_delay": 300.0}


def peer(address: str = "192.0.2.10", cert: Any = None, listener: str = "imap") -> Peer:
    return Peer(address, 40000, listener, ListenerRole.IMAP, tls=True, client_cert=cert)


class World:
    def __init__(self, tmp_path: Path, settings_factory: Any, store: Any, **lockout: Any) -> None:
        self.clock = Clock()
        self.store = store
        self.settings = settings_factory(
            tmp_path, policy=PolicySettings(lockout=LockoutSettings(**(FAST | lockout)),
                                         login_methods=TEST_LOGIN_METHODS))
        self.audit = FileAuditSink(None)
        self.policy = Policy(self.settings, store, self.audit, clock=self.clock)
        self.hash = hash_password(PW, n=2**4)
        for name in ("sec", "other", "third"):
            store.add_account(f"{name}@{D}", name, AccountClass.STAFF, password_hash=self.hash)

    def login(self, login: str = f"sec@{D}", password: str = PW,
              address: str = "192.0.2.10") -> Any:
        return self.policy.authenticate_password(peer(address), login, password)

    def events(self, action: str | None = None) -> list[Any]:
        return [e for e in self.audit.events if action is None or e.action == action]


@pytest.fixture
def w(tmp_path: Path, settings_factory: Any, store: Any) -> World:
    return World(tmp_path, settings_factory, store)


def test_account_lock_refuses_the_right_password_like_a_wrong_one(w: World) -> None:
    for _ in range(3):
        assert w.login(password="wrong").decision.reason == "bad-credentials"
    locks = w.events("lock")
    assert len(locks) == 1
    assert (locks[0].actor, locks[0].target, locks[0].result) == (f"sec@{D}", f"sec@{D}", "locked")
    assert locks[0].details["scope"] == "account"
    assert locks[0].details["until"] == (T0 + timedelta(seconds=60)).isoformat()
    before = len(w.audit.events)
    r = w.login()  # the right password
    assert r.identity is None and r.decision.reason == "account-locked"
    # One event, saying "locked" and until when; no failure counted.
    (ev,) = w.audit.events[before:]
    assert (ev.action, ev.result, ev.details["reason"]) == ("login", "locked", "account-locked")
    assert ev.details["until"] == (T0 + timedelta(seconds=60)).isoformat()
    (state,) = w.store.login_failures([(ThrottleScope.ACCOUNT, f"sec@{D}")])
    assert (len(state.recent), state.level, state.refused) == (3, 1, 1)
    # Another account from the same address is not affected.
    assert w.login(f"other@{D}").identity is not None
    # After the lock: the right password works and clears the account's count,
    # not the address's.
    w.clock.advance(60)
    assert w.login().identity is not None
    assert w.store.login_failures([(ThrottleScope.ACCOUNT, f"sec@{D}")]) == []
    (addr,) = w.store.login_failures([(ThrottleScope.ADDRESS, "192.0.2.10")])
    assert (len(addr.recent), addr.level) == (3, 0)


def test_the_login_name_counts_as_policy_reads_it(w: World) -> None:
    for login in (f"SEC@{D}", f" sec@{D.upper()} ", f"Sec@{D}"):
        w.login(login, "wrong")
    assert w.login().decision.reason == "account-locked"


def test_locked_login_costs_what_a_wrong_password_costs(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While locked the password is still hashed in full against the
    account's own hash (even a right one the cache would answer at once),
    the account is read, and the throttle writes once, as for a failure."""
    verified: list[str] = []
    real = passwords._scrypt_verify

    def spy(password: str, encoded: str) -> bool:
        verified.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(passwords, "_scrypt_verify", spy)
    writes: list[tuple[Any, ...]] = []
    reads: list[str] = []
    store_update, store_get = w.store.update_login_failures, w.store.get_account
    monkeypatch.setattr(w.store, "update_login_failures",
                        lambda keys, fn: writes.append(tuple(keys)) or store_update(keys, fn))
    monkeypatch.setattr(w.store, "get_account",
                        lambda login: reads.append(login) or store_get(login))
    assert w.login().identity is not None  # the right password is now cached
    verified.clear()
    assert w.login().identity is not None
    assert verified == []  # cache hit: no scrypt
    writes.clear(), reads.clear()
    for _ in range(3):
        w.login(password="wrong")
    wrong = (len(verified), len(writes), len(reads))
    assert wrong == (3, 3, 3)
    verified.clear(), writes.clear(), reads.clear()
    assert w.login().decision.reason == "account-locked"
    assert verified == [w.hash]  # a full hash, not the cache
    assert (len(writes), len(reads)) == (1, 1)
    assert writes[0] == ((ThrottleScope.ACCOUNT, f"sec@{D}"), (ThrottleScope.ADDRESS, "192.0.2.10"))
    # An unknown login, locked too, hashes against a decoy of the same kind.
    verified.clear()
    for _ in range(3):
        w.login(f"nobody@{D}", "x", address="192.0.2.99")
    verified.clear()
    assert w.login(f"nobody@{D}", "x", address="192.0.2.99").decision.reason == "account-locked"
    assert len(verified) == 1 and verified[0].startswith("scrypt$")


def test_address_lock_covers_every_account_but_not_certificates(
    tmp_path: Path, settings_factory: Any, store: Any, dev_pki: Any
) -> None:
    w = World(tmp_path, settings_factory, store, account_failures=0)
    org = x509.load_pem_x509_certificates(dev_pki.organisation.cert.read_bytes())[0]
    store.add_account(f"labo@{D}", "Labo", AccountClass.SYSTEM,
                      cert_subject=dev_pki.organisation.subject)
    for i in range(5):  # password spraying: one try per account name
        w.login(f"user{i}@{D}", "guess")
    (lock,) = w.events("lock")
    assert (lock.target, lock.details["scope"]) == ("192.0.2.10", "address")
    r = w.login(f"other@{D}")
    assert r.identity is None and r.decision.reason == "address-locked"
    # A certificate that maps still logs in from the locked address.
    ok = w.policy.authenticate_certificate(peer(cert=org), None)
    assert ok.identity is not None and ok.identity.account.login == f"labo@{D}"
    # Another address is not locked; account scope is off here.
    assert w.login(f"other@{D}", address="192.0.2.11").identity is not None
    assert w.store.list_login_failures(ThrottleScope.ACCOUNT) == []


def test_address_lock_is_capped_shorter_than_account_locks(
    tmp_path: Path, settings_factory: Any, store: Any
) -> None:
    w = World(tmp_path, settings_factory, store)
    for i in range(5):
        w.login(f"user{i}@{D}", "guess")
    for i in range(6):  # the streak goes on: 60, 120, 240, then the 300 s cap
        (state,) = w.store.login_failures([(ThrottleScope.ADDRESS, "192.0.2.10")])
        assert state.locked_until is not None
        w.clock.now = state.locked_until
        w.login(f"user{10 + i}@{D}", "guess")
    (state,) = w.store.login_failures([(ThrottleScope.ADDRESS, "192.0.2.10")])
    assert state.locked_until == w.clock.now + timedelta(seconds=300)
    delays = [e.details["delay"] for e in w.events("lock")]
    assert delays == [60, 120, 240, 300, 300, 300, 300]


def test_refused_certificates_count_against_the_address_only(
    w: World, dev_pki: Any
) -> None:
    stranger = x509.load_pem_x509_certificates(dev_pki.peer_operator.cert.read_bytes())[0]
    for _ in range(5):
        r = w.policy.authenticate_certificate(peer(cert=stranger), f"sec@{D}")
        assert r.decision.reason == "unknown-certificate"
    assert w.store.list_login_failures(ThrottleScope.ACCOUNT) == []
    (addr,) = w.store.list_login_failures(ThrottleScope.ADDRESS)
    assert len(addr.recent) == 5 and addr.level == 1
    assert w.login().decision.reason == "address-locked"
    # No certificate at all is refused too, and counts.
    w.policy.authenticate_certificate(peer(address="192.0.2.20"), None)
    (other,) = w.store.login_failures([(ThrottleScope.ADDRESS, "192.0.2.20")])
    assert len(other.recent) == 1


def test_unlock_and_purge(w: World) -> None:
    for _ in range(3):
        w.login(password="wrong")
    old = w.policy.throttle.unlock(ThrottleScope.ACCOUNT, f" SEC@{D}", "admin")
    assert old is not None and old.level == 1
    (ev,) = w.events("unlock")
    assert (ev.actor, ev.target, ev.result) == ("admin", f"sec@{D}", "ok")
    assert ev.details["was_locked"] is True and ev.details["scope"] == "account"
    assert ev.details["locked_until"] == (T0 + timedelta(seconds=60)).isoformat()
    assert w.login().identity is not None
    assert w.policy.throttle.unlock(ThrottleScope.ACCOUNT, f"sec@{D}", "admin") is None
    assert w.events("unlock")[-1].details["was_locked"] is False
    # The address's count stays until forgotten, then purge removes it.
    states = w.policy.throttle.states()
    assert [(s.subject, locked) for s, locked in states] == [("192.0.2.10", False)]
    assert w.policy.throttle.purge() == 0
    w.clock.advance(901)
    assert w.policy.throttle.states() == []
    assert w.policy.throttle.purge() == 1
    assert w.store.list_login_failures() == []


def test_scopes_with_threshold_zero_are_off(
    tmp_path: Path, settings_factory: Any, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(tmp_path, settings_factory, store, account_failures=0, address_failures=0)
    calls: list[str] = []
    for name in ("login_failures", "update_login_failures", "clear_login_failures"):
        monkeypatch.setattr(store, name, lambda *a, _n=name: calls.append(_n))
    for _ in range(20):
        assert w.login(password="wrong").decision.reason == "bad-credentials"
    assert w.login().identity is not None
    assert calls == []


def test_a_lock_made_by_one_process_holds_in_another(
    tmp_path: Path, settings_factory: Any, store: Any
) -> None:
    """Two policies on two stores over one database, as two worker processes."""
    w = World(tmp_path, settings_factory, store)
    url = f"sqlite:///{tmp_path / 'mss.db'}"
    second = open_store(url, tmp_path / "keys")
    try:
        other = Policy(w.settings, second, FileAuditSink(None), clock=w.clock)
        for _ in range(3):
            w.login(password="wrong")
        r = other.authenticate_password(peer(), f"sec@{D}", PW)
        assert r.decision.reason == "account-locked"
        w.policy.throttle.unlock(ThrottleScope.ACCOUNT, f"sec@{D}", "admin")
        assert other.authenticate_password(peer(), f"sec@{D}", PW).identity is not None
    finally:
        second.close()
