"""Acceptance: concurrent appends from two processes on one SQLite file, both
SIGKILLed mid-way. Every UID a child reported (after its append returned) must
be in the reopened store, with the content that child wrote; UIDs are unique
and increasing."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from storage import open_store
from storage.crypto import generate_key_file
from storage.interface import AccountClass, MailboxType

WORKER = Path(__file__).with_name("append_worker.py")
KILL_AFTER = 40  # reported appends (both children together) before SIGKILL
KILL_MIN_EACH = 5  # ... and at least this many from each child: both were writing


@pytest.mark.slow
def test_sigkill_during_concurrent_appends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mss.db'}"
    key = tmp_path / "keys"
    generate_key_file(key)
    store = open_store(url, key, create=True)
    store.add_domain("hopital.test")
    acc = store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    folder_id = store.get_folder(mb.id, "INBOX").id
    store.close()

    names = ("alpha", "beta")
    procs = {
        name: subprocess.Popen(
            # Both append until killed: on a loaded machine one child may get
            # far ahead of the other before both have reported enough.
            [sys.executable, str(WORKER), url, str(key), str(folder_id), name, "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in names
    }
    reported: dict[str, list[tuple[int, int]]] = {name: [] for name in names}
    buffers = {name: b"" for name in names}

    def take(name: str, data: bytes) -> None:
        buffers[name] += data
        *lines, buffers[name] = buffers[name].split(b"\n")
        for line in lines:
            uid, n = line.split()
            reported[name].append((int(uid), int(n)))

    sel = selectors.DefaultSelector()
    for name, p in procs.items():
        assert p.stdout is not None
        os.set_blocking(p.stdout.fileno(), False)
        sel.register(p.stdout, selectors.EVENT_READ, name)
    deadline = time.monotonic() + 60
    try:
        while (
            sum(map(len, reported.values())) < KILL_AFTER
            or min(map(len, reported.values())) < KILL_MIN_EACH
        ):
            assert time.monotonic() < deadline, f"children too slow: {reported}"
            assert all(p.poll() is None for p in procs.values()), _stderr(procs)
            for key_, _ in sel.select(timeout=1):
                take(key_.data, os.read(key_.fd, 65536))
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGKILL)
        for p in procs.values():
            p.wait()
    # Whatever the children wrote before dying was reported after a commit.
    for key_ in list(sel.get_map().values()):
        while chunk := os.read(key_.fd, 65536):
            take(key_.data, chunk)
    sel.close()
    for p in procs.values():
        assert p.returncode == -signal.SIGKILL, "a child finished before the kill"

    store = open_store(url, key)
    try:
        with store.engine.connect() as c:
            assert c.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        index = store.index(folder_id)
        uids = [e.uid for e in index]
        assert uids == sorted(set(uids)), "UIDs unique and increasing"
        all_reported = [uid for name in names for uid, _ in reported[name]]
        assert len(all_reported) == len(set(all_reported)), "a UID was handed out twice"
        assert set(all_reported) <= set(uids), "a reported-committed append was lost"
        for name in names:
            mine = [uid for uid, _ in reported[name]]
            assert mine == sorted(mine) and len(mine) > 0
            for uid, n in reported[name]:
                assert store.message_body(folder_id, uid).endswith(
                    f"appended by {name} number {n}\r\n".encode()
                )
        # At most one in-flight append per child may have committed unreported.
        assert len(uids) - len(all_reported) <= len(names)
        folder = store.get_folder_by_id(folder_id)
        assert folder.uidnext > max(uids)
        assert store.append(folder_id, b"Subject: after\r\n\r\nx\r\n").uid == folder.uidnext
    finally:
        store.close()


def _stderr(procs: dict[str, Any]) -> str:
    return "; ".join(
        f"{n}: rc={p.returncode} {p.stderr.read()[-2000:]!r}"
        for n, p in procs.items()
        if p.poll() is not None
    )
