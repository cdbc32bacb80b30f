"""`mssctl directory export` and the directory fields of `mssctl mailbox
add/set/show`: what the national directory publishes of our boxes."""

from __future__ import annotations

import csv
import io
import json
import shutil
import stat
from pathlib import Path

import pytest
from mssctl_support import mssctl_inprocess as mssctl

from conf.loader import load_settings
from storage import open_store

DOMAIN = "hopital.test"
HEADER = "type,address,idnat_ps,name,description,service,responsible,unlisted"


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


def ok(*args: str) -> str:
    code, out, err = mssctl(*args)
    assert code == 0, err
    assert "Traceback" not in err
    return out


def audit_events(inst: Path, action: str) -> list[dict[str, object]]:
    lines = (inst / "audit.log").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["action"] == action]


@pytest.fixture
def fixture_boxes(inst: Path) -> str:
    """Boxes of all three types, with text that needs CSV quoting: the demo's
    dr.martin (PER), cardiologie (ORG), labo (APP) and postmaster (ORG),
    plus an unlisted PER box and a disabled ORG box. The demo secretaries'
    own PER boxes have owners without IdNat_PS."""
    c = str(inst / "mss.yaml")
    ok("mailbox", "set", f"dr.martin@{DOMAIN}", "--description", 'Cardiologue, "interventionnel"',
       "--service", "Cardiologie", "-c", c)
    ok("mailbox", "set", f"cardiologie@{DOMAIN}", "--description", "Secrétariat",
       "--service", "Cardiologie", "--responsible", "Service de cardiologie, Hôpital", "-c", c)
    ok("mailbox", "set", f"labo@{DOMAIN}", "--description", "Résultats de biologie",
       "--service", "Laboratoire", "-c", c)
    ok("account", "add", f"dr.leroy@{DOMAIN}", "--class", "practitioner", "--idnat",
       "0123456789", "--name", "Dr Élise Leroy", "--no-password", "-c", c)
    ok("mailbox", "add", f"dr.leroy@{DOMAIN}", "--owner", f"dr.leroy@{DOMAIN}", "--name",
       "Dr Élise Leroy", "--service", "Psychiatrie", "--unlisted", "-c", c)
    ok("mailbox", "add", f"ancien@{DOMAIN}", "--type", "ORG", "--name", "Ancien service", "-c", c)
    ok("mailbox", "disable", f"ancien@{DOMAIN}", "-c", c)
    return c


EXPECTED_CSV = (
    f"{HEADER}\r\n"
    f"ORG,cardiologie@{DOMAIN},,Secretariat de cardiologie,Secrétariat,Cardiologie,"
    '"Service de cardiologie, Hôpital",false\r\n'
    f"PER,dr.leroy@{DOMAIN},0123456789,Dr Élise Leroy,,Psychiatrie,,true\r\n"
    f"PER,dr.martin@{DOMAIN},810002813839,Dr Paul Martin,"
    '"Cardiologue, ""interventionnel""",Cardiologie,,false\r\n'
    f"APP,labo@{DOMAIN},,Laboratoire,Résultats de biologie,Laboratoire,"
    "Laboratoire de biologie,false\r\n"
    f"ORG,postmaster@{DOMAIN},,Postmaster,,,{DOMAIN},false\r\n"
)


def test_export_refuses_per_boxes_without_idnat(inst: Path, fixture_boxes: str) -> None:
    out_file = inst / "annuaire.csv"
    code, out, err = mssctl("directory", "export", "--output", str(out_file),
                            "-c", fixture_boxes)
    assert code == 1
    assert "2 PER box(es) cannot be exported (nothing was written" in err
    assert f"sec.durand@{DOMAIN}: a PER box is published with its holder's IdNat_PS, and " \
           f"owner sec.durand@{DOMAIN} has no IdNat_PS" in err
    assert f"sec.petit@{DOMAIN}:" in err
    assert "--skip-incomplete" in err and "Traceback" not in err
    assert out == "" and not out_file.exists()
    assert audit_events(inst, "directory-export") == []  # nothing exported, nothing recorded


def test_export_csv(inst: Path, fixture_boxes: str) -> None:
    out_file = inst / "annuaire.csv"
    code, out, err = mssctl("directory", "export", "--format", "csv", "--skip-incomplete",
                            "--output", str(out_file), "-c", fixture_boxes)
    assert code == 0, err
    assert out == ""
    assert err.splitlines() == [
        f"mssctl: warning: sec.durand@{DOMAIN} left out: owner sec.durand@{DOMAIN} has no "
        "IdNat_PS",
        f"mssctl: warning: sec.petit@{DOMAIN} left out: owner sec.petit@{DOMAIN} has no IdNat_PS",
        f"5 mailbox(es) exported to {out_file} (csv)",
    ]
    assert out_file.read_bytes() == EXPECTED_CSV.encode("utf-8")
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    # Any RFC 4180 reader gets the fields back as they were set.
    rows = list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"), newline="")))
    martin = next(r for r in rows if r["address"] == f"dr.martin@{DOMAIN}")
    assert martin["description"] == 'Cardiologue, "interventionnel"'
    assert [r["address"] for r in rows if r["unlisted"] == "true"] == [f"dr.leroy@{DOMAIN}"]
    assert f"ancien@{DOMAIN}" not in {r["address"] for r in rows}  # disabled
    [event] = audit_events(inst, "directory-export")
    assert event["actor"].startswith("admin:")  # type: ignore[union-attr]
    assert (event["target"], event["result"], event["format"], event["mailboxes"],
            event["unlisted"], event["skipped"]) == (
        str(out_file), "ok", "csv", 5, 1, [f"sec.durand@{DOMAIN}", f"sec.petit@{DOMAIN}"])

    # Replaced whole on the next export (same content, stdout this time).
    code, out, _ = mssctl("directory", "export", "--skip-incomplete", "-c", fixture_boxes)
    assert code == 0 and out == EXPECTED_CSV


def test_export_json(inst: Path, fixture_boxes: str) -> None:
    code, out, err = mssctl("directory", "export", "--format", "json", "--skip-incomplete",
                            "-c", fixture_boxes)
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == ["format", "version", "generated", "domains", "count", "mailboxes"]
    assert (doc["format"], doc["version"], doc["domains"], doc["count"]) == (
        "mss-directory-export", 1, [DOMAIN], 5)
    assert doc["generated"].endswith("Z") and doc["generated"][:2] == "20"
    assert [list(m) for m in doc["mailboxes"]] == [HEADER.split(",")] * 5
    by_address = {m["address"]: m for m in doc["mailboxes"]}
    assert by_address[f"dr.leroy@{DOMAIN}"] == {
        "type": "PER", "address": f"dr.leroy@{DOMAIN}", "idnat_ps": "0123456789",
        "name": "Dr Élise Leroy", "description": "", "service": "Psychiatrie",
        "responsible": None, "unlisted": True,
    }
    assert by_address[f"cardiologie@{DOMAIN}"]["responsible"] == "Service de cardiologie, Hôpital"
    assert by_address[f"cardiologie@{DOMAIN}"]["idnat_ps"] is None
    assert by_address[f"labo@{DOMAIN}"]["type"] == "APP"
    # The same rows as the CSV, field for field.
    rows = list(csv.DictReader(io.StringIO(EXPECTED_CSV, newline="")))
    assert [[("" if v is None else str(v).lower() if isinstance(v, bool) else v)
             for v in m.values()] for m in doc["mailboxes"]] == [list(r.values()) for r in rows]


def test_export_of_the_demo_with_every_owner_identified(inst: Path) -> None:
    """Once the secretaries' boxes are out of the way (disabled), the demo
    exports without --skip-incomplete."""
    c = str(inst / "mss.yaml")
    for who in ("sec.durand", "sec.petit"):
        ok("mailbox", "disable", f"{who}@{DOMAIN}", "-c", c)
    out = ok("directory", "export", "-c", c)
    assert out.splitlines()[0] == HEADER
    assert [line.split(",")[1] for line in out.splitlines()[1:]] == [
        f"cardiologie@{DOMAIN}", f"dr.martin@{DOMAIN}", f"labo@{DOMAIN}", f"postmaster@{DOMAIN}"]


def test_export_errors(inst: Path) -> None:
    c = str(inst / "mss.yaml")
    code, _, err = mssctl("directory", "export", "--format", "xml", "-c", c)
    assert code == 2 and "invalid choice" in err
    code, _, err = mssctl("directory", "export", "--skip-incomplete", "--output", str(inst),
                          "-c", c)
    assert code == 2 and "is a directory" in err
    code, _, err = mssctl("directory", "export", "--skip-incomplete", "--output",
                          str(inst / "missing-dir" / "x.csv"), "-c", c)
    assert code == 1 and "cannot write" in err and "Traceback" not in err
    [event] = audit_events(inst, "directory-export")
    assert event["result"] == "fail"


# ---------------------------------------------------------------- mailbox add/set/show


def test_mailbox_set_directory_fields_is_audited(inst: Path) -> None:
    c = str(inst / "mss.yaml")
    out = ok("mailbox", "set", f"Cardiologie@{DOMAIN}", "--service", "Cardio", "--unlisted",
             "--name", "Cardiologie (secrétariat)", "-c", c)
    assert f"mailbox cardiologie@{DOMAIN}: " in out and "unlisted yes" in out
    [event] = audit_events(inst, "mailbox-set")
    assert event["actor"].startswith("admin:")  # type: ignore[union-attr]
    assert (event["target"], event["result"], event["service"], event["service_before"],
            event["unlisted"], event["unlisted_before"], event["display_name"],
            event["display_name_before"]) == (
        f"cardiologie@{DOMAIN}", "ok", "Cardio", "Cardiologie", True, False,
        "Cardiologie (secrétariat)", "Secretariat de cardiologie")
    assert "private_seen" not in event and "description" not in event  # not changed
    ok("mailbox", "set", f"cardiologie@{DOMAIN}", "--listed", "-c", c)
    settings = load_settings(inst / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        box = store.get_mailbox(f"cardiologie@{DOMAIN}")
    finally:
        store.close()
    assert (box.service, box.unlisted, box.display_name, box.description) == (
        "Cardio", False, "Cardiologie (secrétariat)", "Secretariat: rendez-vous, comptes rendus")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["set", f"cardiologie@{DOMAIN}"], 2, "one of the arguments"),
        (["set", f"cardiologie@{DOMAIN}", "--service", "x" * 256], 2,
         "--service: at most 255 characters"),
        (["set", f"cardiologie@{DOMAIN}", "--description", "two\nlines"], 2,
         "--description: control characters"),
        (["set", f"cardiologie@{DOMAIN}", "--listed", "--unlisted"], 2, "not allowed with"),
        (["set", f"ghost@{DOMAIN}", "--service", "x"], 1, "not found"),
        (["add", f"x@{DOMAIN}", "--type", "ORG", "--name", "a\tb"], 2,
         "--name: control characters"),
        (["show", f"ghost@{DOMAIN}"], 1, "not found"),
    ],
)
def test_mailbox_directory_field_errors(inst: Path, args: list[str], code: int,
                                        message: str) -> None:
    rc, _, err = mssctl("mailbox", *args, "-c", str(inst / "mss.yaml"))
    assert rc == code, err
    assert message in err and "Traceback" not in err


def test_mailbox_add_with_directory_fields_and_show(inst: Path) -> None:
    c = str(inst / "mss.yaml")
    ok("mailbox", "add", f"urgences@{DOMAIN}", "--type", "ORG", "--name", "Urgences",
       "--description", "Accueil des urgences", "--service", "Urgences", "--responsible",
       "Dr Chef", "--unlisted", "-c", c)
    [event] = [e for e in audit_events(inst, "mailbox-add")
               if e["target"] == f"urgences@{DOMAIN}"]
    assert (event["description"], event["service"], event["unlisted"]) == (
        "Accueil des urgences", "Urgences", True)
    out = ok("mailbox", "show", f"urgences@{DOMAIN}", "-c", c)
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert {k: v.strip() for k, v in fields.items()} == {
        "address": f"urgences@{DOMAIN}", "type": "ORG", "state": "active", "owner": "-",
        "name": "Urgences", "description": "Accueil des urgences", "service": "Urgences",
        "responsible": "Dr Chef", "directory": "unlisted (liste rouge)", "seen": "shared",
        "quota": "unlimited", "usage": "0 bytes in 0 message(s)",
        "folders": "Archive, Drafts, INBOX, Junk, Sent, Trash", "grants": "-",
    }
