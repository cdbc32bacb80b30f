"""SORT, THREAD, ESEARCH and SEARCHRES with a real client library
(`imapclient`, as a Python mail tool uses them) over IMAPS against the demo
instance (`mssctl init --demo`, `mssctl serve`): the practitioner files
messages into a folder with APPEND, then sorts and threads them.

imapclient has SORT and THREAD methods; ESEARCH is sent and its answer
parsed by imapclient's own command and response layers
(`_raw_command_untagged`, `response_parser.parse_response`), as the
library's SORT method does it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.response_parser import parse_response
from integration_support import MARTIN, MssInstance

pytestmark = pytest.mark.e2e

FOLDER = "Tri"


@pytest.fixture(scope="module")
def mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance.demo(tmp_path_factory, "sortclient")
    inst.start()
    yield inst
    status = inst.stop()
    assert status == 0, f"serve exited {status} on SIGTERM:\n{inst.log_tail()}"


@pytest.fixture(autouse=True)
def no_server_errors(mss: MssInstance) -> Iterator[None]:
    mark = mss.log_mark()
    yield
    errors = mss.errors_since(mark)
    assert not errors, f"the server logged errors during the test:\n{errors}"


def _mail(subject: str, sender: str, day: int, mid: str, refs: str | None = None) -> bytes:
    head = [f"From: {sender}", f"To: {MARTIN}", f"Subject: {subject}",
            f"Date: {day} Jan 2026 10:00:00 +0100", f"Message-ID: {mid}"]
    if refs:
        head.append(f"References: {refs}")
    return ("\r\n".join(head) + "\r\n\r\nCompte rendu.\r\n").encode()


MESSAGES = [  # arrival order = sequence numbers 1..6
    _mail("Bilan cardiaque", "Labo <labo@hopital.test>", 3, "<b1@h>"),
    _mail("Re: Bilan cardiaque", "sec.durand@hopital.test", 4, "<b2@h>", "<b1@h>"),
    _mail("Astreinte", "\"Petit, Anne\" <sec.petit@hopital.test>", 1, "<a1@h>"),
    _mail("Re: Bilan cardiaque", "Dr Martin <dr.martin@hopital.test>", 5, "<b3@h>",
          "<b1@h> <b2@h>"),
    _mail("Fwd: Astreinte", "cardiologie@hopital.test", 2, "<a2@h>"),
    _mail("Consultation", "Zoe <zoe@hopital.test>", 6, "<c1@h>", "<gone@h>"),
]


@pytest.fixture(scope="module")
def client(mss: MssInstance) -> Iterator[IMAPClient]:
    c = IMAPClient("127.0.0.1", port=mss.port("imaps"), ssl=True,
                   ssl_context=mss.client_context(), timeout=30)
    c.login(MARTIN, mss.password(MARTIN))
    if not c.folder_exists(FOLDER):
        c.create_folder(FOLDER)
    for i, raw in enumerate(MESSAGES):
        c.append(FOLDER, raw, msg_time=datetime(2026, 2, 1, 8, i, tzinfo=UTC))
    c.select_folder(FOLDER)
    yield c
    c.logout()


def esearch(c: IMAPClient, returns: str, criteria: str) -> dict[str, Any]:
    data = c._raw_command_untagged(  # noqa: SLF001 - imapclient has no ESEARCH method
        b"SEARCH", [b"RETURN", f"({returns})".encode(), criteria.encode()],
        response_name="ESEARCH", uid=c.use_uid)
    items = parse_response(data)
    assert items[0] == (b"TAG", items[0][1])  # the correlator of this command
    out: dict[str, Any] = {}
    rest = list(items[1:])
    if rest and rest[0] == b"UID":
        out["UID"] = True
        rest = rest[1:]
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        out[name.decode()] = value
    return out


def test_capabilities(client: IMAPClient) -> None:
    for cap in (b"SORT", b"SORT=DISPLAY", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT",
                b"ESEARCH", b"ESORT", b"SEARCHRES", b"WITHIN"):
        assert client.has_capability(cap), cap


def test_sort(client: IMAPClient) -> None:
    uids = client.search("ALL")
    assert len(uids) == 6
    u = dict(enumerate(sorted(uids), 1))  # sequence number -> UID
    assert client.sort("DATE") == [u[3], u[5], u[1], u[2], u[4], u[6]]
    assert client.sort(["SUBJECT", "REVERSE DATE"]) == [u[5], u[3], u[4], u[2], u[1], u[6]]
    assert client.sort("FROM") == [u[5], u[4], u[1], u[2], u[3], u[6]]
    assert client.sort("REVERSE ARRIVAL", ["FROM", "hopital.test"]) == [
        u[6], u[5], u[4], u[3], u[2], u[1]]
    # RFC 5957: "cardiologie@hopital.test", "Dr Martin", "Labo", "Petit, Anne", ...
    assert client.sort("DISPLAYFROM") == [u[5], u[4], u[1], u[3], u[2], u[6]]
    assert client.sort("SUBJECT", ["SUBJECT", "nothing"]) == []


def test_thread(client: IMAPClient) -> None:
    u = dict(enumerate(sorted(client.search("ALL")), 1))
    threads = client.thread("REFERENCES")
    # (3 5): "Fwd: Astreinte" joins "Astreinte" by subject; 1 2 4 by
    # References; 6 alone (its parent is not in the folder)
    assert threads == ((u[3], u[5]), (u[1], u[2], u[4]), (u[6],))
    assert client.thread("ORDEREDSUBJECT") == (
        (u[3], u[5]), (u[1], (u[2],), (u[4],)), (u[6],))
    assert client.thread("REFERENCES", ["SINCE", datetime(2026, 1, 1).date()]) == threads


def test_esearch_and_saved_result(client: IMAPClient) -> None:
    u = dict(enumerate(sorted(client.search("ALL")), 1))
    assert u == {i: i for i in range(1, 7)}  # a new folder: UIDs 1..6
    found = esearch(client, "MIN MAX COUNT ALL", 'SUBJECT "bilan"')
    assert found == {"UID": True, "MIN": 1, "MAX": 4, "COUNT": 3, "ALL": b"1:2,4"}
    assert esearch(client, "COUNT", "SUBJECT nothing") == {"UID": True, "COUNT": 0}
    # SEARCHRES: saved, then used by FETCH and SEARCH
    client._raw_command_untagged(  # noqa: SLF001
        b"SEARCH", [b"RETURN", b"(SAVE)", b"FROM", b"hopital.test", b"SUBJECT", b"astreinte"],
        response_name="ESEARCH", uid=True)
    # (imapclient's FETCH and STORE take only numbers: "$" goes through SEARCH)
    assert client.search(["$"]) == [u[3], u[5]]
    assert client.search(["$", "SUBJECT", "fwd"]) == [u[5]]
    # WITHIN: every message was appended with an internal date of 2026-02-01
    assert client.search(["OLDER", 3600]) == sorted(u.values())
    assert client.search(["YOUNGER", 3600]) == []
