"""Admin changes made with `mssctl` are audited (who ran the command, what,
on what, the outcome, the changed fields, never a password), and `mssctl
audit query` reads the trail back from the store."""

from __future__ import annotations

import getpass
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mssctl_support import mssctl_inprocess as mssctl

from conf.loader import load_settings
from mssctl.audit import detail_text, parse_time
from storage import open_store
from storage.interface import AuditEvent

DOMAIN = "hopital.test"
CARDIO = f"cardiologie@{DOMAIN}"
DURAND = f"sec.durand@{DOMAIN}"
SECRET = "Tr0p-secret-password"




@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("audit-template") / "inst"
    code, _, err = mssctl("init", str(target), "--demo")
    assert code == 0, err
    return target


@pytest.fixture
def inst(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "inst"
    shutil.copytree(template, copy)
    (copy / "audit.log").unlink()  # start each test with an empty file
    return copy


@pytest.fixture(autouse=True)
def no_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)


def cfg(inst: Path) -> str:
    return str(inst / "mss.yaml")


def file_events(inst: Path) -> list[dict[str, Any]]:
    path = inst / "audit.log"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


def stored_events(inst: Path, **filters: Any) -> list[AuditEvent]:
    settings = load_settings(inst / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        return store.audit_events(actor_prefix=True, actor="admin:", **filters)
    finally:
        store.close()


ME = f"admin:{getpass.getuser()}"


def test_every_admin_change_is_one_event_in_the_file_and_the_store(
    inst: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cfg(inst)
    steps = [
        ("account", "add", "Sec.Leroy@hopital.test", "--name", "Leroy", "--password", SECRET),
        ("account", "passwd", f"sec.leroy@{DOMAIN}", "--password", SECRET + "2"),
        ("account", "passwd", f"sec.leroy@{DOMAIN}", "--clear"),
        ("account", "disable", f"sec.leroy@{DOMAIN}"),
        ("account", "enable", f"sec.leroy@{DOMAIN}"),
        ("mailbox", "add", f"neuro@{DOMAIN}", "--type", "ORG", "--quota", "2G"),
        ("mailbox", "grant", f"neuro@{DOMAIN}", f"sec.leroy@{DOMAIN}", "--rights", "lrs",
         "--until", "2027-01-31"),
        ("mailbox", "revoke", f"neuro@{DOMAIN}", f"sec.leroy@{DOMAIN}"),
        ("mailbox", "disable", f"neuro@{DOMAIN}"),
    ]
    for step in steps:
        code, _, err = mssctl(*step, "-c", c)
        assert code == 0, (step, err)
    events = file_events(inst)
    assert [(e["actor"], e["action"], e["target"], e["result"]) for e in events] == [
        (ME, "account-add", f"sec.leroy@{DOMAIN}", "ok"),
        (ME, "account-passwd", f"sec.leroy@{DOMAIN}", "ok"),
        (ME, "account-passwd", f"sec.leroy@{DOMAIN}", "ok"),
        (ME, "account-disable", f"sec.leroy@{DOMAIN}", "ok"),
        (ME, "account-enable", f"sec.leroy@{DOMAIN}", "ok"),
        (ME, "mailbox-add", f"neuro@{DOMAIN}", "ok"),
        (ME, "mailbox-grant", f"neuro@{DOMAIN}", "ok"),
        (ME, "mailbox-revoke", f"neuro@{DOMAIN}", "ok"),
        (ME, "mailbox-disable", f"neuro@{DOMAIN}", "ok"),
    ]
    add, pw1, pw2, _, _, box, grant, revoke, _ = events
    assert add["name"] == "Leroy" and add["account_class"] == "staff" and add["password"] is True
    assert (pw1["password"], pw2["password"]) == ("changed", "removed")
    assert box["mailbox_type"] == "ORG" and box["quota"] == "2G"
    assert grant["login"] == f"sec.leroy@{DOMAIN}" and grant["rights"] == "lrs"
    assert grant["rights_before"] == "" and grant["valid_until"].startswith("2027-01-31")
    assert revoke["rights"] == "" and revoke["rights_before"] == "lrs"
    text = (inst / "audit.log").read_text()
    assert SECRET not in text and "scrypt" not in text  # never a password or its hash
    # The store keeps the same events (what `audit query` reads).
    assert [(e.actor, e.action, e.target, e.result) for e in stored_events(inst)
            if e.action != "init"] == [
        (e["actor"], e["action"], e["target"], e["result"]) for e in events]


def test_certificate_pins_are_audited(inst: Path) -> None:
    c = cfg(inst)
    fp = "ab" * 32
    labo = f"labo@{DOMAIN}"
    assert mssctl("account", "pin", labo, "--fingerprint", fp, "-c", c)[0] == 0
    assert mssctl("account", "pin", labo, "--unpin", "--fingerprint", fp, "-c", c)[0] == 0
    pin, unpin = [e for e in file_events(inst) if e["action"] in ("account-pin", "account-unpin")]
    assert (pin["actor"], pin["target"], pin["result"], pin["fingerprint"]) == (ME, labo, "ok", fp)
    assert (unpin["action"], unpin["removed"]) == ("account-unpin", 1)


def test_failures_are_audited_with_the_reason(inst: Path) -> None:
    code, _, err = mssctl("mailbox", "grant", CARDIO, f"nobody@{DOMAIN}", "-c", cfg(inst))
    assert code == 1 and "not found" in err
    code, _, _ = mssctl("account", "add", DURAND, "--no-password", "-c", cfg(inst))
    assert code == 1
    (grant, add) = file_events(inst)
    assert (grant["action"], grant["result"]) == ("mailbox-grant", "fail")
    assert "not found" in grant["reason"] and grant["login"] == f"nobody@{DOMAIN}"
    assert (add["action"], add["result"], add["target"]) == ("account-add", "fail", DURAND)
    assert "already exists" in add["reason"]
    # Usage errors change nothing and are not admin changes.
    assert mssctl("mailbox", "grant", CARDIO, DURAND, "--rights", "zz", "-c", cfg(inst))[0] == 2
    assert len(file_events(inst)) == 2


def test_sudo_names_both_users(inst: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    assert mssctl("account", "disable", DURAND, "-c", cfg(inst))[0] == 0
    (event,) = file_events(inst)
    assert event["actor"] == f"{ME}(sudo:alice)"


def test_a_change_that_cannot_be_audited_is_not_made(inst: Path) -> None:
    (inst / "audit.log").mkdir()  # the audit file cannot be opened
    code, _, err = mssctl("account", "disable", DURAND, "-c", cfg(inst))
    assert code == 1 and "audit log" in err and "nothing was changed" in err
    settings = load_settings(inst / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        assert store.get_account(DURAND).active
    finally:
        store.close()


def test_queue_keys_and_db_commands_are_audited(inst: Path) -> None:
    settings = load_settings(inst / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        entry = store.enqueue(f"dr.martin@{DOMAIN}", ["dr.x@ailleurs.test"],
                              b"Subject: confidentiel\r\n\r\nbody\r\n")
        inbox = store.get_folder(store.get_mailbox(CARDIO).id, "INBOX")
        store.append(inbox.id, b"Subject: a stored message\r\n\r\nbody\r\n")
    finally:
        store.close()
    c = cfg(inst)
    assert mssctl("queue", "retry", str(entry.id), "-c", c)[0] == 0
    assert mssctl("queue", "delete", str(entry.id), "-c", c)[0] == 0
    assert mssctl("queue", "delete", str(entry.id), "-c", c)[0] == 1
    assert mssctl("keys", "rotate", "--no-reencrypt", "-c", c)[0] == 0
    assert mssctl("keys", "reencrypt", "-c", c)[0] == 0
    assert mssctl("db", "upgrade", "-c", c)[0] == 0
    events = file_events(inst)
    assert [(e["action"], e["result"]) for e in events] == [
        ("queue-retry", "ok"), ("queue-delete", "ok"), ("queue-delete", "fail"),
        ("keys-rotate", "ok"), ("keys-reencrypt", "ok"), ("db-upgrade", "ok")]
    retry, delete, _, rotate, reencrypt, upgrade = events
    assert retry["target"] == delete["target"] == f"queue:{entry.id}"
    assert delete["sender"] == f"dr.martin@{DOMAIN}"
    assert delete["recipients"] == ["dr.x@ailleurs.test"]
    assert "confidentiel" not in (inst / "audit.log").read_text()
    assert rotate["target"] == str(settings.key_file) and rotate["key_id"]
    assert reencrypt["reencrypted"] >= 1
    assert upgrade["revision"] == upgrade["revision_before"]
    assert len(stored_events(inst, actions=["db-upgrade"])) == 1


def test_init_records_its_own_event(template: Path) -> None:
    (event,) = [json.loads(x) for x in (template / "audit.log").read_text().splitlines()]
    assert (event["actor"], event["action"], event["result"]) == (ME, "init", "ok")
    assert event["domain"] == DOMAIN and event["demo"] is True


# ---------------------------------------------------------------- audit query


def _record(inst: Path, events: list[AuditEvent]) -> None:
    settings = load_settings(inst / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        store.record_audit(events)
    finally:
        store.close()


T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
def trail(inst: Path) -> Path:
    _record(inst, [
        AuditEvent(T0, DURAND, "select", f"{CARDIO}/INBOX", "allow", {"right": "r"}),
        AuditEvent(T0 + timedelta(hours=1), DURAND, "store", f"{CARDIO}/INBOX", "ok",
                   {"uids": "1:3", "flags": ["\\Seen"]}),
        AuditEvent(T0 + timedelta(days=1), "admin:root", "mailbox-revoke", CARDIO, "ok",
                   {"login": DURAND, "rights": ""}),
        AuditEvent(T0 + timedelta(days=1, hours=1), "CN=810002813839+SN=MARTIN,C=FR",
                   "certificate", "imaps", "deny", {"reason": "revoked",
                                                    "issuer": "CN=AC PERSONNES,O=Dev x"}),
        AuditEvent(T0 + timedelta(days=2), DURAND, "select", f"{CARDIO}x@{DOMAIN}/INBOX",
                   "allow", {}),
    ])
    return inst


def query(inst: Path, *args: str) -> list[str]:
    code, out, err = mssctl("audit", "query", *args, "-c", cfg(inst))
    assert code == 0, err
    return out.splitlines()


def test_query_lines(trail: Path) -> None:
    lines = query(trail, "--since", "2026-11-27")
    assert lines[0] == (f"2026-11-27T08:00:00Z {DURAND} select {CARDIO}/INBOX allow right=r")
    assert lines[1] == (f'2026-11-27T09:00:00Z {DURAND} store {CARDIO}/INBOX ok uids=1:3 '
                        'flags=["\\\\Seen"]')
    assert lines[3] == ('2026-11-28T09:00:00Z CN=810002813839+SN=MARTIN,C=FR certificate imaps '
                        'deny reason=revoked issuer="CN=AC PERSONNES,O=Dev x"')


def test_query_filters(trail: Path) -> None:
    def actions(*args: str) -> list[str]:
        return [line.split()[2] for line in query(trail, *args)]

    assert actions("--mailbox", CARDIO.upper()) == ["select", "store", "mailbox-revoke"]
    assert actions("--mailbox", CARDIO, "--since", "2026-11-27T08:30") == [
        "store", "mailbox-revoke"]
    assert actions("--mailbox", CARDIO, "--until", "2026-11-27") == ["select", "store"]
    assert actions("--mailbox", CARDIO, "--until", "2026-11-27T09:00:00+00:30") == ["select"]
    assert actions("--actor", DURAND, "--action", "store", "--action", "select") == [
        "select", "store", "select"]
    window = ("--since", "2026-11-27", "--until", "2026-11-30")  # not `init`'s own event
    assert actions("--actor", "admin:*", *window) == ["mailbox-revoke"]
    assert actions("--limit", "2", *window) == ["certificate", "select"]
    assert query(trail, "--actor", "nobody") == []


def test_query_json_is_the_audit_file_format(trail: Path) -> None:
    rows = [json.loads(x) for x in query(trail, "--json", "--action", "mailbox-revoke")]
    assert rows == [{"time": "2026-11-28T08:00:00+00:00", "actor": "admin:root",
                     "action": "mailbox-revoke", "target": CARDIO, "result": "ok",
                     "login": DURAND, "rights": ""}]


def test_query_says_when_the_limit_cut(trail: Path) -> None:
    code, out, err = mssctl("audit", "query", "--limit", "1", "--until", "2026-11-30",
                            "-c", cfg(trail))
    assert code == 0 and len(out.splitlines()) == 1 and "most recent" in err


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--until", "27/11/2026"],
                                  ["--limit", "0"]])
def test_query_usage_errors(inst: Path, args: list[str]) -> None:
    code, _, err = mssctl("audit", "query", *args, "-c", cfg(inst))
    assert code == 2 and "expected" in err


def test_parse_time_and_details() -> None:
    assert parse_time("2026-11-27") == datetime(2026, 11, 27, tzinfo=UTC)
    assert parse_time("2026-11-27", end=True) == datetime(2026, 11, 28, tzinfo=UTC)
    assert parse_time("2026-11-27T10:00Z") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_time("2026-11-27 10:00+01:00") == datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert detail_text({"a": "x y", "b": None, "c": True, "d": 3, "e": {"1": "<m@h>"}}) == \
        'a="x y" c=yes d=3 e={"1":"<m@h>"}'
    assert re.fullmatch(r"k=v", detail_text({"k": "v"}))
