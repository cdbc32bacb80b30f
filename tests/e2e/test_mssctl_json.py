"""`--json` of the `mssctl` list and show commands: one JSON document on
stdout, keys fixed per command and in a fixed order, times ISO 8601 UTC."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mssctl_support import mssctl_inprocess as mssctl

from conf.loader import load_settings
from storage import open_store
from storage.interface import LoginFailures, MessageStore, QueueOrigin, ThrottleScope

DOMAIN = "hopital.test"
MARTIN = f"dr.martin@{DOMAIN}"
DURAND = f"sec.durand@{DOMAIN}"
CARDIO = f"cardiologie@{DOMAIN}"
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

ACCOUNT_KEYS = ["login", "name", "class", "active", "password", "idnat", "cert_subject"]
LOCK_KEYS = ["locked", "locked_until", "failures", "locks_in_a_row", "refused_while_locked",
             "last_failure"]
MAILBOX_KEYS = ["address", "type", "active", "owner", "quota_bytes", "seen", "name",
                "description", "service", "responsible", "unlisted"]
GRANT_KEYS = ["login", "rights", "send_as", "valid_from", "valid_until"]


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("template") / "inst"
    code, _, err = mssctl("init", str(target), "--demo", "--port-offset", "100")
    assert code == 0, err
    return target


@pytest.fixture
def inst(demo_template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "inst"
    shutil.copytree(demo_template, copy)
    return copy


def store_of(inst: Path) -> MessageStore:
    settings = load_settings(inst / "mss.yaml")
    return open_store(settings.database.url, settings.key_file)


def as_json(inst: Path, *args: str) -> Any:
    code, out, err = mssctl(*args, "--json", "-c", str(inst / "mss.yaml"))
    assert code == 0, err
    assert err == ""
    return json.loads(out)  # the whole of stdout is one document


def utc(text: str) -> datetime:
    assert UTC_TIME.match(text), text
    return datetime.fromisoformat(text)


def lock(inst: Path, login: str, *, minutes: int) -> datetime:
    """An account locked for `minutes` more, after 3 failures."""
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(minutes=minutes)
    state = LoginFailures(ThrottleScope.ACCOUNT, login, now, (now, now, now), level=1,
                          locked_until=until, refused=2)
    store = store_of(inst)
    try:
        store.update_login_failures([(ThrottleScope.ACCOUNT, login)], lambda key, old: state)
    finally:
        store.close()
    return until


def test_account_list_and_show(inst: Path) -> None:
    until = lock(inst, DURAND, minutes=10)
    doc = as_json(inst, "account", "list")
    assert list(doc) == ["accounts"]
    accounts = {a["login"]: a for a in doc["accounts"]}
    assert [a["login"] for a in doc["accounts"]] == sorted(accounts)
    assert all(list(a) == [*ACCOUNT_KEYS, "locked_until"] for a in doc["accounts"])
    assert accounts[MARTIN] == {
        "login": MARTIN, "name": "Dr Paul Martin", "class": "practitioner", "active": True,
        "password": True, "idnat": "810002813839", "cert_subject": None, "locked_until": None,
    }
    assert utc(accounts[DURAND]["locked_until"]) == until
    assert accounts[f"labo@{DOMAIN}"]["password"] is False
    assert accounts[f"labo@{DOMAIN}"]["cert_subject"].startswith("CN=")
    assert "hash" not in json.dumps(doc) and "$" not in json.dumps(doc)  # never a hash

    show = as_json(inst, "account", "show", DURAND.upper())
    assert list(show) == [*ACCOUNT_KEYS, "pinned", "totp", "mailboxes", "login_lock"]
    assert (show["login"], show["class"], show["pinned"], show["totp"], show["mailboxes"]) == (
        DURAND, "staff", [], False, [DURAND])
    assert list(show["login_lock"]) == LOCK_KEYS
    assert show["login_lock"]["locked"] is True
    assert utc(show["login_lock"]["locked_until"]) == until
    assert (show["login_lock"]["failures"], show["login_lock"]["locks_in_a_row"],
            show["login_lock"]["refused_while_locked"]) == (3, 1, 2)
    assert utc(show["login_lock"]["last_failure"]) <= datetime.now(UTC)
    labo = as_json(inst, "account", "show", f"labo@{DOMAIN}")
    assert len(labo["pinned"]) == 1 and re.fullmatch(r"[0-9a-f]{64}", labo["pinned"][0])
    assert labo["login_lock"] == {"locked": False, "locked_until": None, "failures": 0,
                                  "locks_in_a_row": 0, "refused_while_locked": 0,
                                  "last_failure": None}


def test_account_locks(inst: Path) -> None:
    until = lock(inst, DURAND, minutes=5)
    doc = as_json(inst, "account", "locks")
    assert list(doc) == ["locks"]
    [entry] = doc["locks"]
    assert list(entry) == ["scope", "subject", *LOCK_KEYS]
    assert (entry["scope"], entry["subject"], entry["locked"], entry["failures"]) == (
        "account", DURAND, True, 3)
    assert utc(entry["locked_until"]) == until


def test_mailbox_list_show_and_grants(inst: Path) -> None:
    c = str(inst / "mss.yaml")
    assert mssctl("mailbox", "grant", CARDIO, MARTIN, "--rights", "lr", "--from", "2026-01-01",
                  "--until", "2027-01-01T12:00:00+01:00", "-c", c)[0] == 0
    doc = as_json(inst, "mailbox", "list")
    assert list(doc) == ["mailboxes"]
    boxes = {m["address"]: m for m in doc["mailboxes"]}
    assert [m["address"] for m in doc["mailboxes"]] == sorted(boxes)
    assert all(list(m) == MAILBOX_KEYS for m in doc["mailboxes"])
    assert boxes[CARDIO] == {
        "address": CARDIO, "type": "ORG", "active": True, "owner": None, "quota_bytes": None,
        "seen": "shared", "name": "Secretariat de cardiologie",
        "description": "Secretariat: rendez-vous, comptes rendus", "service": "Cardiologie",
        "responsible": "Service de cardiologie, Hopital de demonstration", "unlisted": False,
    }
    assert boxes[MARTIN]["owner"] == MARTIN and boxes[f"labo@{DOMAIN}"]["type"] == "APP"

    show = as_json(inst, "mailbox", "show", CARDIO)
    assert list(show) == [*MAILBOX_KEYS, "owner_idnat", "used_bytes", "messages", "folders",
                          "grants"]
    assert (show["used_bytes"], show["messages"], show["owner_idnat"]) == (0, 0, None)
    assert show["folders"] == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
    assert as_json(inst, "mailbox", "show", MARTIN)["owner_idnat"] == "810002813839"

    grants = as_json(inst, "mailbox", "grants", CARDIO)
    assert list(grants) == ["mailbox", "grants"] and grants["mailbox"] == CARDIO
    assert all(list(g) == GRANT_KEYS for g in grants["grants"])
    by_login = {g["login"]: g for g in grants["grants"]}
    assert by_login[MARTIN] == {"login": MARTIN, "rights": "lr", "send_as": False,
                                "valid_from": "2026-01-01T00:00:00Z",
                                "valid_until": "2027-01-01T11:00:00Z"}  # in UTC
    assert by_login[DURAND]["send_as"] is True and by_login[DURAND]["valid_until"] is None
    assert show["grants"] == grants["grants"]


def test_queue_list(inst: Path) -> None:
    assert as_json(inst, "queue", "list") == {"queue": []}
    store = store_of(inst)
    try:
        entry = store.enqueue(MARTIN, ["dr.x@ailleurs.test", "dr.y@ailleurs.test"],
                              b"Subject: hi\r\n\r\nbody\r\n")
        store.record_attempt(entry.id, delivered=[], failed=[],
                             error="421 4.4.2 timed out", next_attempt=None)
        bounce = store.enqueue("", [MARTIN.replace(DOMAIN, "ailleurs.test")], b"\r\nbounce\r\n",
                               origin=QueueOrigin("submission", "192.0.2.7", MARTIN, "card"))
    finally:
        store.close()
    doc = as_json(inst, "queue", "list")
    assert list(doc) == ["queue"]
    first, second = doc["queue"]
    assert list(first) == ["id", "sender", "recipients", "size", "attempts", "created",
                           "next_attempt", "last_error", "origin"]
    assert (first["id"], first["sender"], first["recipients"], first["attempts"],
            first["last_error"]) == (entry.id, MARTIN, ["dr.x@ailleurs.test",
                                                        "dr.y@ailleurs.test"], 1,
                                     "421 4.4.2 timed out")
    assert first["size"] == entry.size
    assert utc(first["created"]) <= utc(first["next_attempt"]) + timedelta(seconds=1)
    assert (second["id"], second["sender"], second["last_error"]) == (bounce.id, "", None)
    assert first["origin"] is None
    assert second["origin"] == {"listener": "submission", "client_ip": "192.0.2.7",
                                "account": MARTIN, "auth_method": "card", "peer_dn": None}


@pytest.mark.parametrize("command", [
    ("account", "show", f"ghost@{DOMAIN}"),
    ("mailbox", "show", f"ghost@{DOMAIN}"),
    ("mailbox", "grants", f"ghost@{DOMAIN}"),
])
def test_json_errors_stay_on_stderr(inst: Path, command: tuple[str, ...]) -> None:
    code, out, err = mssctl(*command, "--json", "-c", str(inst / "mss.yaml"))
    assert code == 1 and out == ""
    assert "not found" in err and "Traceback" not in err
