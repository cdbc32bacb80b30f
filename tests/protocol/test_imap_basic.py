"""RFC 3501 transcripts: greeting, capability, login, select, fetch, store, expunge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    PASSWORD,
    SECRETARY,
    ImapEnv,
    deliver,
    lines,
    make_env,
    message,
    populate,
)


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def test_greeting_carries_capabilities(env: ImapEnv) -> None:
    c = env.connect()
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"AUTH=PLAIN" in c.greeting


def test_login_and_select_inbox(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("one"))
    deliver(env.store, SECRETARY, message("two"), flags=("\\Seen",))
    c = env.connect()
    out = c.cmd(f'a1 LOGIN {SECRETARY} "{PASSWORD}"')
    assert out.startswith(b"a1 OK [CAPABILITY IMAP4rev1"), out
    assert b"UIDPLUS" in out and b"MOVE" in out
    out = c.ok("SELECT INBOX")
    ls = lines(out)
    assert ls[0].startswith(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft")
    assert b"* 2 EXISTS" in ls
    assert b"* 2 RECENT" in ls
    assert b"* OK [UNSEEN 1] First unseen" in ls
    assert any(x.startswith(b"* OK [UIDVALIDITY ") for x in ls)
    assert b"* OK [UIDNEXT 3] Predicted next UID" in ls
    assert any(x.startswith(b"* OK [PERMANENTFLAGS (") and b"\\*" in x for x in ls)
    assert any(x.startswith(b"* OK [HIGHESTMODSEQ ") for x in ls)


def test_fetch_flags_and_uid(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("one"))
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.ok("UID FETCH 1:* (FLAGS)")
    assert out == b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n"


def test_wrong_password(env: ImapEnv) -> None:
    c = env.connect()
    out = c.cmd(f"a1 LOGIN {SECRETARY} wrong")
    assert out == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
