"""mbsync (isync) syncs a 1,000-message mailbox to a local Maildir and back,
with flag changes both ways and a message uploaded from the Maildir."""

from __future__ import annotations

import imaplib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from imap_support import PASSWORD, ServerProcess, client_ssl_context, make_world

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync not installed")]

USER = "user0@hopital.test"
COUNT = 1000


def _fill(config: dict[str, Any]) -> None:
    from storage import open_store

    store = open_store(config["url"], Path(config["key_file"]))
    try:
        mb = store.get_mailbox(USER)
        inbox = store.get_folder(mb.id, "INBOX")
        for i in range(COUNT):
            raw = (f"From: Labo <labo@hopital.test>\r\nTo: <{USER}>\r\n"
                   f"Subject: resultat {i}\r\nMessage-ID: <sync-{i}@hopital.test>\r\n\r\n"
                   f"Resultat numero {i}\r\n").encode()
            store.append(inbox.id, raw, flags=("\\Seen",) if i % 10 == 0 else ())
    finally:
        store.close()


def _mbsync(config_file: Path) -> None:
    proc = subprocess.run(["mbsync", "-c", str(config_file), "-a"], capture_output=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert b"rror" not in proc.stderr, proc.stderr.decode()[-3000:]


def _maildir_files(maildir: Path) -> list[Path]:
    return [p for sub in ("cur", "new") for p in (maildir / sub).iterdir()]


def _flags_of(path: Path) -> str:
    return path.name.split(":2,", 1)[1] if ":2," in path.name else ""


def test_mbsync_round_trip(tmp_path: Path, dev_pki: Any) -> None:
    config = make_world(tmp_path / "srv", dev_pki, users=1)
    _fill(config)
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    with ServerProcess(config, tmp_path) as ports:
        rc.write_text(f"""
IMAPAccount test
Host localhost
Port {ports['imaps']}
User {USER}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {dev_pki.ca_bundle}
AuthMechs PLAIN

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Both
Sync All
Expunge None
SyncState *
""")
        _mbsync(rc)
        files = _maildir_files(local / "INBOX")
        assert len(files) == COUNT
        assert sum(1 for f in files if "S" in _flags_of(f)) == COUNT // 10

        # Local changes: mark 5 unread messages seen and flagged; add a message.
        unread = sorted(f for f in files if "S" not in _flags_of(f))[:5]
        for f in unread:
            base = f.name.split(":2,", 1)[0]
            os.rename(f, local / "INBOX" / "cur" / f"{base}:2,FS")
        new = local / "INBOX" / "new" / "1700000000.local.test"
        new.write_bytes(b"From: <x@hopital.test>\r\nSubject: from maildir\r\n\r\nhello\r\n")
        # Remote change: answer message 2 from another client.
        ctx = client_ssl_context(dev_pki)
        with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=ctx) as m:
            m.login(USER, PASSWORD)
            m.select("INBOX")
            m.store("2", "+FLAGS", r"(\Answered)")
        _mbsync(rc)

        with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=ctx) as m:
            m.login(USER, PASSWORD)
            typ, data = m.select("INBOX")
            assert int(data[0]) == COUNT + 1
            typ, data = m.search(None, "FLAGGED")
            assert len(data[0].split()) == 5
            typ, data = m.search(None, "SEEN")
            assert len(data[0].split()) == COUNT // 10 + 5
            typ, data = m.search(None, 'SUBJECT "from maildir"')
            assert len(data[0].split()) == 1
        files = _maildir_files(local / "INBOX")
        assert len(files) == COUNT + 1
        assert sum(1 for f in files if "R" in _flags_of(f)) == 1
