"""FETCH of message content reads several bodies per store call (up to
`BODY_BATCH_BYTES`, or one body larger than that), except when it sets
\\Seen: then one body a batch, so that the \\Seen write covers exactly what
is sent. Whatever the batches, every message is answered once, in order."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import SECRETARY, ImapEnv, deliver, make_env, message, populate

from imapd.commands import fetch as fetch_module

COUNT = 6


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    for i in range(1, COUNT + 1):
        deliver(store, SECRETARY, message(f"note {i}", f"text {i}\r\n" * (i * 50)))
    return make_env(tmp_path, store)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The UIDs of each store call of FETCH that loads bodies."""
    calls: list[list[int]] = []
    real = fetch_module._load

    def counting(store: Any, folder_id: int, uids: Any, need_info: bool, need_body: bool,
                 *args: Any) -> Any:
        if need_body:
            calls.append(list(uids))
        return real(store, folder_id, uids, need_info, need_body, *args)

    monkeypatch.setattr(fetch_module, "_load", counting)
    return calls


def subjects(untagged: bytes) -> list[tuple[int, str]]:
    return [(int(seq), subject.decode())
            for seq, subject in re.findall(rb"\* (\d+) FETCH \(.*?Subject: (note \d+)",
                                           untagged, re.S)]


def test_small_bodies_are_read_in_one_store_call(env: ImapEnv, loads: list[list[int]]) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    untagged = c.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert subjects(untagged) == [(i, f"note {i}") for i in range(1, COUNT + 1)]
    assert len(loads) == 1 and len(loads[0]) == COUNT


@pytest.mark.parametrize("budget", [1, 2000, 4000])
def test_a_budget_splits_the_batch_without_losing_or_repeating(
        env: ImapEnv, loads: list[list[int]], monkeypatch: pytest.MonkeyPatch,
        budget: int) -> None:
    monkeypatch.setattr(fetch_module, "BODY_BATCH_BYTES", budget)
    c = env.login()
    c.ok("SELECT INBOX")
    untagged = c.ok("FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])")
    assert subjects(untagged) == [(i, f"note {i}") for i in range(1, COUNT + 1)]
    assert untagged.count(b" FETCH (") == COUNT
    if budget == 1:  # below every message: one body per call, none skipped
        assert len(loads) == COUNT
    else:
        assert 1 < len(loads) < COUNT
    # Each call starts where the previous one stopped.
    firsts = [call[0] for call in loads]
    assert firsts == sorted(set(firsts))


def test_a_fetch_that_sets_seen_reads_one_body_a_batch(
        env: ImapEnv, loads: list[list[int]]) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    untagged = c.ok("FETCH 1:* (BODY[HEADER.FIELDS (SUBJECT)])")
    assert subjects(untagged) == [(i, f"note {i}") for i in range(1, COUNT + 1)]
    assert [len(call) for call in loads] == [1] * COUNT
    # Each message's \Seen, set by this FETCH, is reported with it.
    responses = re.split(rb"\* \d+ FETCH ", untagged)[1:]
    assert len(responses) == COUNT
    assert all(re.search(rb"FLAGS \([^)]*\\Seen", r) for r in responses), responses
