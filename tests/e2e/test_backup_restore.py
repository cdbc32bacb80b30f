"""`mssctl backup` of a running server, and the restore procedure of the
README ("Backup and restore"): the database copy, the settings and the key
file in a new instance directory, served, every message read back over
IMAP; without the key file the restored copy is refused with a clear error.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_support import (
    CARDIO,
    DURAND,
    LABO,
    MARTIN,
    PETIT,
    ImapConn,
    MssInstance,
    make_message,
    run_cli,
    strip_trace,
    submit,
    untagged_of,
)
from mssctl_support import env, mssctl_cmd

from storage.crypto import generate_key_file

ROOT = Path(__file__).resolve().parents[2]
# What the restore takes from the saved settings: the settings file and the
# files it names (in a real installation, from configuration management).
SETTINGS_FILES = ("mss.yaml", "flows.yaml", "whitelist.xml", "pki")


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "backup")
    inst.start()
    yield inst
    inst.kill()


def restored_instance(original: MssInstance, backup: Path, target: Path, *,
                      key_file: Path | None) -> MssInstance:
    """The README's restore procedure, into the new directory `target`."""
    target.mkdir(parents=True)
    for name in SETTINGS_FILES:  # 1. the settings and the files they name
        src = original.directory / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, target / name)
    shutil.copy2(backup / "mss.db", target / "mss.db")  # 2. the database copy
    if key_file is not None:  # 3. the key file, private
        shutil.copy2(key_file, target / "keys")
        (target / "keys").chmod(0o600)
    out = original.init_output.replace(str(original.directory), str(target))
    restored = MssInstance.from_init_output(target, original.offset, out, random.Random())  # noqa: S311
    restored.move_ports()  # beside the original, on ports of its own
    return restored


def imap_login(inst: MssInstance, login: str) -> ImapConn:
    if login == LABO:  # the lab system: its organisation certificate
        conn = ImapConn(inst.port("imaps"), inst.client_context(inst.cert_pair(LABO)))
        _, tagged = conn.command("AUTHENTICATE EXTERNAL =")
        assert tagged.text.startswith(b"A001 OK"), tagged.text
        return conn
    conn = ImapConn(inst.port("imaps"), inst.client_context())
    conn.login(login, inst.password(login))
    return conn


def folder_messages(conn: ImapConn, folder: str) -> list[bytes]:
    untagged = conn.ok(f'EXAMINE "{folder}"')
    exists = [int(r.text.split()[1]) for r in untagged_of(untagged, b"EXISTS")]
    if not exists or exists[0] == 0:
        return []
    fetched = untagged_of(conn.ok("UID FETCH 1:* (BODY.PEEK[])"), b"FETCH")
    assert len(fetched) == exists[0]
    return [strip_trace(r.literals[0]) for r in fetched]


# The boxes and how to read each: (login, folder).
READERS = {
    MARTIN: (MARTIN, "INBOX"),
    DURAND: (DURAND, "INBOX"),
    PETIT: (PETIT, "INBOX"),
    CARDIO: (DURAND, f"Shared/{CARDIO}/INBOX"),
    LABO: (LABO, "INBOX"),
}


def test_backup_while_serving_then_restore_reads_every_message(
        mss: MssInstance, tmp_path: Path) -> None:
    sent: dict[str, list[bytes]] = {box: [] for box in READERS}
    for i, to in enumerate([[MARTIN], [PETIT, CARDIO], [CARDIO], [LABO, MARTIN], [DURAND],
                            [MARTIN, PETIT, CARDIO, LABO]]):
        body = f"compte rendu {i}\r\n" + "ligne de resultat\r\n" * 200
        message = make_message(f"avant sauvegarde {i}", body, sender=DURAND, to=to,
                               msgid=f"before-{i}")
        submit(mss, DURAND, to, message, password_of=DURAND)
        for box in to:
            sent[box].append(message)

    # A client keeps delivering while the backup runs.
    stop = threading.Event()
    during: list[bytes] = []
    accepted_at: list[float] = []
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            message = make_message(f"pendant {n}", f"suite {n}", sender=DURAND, to=[MARTIN],
                                   msgid=f"during-{n}")
            try:
                submit(mss, DURAND, [MARTIN], message, password_of=DURAND,
                       accepted_at=accepted_at)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            during.append(message)
            n += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while len(accepted_at) < 2 and time.monotonic() < deadline and not errors:
        time.sleep(0.02)  # until the writer is under way (polling with a deadline)
    backup = tmp_path / "backup"
    started = time.monotonic()
    code, out = run_cli("backup", str(backup), "--with-keys",
                        "--config", str(mss.directory / "mss.yaml"))
    finished = time.monotonic()
    deadline = time.monotonic() + 30
    while not any(t > finished for t in accepted_at) and time.monotonic() < deadline \
            and not errors:
        time.sleep(0.02)
    stop.set()
    thread.join(30)
    assert not errors, errors
    assert code == 0, out
    assert any(t < started for t in accepted_at) and any(t > finished for t in accepted_at)
    assert f"database copied to {backup / 'mss.db'}" in out
    assert f"key file copied to {backup / 'keys'} (mode 0600" in out
    assert stat.S_IMODE((backup / "keys").stat().st_mode) == 0o600
    assert stat.S_IMODE((backup / "mss.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    manifest = json.loads((backup / "backup.json").read_text())
    assert manifest["database"]["schema_revision"] is not None
    assert manifest["database"]["key_ids"] == ["k1"]
    assert manifest["key_file"] == {"included": True, "file": "keys",
                                    "source": str(mss.directory / "keys")}
    assert sorted(p.name for p in backup.iterdir()) == ["backup.json", "keys", "mss.db"]
    [event] = [json.loads(line) for line in mss.audit_text().splitlines()
               if '"action": "backup"' in line]
    assert event["actor"].startswith("admin:") and event["result"] == "ok"
    assert event["with_keys"] is True and event["target"] == str(backup)

    # Restore into a new instance directory and serve it.
    restored = restored_instance(mss, backup, tmp_path / "restored", key_file=backup / "keys")
    code, out = run_cli("db", "upgrade", "--config", str(restored.directory / "mss.yaml"))
    assert code == 0, out
    restored.start()
    try:
        for box, (login, folder) in READERS.items():
            with imap_login(restored, login) as conn:
                got = folder_messages(conn, folder)
            if box == MARTIN:
                # Everything accepted before the backup began; of the writer's
                # messages, a prefix (the copy is one moment), each whole.
                assert got[:len(sent[box])] == sent[box]
                rest = got[len(sent[box]):]
                assert rest == during[:len(rest)]
                assert rest, "the writer's first messages preceded the backup"
            else:
                assert got == sent[box], box
    finally:
        assert restored.stop() == 0
    assert "Traceback" not in restored.log_tail(100_000)


def test_restored_copy_without_its_key_file_is_refused(mss: MssInstance, tmp_path: Path) -> None:
    """The database restored with another key file (here a fresh one, whose
    key has the same id), or none: serve refuses with a clear error."""
    message = make_message("sans cle", "illisible sans la cle", sender=DURAND, to=[MARTIN],
                           msgid="no-key")
    submit(mss, DURAND, [MARTIN], message, password_of=DURAND)
    backup = tmp_path / "backup"
    code, out = run_cli("backup", str(backup), "--config", str(mss.directory / "mss.yaml"))
    assert code == 0, out
    assert f"NOT in this backup: the key file {mss.directory / 'keys'} (keys k1)" in out
    assert "without it these messages cannot be read" in out
    assert not (backup / "keys").exists()

    other_key = tmp_path / "fresh-keys"
    generate_key_file(other_key)
    restored = restored_instance(mss, backup, tmp_path / "restored", key_file=other_key)
    serve = subprocess.run(mssctl_cmd("serve", "--config", str(restored.directory / "mss.yaml")),
                           capture_output=True, text=True, timeout=60, env=env(), cwd=ROOT)
    assert serve.returncode == 2, serve.stderr
    assert (f"key_file {restored.directory / 'keys'} cannot read this database: key k1 of the "
            "key file does not decrypt the stored messages (another key under the same id)"
            ) in serve.stderr
    assert "Put back the key file saved with this database" in serve.stderr
    assert "Traceback" not in serve.stderr

    (restored.directory / "keys").unlink()  # no key file at all
    serve = subprocess.run(mssctl_cmd("serve", "--config", str(restored.directory / "mss.yaml")),
                           capture_output=True, text=True, timeout=60, env=env(), cwd=ROOT)
    assert serve.returncode == 2
    assert "key_file" in serve.stderr and "keys" in serve.stderr
    assert "Traceback" not in serve.stderr


def test_backup_refusals(mss: MssInstance, tmp_path: Path) -> None:
    config = str(mss.directory / "mss.yaml")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old").write_text("a previous backup")
    code, out = run_cli("backup", str(taken), "--config", config)
    assert code == 2 and "is not empty" in out
    assert (taken / "old").read_text() == "a previous backup"
    code, out = run_cli("backup", str(taken / "old"), "--config", config)
    assert code == 2 and "is not a directory" in out

    # PostgreSQL: the command explains what to use instead.
    pg_config = tmp_path / "pg" / "mss.yaml"
    shutil.copytree(mss.directory, pg_config.parent,
                    ignore=shutil.ignore_patterns("mss.db*", "*.log", "mss.pid"))
    text = pg_config.read_text()
    start = text.index("url:")
    end = text.index("\n", start)
    pg_config.write_text(text[:start] + "url: postgresql+psycopg2://mss@127.0.0.1/mss"
                         + text[end:])
    code, out = run_cli("backup", str(tmp_path / "pgdump"), "--config", str(pg_config))
    assert code == 2, out
    assert "the database is PostgreSQL" in out and "pg_dump" in out and "pg_basebackup" in out
    assert "Traceback" not in out and not (tmp_path / "pgdump").exists()


def test_backup_manifest_holds_no_key_material(mss: MssInstance, tmp_path: Path) -> None:
    """The manifest names key ids, never key material."""
    backup = tmp_path / "b"
    code, out = run_cli("backup", str(backup), "--config", str(mss.directory / "mss.yaml"))
    assert code == 0, out
    key_line = (mss.directory / "keys").read_text().split(":", 1)[1].strip()
    assert base64.b64decode(key_line)
    assert key_line not in (backup / "backup.json").read_text()
    assert key_line not in out
