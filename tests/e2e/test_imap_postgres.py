"""The IMAP server on PostgreSQL (the production store), end to end: a real
server process on a database of the throwaway cluster (`pg_cluster`), driven
over a plaintext listener on 127.0.0.1 by Python's imaplib.

One secretary works in the shared cardiology box: APPEND (APPENDUID), FETCH
of envelopes and of a BODY[] (which sets \\Seen), UID STORE, UID EXPUNGE and
EXPUNGE, COPY and MOVE (COPYUID), SEARCH; a second session of another
secretary on the same box learns the expunges at its next NOOP. Then the
PostgreSQL store holds exactly what the server acknowledged: the messages
left, their flags and bodies, and the copies under the UIDs COPYUID named.

(Concurrent writers of two server processes, on PostgreSQL too:
test_imap_group_commit.py.)
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_support import CARDIO, PASSWORD, SECRETARY, SECRETARY2, ServerProcess, make_world

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

BOX = f'"Shared/{CARDIO}/INBOX"'
ARCHIVE = f'"Shared/{CARDIO}/Archive"'
COUNT = 20


def _raw(subject: str) -> bytes:
    return (f"From: labo@hopital.test\r\nTo: {CARDIO}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 1 Jun 2026 08:00:00 +0200\r\n"
            f"Message-ID: <{subject}@hopital.test>\r\n\r\nresultat {subject}\r\n").encode()


def _pg_world(pg_cluster: Any, directory: Path) -> dict[str, Any]:
    url = pg_cluster.url(pg_cluster.new_database())
    assert url.startswith("postgresql+psycopg2://")
    config = make_world(directory, None, url=url)  # plaintext listener on 127.0.0.1 only
    assert config["url"] == url
    return config


@pytest.fixture
def pg_server(tmp_path: Path, pg_cluster: Any) -> Iterator[tuple[dict[str, Any], int]]:
    config = _pg_world(pg_cluster, tmp_path)
    with ServerProcess(config, tmp_path) as ports:
        yield config, ports["plain"]


def _open_store(config: dict[str, Any]) -> Any:
    from storage import open_store

    return open_store(config["url"], Path(config["key_file"]))


def _session(port: int, login: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    typ, _ = m.login(login, PASSWORD)
    assert typ == "OK"
    return m


def _code(pattern: bytes, data: list[Any]) -> re.Match[bytes]:
    text = b" ".join(d for d in data if isinstance(d, bytes))
    found = re.search(pattern, text)
    assert found is not None, data
    return found


def _uids(uid_set: bytes) -> list[int]:
    """The UIDs of an IMAP uid-set such as ``4:6,9``, in its order."""
    out: list[int] = []
    for part in uid_set.split(b","):
        low, _, high = part.partition(b":")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def _expunge(known: list[int], responses: list[bytes]) -> list[int]:
    """Applies `* n EXPUNGE` responses, in order, to the UIDs a client knows
    in sequence order; returns the UIDs they removed."""
    return [known.pop(int(n) - 1) for n in responses]


def test_one_session_on_postgres_and_a_second_one_learning_the_expunges(
    pg_server: tuple[dict[str, Any], int],
) -> None:
    config, port = pg_server
    m = _session(port, SECRETARY)
    other = _session(port, SECRETARY2)
    try:
        typ, data = m.select(BOX)
        assert (typ, data) == ("OK", [b"0"])
        uidvalidity = int(m.response("UIDVALIDITY")[1][0])
        typ, data = other.select(BOX)
        assert (typ, data) == ("OK", [b"0"])

        # APPEND: each acknowledged with its APPENDUID, UIDs ascending.
        uids: list[int] = []
        for i in range(COUNT):
            typ, data = m.append(BOX, "", imaplib.Time2Internaldate(0), _raw(f"pg-{i:02d}"))
            assert typ == "OK", data
            found = _code(rb"APPENDUID (\d+) (\d+)", data)
            assert int(found.group(1)) == uidvalidity
            uids.append(int(found.group(2)))
        assert uids == sorted(set(uids))
        typ, data = m.noop()
        assert m.response("EXISTS")[1][-1] == str(COUNT).encode()
        typ, _ = other.noop()
        assert other.response("EXISTS")[1][-1] == str(COUNT).encode()

        # FETCH: the envelopes in sequence order, then one BODY[] (sets \Seen).
        typ, data = m.fetch(f"1:{COUNT}", "(UID ENVELOPE)")
        assert typ == "OK"
        assert len(data) == COUNT
        for i, item in enumerate(data):
            assert re.search(rb"UID %d\b" % uids[i], item), item
            assert b' "pg-%02d" ' % i in item, item  # date, then the subject
        typ, data = m.fetch(str(COUNT), "(BODY[])")
        assert typ == "OK" and data[0][1] == _raw(f"pg-{COUNT - 1:02d}")
        typ, data = m.fetch(str(COUNT), "(FLAGS)")
        assert b"\\Seen" in data[0], data

        # UID STORE: \Deleted on the first five, \Flagged \Answered on the sixth.
        u = uids
        typ, data = m.uid("STORE", f"{u[0]}:{u[4]}", "+FLAGS", r"(\Deleted)")
        assert typ == "OK" and len(data) == 5 and all(b"\\Deleted" in d for d in data), data
        typ, data = m.uid("STORE", str(u[5]), "+FLAGS", r"(\Flagged \Answered)")
        assert typ == "OK" and b"\\Flagged" in data[0] and b"\\Answered" in data[0], data

        # UID EXPUNGE of two of them, then EXPUNGE of the other three.
        # (The server sends EXPUNGE responses in any valid order: replay them.)
        known, other_known = list(u), list(u)
        typ, _ = m.uid("EXPUNGE", f"{u[0]}:{u[1]}")
        assert typ == "OK"
        assert sorted(_expunge(known, m.response("EXPUNGE")[1])) == u[:2]
        typ, data = m.expunge()
        assert typ == "OK" and sorted(_expunge(known, data)) == u[2:5]

        # The other session learns all five at its next NOOP.
        typ, _ = other.noop()
        assert typ == "OK"
        assert sorted(_expunge(other_known, other.response("EXPUNGE")[1])) == u[:5]
        assert other_known == known == u[5:]

        # COPY (by sequence: 1:3 are now u[5:8]) to the box's Archive: the
        # tagged OK's COPYUID pairs the UIDs.
        typ, data = m.copy("1:3", ARCHIVE)
        assert typ == "OK", data
        found = _code(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]", data)
        archive_validity = int(found.group(1))
        assert _uids(found.group(2)) == u[5:8]
        copied = dict(zip(u[5:8], _uids(found.group(3)), strict=True))
        m.response("COPYUID")  # (imaplib files the tagged code there too)

        # MOVE two more: untagged COPYUID, then their EXPUNGE responses.
        typ, data = m.uid("MOVE", f"{u[8]}:{u[9]}", ARCHIVE)
        assert typ == "OK", data
        typ, data = m.response("COPYUID")
        assert len(data) == 1, data
        found = _code(rb"^(\d+) ([\d:,]+) ([\d:,]+)$", data)
        assert int(found.group(1)) == archive_validity
        assert _uids(found.group(2)) == u[8:10]
        moved = dict(zip(u[8:10], _uids(found.group(3)), strict=True))
        assert set(moved.values()).isdisjoint(copied.values())
        assert sorted(_expunge(known, m.response("EXPUNGE")[1])) == u[8:10]
        typ, _ = other.noop()
        assert sorted(_expunge(other_known, other.response("EXPUNGE")[1])) == u[8:10]

        # SEARCH sees what was stored.
        left = [u[5], u[6], u[7], *u[10:]]
        assert known == other_known == left
        typ, data = m.uid("SEARCH", "ALL")
        assert [int(x) for x in data[0].split()] == left
        typ, data = m.uid("SEARCH", "SEEN")
        assert data == [b"%d" % u[COUNT - 1]]
        typ, data = m.uid("SEARCH", "FLAGGED ANSWERED")
        assert data == [b"%d" % u[5]]
        typ, data = m.uid("SEARCH", "SUBJECT", '"pg-15"')
        assert data == [b"%d" % u[15]]
        typ, data = m.search(None, "DELETED")
        assert data == [b""]
        typ, data = other.uid("SEARCH", "ALL")
        assert [int(x) for x in data[0].split()] == left
    finally:
        for session in (m, other):
            session.logout()

    # The PostgreSQL store holds exactly what was acknowledged.
    store = _open_store(config)
    try:
        mailbox = store.get_mailbox(CARDIO)
        inbox = store.get_folder(mailbox.id, "INBOX")
        archive = store.get_folder(mailbox.id, "Archive")
        assert (inbox.uidvalidity, archive.uidvalidity) == (uidvalidity, archive_validity)
        flags = {e.uid: e.flags for e in store.index(inbox.id)}
        assert sorted(flags) == left
        assert flags[u[5]] == {"\\Flagged", "\\Answered"}
        assert flags[u[COUNT - 1]] == {"\\Seen"}
        assert all(not flags[x] for x in left if x not in (u[5], u[COUNT - 1]))
        for uid in left:
            assert store.message_body(inbox.id, uid) == _raw(f"pg-{u.index(uid):02d}")
        in_archive = {e.uid for e in store.index(archive.id)}
        assert in_archive == set(copied.values()) | set(moved.values())
        for source, dest in {**copied, **moved}.items():
            assert store.message_body(archive.id, dest) == _raw(f"pg-{u.index(source):02d}")
    finally:
        store.close()
