"""UTF8=ACCEPT (RFC 6855) with a real client: Python's imaplib switches to
UTF-8 once `enable("UTF8=ACCEPT")` succeeds (commands are then sent in UTF-8,
SEARCH without CHARSET) and reads names back in UTF-8; a client that did not
enable it sees the same folders in modified UTF-7."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imap_support import PASSWORD, SECRETARY, make_world, workers

pytestmark = pytest.mark.e2e

NAME = "Comptes rendus d'\u00e9chographie & IRM"


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    config = make_world(tmp_path, None)  # plaintext listener on 127.0.0.1 only
    with workers(config, tmp_path, count=1) as ports:
        yield ports["plain"]


def _names(listing: list[Any]) -> list[str]:
    out = []
    for line in listing:
        raw = line if isinstance(line, bytes) else line[0]
        out.append(raw.decode("utf-8").rsplit(' "/" ', 1)[1].strip('"'))
    return out


def test_imaplib_in_utf8_mode(port: int) -> None:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    imap.login(SECRETARY, PASSWORD)
    typ, data = imap.enable("UTF8=ACCEPT")
    assert typ == "OK" and imap.utf8_enabled, data
    typ, data = imap.create(f'"{NAME}"')
    assert typ == "OK", data
    typ, listing = imap.list('""', '"*"')
    assert typ == "OK" and NAME in _names(listing), listing
    typ, data = imap.status(f'"{NAME}"', "(MESSAGES)")
    assert typ == "OK" and data[0].decode("utf-8").startswith(f'"{NAME}" (MESSAGES 0)'), data
    typ, data = imap.select(f'"{NAME}"')
    assert typ == "OK", data
    typ, data = imap.search(None, "ALL")  # imaplib in UTF-8 mode sends no CHARSET
    assert typ == "OK", data
    imap.logout()

    other = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    other.login(SECRETARY, PASSWORD)
    typ, listing = other.list('""', '"*"')
    assert "Comptes rendus d'&AOk-chographie &- IRM" in _names(listing), listing
    other.logout()
