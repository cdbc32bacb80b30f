"""Concurrent writers under real load: two server processes on one store (the
`serve --workers 2` shape, SO_REUSEPORT), several imaplib clients of two
secretaries writing to the shared cardiology box at once, on SQLite (where
IMAP writes are group-committed) and on PostgreSQL. Every APPEND answered
OK (with its APPENDUID) and every STORE answered OK is in the store
afterwards, nothing else is, and UIDs are never given twice: batching the
writes of several sessions into one commit loses nothing acknowledged."""

from __future__ import annotations

import imaplib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_support import CARDIO, PASSWORD, SECRETARY, SECRETARY2, make_world, workers

pytestmark = pytest.mark.e2e

BOX = f'"Shared/{CARDIO}/INBOX"'
CLIENTS = 6
ROUNDS = 15


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_workers(request: pytest.FixtureRequest,
                tmp_path: Path) -> Iterator[tuple[dict[str, Any], int]]:
    url = None
    if request.param == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.url(cluster.new_database())
    config = make_world(tmp_path, None, url=url)  # plaintext listener on 127.0.0.1 only
    with workers(config, tmp_path) as ports:
        yield config, ports["plain"]


def _client(port: int, login: str, n: int, acked: list[tuple[str, int]],
            flagged: list[int], errors: list[str]) -> None:
    try:
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
        imap.login(login, PASSWORD)
        imap.select(BOX)
        for i in range(ROUNDS):
            subject = f"gc-{n}-{i}"
            raw = (f"From: labo@hopital.test\r\nTo: {CARDIO}\r\nSubject: {subject}\r\n"
                   f"Message-ID: <{subject}@hopital.test>\r\n\r\nresultat {i}\r\n").encode()
            typ, data = imap.append(BOX, "", imaplib.Time2Internaldate(0), raw)
            assert typ == "OK", data
            m = re.search(rb"APPENDUID \d+ (\d+)", data[0])
            assert m is not None, data
            uid = int(m.group(1))
            acked.append((subject, uid))
            if i % 3 == 0:
                typ, data = imap.uid("STORE", str(uid), "+FLAGS", r"(\Flagged)")
                assert typ == "OK", data
                flagged.append(uid)
            if i % 5 == 0:
                imap.noop()  # learn the others' messages meanwhile
        imap.logout()
    except Exception as exc:  # noqa: BLE001 - reported by the test below
        errors.append(f"client {n}: {exc!r}")


def test_acknowledged_writes_of_concurrent_sessions_are_all_committed(
    two_workers: tuple[dict[str, Any], int],
) -> None:
    config, port = two_workers
    acked: list[tuple[str, int]] = []
    flagged: list[int] = []
    errors: list[str] = []
    threads = [threading.Thread(target=_client,
                                args=(port, (SECRETARY, SECRETARY2)[n % 2], n, acked, flagged,
                                      errors))
               for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(acked) == CLIENTS * ROUNDS
    uids = [uid for _, uid in acked]
    assert len(set(uids)) == len(uids)  # never the same UID twice

    from storage import open_store

    store = open_store(config["url"], Path(config["key_file"]))
    try:
        folder = store.get_folder(store.get_mailbox(CARDIO).id, "INBOX")
        assert {e.uid for e in store.index(folder.id)} == set(uids)  # nothing more either
        infos = {i.uid: i for i in store.message_infos(folder.id, uids)}
    finally:
        store.close()
    for subject, uid in acked:
        assert uid in infos, f"{subject} acknowledged as UID {uid} but not in the store"
        assert infos[uid].metadata["envelope"]["subject"] == subject
    for uid in flagged:
        assert "\\Flagged" in infos[uid].flags
