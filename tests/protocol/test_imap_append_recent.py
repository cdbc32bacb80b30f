"""APPEND to the folder the session has selected: the session itself reports
the message \\Recent (RFC 3501 2.3.2) and no other session sees it so; to
another folder the message stays recent for whoever selects it first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imap_transcript import SECRETARY, ImapEnv, make_env, message, populate

RAW = message("appended")


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def test_append_to_selected_folder_is_recent_here_only(env: ImapEnv) -> None:
    a = env.login()
    a.ok("SELECT INBOX")
    out, done = a.tagged(f"APPEND INBOX {{{len(RAW)}+}}\r\n" + RAW.decode())
    assert b" EXISTS\r\n" in out and b"APPENDUID" in done
    recent = [line for line in out.split(b"\r\n") if line.endswith(b" RECENT")]
    assert recent and recent[-1] != b"* 0 RECENT"
    flags = a.ok("FETCH * (FLAGS)")
    assert b"\\Recent" in flags
    b = env.login(SECRETARY)
    assert b"* 0 RECENT" in b.ok("SELECT INBOX")
    assert env.store.folder_status(
        env.store.get_folder(env.store.get_mailbox(SECRETARY).id, "INBOX").id
    ).recent == 0


def test_append_elsewhere_stays_recent_for_the_next_selector(env: ImapEnv) -> None:
    a = env.login()
    a.ok("SELECT INBOX")  # claims what populate delivered
    a.ok("SELECT Sent")
    a.ok(f"APPEND INBOX {{{len(RAW)}+}}\r\n" + RAW.decode())
    b = env.login(SECRETARY)
    assert b"* 1 RECENT" in b.ok("SELECT INBOX")
