"""Flag changes, copies, moves and expunges are recorded: ONE audit event per
command, naming the agent, the mailbox/folder, the UIDs (compact) and the
Message-IDs of the messages (from the metadata stored at delivery), never
their content; after the access decisions, only when something changed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import CARDIO, SECRETARY, ImapEnv, deliver, make_env, populate

import imapd.commands.messages as messages

SHARED = f'"Shared/{CARDIO}/INBOX"'


def note(n: int) -> bytes:
    return (f"From: <dr.martin@hopital.test>\r\nTo: <{CARDIO}>\r\nSubject: patient {n}\r\n"
            f"Message-ID: <note-{n}@hopital.test>\r\n\r\nconfidential note {n}\r\n").encode()


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    for n in range(1, 6):
        deliver(store, CARDIO, note(n))
    return make_env(tmp_path, store)


def changes(env: ImapEnv, action: str) -> list[Any]:
    return [e for e in env.audit.events if e.action == action and e.result == "ok"]


def ids(*numbers: int) -> dict[str, str]:
    return {str(n): f"<note-{n}@hopital.test>" for n in numbers}


def test_store_names_the_agent_the_box_and_the_messages(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("STORE 1:2 +FLAGS (\\Seen $Urgent)")
    c.ok("STORE 1:2 +FLAGS (\\Seen)")  # nothing changes: nothing more recorded
    c.ok("UID STORE 2 -FLAGS.SILENT (\\Seen)")
    events = changes(env, "store")
    assert len(events) == 2
    first, second = events
    assert (first.actor, first.target) == (SECRETARY, f"{CARDIO}/INBOX")
    assert first.details == {"messages": 2, "uids": "1:2", "mode": "add",
                             "flags": ["\\Seen", "$Urgent"], "message_ids": ids(1, 2)}
    assert second.details["mode"] == "remove" and second.details["uids"] == "2"
    assert "confidential" not in json.dumps([e.details for e in events])


def test_conditional_store_records_what_failed(env: ImapEnv) -> None:
    c = env.login()
    c.ok("ENABLE CONDSTORE")
    c.ok(f"SELECT {SHARED}")
    out = c.ok("STORE 1 +FLAGS (\\Flagged)")  # 1 now has the folder's highest MODSEQ
    highest = int(re.search(rb"MODSEQ \((\d+)\)", out).group(1))  # type: ignore[union-attr]
    c.tagged(f"STORE 1:2 (UNCHANGEDSINCE {highest - 1}) +FLAGS (\\Answered)")
    last = changes(env, "store")[-1]
    assert last.details["uids"] == "2" and last.details["failed"] == "1"


def test_copy_and_move_name_both_ends(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f'CREATE "Shared/{CARDIO}/Dossiers"')
    c.ok(f"SELECT {SHARED}")
    c.ok("COPY 1,3 INBOX")  # into the agent's own box
    c.ok(f'UID MOVE 4:5 "Shared/{CARDIO}/Dossiers"')
    (copy,) = changes(env, "copy")
    assert (copy.actor, copy.target) == (SECRETARY, f"{CARDIO}/INBOX")
    assert copy.details == {"messages": 2, "uids": "1,3", "to": f"{SECRETARY}/INBOX",
                            "dest_uids": "1:2", "message_ids": ids(1, 3)}
    (move,) = changes(env, "move")
    assert move.details == {"messages": 2, "uids": "4:5", "to": f"{CARDIO}/Dossiers",
                            "dest_uids": "1:2", "message_ids": ids(4, 5)}


def test_expunge_uid_expunge_and_close(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("STORE 1:5 +FLAGS.SILENT (\\Deleted)")
    c.ok("UID EXPUNGE 2")
    c.ok("UID STORE 1 -FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")  # 3, 4 and 5
    c.ok("EXPUNGE")  # nothing left to remove: nothing recorded
    c.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.ok("CLOSE")
    events = changes(env, "expunge")
    assert [(e.details["command"], e.details["uids"], e.details["message_ids"])
            for e in events] == [
        ("UID EXPUNGE", "2", ids(2)),
        ("EXPUNGE", "3:5", ids(3, 4, 5)),
        ("CLOSE", "1", ids(1)),
    ]
    assert {(e.actor, e.target) for e in events} == {(SECRETARY, f"{CARDIO}/INBOX")}


def test_message_ids_are_bounded_the_uids_are_not(env: ImapEnv, monkeypatch: Any) -> None:
    monkeypatch.setattr(messages, "AUDIT_MESSAGE_IDS", 2)
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("STORE 1:5 +FLAGS (\\Seen)")
    (event,) = changes(env, "store")
    assert event.details["uids"] == "1:5" and event.details["messages"] == 5
    assert event.details["message_ids"] == ids(1, 2)


def test_refused_changes_record_the_denial_only(env: ImapEnv, store: Any) -> None:
    sec = store.get_account(SECRETARY)
    store.set_grant(sec.id, store.get_mailbox(CARDIO).id, "lrs")  # may read, not delete
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    _, done = c.tagged("STORE 1 +FLAGS (\\Deleted)")
    assert b" NO " in done
    assert changes(env, "store") == []
    assert [e.details.get("right") for e in env.audit.events
            if e.action == "store" and e.result == "deny"] == ["t"]
