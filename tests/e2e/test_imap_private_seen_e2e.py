"""Private \\Seen over a real server and Python imaplib: two secretaries of
cardiologie@ (with `mailbox set --private-seen`) each keep their own unread
state, in the server process that a real client talks to."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_support import CARDIO, PASSWORD, SECRETARY, SECRETARY2, ServerProcess, make_world

pytestmark = pytest.mark.e2e

BOX = f'"Shared/{CARDIO}/INBOX"'


def _raw(i: int) -> bytes:
    return (f"From: Dr Martin <dr.martin@hopital.test>\r\nTo: <{CARDIO}>\r\n"
            f"Subject: patient {i}\r\nMessage-ID: <seen-{i}@hopital.test>\r\n\r\nBonjour\r\n"
            ).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[dict[str, int]]:
    from storage import open_store
    from storage.interface import Delivery

    directory = tmp_path_factory.mktemp("imap-private-seen")
    config = make_world(directory, None)
    store = open_store(config["url"], Path(config["key_file"]))
    try:
        store.set_private_seen(CARDIO, True)
        mb = store.get_mailbox(CARDIO)
        for i in range(1, 4):
            store.deliver(Delivery(raw=_raw(i), mailbox_ids=(mb.id,)))
    finally:
        store.close()
    with ServerProcess(config, directory) as ports:
        yield ports


def _login(ports: dict[str, int], user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", ports["plain"])
    assert m.login(user, PASSWORD)[0] == "OK"
    return m


def _unseen(m: imaplib.IMAP4) -> int:
    typ, data = m.status(BOX, "(UNSEEN)")
    assert typ == "OK"
    found = re.search(rb"UNSEEN (\d+)", data[0])  # type: ignore[arg-type]
    assert found
    return int(found.group(1))


def test_each_secretary_has_her_own_unread_state(server: dict[str, int]) -> None:
    a = _login(server, SECRETARY)
    b = _login(server, SECRETARY2)
    try:
        assert a.select(BOX)[0] == "OK" and b.select(BOX)[0] == "OK"
        typ, data = a.fetch("1", "(BODY[])")
        assert typ == "OK" and b"patient 1" in data[0][1]  # type: ignore[index]
        assert a.search(None, "UNSEEN")[1] == [b"2 3"]
        assert b.search(None, "UNSEEN")[1] == [b"1 2 3"]
        assert _unseen(a) == 2 and _unseen(b) == 3
        assert a.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
        assert b.noop()[0] == "OK"  # B learns of the shared change
        typ, data = b.fetch("1", "(FLAGS)")
        assert typ == "OK" and data[-1] == b"1 (FLAGS (\\Flagged))"
        b.store("2", "+FLAGS", "(\\Seen)")
        assert a.search(None, "SEEN")[1] == [b"1"]
        assert b.search(None, "SEEN")[1] == [b"2"]
    finally:
        for m in (a, b):
            m.logout()
