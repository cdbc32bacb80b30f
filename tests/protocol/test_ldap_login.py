"""Method `ldap` through both protocols' transcripts, against a real slapd
(tests/ldap_support.py): a bind as the account's entry, lockout as for any
password (a locked login never reaches the directory), and a directory that
cannot be reached is a temporary failure that counts as no failure."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import ImapEnv
from ldap_support import Slapd, ldap_section, person_mail, person_password
from smtp_transcript import SmtpEnv
from store_support import TEST_LOGIN_METHODS

from conf.settings import LdapSettings, LockoutSettings, PolicySettings
from policy.audit import FileAuditSink
from policy.ldapsync import run_sync
from storage.interface import ThrottleScope

LISTENERS = [
    {"name": "imap", "port": 0, "role": "imap", "tls": "none"},
    {"name": "submission", "port": 0, "role": "submission", "tls": "none"},
]
LOCKOUT = LockoutSettings(account_failures=3, address_failures=50, window=900,
                          base_delay=600, max_delay=3600, address_max_delay=600)


class Envs:
    def __init__(self, tmp_path: Path, store: Any, slapd: Slapd) -> None:
        from store_support import make_settings

        ldap = LdapSettings.model_validate(ldap_section(slapd, tmp_path, timeout=2))
        methods = dict(TEST_LOGIN_METHODS, staff=["ldap"])
        settings = make_settings(tmp_path, listeners=LISTENERS, ldap=ldap,
                                 policy=PolicySettings(lockout=LOCKOUT, login_methods=methods))
        sink = FileAuditSink(None)
        report = run_sync(ldap, store, sink)
        assert len(report.changes) == 24 and not report.failed
        self.imap = ImapEnv(settings, store)
        self.smtp = SmtpEnv(settings, store)
        self.smtp.policy = self.imap.policy
        self.smtp.services = self.imap.services
        self.store = store
        binder = self.imap.services.authenticator.binder
        assert binder is not None
        self.binds = 0
        check = binder.check

        def counted(dn: str, password: str) -> Any:
            self.binds += 1
            return check(dn, password)

        binder.check = counted  # type: ignore[method-assign]
        self.smtp.services.authenticator.binder = binder

    def imap_login(self, login: str, password: str) -> bytes:
        c = self.imap.connect(ip="192.0.2.10")
        out = c.cmd(f'x LOGIN {login} "{password}"')
        assert out.startswith(b"x "), out
        return out[2:]

    def smtp_plain(self, login: str, password: str) -> bytes:
        conv = self.smtp.connect("submission", ip="192.0.2.10")
        conv.ehlo()
        return conv.cmd("AUTH PLAIN " + base64.b64encode(
            f"\0{login}\0{password}".encode()).decode())

    @property
    def events(self) -> list[Any]:
        return list(self.imap.audit.events)


@pytest.fixture
def envs(tmp_path: Path, store: Any, ldap_small: Slapd) -> Envs:
    return Envs(tmp_path, store, ldap_small)


def test_bind_login_and_lockout(envs: Envs) -> None:
    one = person_mail(1)
    assert envs.imap_login(one, person_password(1)).startswith(b"OK ")
    assert envs.smtp_plain(one, person_password(1)).startswith(b"235 ")
    assert envs.binds == 2
    for _ in range(3):
        assert envs.imap_login(one, "wrong").startswith(b"NO [AUTHENTICATIONFAILED]")
    assert envs.binds == 5
    # Locked: the right password gets a wrong password's answer, and the
    # directory is not asked (its own lockout must not shut her out).
    assert envs.imap_login(one, person_password(1)).startswith(b"NO [AUTHENTICATIONFAILED]")
    assert envs.smtp_plain(one, person_password(1)).startswith(b"535 5.7.8")
    assert envs.binds == 5
    logins = [e for e in envs.events if e.action == "login"]
    assert [(e.result, e.details.get("method"), e.details.get("reason")) for e in logins] == [
        ("allow", "ldap", None), ("allow", "ldap", None),
        ("deny", "ldap", "bad-credentials"), ("deny", "ldap", "bad-credentials"),
        ("deny", "ldap", "bad-credentials"),
        ("locked", "password", "account-locked"), ("locked", "password", "account-locked")]


def test_unreachable_directory_is_temporary_and_counts_no_failure(
        envs: Envs, ldap_small: Slapd) -> None:
    two = person_mail(2)
    ldap_small.stop()
    for _ in range(4):  # more than the lockout threshold
        assert envs.imap_login(two, person_password(2)).startswith(b"NO [UNAVAILABLE]")
        assert envs.smtp_plain(two, person_password(2)).startswith(b"454 4.7.0")
    assert envs.store.list_login_failures(ThrottleScope.ACCOUNT) == []
    events = [e for e in envs.events if e.action == "login"]
    assert {(e.actor, e.result, e.details["reason"]) for e in events} == {
        (two, "tempfail", "directory-unavailable")}
    ldap_small.start()
    assert envs.imap_login(two, person_password(2)).startswith(b"OK ")


def test_accounts_not_from_the_directory_keep_their_own_password(envs: Envs) -> None:
    from imap_transcript import add_user

    add_user(envs.store, "hand@hopital.test")
    # A staff account made by hand has no directory entry: "ldap" does not
    # apply, and "password" is not allowed for staff here.
    assert envs.imap_login("hand@hopital.test", "x").startswith(b"NO [AUTHENTICATIONFAILED]")
    assert envs.binds == 0
    # An unknown login never reaches the directory either.
    assert envs.imap_login("nobody@hopital.test", "x").startswith(b"NO [AUTHENTICATIONFAILED]")
    assert envs.binds == 0
