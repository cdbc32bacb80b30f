"""Login throttling and certificate pinning as a user meets them: `mssctl
serve` on real sockets, imaplib and smtplib with the instance's CA, the
admin's `mssctl account ...` commands, and the audit log on disk.

The lockout test runs two servers on one store: `serve --workers 2` (the
"first") and a second `mssctl serve` whose settings name the first's
database, key file and audit log, as a second node would; a lock made
through the first holds on the second."""

from __future__ import annotations

import imaplib
import json
import shutil
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from integration_support import (
    DURAND,
    IO_TIMEOUT,
    LABO,
    MssInstance,
    run_cli,
    run_mssctl,
)

from certs.devpki import issue_organisation_certificate
from certs.identity import certificate_fingerprint, name_to_rfc4514
from conf.loader import load_settings
from conf.settings import ListenerRole
from mssctl.common import admin_actor
from policy.audit import FileAuditSink
from policy.decisions import Peer
from policy.throttle import LoginThrottle
from storage import open_store
from storage.interface import ThrottleScope

pytestmark = pytest.mark.e2e

APP = "app@hopital.test"
OU = "1750000042"


def audit_events(inst: MssInstance) -> list[dict[str, Any]]:
    return [json.loads(line) for line in inst.audit_text().splitlines() if line.strip()]


def second_node(first: MssInstance, directory: Path) -> MssInstance:
    """A second server on the first's store: its own ports and copies of
    the settings and certificates, the first's database, key file and audit
    log (absolute paths)."""
    shutil.copytree(first.directory, directory)
    for leftover in directory.glob("mss.db*"):
        leftover.unlink()
    config = directory / "mss.yaml"
    text = config.read_text()
    for old, new in (("url: sqlite:///mss.db", f"url: sqlite:///{first.directory / 'mss.db'}"),
                     ("path: audit.log", f"path: {first.directory / 'audit.log'}"),
                     ("key_file: keys", f"key_file: {first.directory / 'keys'}")):
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    second = MssInstance(directory, first.offset, first.init_output, first.ca_file,
                         first.logins)
    second.move_ports()
    return second


@pytest.fixture
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MssInstance, MssInstance]]:
    first = MssInstance.demo(tmp_path_factory, "lockout")
    config = first.directory / "mss.yaml"
    # Locks long enough for a loaded machine to finish the test inside one.
    config.write_text(config.read_text().replace("base_delay: 60", "base_delay: 900"))
    first.serve_args = ("--workers", "2")
    first.start()
    second = second_node(first, tmp_path_factory.mktemp("lockout-second") / "inst")
    try:
        second.start()
        yield first, second
    finally:
        for inst in (second, first):
            if inst.running:
                assert inst.stop() == 0, inst.log_tail()


def imap_logins(inst: MssInstance, login: str, passwords: list[str]) -> list[str]:
    """LOGINs on one IMAPS connection; each answer: "OK" or the NO's text."""
    out = []
    with imaplib.IMAP4_SSL("127.0.0.1", inst.port("imaps"), ssl_context=inst.client_context(),
                           timeout=IO_TIMEOUT) as m:
        for password in passwords:
            try:
                m.login(login, password)
                out.append("OK")
            except imaplib.IMAP4.error as exc:
                out.append(str(exc))
    return out


def smtp_logins(inst: MssInstance, login: str, passwords: list[str]) -> list[tuple[int, bytes]]:
    """AUTH PLAIN on one STARTTLS submission connection, one try each (not
    smtplib's login(), which would try every mechanism in turn)."""
    out = []
    with smtplib.SMTP("127.0.0.1", inst.port("submission"), timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        s.starttls(context=inst.client_context())
        s.ehlo("client.test")
        for password in passwords:
            s.user, s.password = login, password
            try:
                out.append(s.auth("PLAIN", s.auth_plain))
            except smtplib.SMTPAuthenticationError as exc:
                out.append((exc.smtp_code, exc.smtp_error))
    return out


def test_wrong_passwords_lock_across_connections_protocols_and_servers(
    nodes: tuple[MssInstance, MssInstance],
) -> None:
    first, second = nodes
    right = first.password(DURAND)
    imap_answers: list[str] = []
    smtp_answers: list[tuple[int, bytes]] = []
    for i in range(5):  # 20 wrong passwords over 10 connections of both protocols
        imap_answers += imap_logins(first, DURAND, [f"wrong-{i}a", f"wrong-{i}b"])
        smtp_answers += smtp_logins(first, DURAND, [f"wrong-{i}c", f"wrong-{i}d"])
    assert len(imap_answers) == len(smtp_answers) == 10
    # Every answer is the same, before and after the lock (the 10th failure).
    assert set(imap_answers) == {"b'[AUTHENTICATIONFAILED] Authentication failed'"}
    assert len(set(smtp_answers)) == 1 and smtp_answers[0][0] == 535

    # The right password, on both servers and both protocols: the same answer.
    for inst in (first, second):
        assert imap_logins(inst, DURAND, [right]) == imap_answers[:1], inst.directory
        assert smtp_logins(inst, DURAND, [right]) == smtp_answers[:1], inst.directory
    # Another account is not locked (the address saw 10 failures, fewer than 30).
    petit = "sec.petit@hopital.test"
    assert imap_logins(second, petit, [first.password(petit)]) == ["OK"]

    show = run_mssctl(first, "account", "show", DURAND)
    assert "login lock:  locked until 20" in show, show
    assert "10 failure(s) in the window" in show and "refused while locked" in show
    listed = next(line for line in run_mssctl(first, "account", "list").splitlines()
                  if line.startswith(DURAND))
    assert listed.split()[4].startswith("20"), listed  # LOCKED-UNTIL
    locks = run_mssctl(first, "account", "locks")
    assert any(line.split()[:2] == ["account", DURAND] for line in locks.splitlines()), locks
    assert any(line.split()[:2] == ["address", "127.0.0.1"] and line.split()[2] == "-"
               for line in locks.splitlines()), locks

    out = run_mssctl(first, "account", "unlock", DURAND)
    assert f"account {DURAND} unlocked (was locked until 20" in out, out
    assert "not locked" in run_mssctl(first, "account", "show", DURAND)
    for inst in (second, first):
        assert imap_logins(inst, DURAND, [right]) == ["OK"]
        assert smtp_logins(inst, DURAND, [right])[0][0] == 235

    events = [e for e in audit_events(first) if DURAND in (e["actor"], e["target"])]
    failures = [e for e in events if e["action"] == "login" and e["result"] == "deny"]
    assert len(failures) == 10 and {e["reason"] for e in failures} == {"bad-credentials"}
    (lock,) = [e for e in events if e["action"] == "lock"]
    assert (lock["target"], lock["result"], lock["scope"]) == (DURAND, "locked", "account")
    refused = [e for e in events if e["action"] == "login" and e["result"] == "locked"]
    assert len(refused) == 10 + 4  # the other 10 wrong ones, then the right one 4 times
    assert {e["reason"] for e in refused} == {"account-locked"}
    assert {e["until"] for e in refused} == {lock["until"]}
    (unlock,) = [e for e in events if e["action"] == "unlock"]
    assert (unlock["actor"], unlock["target"], unlock["was_locked"]) == (
        admin_actor(), DURAND, True)
    assert [e["result"] for e in events if e["action"] == "login"][-4:] == ["allow"] * 4
    # Event order: the failures, the lock, the refusals, the unlock, the logins.
    kinds = [e["action"] if e["action"] != "login" else e["result"] for e in events]
    assert kinds == ["deny"] * 10 + ["lock"] + ["locked"] * 14 + ["unlock"] + ["allow"] * 4
    for inst in (first, second):
        assert inst.errors_since(0) == "", inst.log_tail()


def imap_external(inst: MssInstance, cert: tuple[Path, Path]) -> str:
    """AUTHENTICATE EXTERNAL over IMAPS with a client certificate."""
    with imaplib.IMAP4_SSL("127.0.0.1", inst.port("imaps"),
                           ssl_context=inst.client_context(cert), timeout=IO_TIMEOUT) as m:
        try:
            m.authenticate("EXTERNAL", lambda challenge: b"")
        except imaplib.IMAP4.error as exc:
            return str(exc)
        return "OK"


def test_only_the_pinned_organisation_certificate_logs_in_over_imaps(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
) -> None:
    inst = MssInstance.demo(tmp_path_factory, "pinning")
    pki = inst.directory / "pki"
    pinned, other = (
        issue_organisation_certificate(
            pki / "organisations-ca.pem", pki / "organisations-ca.key", tmp_path, stem,
            common_name=f"{stem}.hopital.test", structure_id=OU)
        for stem in ("app1", "app2"))
    run_mssctl(inst, "account", "add", APP, "--class", "system", "--cert-subject", OU,
               "--no-password")
    run_mssctl(inst, "mailbox", "add", APP, "--type", "APP", "--owner", APP)
    inst.start()
    try:
        refused = "[AUTHENTICATIONFAILED] Authentication failed"
        # mssctl init turned require_org_cert_pinning on: the OU alone is not enough.
        assert imap_external(inst, (pinned.cert, pinned.key)) == refused
        out = run_mssctl(inst, "account", "pin", APP, "--cert", str(pinned.cert))
        assert "pinned to app@hopital.test" in out
        assert imap_external(inst, (pinned.cert, pinned.key)) == "OK"
        assert imap_external(inst, (other.cert, other.key)) == refused
        # The demo application's certificate, pinned by init, still logs in.
        assert imap_external(inst, inst.cert_pair(LABO)) == "OK"
        show = run_mssctl(inst, "account", "show", APP)
        def fingerprint(path: Path) -> str:
            return certificate_fingerprint(x509.load_pem_x509_certificates(path.read_bytes())[0])

        assert f"pinned:      {fingerprint(pinned.cert)}" in show, show
        events = [e for e in audit_events(inst) if e.get("reason") == "certificate-not-pinned"]
        assert [e["fingerprint"] for e in events] == [fingerprint(pinned.cert),
                                                      fingerprint(other.cert)]
        ca = x509.load_pem_x509_certificate((pki / "organisations-ca.pem").read_bytes())
        for event, issued in zip(events, (pinned, other), strict=True):
            assert event["actor"] == issued.subject and event["account"] == APP
            assert event["issuer"] == name_to_rfc4514(ca.subject)
        # Unpinned again: refused again.
        run_mssctl(inst, "account", "pin", APP, "--unpin")
        assert imap_external(inst, (pinned.cert, pinned.key)) == refused
        assert inst.errors_since(0) == "", inst.log_tail()
    finally:
        assert inst.stop() == 0


def test_admin_command_errors_and_address_unlock(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    inst = MssInstance.demo(tmp_path_factory, "lockout-cli")
    c = ("--config", str(inst.directory / "mss.yaml"))
    assert run_cli("account", "unlock", *c)[0] == 2
    assert run_cli("account", "unlock", DURAND, "--address", "127.0.0.1", *c)[0] == 2
    code, out = run_cli("account", "unlock", "--address", "not-an-ip", *c)
    assert code == 2 and "not an IP address" in out
    code, out = run_cli("account", "unlock", "nobody@hopital.test", *c)
    assert code == 1 and "not found" in out
    code, out = run_cli("account", "pin", LABO, "--fingerprint", "12:34", *c)
    assert code == 2 and "not a SHA-256 fingerprint" in out
    assert run_cli("account", "pin", LABO, *c)[0] == 2
    labo_cert = str(inst.cert_pair(LABO)[0])
    code, out = run_cli("account", "pin", DURAND, "--cert", labo_cert, *c)
    assert code == 1 and "already exists" in out and "pinned already" in out
    code, out = run_cli("account", "add", "x@hopital.test", "--no-password",
                        "--cert-fingerprint", "zz", *c)
    assert code == 2 and "Traceback" not in out

    # An address lock made by a server, lifted by the admin.
    settings = load_settings(inst.directory / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        throttle = LoginThrottle(settings.policy.lockout, store, FileAuditSink(None),
                                 lambda: datetime.now(UTC))
        peer = Peer("198.51.100.23", 1, "imaps", ListenerRole.IMAP)
        for i in range(settings.policy.lockout.address_failures):
            throttle.failed(f"user{i}@hopital.test", peer, "password")
        assert throttle.check(None, "198.51.100.23").lock is not None
    finally:
        store.close()
    locks = run_mssctl(inst, "account", "locks")
    (row,) = [line.split() for line in locks.splitlines() if "198.51.100.23" in line]
    assert row[0] == "address" and row[2].startswith("20")
    out = run_mssctl(inst, "account", "unlock", "--address", "198.51.100.23")
    assert "address 198.51.100.23 unlocked" in out
    assert "198.51.100.23" not in run_mssctl(inst, "account", "locks")
    (event,) = [e for e in audit_events(inst) if e["action"] == "unlock"]
    assert (event["actor"], event["target"], event["scope"]) == (
        admin_actor(), "198.51.100.23", ThrottleScope.ADDRESS.value)
