"""Pure helpers of the store: flag and folder-name normalisation."""

from __future__ import annotations

import pytest

from storage.interface import InvalidName
from storage.sqlbase import check_folder_name, normalise_flags, normalise_folder_name


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (["\\seen", "\\ANSWERED"], {"\\Seen", "\\Answered"}),
        (["\\Recent", "\\recent"], set()),  # session state, never stored
        (["$Label1", "NonJunk"], {"$Label1", "NonJunk"}),
        (["", "two words", "bad\x01", "\\Draft"], {"\\Draft"}),  # not atoms: dropped
    ],
)
def test_normalise_flags(given: list[str], stored: set[str]) -> None:
    assert normalise_flags(given) == frozenset(stored)


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("inbox", "INBOX"),
        ("Inbox/Sub", "INBOX/Sub"),
        ("INBOXES", "INBOXES"),
        ("Archives/2026/", "Archives/2026"),
        ("Dossiers patients", "Dossiers patients"),
        ("Rés&AOk-ultats", "Rés&AOk-ultats"),
        ("R\u00e9sultats/\u00e9t\u00e9 \u2603", "R\u00e9sultats/\u00e9t\u00e9 \u2603"),  # NFC
    ],
)
def test_folder_names(given: str, name: str) -> None:
    assert check_folder_name(given) == name


@pytest.mark.parametrize("bad", ["", "/", "//", "a//b", "/a", "a/*", "50%", "nl\nx", "del\x7f",
                                 # RFC 6855 3 (RFC 9755): no C1 controls, no line or
                                 # paragraph separator; Net-Unicode: NFC only
                                 "c1\x85x", "c1\x9f", "ls\u2028x", "ps\u2029x",
                                 "Re\u0301sultats", "Archives/Cafe\u0301"])
def test_bad_folder_names(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_folder_name(bad)


def test_inbox_prefix_only() -> None:
    assert normalise_folder_name("inboxes") == "inboxes"
