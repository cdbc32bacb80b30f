"""MULTIAPPEND and CATENATE under real load: two server processes on one
store, clients of two secretaries appending batches of messages to the shared
cardiology box at once over real sockets (LITERAL+), on SQLite (where the
writer lane group-commits several sessions' writes, each in a savepoint) and
on PostgreSQL. Every batch answered OK is in the store whole, with the UIDs
of its APPENDUID; every batch refused (a CATENATE URL to a message that does
not exist, in its last message) left nothing; no UID is given twice."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_support import CARDIO, PASSWORD, SECRETARY, SECRETARY2, make_world, workers

pytestmark = pytest.mark.e2e

BOX = f'"Shared/{CARDIO}/INBOX"'.encode()
CLIENTS = 4
ROUNDS = 8
BATCH = 3


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


class _Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        self.line()  # greeting

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(self.buf[:200])
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def command(self, tag: bytes, data: bytes) -> bytes:
        self.sock.sendall(tag + b" " + data + b"\r\n")
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return line


def _message(subject: str) -> bytes:
    return (f"From: labo@hopital.test\r\nTo: {CARDIO}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@hopital.test>\r\n\r\nresultat\r\n").encode()


def _client(port: int, login: str, n: int, acked: list[tuple[list[str], list[int]]],
            refused: list[str], errors: list[str]) -> None:
    try:
        conn = _Conn(port)
        assert conn.command(b"l", f'LOGIN {login} "{PASSWORD}"'.encode()).startswith(b"l OK")
        for i in range(ROUNDS):
            subjects = [f"ma-{n}-{i}-{k}" for k in range(BATCH)]
            data = b"APPEND " + BOX
            for subject in subjects:
                raw = _message(subject)
                data += b" {%d+}\r\n%s" % (len(raw), raw)
            if i % 4 == 3:
                # The last message names a message that does not exist: the
                # whole command is refused, its other messages with it.
                data += b' CATENATE (URL "/INBOX/;UID=999999")'
                reply = conn.command(b"a%d" % i, data)
                assert b"NO [BADURL" in reply, reply
                refused.extend(subjects)
                continue
            reply = conn.command(b"a%d" % i, data)
            m = re.search(rb"OK \[APPENDUID \d+ (\d+):(\d+)\]", reply)
            assert m is not None, reply
            first, last = int(m.group(1)), int(m.group(2))
            assert last - first + 1 == BATCH, reply
            acked.append((subjects, list(range(first, last + 1))))
        conn.command(b"z", b"LOGOUT")
    except Exception as exc:  # noqa: BLE001 - reported by the test below
        errors.append(f"client {n}: {exc!r}")


def test_acknowledged_batches_are_whole_and_refused_ones_absent(
    two_workers: tuple[dict[str, Any], int],
) -> None:
    config, port = two_workers
    acked: list[tuple[list[str], list[int]]] = []
    refused: list[str] = []
    errors: list[str] = []
    threads = [threading.Thread(target=_client,
                                args=(port, (SECRETARY, SECRETARY2)[n % 2], n, acked, refused,
                                      errors))
               for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    uids = [uid for _, batch in acked for uid in batch]
    assert len(uids) == len(set(uids))  # never the same UID twice
    assert refused

    from storage import open_store

    store = open_store(config["url"], Path(config["key_file"]))
    try:
        folder = store.get_folder(store.get_mailbox(CARDIO).id, "INBOX")
        assert {e.uid for e in store.index(folder.id)} == set(uids)  # nothing more either
        infos = {i.uid: i for i in store.message_infos(folder.id, uids)}
    finally:
        store.close()
    for subjects, batch in acked:
        # In order, each under the UID its APPENDUID gave.
        assert [infos[u].metadata["envelope"]["subject"] for u in batch] == subjects
