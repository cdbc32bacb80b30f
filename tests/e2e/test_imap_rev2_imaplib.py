"""IMAP4rev2 (RFC 9051) with a real client over a socket: Python's imaplib
sends ENABLE IMAP4rev2 and a short session; SEARCH comes back as ESEARCH (which
imaplib keeps as an untagged response of its own), no RECENT reaches the rev2
session while a rev1 client on the same folder still gets it."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from imap_support import PASSWORD, SECRETARY, make_world, workers

pytestmark = pytest.mark.e2e

MESSAGE = (
    b"From: Dr Martin <dr.martin@hopital.test>\r\n"
    b"To: <secretaire@hopital.test>\r\n"
    b"Subject: Compte rendu\r\n"
    b"\r\n"
    b"Bonjour\r\n"
)


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    config = make_world(tmp_path, None)  # plaintext listener on 127.0.0.1 only
    with workers(config, tmp_path, count=1) as ports:
        yield ports["plain"]


def _login(port: int) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    imap.login(SECRETARY, PASSWORD)
    return imap


def test_imaplib_rev2_session(port: int) -> None:
    rev1 = _login(port)
    assert "IMAP4REV2" in rev1.capabilities and "IMAP4REV1" in rev1.capabilities
    typ, data = rev1.append("INBOX", None, None, MESSAGE)
    assert typ == "OK", data

    imap = _login(port)
    typ, data = imap.enable("IMAP4rev2")
    assert typ == "OK" and imap.response("ENABLED") == ("ENABLED", [b"IMAP4rev2"]), data
    typ, data = imap.select("INBOX")
    assert typ == "OK" and data == [b"1"], data
    assert imap.response("RECENT") == ("RECENT", [None])  # none sent
    # RFC 9051 6.3.2: SELECT answers a LIST response too.
    assert imap.response("LIST") == ("LIST", [b'(\\HasNoChildren) "/" "INBOX"'])

    # SEARCH: no SEARCH response (imaplib's result is empty), one ESEARCH.
    typ, data = imap.search(None, "UNSEEN")
    assert typ == "OK" and data == [None], data
    name, esearch = imap.response("ESEARCH")
    assert esearch and re.fullmatch(rb'\(TAG "\w+"\) ALL 1', esearch[0]), esearch
    typ, data = imap.uid("SEARCH", "ALL")
    assert typ == "OK"
    _, esearch = imap.response("ESEARCH")
    assert esearch and re.fullmatch(rb'\(TAG "\w+"\) UID ALL 1', esearch[0]), esearch

    typ, data = imap.fetch("1", "(FLAGS)")
    assert typ == "OK" and data == [b"1 (FLAGS ())"], data
    typ, data = imap.status("INBOX", "(MESSAGES SIZE DELETED)")
    assert typ == "OK" and data == [
        b'"INBOX" (MESSAGES 1 SIZE %d DELETED 0)' % len(MESSAGE)], data
    with pytest.raises(imaplib.IMAP4.error, match="not an IMAP4rev2 status item"):
        imap.status("INBOX", "(RECENT)")

    # A message appended by the rev1 client: EXISTS, no RECENT, no \Recent.
    typ, data = rev1.append("INBOX", None, None, MESSAGE)
    assert typ == "OK", data
    typ, data = imap.noop()
    assert typ == "OK"
    assert imap.response("EXISTS")[1][-1] == b"2"  # imaplib keeps SELECT's too
    assert imap.response("RECENT") == ("RECENT", [None])
    typ, data = imap.fetch("2", "(FLAGS)")
    assert data == [b"2 (FLAGS ())"], data
    imap.logout()

    # The rev1 client selecting now finds both messages still \Recent.
    typ, data = rev1.select("INBOX")
    assert typ == "OK" and rev1.response("RECENT") == ("RECENT", [b"2"])
    rev1.logout()
