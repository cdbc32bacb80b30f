"""`mssctl import` / `mssctl export` against real demo instances: a generated
Maildir of 1,000 messages read back over IMAP, mbox, a remote IMAP account
(a second instance) over TLS, second runs, an interrupted run that resumes,
bad input, and export round trips."""

from __future__ import annotations

import imaplib
import json
import os
import random
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from integration_support import DURAND, PETIT, MssInstance
from mssctl_support import mssctl_inprocess

from conf.loader import load_settings
from imapd.parser.mutf7 import encode
from mssctl.imapsource import RemoteAccount
from storage import open_store
from storage.interface import MessageStore, StoreUnavailable
from storage.store import SqlStore

IO_TIMEOUT = 30
FLAG_LETTERS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted",
                "D": "\\Draft"}

Contents = dict[str, list[tuple[bytes, frozenset[str], datetime]]]


def cli(inst: MssInstance, *args: str) -> tuple[int, str, str]:
    return mssctl_inprocess(*args, "--config", str(inst.directory / "mss.yaml"))


@contextmanager
def store_of(inst: MssInstance) -> Iterator[MessageStore]:
    settings = load_settings(inst.directory / "mss.yaml")
    store = open_store(settings.database.url, settings.key_file)
    try:
        yield store
    finally:
        store.close()


def contents(inst: MssInstance, address: str) -> Contents:
    """Every message of the box: folder -> [(raw, flags, INTERNALDATE)] in UID order."""
    out: Contents = {}
    with store_of(inst) as store:
        box = store.get_mailbox(address)
        for folder in store.list_folders(box.id):
            index = store.index(folder.id)
            bodies = dict(store.iter_bodies(folder.id, [e.uid for e in index]))
            if index:
                out[folder.name] = [(bodies[e.uid], e.flags, e.internal_date.astimezone(UTC))
                                    for e in index]
    return out


def summary(out: str) -> tuple[int, int, int]:
    m = re.search(r"imported (\d+), skipped (\d+) \(already there\), refused (\d+)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def audit_events(inst: MssInstance, action: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in inst.audit_text().splitlines() if line.strip()]
    return [e for e in events if e["action"] == action]


def message(n: int, folder: str) -> bytes:
    return (f"From: Dr A <a{n}@hopital.test>\r\nTo: {DURAND}\r\nSubject: {folder} #{n}\r\n"
            f"Message-ID: <m{n}.{folder.replace('/', '-')}@hopital.test>\r\n"
            f"Date: Mon, 7 Dec 2026 06:00:00 +0000\r\n\r\nbody {n}\r\nFrom the start\r\n"
            ).encode()


def make_maildir(root: Path, count: int, folders: dict[str, str]) -> dict[str, dict[bytes, tuple[
        frozenset[str], datetime]]]:
    """A Maildir++ tree of `count` messages over `folders` (our name -> dir
    name), LF line ends, random flags and mtimes. Returns what each folder
    must hold: raw (CRLF) -> (flags, date)."""
    rng = random.Random(7)
    expected: dict[str, dict[bytes, tuple[frozenset[str], datetime]]] = {f: {} for f in folders}
    for name, dirname in folders.items():
        for sub in ("cur", "new", "tmp"):
            (root / dirname / sub).mkdir(parents=True, exist_ok=True)
    names = list(folders)
    for n in range(count):
        name = names[n % len(names)]
        raw = message(n, name)
        letters = "".join(sorted(c for c in "DFRST" if rng.random() < 0.3))
        stamp = 1_600_000_000 + rng.randrange(100_000_000)
        in_new = n % 10 == 0
        sub = "new" if in_new else "cur"
        path = root / folders[name] / sub / (
            f"{stamp}.M{n}P99.old-server" + ("" if in_new else f",S={len(raw)}:2,{letters}"))
        path.write_bytes(raw.replace(b"\r\n", b"\n"))
        os.utime(path, (stamp, stamp))
        flags = frozenset() if in_new else frozenset(FLAG_LETTERS[c] for c in letters)
        expected[name][raw] = (flags, datetime.fromtimestamp(stamp, UTC))
    return expected


def imap_read(inst: MssInstance, login: str, folder: str) -> dict[bytes, tuple[frozenset[str],
                                                                             datetime]]:
    """raw -> (flags, INTERNALDATE) of a folder, read over IMAPS."""
    out: dict[bytes, tuple[frozenset[str], datetime]] = {}
    with imaplib.IMAP4_SSL("127.0.0.1", inst.port("imaps"), ssl_context=inst.client_context(),
                           timeout=IO_TIMEOUT) as conn:
        conn.login(login, inst.password(login))
        typ, _ = conn.select(f'"{encode(folder).decode()}"', readonly=True)
        assert typ == "OK", folder
        typ, data = conn.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        assert typ == "OK"
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, raw = item
            flags = frozenset(re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split())
            date = datetime.strptime(re.search(rb'INTERNALDATE "([^"]+)"', head).group(1)
                                     .decode().strip(), "%d-%b-%Y %H:%M:%S %z")
            out[raw] = (flags - {"\\Recent"}, date.astimezone(UTC))
    return out


# ---------------------------------------------------------------- Maildir


def test_maildir_of_1000_imported_with_flags_and_dates_read_back_over_imap(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-maildir")
    folders = {"INBOX": ".", "Sent": ".Sent", "Archives/2024": ".Archives.2024",
               "Dossiers/Été": ".Dossiers.&AMk-t&AOk-"}
    expected = make_maildir(tmp_path / "Maildir", 1000, folders)
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir",
                         str(tmp_path / "Maildir"))
    assert code == 0, err
    assert summary(out) == (1000, 0, 0)
    assert err == ""  # not a terminal: no progress line

    inst.start()
    try:
        for name, want in expected.items():
            assert imap_read(inst, DURAND, name) == want, name
    finally:
        inst.stop()

    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir",
                         str(tmp_path / "Maildir"))
    assert code == 0, err
    assert summary(out) == (0, 1000, 0)  # a second run imports nothing new
    assert sum(len(v) for v in contents(inst, DURAND).values()) == 1000
    events = audit_events(inst, "import")
    assert [(e["result"], e["imported"], e["skipped"], e["refused"]) for e in events] == [
        ("ok", 1000, 0, 0), ("ok", 0, 1000, 0)]
    assert events[0]["actor"].startswith("admin:")
    assert events[0]["format"] == "maildir"
    assert "body" not in inst.audit_text()


def test_folder_prefix_and_identical_copies(tmp_path_factory: pytest.TempPathFactory,
                                            tmp_path: Path) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-prefix")
    root = tmp_path / "md"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
        (root / ".Sent" / sub).mkdir(parents=True)
    raw = message(1, "x").replace(b"\r\n", b"\n")
    (root / "cur" / "1.a:2,S").write_bytes(raw)
    (root / "cur" / "2.b:2,S").write_bytes(raw)  # the same message twice: both kept
    (root / ".Sent" / "cur" / "3.c:2,").write_bytes(message(2, "y").replace(b"\r\n", b"\n"))
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(root),
                         "--folder", "Ancien serveur")
    assert code == 0, err
    assert summary(out) == (3, 0, 0)
    box = contents(inst, DURAND)
    assert len(box["Ancien serveur"]) == 2
    assert len(box["Ancien serveur/Sent"]) == 1
    assert "INBOX" not in box
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(root),
                         "--folder", "Ancien serveur")
    assert summary(out) == (0, 3, 0)


def test_decomposed_folder_names_imported_in_nfc(tmp_path_factory: pytest.TempPathFactory,
                                                 tmp_path: Path) -> None:
    """A Maildir made on macOS names folders with combining accents (NFD);
    the store takes new names in NFC only (RFC 6855 3): they are imported
    under their NFC name, not refused."""
    inst = MssInstance.demo(tmp_path_factory, "migrate-nfc")
    root = tmp_path / "md"
    nfd = ".Re\u0301sultats.e\u0301te\u0301"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
        (root / nfd / sub).mkdir(parents=True)
    (root / nfd / "cur" / "1.a:2,S").write_bytes(message(1, "x").replace(b"\r\n", b"\n"))
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(root))
    assert code == 0, err
    assert summary(out) == (1, 0, 0)
    assert len(contents(inst, DURAND)["R\u00e9sultats/\u00e9t\u00e9"]) == 1


# ---------------------------------------------------------------- mbox


MBOX = b"""From alice@example.test Tue Mar  5 09:15:02 2024
From: alice@example.test
Subject: seen and answered
Status: RO
X-Status: A

>From here a quoted line
>>From two levels

From bob@example.test Wed Jan 10 23:59:59 2024
From: bob@example.test
Subject: flagged, unread
X-Status: F
X-Keywords: $Forwarded

second

From carol@example.test Thu Feb 29 00:00:00 2024 +0100
From: carol@example.test
Subject: nothing

third
"""


def test_mbox_import_with_flags_and_dates(tmp_path_factory: pytest.TempPathFactory,
                                          tmp_path: Path) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-mbox")
    (tmp_path / "old.mbox").write_bytes(MBOX)
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--mbox",
                         str(tmp_path / "old.mbox"), "--folder", "Old")
    assert code == 0, err
    assert summary(out) == (3, 0, 0)
    got = contents(inst, DURAND)["Old"]
    assert got == [
        (b"From: alice@example.test\r\nSubject: seen and answered\r\n\r\n"
         b"From here a quoted line\r\n>From two levels\r\n",
         frozenset({"\\Seen", "\\Answered"}), datetime(2024, 3, 5, 9, 15, 2, tzinfo=UTC)),
        (b"From: bob@example.test\r\nSubject: flagged, unread\r\n\r\nsecond\r\n",
         frozenset({"\\Flagged", "$Forwarded"}), datetime(2024, 1, 10, 23, 59, 59, tzinfo=UTC)),
        (b"From: carol@example.test\r\nSubject: nothing\r\n\r\nthird\r\n",
         frozenset(), datetime(2024, 2, 29, 0, 0, 0, tzinfo=UTC)),
    ]
    code, out, _ = cli(inst, "import", "--mailbox", DURAND, "--mbox",
                       str(tmp_path / "old.mbox"), "--folder", "Old")
    assert code == 0 and summary(out) == (0, 3, 0)


# ---------------------------------------------------------------- IMAP


def test_imap_account_imported_from_another_instance(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    source = MssInstance.demo(tmp_path_factory, "migrate-imap-src")
    dest = MssInstance.demo(tmp_path_factory, "migrate-imap-dst")
    placed = {
        "INBOX": [("(\\Seen)", "01-Feb-2024 10:00:00 +0100"), ("()", "02-Feb-2024 11:30:00 +0000")],
        "Sent": [("(\\Seen \\Answered)", "03-Mar-2023 08:00:00 +0000")],
        "Projets/2024": [("(\\Flagged $Label1)", "15-Jun-2024 12:00:00 +0200"),
                         ("(\\Draft)", "16-Jun-2024 12:00:00 +0000")],
    }
    source.start()
    try:
        with imaplib.IMAP4_SSL("127.0.0.1", source.port("imaps"),
                               ssl_context=source.client_context(), timeout=IO_TIMEOUT) as c:
            c.login(DURAND, source.password(DURAND))
            assert c.create('"Projets/2024"')[0] == "OK"
            n = 0
            for folder, items in placed.items():
                for flags, date in items:
                    n += 1
                    typ, _ = c.append(f'"{folder}"', flags, f'"{date}"', message(n, folder))
                    assert typ == "OK"
        pw = tmp_path / "pw"
        pw.write_text(source.password(DURAND) + "\n")
        args = ("import", "--mailbox", PETIT, "--imap", f"127.0.0.1:{source.port('imaps')}",
                "--user", DURAND, "--password-file", str(pw), "--ca-file", str(source.ca_file))
        remote = RemoteAccount("127.0.0.1", source.port("imaps"), DURAND,
                               source.password(DURAND), source.client_context())
        try:  # what the progress line counts down from
            assert remote.count([f for f in remote.folders() if f.folder is not None]) == 5
        finally:
            remote.logout()
        code, out, err = cli(dest, *args)
        assert code == 0, err
        assert summary(out) == (5, 0, 0)
        code, out, err = cli(dest, *args)
        assert code == 0, err
        assert summary(out) == (0, 5, 0)
        with imaplib.IMAP4_SSL("127.0.0.1", source.port("imaps"),
                               ssl_context=source.client_context(), timeout=IO_TIMEOUT) as c:
            c.login(DURAND, source.password(DURAND))
            big = message(99, "INBOX") + b"x" * 2000 + b"\r\n"
            assert c.append("INBOX", "()", None, big)[0] == "OK"
        settings = dest.directory / "mss.yaml"
        text = settings.read_text()
        assert "message_size: 10485760" in text
        settings.write_text(text.replace("message_size: 10485760", "message_size: 1024"))
        code, out, err = cli(dest, *args)
        assert code == 1
        assert summary(out) == (0, 5, 1)
        assert re.search(r"/INBOX UID \d+: \d+ bytes, larger than limits.message_size \(1024\); "
                         r"not downloaded", err), err
        settings.write_text(text)
        wrong = tmp_path / "wrong"
        wrong.write_text("not the password\n")
        code, _, err = cli(dest, *args[:-4], "--password-file", str(wrong),
                           "--ca-file", str(source.ca_file))
        assert code == 1 and "login refused" in err
    finally:
        source.stop()
    got = contents(dest, PETIT)
    n = 0
    for folder, items in placed.items():
        want = []
        for flags, date in items:
            n += 1
            want.append((message(n, folder),
                         frozenset(flags.strip("()").split()),
                         datetime.strptime(date, "%d-%b-%Y %H:%M:%S %z").astimezone(UTC)))
        assert got[folder] == want, folder
    event = audit_events(dest, "import")[0]
    assert event["format"] == "imap" and event["imported"] == 5
    assert DURAND in event["source"] and source.password(DURAND) not in dest.audit_text()


def test_imap_source_unreachable_is_a_clear_error(tmp_path_factory: pytest.TempPathFactory,
                                                  tmp_path: Path) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-imap-down")
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    code, _, err = cli(inst, "import", "--mailbox", DURAND, "--imap",
                       f"127.0.0.1:{inst.port('imaps')}", "--user", DURAND,
                       "--password-file", str(pw))
    assert code == 1
    assert "cannot connect to 127.0.0.1" in err and "Traceback" not in err


# ---------------------------------------------------------------- resume


def test_interrupted_import_resumes(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-resume")
    expected = make_maildir(tmp_path / "md", 100, {"INBOX": ".", "Sent": ".Sent"})
    real = SqlStore.append_many
    calls = {"n": 0}

    def failing(self: SqlStore, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreUnavailable("disk gone")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SqlStore, "append_many", failing)
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(tmp_path / "md"),
                         "--batch", "10")
    assert code == 1
    assert summary(out) == (20, 0, 0)
    assert "import stopped: the database is unavailable" in err
    assert "20 message(s) counted as imported are committed" in err
    assert audit_events(inst, "import")[0]["result"] == "fail"
    assert sum(len(v) for v in contents(inst, DURAND).values()) == 20

    monkeypatch.setattr(SqlStore, "append_many", real)
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(tmp_path / "md"),
                         "--batch", "10")
    assert code == 0, err
    assert summary(out) == (80, 20, 0)
    box = contents(inst, DURAND)
    for name, want in expected.items():
        assert {raw: (flags, date) for raw, flags, date in box[name]} == want
        assert len(box[name]) == len(want)  # nothing twice


# ---------------------------------------------------------------- bad input


def test_bad_input_is_reported_and_the_rest_imported(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-bad")
    root = tmp_path / "md"
    for d in (".", ".Bad..name", ".&bad"):
        for sub in ("cur", "new", "tmp"):
            (root / d / sub).mkdir(parents=True, exist_ok=True)
    (root / "cur" / "1.ok:2,S").write_bytes(b"From: a@b\nSubject: fine\n\nok\n")
    (root / "cur" / "2.broken:2,").write_bytes(b"\x00\x01 not a message at all\n")
    (root / "cur" / "3.empty:2,").write_bytes(b"")
    (root / "cur" / "4.unreadable:2,").mkdir()  # open() fails, even as root
    (root / ".Bad..name" / "cur" / "5.x:2,").write_bytes(b"From: a@b\n\nx\n")
    (root / ".&bad" / "cur" / "6.x:2,").write_bytes(b"From: a@b\n\nx\n")
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(root))
    assert code == 1
    assert summary(out) == (1, 0, 5)
    assert "2.broken:2,: not a message" in err
    assert "3.empty:2,: empty" in err
    assert "4.unreadable:2,: unreadable" in err
    assert "'.Bad..name' is not valid here" in err
    assert "'.&bad' is not valid here" in err
    assert "Traceback" not in err
    assert contents(inst, DURAND)["INBOX"][0][1] == frozenset({"\\Seen"})
    assert audit_events(inst, "import")[0]["refused"] == 5

    code, _, err = cli(inst, "import", "--mailbox", "nobody@hopital.test", "--maildir",
                       str(root))
    assert code == 1 and "nobody@hopital.test: not found" in err
    code, _, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(tmp_path / "no"))
    assert code == 2 and "is not a Maildir" in err
    (tmp_path / "junk.mbox").write_bytes(b"hello\nworld\n")
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--mbox",
                         str(tmp_path / "junk.mbox"))
    assert code == 1 and "not an mbox file" in err and summary(out) == (0, 0, 1)


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_export_then_import_gives_the_same_box(tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path, fmt: str) -> None:
    inst = MssInstance.demo(tmp_path_factory, f"migrate-export-{fmt}")
    make_maildir(tmp_path / "md", 60, {"INBOX": ".", "Sent": ".Sent",
                                       "Archives/2024": ".Archives.2024",
                                       "A.B c": ".A%2EB c"})
    (tmp_path / "md" / "cur" / "9.kw:2,Sa").write_bytes(b"From: k@w\n\nkeyword\n")
    (tmp_path / "md" / "dovecot-keywords").write_text("0 $Forwarded\n")
    code, _, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(tmp_path / "md"))
    assert code == 0, err
    before = contents(inst, DURAND)
    assert "A.B c" in before
    assert (b"From: k@w\r\n\r\nkeyword\r\n", frozenset({"\\Seen", "$Forwarded"})) in [
        (raw, flags) for raw, flags, _ in before["INBOX"]]

    code, out, err = cli(inst, "export", "--mailbox", DURAND, "--format", fmt,
                         str(tmp_path / "out"))
    assert code == 0, err
    assert "61 message(s)" in out
    option = "--maildir" if fmt == "maildir" else "--mbox"
    code, out, err = cli(inst, "import", "--mailbox", PETIT, option, str(tmp_path / "out"))
    assert code == 0, err
    assert summary(out) == (61, 0, 0)
    after = contents(inst, PETIT)
    if fmt == "maildir":  # a Maildir has no order: compare each folder as a set
        assert {k: sorted(v) for k, v in after.items()} == {
            k: sorted(v) for k, v in before.items()}
    else:
        assert after == before
    event = audit_events(inst, "export")[0]
    assert (event["result"], event["messages"], event["format"]) == ("ok", 61, fmt)

    code, _, err = cli(inst, "export", "--mailbox", DURAND, str(tmp_path / "out"))
    assert code == 2 and "is not empty" in err

    code, out, err = cli(inst, "export", "--mailbox", DURAND, "--folder", "Sent", "--format",
                         fmt, str(tmp_path / "sent"))
    assert code == 0, err
    code, out, err = cli(inst, "import", "--mailbox", PETIT, option, str(tmp_path / "sent"),
                         "--folder", "Sent copy")
    assert code == 0, err
    assert sorted(contents(inst, PETIT)["Sent copy"]) == sorted(before["Sent"])


# ---------------------------------------------------------------- a remote that drops us


def _scripted_imaps(inst: MssInstance, drop_in: str) -> tuple[int, threading.Thread]:
    """A TLS IMAP server on 127.0.0.1 (the instance's server certificate) that
    serves two folders, INBOX (two messages) and `Later`, and closes the
    connection when asked to FETCH from `drop_in`: a server that goes away."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(inst.directory / "pki" / "server.pem"),
                        str(inst.directory / "pki" / "server.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(IO_TIMEOUT)
            f = tls.makefile("rwb")
            f.write(b"* OK [CAPABILITY IMAP4rev1] scripted\r\n")
            f.flush()
            selected = ""
            while line := f.readline():
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                cmd = rest.upper()
                if cmd.startswith(b"CAPABILITY"):
                    f.write(b"* CAPABILITY IMAP4rev1\r\n")
                elif cmd.startswith(b"LIST"):
                    f.write(b'* LIST () "/" INBOX\r\n* LIST () "/" "Later"\r\n')
                elif cmd.startswith(b"EXAMINE"):
                    selected = rest.split(b" ", 1)[1].strip(b'"').decode()
                    f.write(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n")
                    f.write(tag + b" OK [READ-ONLY] done\r\n")
                    f.flush()
                    continue
                elif cmd.startswith(b"UID SEARCH"):
                    f.write(b"* SEARCH 1 2\r\n")
                elif cmd.startswith(b"UID FETCH") and b"RFC822.SIZE" in cmd:
                    for uid in (1, 2):
                        f.write(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n"
                                % (uid, uid, len(message(uid, selected))))
                elif cmd.startswith(b"UID FETCH"):
                    if selected == drop_in:
                        f.write(b"* 1 FETCH (UID 1 FLAGS () INTERNALDATE")
                        f.flush()
                        return  # the connection drops mid-response
                    for uid in (1, 2):
                        raw = message(uid, selected)
                        f.write(b'* %d FETCH (UID %d FLAGS (\\Seen) INTERNALDATE '
                                b'"05-Mar-2024 09:15:02 +0000" BODY[] {%d}\r\n%s)\r\n'
                                % (uid, uid, len(raw), raw))
                elif cmd.startswith(b"LOGOUT"):
                    f.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    f.flush()
                    return
                f.write(tag + b" OK done\r\n")
                f.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_remote_that_drops_the_connection_stops_cleanly(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-drop")
    port, thread = _scripted_imaps(inst, "Later")
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--imap", f"127.0.0.1:{port}",
                         "--user", "someone", "--password-file", str(pw),
                         "--ca-file", str(inst.ca_file), "--folder", "Remote")
    thread.join(IO_TIMEOUT)
    assert code == 1
    assert summary(out) == (2, 0, 0)
    assert "import stopped:" in err and "connection lost in Later" in err
    assert "the 2 message(s) counted as imported are committed" in err
    assert "Traceback" not in err
    got = contents(inst, DURAND)["Remote"]
    assert [(raw, flags) for raw, flags, _ in got] == [
        (message(1, "INBOX"), frozenset({"\\Seen"})), (message(2, "INBOX"), frozenset({"\\Seen"}))]
    event = audit_events(inst, "import")[0]
    assert (event["result"], event["imported"]) == ("fail", 2)


def test_private_seen_box_gets_the_holders_own_seen(tmp_path_factory: pytest.TempPathFactory,
                                                    tmp_path: Path) -> None:
    inst = MssInstance.demo(tmp_path_factory, "migrate-private-seen")
    code, _, err = cli(inst, "mailbox", "set", DURAND, "--private-seen")
    assert code == 0, err
    root = tmp_path / "md"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1.a:2,SF").write_bytes(b"From: a@b\n\nread\n")
    (root / "cur" / "2.b:2,F").write_bytes(b"From: a@b\n\nunread\n")
    code, out, err = cli(inst, "import", "--mailbox", DURAND, "--maildir", str(root))
    assert code == 0, err
    with store_of(inst) as store:
        box = store.get_mailbox(DURAND)
        assert box.private_seen and box.owner_account_id is not None
        inbox = store.get_folder(box.id, "INBOX")
        own = [e.flags for e in store.index(inbox.id, seen_account=box.owner_account_id)]
        other = store.get_account(PETIT).id
        theirs = [e.flags for e in store.index(inbox.id, seen_account=other)]
    assert own == [frozenset({"\\Seen", "\\Flagged"}), frozenset({"\\Flagged"})]
    assert theirs == [frozenset({"\\Flagged"}), frozenset({"\\Flagged"})]


@pytest.mark.postgres
def test_import_on_postgresql_resumes_and_skips(pg_cluster: Any, tmp_path: Path) -> None:
    """The importer on the production store: a second run finds everything there."""
    import io

    from mssctl.mailformats import read_maildir
    from mssctl.migrate import Importer, Progress
    from storage.crypto import generate_key_file
    from storage.interface import AccountClass, MailboxType

    key = tmp_path / "keys"
    generate_key_file(key)
    store = open_store(pg_cluster.url(pg_cluster.new_database()), key)
    try:
        store.add_domain("hopital.test")
        acc = store.add_account(DURAND, "S D", AccountClass.STAFF)
        box = store.add_mailbox(DURAND, MailboxType.PER, owner_account_id=acc.id)
        expected = make_maildir(tmp_path / "md", 120, {"INBOX": ".", "Archives/2024":
                                                       ".Archives.2024"})
        counts = []
        for _ in range(2):
            importer = Importer(store, box, (), Progress(io.StringIO(), "importing"),
                                io.StringIO(), max_size=10 * 1024 * 1024, batch_messages=50)
            for item in read_maildir(tmp_path / "md"):
                importer.take(item)
            importer.flush()
            counts.append((importer.imported, importer.skipped, importer.refused))
        assert counts == [(120, 0, 0), (0, 120, 0)]
        for name, want in expected.items():
            folder = store.get_folder(box.id, name)
            index = store.index(folder.id)
            bodies = dict(store.iter_bodies(folder.id, [e.uid for e in index]))
            assert {bodies[e.uid]: (e.flags, e.internal_date.astimezone(UTC))
                    for e in index} == want
    finally:
        store.close()
