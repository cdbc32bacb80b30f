"""Login throttling through both protocols: failures on any connection, of
either protocol, lock the account; a locked login, right password included,
gets byte for byte the answer of a wrong password; a success clears it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import ImapEnv
from imap_transcript import add_user as add_imap_user
from smtp_transcript import PASSWORD, SmtpEnv, codes
from store_support import TEST_LOGIN_METHODS

from conf.settings import LockoutSettings, PolicySettings
from storage.interface import ThrottleScope

SEC = "secretaire@hopital.test"
OTHER = "accueil@hopital.test"
LOCKOUT = LockoutSettings(account_failures=4, address_failures=8, window=900,
                          base_delay=600, max_delay=3600, address_max_delay=600)
LISTENERS = [
    {"name": "imap", "port": 0, "role": "imap", "tls": "none"},
    {"name": "submission", "port": 0, "role": "submission", "tls": "none"},
]


class Envs:
    """IMAP and SMTP sessions on one store and one Policy (one process)."""

    def __init__(self, tmp_path: Path, store: Any) -> None:
        from conftest import make_settings

        settings = make_settings(tmp_path, listeners=LISTENERS,
                                 policy=PolicySettings(lockout=LOCKOUT,
                                                       login_methods=TEST_LOGIN_METHODS))
        self.imap = ImapEnv(settings, store)
        self.smtp = SmtpEnv(settings, store)
        self.smtp.policy = self.imap.policy  # one policy, one audit sink
        self.smtp.services = self.imap.services
        self.store = store
        for login in (SEC, OTHER):
            add_imap_user(store, login)

    @property
    def events(self) -> list[Any]:
        return list(self.imap.audit.events)


@pytest.fixture
def envs(tmp_path: Path, store: Any) -> Envs:
    return Envs(tmp_path, store)


def imap_login(envs: Envs, login: str, password: str, ip: str = "192.0.2.10") -> bytes:
    """The tagged answer to a LOGIN on a new connection, tag removed."""
    c = envs.imap.connect(ip=ip)
    out = c.cmd(f'x LOGIN {login} "{password}"')
    assert out.startswith(b"x "), out
    return out[2:]


def imap_plain(envs: Envs, login: str, password: str, ip: str = "192.0.2.10") -> bytes:
    c = envs.imap.connect(ip=ip)
    response = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
    out = c.cmd(f"x AUTHENTICATE PLAIN {response}")
    assert out.startswith(b"x "), out
    return out[2:]


def smtp_plain(envs: Envs, login: str, password: str, ip: str = "192.0.2.10") -> bytes:
    conv = envs.smtp.connect("submission", ip=ip)
    conv.ehlo()
    return conv.cmd("AUTH PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode())


def smtp_login(envs: Envs, login: str, password: str, ip: str = "192.0.2.10") -> bytes:
    conv = envs.smtp.connect("submission", ip=ip)
    conv.ehlo()
    assert conv.cmd("AUTH LOGIN").startswith(b"334 ")
    assert conv.cmd(base64.b64encode(login.encode()).decode()).startswith(b"334 ")
    return conv.cmd(base64.b64encode(password.encode()).decode())


LOGINS = [imap_login, imap_plain, smtp_plain, smtp_login]


def test_failures_of_both_protocols_lock_and_a_lock_looks_like_a_wrong_password(
    envs: Envs,
) -> None:
    wrong = {fn: fn(envs, SEC, "wrong") for fn in LOGINS}  # four failures: locked
    assert wrong[imap_login] == wrong[imap_plain] == \
        b"NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert codes(wrong[smtp_plain]) == codes(wrong[smtp_login]) == ["535 5.7.8"]
    (lock,) = [e for e in envs.events if e.action == "lock"]
    assert (lock.target, lock.result, lock.details["scope"]) == (SEC, "locked", "account")
    for fn in LOGINS:
        assert fn(envs, SEC, PASSWORD) == wrong[fn], fn.__name__
        assert fn(envs, SEC, "wrong again") == wrong[fn], fn.__name__
    refused = [e for e in envs.events if e.result == "locked" and e.action == "login"]
    assert len(refused) == 2 * len(LOGINS)
    assert {e.details["reason"] for e in refused} == {"account-locked"}
    assert {e.details["until"] for e in refused} == {lock.details["until"]}
    # Refusals while locked are not failures.
    (state,) = envs.store.login_failures([(ThrottleScope.ACCOUNT, SEC)])
    assert (len(state.recent), state.level, state.refused) == (4, 1, 8)
    # Another account logs in from the same address.
    assert imap_login(envs, OTHER, PASSWORD).startswith(b"OK ")
    assert codes(smtp_plain(envs, OTHER, PASSWORD)) == ["235 2.7.0"]


def test_after_unlock_the_right_password_works_and_clears_the_count(envs: Envs) -> None:
    for _ in range(4):
        smtp_plain(envs, SEC, "wrong")
    assert codes(smtp_plain(envs, SEC, PASSWORD)) == ["535 5.7.8"]
    envs.imap.policy.throttle.unlock(ThrottleScope.ACCOUNT, SEC, "root")
    assert imap_login(envs, SEC, PASSWORD).startswith(b"OK ")
    assert smtp_plain(envs, SEC, "wrong") == smtp_plain(envs, SEC, "wrong")
    assert codes(smtp_plain(envs, SEC, PASSWORD)) == ["235 2.7.0"]
    assert envs.store.login_failures([(ThrottleScope.ACCOUNT, SEC)]) == []


def test_address_lock_answers_every_account_like_a_wrong_password(envs: Envs) -> None:
    for i in range(8):  # spraying: one guess per account name
        assert imap_login(envs, f"user{i}@hopital.test", "guess",
                          ip="198.51.100.7").startswith(b"NO ")
    wrong = imap_login(envs, OTHER, "wrong", ip="198.51.100.8")
    assert imap_login(envs, OTHER, PASSWORD, ip="198.51.100.7") == wrong
    assert smtp_plain(envs, OTHER, PASSWORD, ip="198.51.100.7") == \
        smtp_plain(envs, OTHER, "wrong", ip="198.51.100.8")
    refused = [e for e in envs.events if e.result == "locked" and e.action == "login"]
    assert {e.details["reason"] for e in refused} == {"address-locked"}
    # Elsewhere the account works.
    assert imap_login(envs, OTHER, PASSWORD, ip="198.51.100.9").startswith(b"OK ")


def test_smtp_failed_auth_disconnect_is_the_same_when_locked(envs: Envs) -> None:
    """The per-connection limit (limits.failed_auth: 3) ends a locked
    session exactly as it ends a session of wrong passwords."""
    for _ in range(4):
        smtp_plain(envs, SEC, "wrong")

    def three(password: str) -> tuple[bytes, bool]:
        conv = envs.smtp.connect("submission")
        conv.ehlo()
        out = b"".join(conv.cmd("AUTH PLAIN " + base64.b64encode(
            f"\0{SEC}\0{password}".encode()).decode()) for _ in range(3))
        return out, conv.closed

    locked, wrong = three(PASSWORD), three("wrong")
    assert locked == wrong
    assert codes(wrong[0]) == ["535 5.7.8"] * 3 + ["421 4.7.0"] and wrong[1]
