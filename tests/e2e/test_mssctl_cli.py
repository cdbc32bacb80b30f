"""`mssctl init` and the admin commands, run as a user would (exit codes, output)."""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from mssctl_support import mssctl_inprocess as mssctl

from certs.identity import identity_from_certificate
from conf.loader import load_settings
from conf.settings import ListenerRole, LoginMethodSettings, Settings
from policy.audit import FileAuditSink
from policy.decisions import Peer, Policy
from policy.passwords import verify_password
from policy.whitelist import Whitelist
from storage import open_store
from storage.crypto import KeyRing
from storage.interface import AccountClass, MailboxType, MessageStore

DOMAIN = "hopital.test"




@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `mssctl init --demo` per module (PKI generation is the slow part)."""
    target = tmp_path_factory.mktemp("template") / "inst"
    code, out, err = mssctl("init", str(target), "--demo", "--port-offset", "100")
    assert code == 0, err
    return target, out


@pytest.fixture
def inst(demo_template: tuple[Path, str], tmp_path: Path) -> Path:
    """A private copy of the demo instance (paths in mss.yaml are relative)."""
    copy = tmp_path / "inst"
    shutil.copytree(demo_template[0], copy)
    return copy


def cfg(inst: Path) -> str:
    return str(inst / "mss.yaml")


def open_inst_store(inst: Path) -> tuple[Settings, MessageStore]:
    settings = load_settings(inst / "mss.yaml")
    return settings, open_store(settings.database.url, settings.key_file)


def demo_passwords(inst: Path) -> dict[str, str]:
    text = (inst / "demo-logins.txt").read_text()
    found = re.findall(r"^  (\S+@\S+)\s.*\n\s+password: (\S+)$", text, re.MULTILINE)
    return dict(found)


# ---------------------------------------------------------------- init


def test_init_writes_a_complete_instance(demo_template: tuple[Path, str]) -> None:
    target, out = demo_template
    for name in ("mss.yaml", "flows.yaml", "whitelist.xml", "keys", "mss.db",
                 "pki/ca.pem", "pki/server.pem", "pki/server.key", "pki/crl.pem",
                 "pki/practitioner.p12", "pki/organisation.p12", "demo-logins.txt"):
        assert (target / name).is_file(), name
    assert stat.S_IMODE((target / "keys").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / "demo-logins.txt").stat().st_mode) == 0o600
    # Every path in the settings is relative: the directory can be moved.
    text = (target / "mss.yaml").read_text()
    assert str(target) not in text
    settings = load_settings(target / "mss.yaml", check_files=True)
    assert settings.domains == [DOMAIN]
    assert settings.hostname == f"mx.{DOMAIN}"
    assert [(lst.name, lst.port) for lst in settings.listeners] == [
        ("smtp-mx", 2625), ("submission", 2687), ("submissions", 2565),
        ("imap", 1243), ("imaps", 2093),
    ]
    assert all(lst.address == "127.0.0.1" for lst in settings.listeners)
    # demo only: a password alone, for testing without a card or a code
    assert "password" in settings.policy.login_methods.practitioner
    assert "password" in settings.policy.login_methods.staff
    # RFC 5321 4.5.1: a postmaster box exists and the policy routes to it.
    assert settings.policy.postmaster == f"postmaster@{DOMAIN}"
    store = open_store(settings.database.url, settings.key_file)
    try:
        assert store.get_mailbox(f"postmaster@{DOMAIN}").mailbox_type is MailboxType.ORG
    finally:
        store.close()
    # No temporary build directory left behind.
    assert [p.name for p in target.parent.iterdir()] == ["inst"]


def test_init_prints_logins_ca_file_and_ports(demo_template: tuple[Path, str]) -> None:
    target, out = demo_template
    assert f"CA file to trust: {target}/pki/ca.pem" in out
    for port in (2625, 2687, 2565, 1243, 2093):
        assert str(port) in out
    for login in ("dr.martin", "sec.durand", "sec.petit", "labo", "cardiologie"):
        assert f"{login}@{DOMAIN}" in out
    assert f"{target}/pki/practitioner.p12" in out
    assert f"{target}/pki/organisation.p12" in out
    passwords = demo_passwords(target)
    assert set(passwords) == {f"dr.martin@{DOMAIN}", f"sec.durand@{DOMAIN}", f"sec.petit@{DOMAIN}"}
    for password in passwords.values():
        assert f"password: {password}" in out


def test_init_whitelist_lists_our_domain_with_our_server_dn(inst: Path) -> None:
    wl = Whitelist.load(inst / "whitelist.xml")
    server = x509.load_pem_x509_certificates((inst / "pki" / "server.pem").read_bytes())[0]
    assert wl.has_domain(DOMAIN)
    assert wl.allows(DOMAIN, identity_from_certificate(server).subject)
    assert not wl.allows(DOMAIN, "CN=someone.else,C=FR")


def test_init_demo_directory_content(inst: Path) -> None:
    settings, store = open_inst_store(inst)
    try:
        assert [d.name for d in store.list_domains()] == [DOMAIN]
        accounts = {a.login: a for a in store.list_accounts()}
        martin = accounts[f"dr.martin@{DOMAIN}"]
        card = identity_from_certificate(
            x509.load_pem_x509_certificates((inst / "pki/practitioner.pem").read_bytes())[0])
        assert martin.account_class is AccountClass.PRACTITIONER
        assert martin.idnat == card.idnat and card.idnat
        for sec in ("sec.durand", "sec.petit"):
            assert accounts[f"{sec}@{DOMAIN}"].account_class is AccountClass.STAFF
        labo = accounts[f"labo@{DOMAIN}"]
        org = identity_from_certificate(
            x509.load_pem_x509_certificates((inst / "pki/organisation.pem").read_bytes())[0])
        assert labo.account_class is AccountClass.SYSTEM
        assert labo.cert_subject == org.subject
        assert labo.password_hash is None

        boxes = {m.address: m for m in store.list_mailboxes()}
        assert boxes[f"dr.martin@{DOMAIN}"].mailbox_type is MailboxType.PER
        assert boxes[f"dr.martin@{DOMAIN}"].owner_account_id == martin.id
        assert boxes[f"labo@{DOMAIN}"].mailbox_type is MailboxType.APP
        assert boxes[f"labo@{DOMAIN}"].owner_account_id == labo.id
        cardio = boxes[f"cardiologie@{DOMAIN}"]
        assert cardio.mailbox_type is MailboxType.ORG
        assert cardio.owner_account_id is None
        grants = {g.account_id: g.rights for g in store.grants_for_mailbox(cardio.id)}
        assert grants == {accounts[f"sec.durand@{DOMAIN}"].id: "lrswipkxtea",
                          accounts[f"sec.petit@{DOMAIN}"].id: "lrswipkxtea"}
    finally:
        store.close()


def test_demo_logins_work_through_the_policy(inst: Path) -> None:
    """The printed passwords and certificate files really log in."""
    settings, store = open_inst_store(inst)
    try:
        policy = Policy(settings, store, FileAuditSink(None))
        peer = Peer("127.0.0.1", 50000, "imap", ListenerRole.IMAP, tls=True)
        for login, password in demo_passwords(inst).items():
            result = policy.authenticate_password(peer, login, password)
            assert result.identity is not None, (login, result.decision)
            assert not policy.authenticate_password(peer, login, password + "x").decision.allowed
        for pem, login in (("practitioner.pem", "dr.martin"), ("organisation.pem", "labo")):
            cert = x509.load_pem_x509_certificates((inst / "pki" / pem).read_bytes())[0]
            cert_peer = Peer("127.0.0.1", 50000, "imap", ListenerRole.IMAP, tls=True,
                             client_cert=cert)
            result = policy.authenticate_certificate(cert_peer, f"{login}@{DOMAIN}")
            assert result.identity is not None, (pem, result.decision)
            assert result.identity.name == f"{login}@{DOMAIN}"
        # sec.durand reaches the functional box.
        durand = policy.authenticate_password(
            peer, f"sec.durand@{DOMAIN}", demo_passwords(inst)[f"sec.durand@{DOMAIN}"]).identity
        assert durand is not None
        names = {a.mailbox.address for a in policy.accessible_mailboxes(durand)}
        assert names == {f"sec.durand@{DOMAIN}", f"cardiologie@{DOMAIN}"}
    finally:
        store.close()


def test_init_without_demo_and_with_options(tmp_path: Path) -> None:
    target = tmp_path / "plain"
    code, out, err = mssctl("init", str(target), "--domain", "clinique.test",
                            "--hostname", "mail.clinique.test", "--port-offset", "7")
    assert code == 0, err
    settings = load_settings(target / "mss.yaml", check_files=True)
    assert settings.domains == ["clinique.test"]
    assert settings.hostname == "mail.clinique.test"
    assert settings.listeners[0].port == 2532
    assert settings.policy.login_methods == LoginMethodSettings()  # production defaults
    assert not (target / "demo-logins.txt").exists()
    assert "Demo logins" not in out
    server = x509.load_pem_x509_certificates((target / "pki/server.pem").read_bytes())[0]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"mail.clinique.test", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    _, store = open_inst_store(target)
    try:
        assert [d.name for d in store.list_domains()] == ["clinique.test"]
        assert store.list_accounts() == []
    finally:
        store.close()


def test_init_into_an_existing_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    code, _, err = mssctl("init", str(target))
    assert code == 0, err
    assert (target / "mss.yaml").is_file()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--domain", "not a domain"], 2, "--domain: expected a mail domain"),
        (["--port-offset", "70000"], 2, "--port-offset: expected an integer from 0 to"),
        (["--port-offset", "-5"], 2, "--port-offset: expected an integer from 0 to"),
        (["--hostname", "bad host!"], 2, "--hostname: expected a host name"),
    ],
)
def test_init_rejects_bad_arguments(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    rc, out, err = mssctl("init", str(tmp_path / "x"), *args)
    assert rc == code
    assert message in err
    assert not (tmp_path / "x").exists()


def test_init_refuses_to_overwrite(inst: Path) -> None:
    before = (inst / "mss.yaml").read_text()
    code, _, err = mssctl("init", str(inst), "--demo")
    assert code == 1
    assert "already holds an instance" in err
    assert (inst / "mss.yaml").read_text() == before
    other = inst.parent / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = mssctl("init", str(other))
    assert code == 1 and "is not empty" in err


# ---------------------------------------------------------------- accounts


def test_account_round_trip(inst: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    login = f"inf.bernard@{DOMAIN}"
    code, out, err = mssctl("account", "add", login, "--name", "Anne Bernard",
                            "--password", "first-pw", "-c", cfg(inst))
    assert (code, err) == (0, "")
    assert f"account {login} added (staff)" in out

    code, out, _ = mssctl("account", "list", "-c", cfg(inst))
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(login))
    assert row.split()[1:4] == ["staff", "active", "yes"]

    # Password from stdin (not a terminal): one line.
    code, out, err = mssctl("account", "passwd", login, "-c", cfg(inst),
                            stdin="second-pw\n", monkeypatch=monkeypatch)
    assert code == 0, err
    _, store = open_inst_store(inst)
    try:
        hashed = store.get_account(login).password_hash
        assert hashed and verify_password("second-pw", hashed)
        assert not verify_password("first-pw", hashed)
    finally:
        store.close()

    code, out, _ = mssctl("account", "disable", login, "-c", cfg(inst))
    assert code == 0 and "disabled" in out
    _, out, _ = mssctl("account", "list", "-c", cfg(inst))
    assert next(ln for ln in out.splitlines() if ln.startswith(login)).split()[2] == "disabled"
    code, _, _ = mssctl("account", "enable", login, "-c", cfg(inst))
    assert code == 0
    _, out, _ = mssctl("account", "list", "-c", cfg(inst))
    assert next(ln for ln in out.splitlines() if ln.startswith(login)).split()[2] == "active"


def test_account_add_card_holder_without_password(inst: Path) -> None:
    login = f"dr.leroy@{DOMAIN}"
    code, _, err = mssctl("account", "add", login, "--class", "practitioner",
                          "--idnat", "810000000123", "--no-password", "-c", cfg(inst))
    assert code == 0, err
    _, store = open_inst_store(inst)
    try:
        account = store.get_account(login)
        assert account.idnat == "810000000123"
        assert account.password_hash is None
        assert account.account_class is AccountClass.PRACTITIONER
    finally:
        store.close()


def test_account_set_name_class_and_card(inst: Path) -> None:
    login = f"dr.leroy@{DOMAIN}"
    assert mssctl("account", "add", login, "--no-password", "-c", cfg(inst))[0] == 0
    code, out, err = mssctl("account", "set", login, "--name", "Paul Leroy", "--class",
                            "practitioner", "--idnat", "810000000999", "-c", cfg(inst))
    assert code == 0, err
    assert out.strip() == (f"account {login}: display_name Paul Leroy, account_class "
                           "practitioner, idnat 810000000999")
    other = f"dr.faux@{DOMAIN}"
    assert mssctl("account", "add", other, "--no-password", "-c", cfg(inst))[0] == 0
    code, _, err = mssctl("account", "set", other, "--idnat", "810000000999", "-c", cfg(inst))
    assert code == 1 and f"IdNat_PS 810000000999 is already account {login}'s" in err
    code, _, err = mssctl("account", "set", other, "-c", cfg(inst))
    assert code == 2 and "nothing to change" in err
    assert mssctl("account", "set", login, "--no-idnat", "-c", cfg(inst))[0] == 0
    _, store = open_inst_store(inst)
    try:
        account = store.get_account(login)
        assert (account.display_name, account.account_class, account.idnat) == (
            "Paul Leroy", AccountClass.PRACTITIONER, None)
        assert store.get_account(other).idnat is None
    finally:
        store.close()
    events = [json.loads(line) for line in (inst / "audit.log").read_text().splitlines()
              if '"account-set"' in line]
    assert [(e["result"], e.get("idnat")) for e in events] == [
        ("ok", "810000000999"), ("fail", "810000000999"), ("ok", None)]


def test_account_errors(inst: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = mssctl("account", "add", f"sec.durand@{DOMAIN}", "--password", "x",
                          "-c", cfg(inst))
    assert code == 1 and "already exists" in err
    code, _, err = mssctl("account", "disable", "nobody@hopital.test", "-c", cfg(inst))
    assert code == 1 and "nobody@hopital.test" in err and "not found" in err
    code, _, err = mssctl("account", "add", f"x@{DOMAIN}", "-c", cfg(inst),
                          stdin="\n", monkeypatch=monkeypatch)
    assert code == 2 and "empty password" in err
    code, _, err = mssctl("account", "add", f"x@{DOMAIN}", "--class", "boss", "-c", cfg(inst))
    assert code == 2 and "invalid choice" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- mailboxes


def test_mailbox_round_trip(inst: Path) -> None:
    c = cfg(inst)
    assert mssctl("account", "add", f"inf.roux@{DOMAIN}", "--password", "pw", "-c", c)[0] == 0
    code, out, err = mssctl("mailbox", "add", f"inf.roux@{DOMAIN}", "--owner",
                            f"inf.roux@{DOMAIN}", "--quota", "500M", "-c", c)
    assert code == 0, err
    code, out, err = mssctl("mailbox", "add", f"urgences@{DOMAIN}", "--type", "ORG",
                            "--responsible", "Service des urgences", "-c", c)
    assert code == 0, err
    code, out, err = mssctl("mailbox", "grant", f"urgences@{DOMAIN}", f"inf.roux@{DOMAIN}",
                            "--rights", "lrs", "-c", c)
    assert code == 0, err
    _, out, _ = mssctl("mailbox", "grants", f"urgences@{DOMAIN}", "-c", c)
    assert re.search(rf"^inf\.roux@{re.escape(DOMAIN)}\s+\*\s+lrs\s", out, re.MULTILINE)

    _, out, _ = mssctl("mailbox", "list", "-c", c)
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert rows[f"inf.roux@{DOMAIN}"][1:5] == ["PER", "active", f"inf.roux@{DOMAIN}", "500M"]
    assert rows[f"urgences@{DOMAIN}"][1:5] == ["ORG", "active", "-", "unlimited"]

    _, store = open_inst_store(inst)
    try:
        box = store.get_mailbox(f"inf.roux@{DOMAIN}")
        assert box.quota_bytes == 500 * 1024 * 1024
        assert "INBOX" in {f.name for f in store.list_folders(box.id)}
    finally:
        store.close()

    assert mssctl("mailbox", "disable", f"urgences@{DOMAIN}", "-c", c)[0] == 0
    _, out, _ = mssctl("mailbox", "list", "-c", c)
    assert next(ln for ln in out.splitlines() if ln.startswith("urgences@")).split()[2] == "disabled"
    assert mssctl("mailbox", "revoke", f"urgences@{DOMAIN}", f"inf.roux@{DOMAIN}", "-c", c)[0] == 0
    _, out, _ = mssctl("mailbox", "grants", f"urgences@{DOMAIN}", "-c", c)
    assert "inf.roux" not in out


def test_mailbox_grant_on_one_folder(inst: Path) -> None:
    c = cfg(inst)
    box, agent = f"cardiologie@{DOMAIN}", f"sec.petit@{DOMAIN}"
    code, out, err = mssctl("mailbox", "grant", box, agent, "--folder", "Archive",
                            "--rights", "lria", "-c", c)
    assert code == 0 and "folder Archive with rights lria" in out, err
    _, out, _ = mssctl("mailbox", "grants", box, "-c", c)
    rows = [ln.split() for ln in out.splitlines()]
    assert rows[0][:3] == ["LOGIN", "FOLDER", "RIGHTS"]
    assert [agent, "*", "lrswipkxtea"] in [r[:3] for r in rows]  # the demo's whole-box grant
    assert [agent, "Archive", "lria"] in [r[:3] for r in rows]
    # A folder that does not exist, --send-as with --folder: clear errors, nothing changed.
    code, _, err = mssctl("mailbox", "grant", box, agent, "--folder", "Nope", "-c", c)
    assert code == 1 and "has no folder 'Nope'" in err
    code, _, err = mssctl("mailbox", "grant", box, agent, "--folder", "INBOX", "--send-as",
                          "-c", c)
    assert code == 2 and "--send-as" in err and "Traceback" not in err
    code, out, err = mssctl("mailbox", "revoke", box, agent, "--folder", "Archive", "-c", c)
    assert code == 0 and "no longer has access to" in out, err
    _, out, _ = mssctl("mailbox", "grants", box, "-c", c)
    assert "Archive" not in out and agent in out  # the whole-box grant stays


def test_mailbox_private_seen(inst: Path) -> None:
    c = cfg(inst)
    code, out, err = mssctl("mailbox", "add", f"neuro@{DOMAIN}", "--type", "ORG",
                            "--private-seen", "-c", c)
    assert code == 0 and "private \\Seen" in out, err

    def seen_column() -> dict[str, str]:
        _, out, _ = mssctl("mailbox", "list", "-c", c)
        header = out.splitlines()[0].split()
        assert header[5] == "SEEN"
        return {ln.split()[0]: ln.split()[5] for ln in out.splitlines()[1:]}

    cols = seen_column()
    assert cols[f"neuro@{DOMAIN}"] == "private" and cols[f"cardiologie@{DOMAIN}"] == "shared"
    code, out, err = mssctl("mailbox", "set", f"Cardiologie@{DOMAIN}", "--private-seen", "-c", c)
    assert code == 0 and "private per agent" in out, err
    assert mssctl("mailbox", "set", f"neuro@{DOMAIN}", "--shared-seen", "-c", c)[0] == 0
    cols = seen_column()
    assert cols[f"neuro@{DOMAIN}"] == "shared" and cols[f"cardiologie@{DOMAIN}"] == "private"
    _, store = open_inst_store(inst)
    try:
        assert store.get_mailbox(f"cardiologie@{DOMAIN}").private_seen
        changes = [e for e in store.audit_events(actions=["mailbox-set"])]
    finally:
        store.close()
    assert [(e.target, e.result, e.details["private_seen"], e.details["private_seen_before"])
            for e in changes] == [(f"cardiologie@{DOMAIN}", "ok", True, False),
                                  (f"neuro@{DOMAIN}", "ok", False, True)]
    code, _, err = mssctl("mailbox", "set", f"ghost@{DOMAIN}", "--private-seen", "-c", c)
    assert code == 1 and "not found" in err
    code, _, err = mssctl("mailbox", "set", f"neuro@{DOMAIN}", "-c", c)
    assert code == 2 and "one of the arguments" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add", "nobody-at-all"], 2, "expected an address local@domain"),
        (["add", f"perso@{DOMAIN}"], 2, "a PER mailbox needs --owner LOGIN"),
        (["add", f"x@{DOMAIN}", "--owner", f"ghost@{DOMAIN}"], 1, "not found"),
        (["add", f"dr.martin@{DOMAIN}", "--owner", f"dr.martin@{DOMAIN}"], 1, "already exists"),
        (["add", "x@elsewhere.test", "--type", "ORG"], 1, "not found"),
        (["add", f"x@{DOMAIN}", "--type", "ORG", "--quota", "lots"], 2, "expected a size"),
        (["add", f"x@{DOMAIN}", "--type", "BOX"], 2, "invalid choice"),
        (["grant", f"cardiologie@{DOMAIN}", f"sec.petit@{DOMAIN}", "--rights", "lrz"], 2,
         "unknown RFC 4314 right"),
        (["grant", f"ghost@{DOMAIN}", f"sec.petit@{DOMAIN}"], 1, "not found"),
        (["disable", f"ghost@{DOMAIN}"], 1, "not found"),
    ],
)
def test_mailbox_errors(inst: Path, args: list[str], code: int, message: str) -> None:
    rc, _, err = mssctl("mailbox", *args, "-c", cfg(inst))
    assert rc == code, err
    assert message in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- queue, keys, db


def test_queue_list_retry_delete(inst: Path) -> None:
    _, store = open_inst_store(inst)
    try:
        entry = store.enqueue(f"dr.martin@{DOMAIN}", ["dr.x@ailleurs.test"],
                              b"Subject: hi\r\n\r\nbody\r\n")
        why = ("451 4.7.5 certificate of mx.ailleurs.test not trusted: unknown CA: issued by "
               "CN=AC AILLEURS,O=Ailleurs,C=FR, not one of our CAs")
        store.record_attempt(entry.id, delivered=[], failed=[], error=why, next_attempt=None)
    finally:
        store.close()
    code, out, _ = mssctl("queue", "list", "-c", cfg(inst))
    assert code == 0
    assert re.search(rf"^{entry.id}\s+dr\.martin@\S+\s+dr\.x@ailleurs\.test\s", out, re.MULTILINE)
    assert why in out  # the whole reason, not cut
    assert mssctl("queue", "retry", str(entry.id), "-c", cfg(inst))[0] == 0
    assert mssctl("queue", "delete", str(entry.id), "-c", cfg(inst))[0] == 0
    _, out, _ = mssctl("queue", "list", "-c", cfg(inst))
    assert "ailleurs.test" not in out
    code, _, err = mssctl("queue", "retry", str(entry.id), "-c", cfg(inst))
    assert code == 1 and "not found" in err


def test_keys_rotate_reencrypts_and_messages_stay_readable(inst: Path) -> None:
    settings, store = open_inst_store(inst)
    try:
        inbox = store.get_folder(store.get_mailbox(f"dr.martin@{DOMAIN}").id, "INBOX")
        raw = b"Subject: rotation\r\n\r\nsecret body\r\n"
        uid = store.append(inbox.id, raw).uid
    finally:
        store.close()
    old_ids = set(KeyRing.load(settings.key_file).keys)
    code, out, err = mssctl("keys", "rotate", "-c", cfg(inst))
    assert code == 0, err
    ring = KeyRing.load(settings.key_file)
    assert len(ring.keys) == len(old_ids) + 1 and ring.current_id not in old_ids
    assert re.search(r"re-encrypted [1-9]\d* blob", out)
    # No progress lines when the output is not a terminal: the summary only.
    assert "so far" not in out and err.strip() == "", err
    _, store = open_inst_store(inst)
    try:
        assert store.message_body(inbox.id, uid) == raw
        assert store.reencrypt() == 0  # nothing left under the old key
    finally:
        store.close()
    assert stat.S_IMODE(settings.key_file.stat().st_mode) == 0o600


def test_db_upgrade_is_idempotent(inst: Path) -> None:
    code, out, err = mssctl("db", "upgrade", "-c", cfg(inst))
    assert code == 0, err
    assert "latest" in out


def test_admin_command_with_a_broken_config(inst: Path) -> None:
    bad = inst / "bad.yaml"
    bad.write_text((inst / "mss.yaml").read_text().replace("key_file:", "key_fil:"))
    code, out, err = mssctl("account", "list", "-c", str(bad))
    assert code == 2
    assert f"{bad}: key_fil: unknown key (did you mean key_file?)" in err.splitlines()
    assert "Traceback" not in err


def test_config_from_environment(inst: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSS_CONFIG", cfg(inst))
    code, out, _ = mssctl("account", "list")
    assert code == 0 and f"dr.martin@{DOMAIN}" in out


def test_key_file_too_open_is_a_config_error(inst: Path) -> None:
    (inst / "keys").chmod(0o644)
    code, _, err = mssctl("account", "list", "-c", cfg(inst))
    assert code == 2 and "key_file" in err and "chmod 600" in err


def test_db_sort_keys_fills_older_messages(inst: Path) -> None:
    from sqlalchemy import delete, func, select

    from storage.models import BodyRow, SortKeysRow

    settings, store = open_inst_store(inst)
    try:
        inbox = store.get_folder(store.get_mailbox(f"dr.martin@{DOMAIN}").id, "INBOX")
        for n in range(3):
            store.append(inbox.id, f"Subject: Re: dossier {n}\r\n\r\nx\r\n".encode())
        with store.engine.begin() as c:  # as if stored before revision 0013
            c.execute(delete(SortKeysRow))
    finally:
        store.close()
    code, out, err = mssctl("db", "sort-keys", "--batch", "2", "-c", cfg(inst))
    assert code == 0, err
    assert re.search(r"sort keys computed for [3-9]\d* message", out), out
    _, store = open_inst_store(inst)
    try:
        with store.engine.begin() as c:
            assert c.execute(select(func.count()).select_from(SortKeysRow)).scalar() == \
                c.execute(select(func.count()).select_from(BodyRow)).scalar()
        assert store.fill_sort_keys() == 0
        events = list(store.audit_events(actions=["db-sort-keys"]))
        assert len(events) == 1 and events[0].details["filled"] >= 3, events
    finally:
        store.close()


def test_db_sort_keys_with_a_key_missing_from_the_key_file(inst: Path) -> None:
    from sqlalchemy import delete, update

    from storage.models import BodyRow, SortKeysRow

    settings, store = open_inst_store(inst)
    try:
        inbox = store.get_folder(store.get_mailbox(f"dr.martin@{DOMAIN}").id, "INBOX")
        store.append(inbox.id, b"Subject: lost key\r\n\r\nx\r\n")
        with store.engine.begin() as c:
            c.execute(delete(SortKeysRow))
            c.execute(update(BodyRow).values(key_id="gone"))
    finally:
        store.close()
    code, out, err = mssctl("db", "sort-keys", "-c", cfg(inst))
    assert code != 0 and "Traceback" not in err
    assert "stopped after 0" in err and "'gone'" in err and "key file" in err, err
