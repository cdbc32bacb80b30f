"""Every FETCH that returns message content is recorded: ONE audit event per
command naming the agent, the mailbox/folder and the UIDs (compact), never
the content (health data hosting: every access is traced)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import SECRETARY, ImapEnv, deliver, make_env, message, populate


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    for i in range(1, 6):
        deliver(store, SECRETARY, message(f"consultation {i}", f"confidential note {i}\r\n"))
    return make_env(tmp_path, store)


def fetch_events(env: ImapEnv) -> list[Any]:
    return [e for e in env.audit.events if e.action == "fetch"]


def uids(c: Any) -> list[int]:
    untagged, _ = c.tagged("UID SEARCH ALL")
    return [int(x) for x in untagged.split(b"* SEARCH", 1)[1].split()]


def test_flag_and_metadata_fetches_are_not_content(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)")
    c.ok("FETCH 1:* (ENVELOPE BODYSTRUCTURE BINARY.SIZE[1])")
    assert fetch_events(env) == []


@pytest.mark.parametrize("items", ["BODY.PEEK[]", "BODY[TEXT]", "RFC822", "RFC822.HEADER",
                                   "BINARY.PEEK[1]", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"])
def test_one_event_per_content_fetch(env: ImapEnv, items: str) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    all_uids = uids(c)
    assert len(all_uids) >= 5
    untagged, done = c.tagged(f"FETCH 1:* {items}")
    assert b" OK " in done
    events = fetch_events(env)
    assert len(events) == 1  # one per command, not one per message
    e = events[0]
    assert e.actor == SECRETARY and e.target == f"{SECRETARY}/INBOX" and e.result == "ok"
    assert e.details["messages"] == len(all_uids)
    assert e.details["uids"] == f"{all_uids[0]}:{all_uids[-1]}"
    # Never the content itself.
    assert "confidential" not in json.dumps({"t": e.target, "d": e.details})
    assert "consultation" not in json.dumps({"t": e.target, "d": e.details})


def test_uid_range_is_compact_and_exact(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    u = uids(c)
    c.ok(f"UID FETCH {u[0]},{u[2]}:{u[3]} (BODY.PEEK[1])")
    c.ok("FETCH 1 (FLAGS)")
    events = fetch_events(env)
    assert len(events) == 1
    assert events[0].details == {"messages": 3, "uids": f"{u[0]},{u[2]}:{u[3]}"}


def test_nothing_returned_nothing_recorded(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    c.tagged("UID FETCH 999999 (BODY.PEEK[])")
    assert fetch_events(env) == []
