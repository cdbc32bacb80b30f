"""The directory end to end: `mssctl serve` of a demo instance whose settings
name a real slapd (tests/ldap_support.py). Logins by directory bind (method
`ldap`) over IMAP and SMTP, a temporary failure while the directory is down,
the periodic sync in `serve` (its lease and `mssctl ldap status`), and a
person moved between groups losing the old box in her open IMAP session."""

from __future__ import annotations

import base64
import smtplib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from integration_support import IO_TIMEOUT, ImapConn, MssInstance, make_message, run_cli
from ldap_support import (
    Slapd,
    group_dn,
    ldap_section,
    people_ldif,
    person_dn,
    person_mail,
    person_password,
    running_slapd,
)

pytestmark = pytest.mark.e2e

SYNC_INTERVAL = 1.0  # seconds: serve syncs this often in this module


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory, dev_pki: Any) -> Iterator[Slapd]:
    from ldap_support import slapd_binaries

    if slapd_binaries() is None:
        pytest.skip("slapd not found (Debian slapd, ldap-utils)")
    with running_slapd(dev_pki, people_ldif(12, 3),
                       tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "ldap")
    config = inst.directory / "mss.yaml"
    data = yaml.safe_load(config.read_text())
    data["ldap"] = ldap_section(slapd, inst.directory, n_groups=3,
                                sync_interval=SYNC_INTERVAL)
    data["policy"]["login_methods"]["staff"] = ["ldap", "password"]
    data["workers"] = 2  # both try every interval; the lease lets one run
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    inst.start()
    yield inst
    assert inst.stop() == 0, inst.log_tail()


def status(inst: MssInstance) -> str:
    code, out = run_cli("ldap", "status", "--config", str(inst.directory / "mss.yaml"))
    assert code == 0, out
    return out


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def account_show(inst: MssInstance, login: str) -> str:
    code, out = run_cli("account", "show", login, "--config", str(inst.directory / "mss.yaml"))
    return out if code == 0 else ""


def grant_holders(inst: MssInstance, address: str) -> dict[str, str]:
    """login -> who manages the grant (`mssctl mailbox grants`: BY)."""
    code, out = run_cli("mailbox", "grants", address, "--config",
                        str(inst.directory / "mss.yaml"))
    if code != 0:
        return {}
    return {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:] if line.strip()}


@pytest.fixture(scope="module")
def synced(mss: MssInstance) -> MssInstance:
    """The first periodic sync (at serve's start) has made the people."""
    wait_for(lambda: "(ok, " in status(mss), "the first periodic sync")
    return mss


def read_until_closed(conn: ImapConn) -> list[bytes]:
    lines = []
    conn.sock.settimeout(5)  # an upper bound; the server closes at once
    try:
        while True:
            lines.append(conn.read().text)
    except (ConnectionError, OSError):
        return lines


def imap_login(inst: MssInstance, login: str, password: str) -> tuple[ImapConn, Any]:
    conn = ImapConn(inst.port("imaps"), inst.client_context())
    _, done = conn.command(f'LOGIN "{login}" "{password}"')
    return conn, done


def smtp_auth(inst: MssInstance, login: str, password: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.port("submission"), timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        s.starttls(context=inst.client_context())
        s.ehlo("client.test")
        plain = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        return s.docmd("AUTH", f"PLAIN {plain}")


def submit_as(inst: MssInstance, login: str, password: str, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", inst.port("submission"), timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        s.starttls(context=inst.client_context())
        s.ehlo("client.test")
        s.login(login, password)
        s.sendmail(login, [to], make_message("directory-mail", "hello", sender=login, to=[to]))


def test_periodic_sync_in_serve_and_status(synced: MssInstance) -> None:
    out = status(synced)
    assert f"periodic      every {SYNC_INTERVAL:g} s in serve" in out
    assert "people=12" in out and ":serve)" in out
    audit = synced.audit_text()
    adds = [line for line in audit.splitlines()
            if '"actor": "ldap-sync", "action": "account-add"' in line]
    # Two workers, one sync at a time: each person was added once.
    assert sorted(line.split('"target": "')[1].split('"')[0] for line in adds) == [
        person_mail(i) for i in range(1, 13)]


def test_ldap_bind_login_over_imap_and_smtp(synced: MssInstance) -> None:
    two = person_mail(2)
    conn, done = imap_login(synced, two, person_password(2))
    with conn:
        assert done.text.startswith(b"A001 OK"), done.text
    bad, done = imap_login(synced, two, "not-her-password")
    with bad:
        assert b"NO [AUTHENTICATIONFAILED]" in done.text
    assert smtp_auth(synced, two, person_password(2))[0] == 235
    # Her mail passes the flow matrix of the demo (method ldap) and arrives.
    submit_as(synced, two, person_password(2), person_mail(3))
    reader = ImapConn(synced.port("imaps"), synced.client_context())
    with reader:
        reader.login(person_mail(3), person_password(3))
        reader.ok("SELECT INBOX")
        found = b"".join(r.text for r in reader.ok("SEARCH SUBJECT directory-mail"))
        assert found.strip() != b"* SEARCH", found
    code, text = smtp_auth(synced, two, "not-her-password")
    assert (code, text[:5]) == (535, b"5.7.8")
    audit = synced.audit_text()
    assert f'"actor": "{two}", "action": "login", "target": "imaps", "result": "allow", ' \
           f'"method": "ldap"' in audit
    assert '"method": "ldap", "reason": "bad-credentials"' in audit


def test_directory_down_is_a_temporary_failure(synced: MssInstance, slapd: Slapd) -> None:
    four = person_mail(4)
    slapd.stop()
    try:
        conn, done = imap_login(synced, four, person_password(4))
        with conn:
            assert b"NO [UNAVAILABLE]" in done.text, done.text
        code, text = smtp_auth(synced, four, person_password(4))
        assert (code, text[:5]) == (454, b"4.7.0"), text
    finally:
        slapd.start()
    assert '"reason": "directory-unavailable"' in synced.audit_text()
    conn, done = imap_login(synced, four, person_password(4))
    with conn:
        assert done.text.startswith(b"A001 OK"), done.text


def test_moved_person_loses_the_old_box_at_her_next_command(synced: MssInstance,
                                                            slapd: Slapd) -> None:
    # Person 6 is in group (6 % 3) + 1 = 1: service01's box.
    six = person_mail(6)
    conn, done = imap_login(synced, six, person_password(6))
    with conn:
        assert done.text.startswith(b"A001 OK"), done.text
        conn.ok('SELECT "Shared/service01@hopital.test/INBOX"')
        slapd.modify(group_dn(1), {"member": [("MODIFY_DELETE", [person_dn(6)])]})
        slapd.modify(group_dn(2), {"member": [("MODIFY_ADD", [person_dn(6)])]})
        wait_for(lambda: grant_holders(synced, "service02@hopital.test").get(six) == "ldap-sync"
                 and six not in grant_holders(synced, "service01@hopital.test"),
                 "the periodic sync after the move")
        conn.send(b"A100 FETCH 1:* (FLAGS)\r\n")
        texts = read_until_closed(conn)
        assert any(b"BYE Access to the selected mailbox was withdrawn" in t for t in texts), texts
    conn, done = imap_login(synced, six, person_password(6))
    with conn:
        listed = b"".join(r.text for r in conn.ok('LIST "" "*"'))
        assert b"service02@hopital.test" in listed
        assert b"service01@hopital.test" not in listed


def test_person_disabled_in_the_directory_is_disabled_here(synced: MssInstance,
                                                           slapd: Slapd) -> None:
    eight = person_mail(8)
    slapd.modify(person_dn(8), {"userAccountControl": [("MODIFY_REPLACE", ["514"])]})
    wait_for(lambda: "state:       disabled" in account_show(synced, eight),
             "the periodic sync after the disable")
    assert ("directory:   uid=agent0008,ou=people,dc=hopital,dc=test (disabled by the "
            "directory sync)") in account_show(synced, eight)
    conn, done = imap_login(synced, eight, person_password(8))
    with conn:
        assert b"NO [AUTHENTICATIONFAILED]" in done.text
