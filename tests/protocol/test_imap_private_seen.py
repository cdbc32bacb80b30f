"""A functional mailbox with private \\Seen (`mssctl mailbox set --private-seen`):
two secretaries of cardiologie@ each keep their own read/unread state, every
other flag stays shared, and everything IMAP shows agrees (FETCH FLAGS, the
implicit \\Seen of BODY[], STORE, SEARCH, STATUS, SELECT's UNSEEN, other
sessions' syncs). A mailbox without the option behaves as before."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    SECRETARY2,
    ImapEnv,
    deliver,
    make_env,
    message,
    populate,
)

BOX = f"Shared/{CARDIO}/INBOX"


def _env(tmp_path: Path, store: Any, *, private: bool) -> ImapEnv:
    populate(store)
    if private:
        store.set_private_seen(CARDIO, True)
    for i in range(1, 5):
        deliver(store, CARDIO, message(f"patient {i}"))
    mb = store.get_mailbox(CARDIO)
    store.claim_recent(store.get_folder(mb.id, "INBOX").id)  # no \\Recent in the transcripts
    return make_env(tmp_path, store)


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    return _env(tmp_path, store, private=True)


def _unseen_status(out: bytes) -> int:
    m = re.search(rb"UNSEEN (\d+)", out)
    assert m, out
    return int(m.group(1))


def test_one_reads_the_other_still_sees_it_unread(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    assert b"[UNSEEN 1]" in a.ok(f'SELECT "{BOX}"')
    assert b"[UNSEEN 1]" in b.ok(f'SELECT "{BOX}"')
    out = a.ok("FETCH 1 (BODY[])")
    assert b"FLAGS (\\Seen)" in out and b"patient 1" in out
    assert a.ok("FETCH 1 (FLAGS)") == b"* 1 FETCH (FLAGS (\\Seen))\r\n"
    # B's sync brings nothing: her flags for message 1 did not change.
    assert b"FETCH" not in b.ok("NOOP")
    assert b.ok("FETCH 1 (FLAGS)") == b"* 1 FETCH (FLAGS ())\r\n"
    assert b.ok("SEARCH UNSEEN") == b"* SEARCH 1 2 3 4\r\n"
    assert b.ok("SEARCH SEEN") == b"* SEARCH\r\n"
    assert a.ok("SEARCH UNSEEN") == b"* SEARCH 2 3 4\r\n"
    assert a.ok("SEARCH SEEN") == b"* SEARCH 1\r\n"
    assert _unseen_status(b.ok(f'STATUS "{BOX}" (UNSEEN)')) == 4
    assert _unseen_status(a.ok(f'STATUS "{BOX}" (MESSAGES UNSEEN)')) == 3
    # LIST-STATUS counts the same way; a new selection too.
    out = a.ok(f'LIST "" "{BOX}" RETURN (STATUS (UNSEEN))')
    assert _unseen_status(out) == 3
    assert b"[UNSEEN 2]" in a.ok(f'EXAMINE "{BOX}"')
    assert b"[UNSEEN 1]" in b.ok(f'EXAMINE "{BOX}"')


def test_other_flags_stay_shared(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    a.ok("FETCH 1 (BODY[])")
    assert a.ok("STORE 1 +FLAGS (\\Flagged)") == b"* 1 FETCH (FLAGS (\\Flagged \\Seen))\r\n"
    assert b.ok("NOOP") == b"* 1 FETCH (FLAGS (\\Flagged))\r\n"
    assert b.ok("SEARCH FLAGGED UNSEEN") == b"* SEARCH 1\r\n"
    # FLAGS replace by B: the shared flags for everyone, \Seen only for her.
    assert b.ok("STORE 1 FLAGS (\\Answered \\Seen)") == \
        b"* 1 FETCH (FLAGS (\\Answered \\Seen))\r\n"
    assert a.ok("NOOP") == b"* 1 FETCH (FLAGS (\\Answered \\Seen))\r\n"
    assert b.ok("STORE 1 FLAGS (\\Answered)") == b"* 1 FETCH (FLAGS (\\Answered))\r\n"
    assert a.ok("FETCH 1 (FLAGS)") == b"* 1 FETCH (FLAGS (\\Answered \\Seen))\r\n"


def test_unmarking_read_by_one_leaves_the_other(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    a.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
    b.ok("FETCH 2 (RFC822)")
    assert b.ok("STORE 2 -FLAGS (\\Seen)") == b"* 2 FETCH (FLAGS ())\r\n"
    assert b"FETCH" not in a.ok("NOOP")
    assert a.ok("FETCH 2 (FLAGS)") == b"* 2 FETCH (FLAGS (\\Seen))\r\n"
    assert b.ok("SEARCH UNSEEN") == b"* SEARCH 1 2 3 4\r\n"


def test_a_second_session_of_the_same_agent_learns_her_change(env: ImapEnv) -> None:
    a1 = env.login(SECRETARY)
    a2 = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a1.ok(f'SELECT "{BOX}"')
    before = a2.ok(f'SELECT "{BOX}" (CONDSTORE)')
    b.ok(f'SELECT "{BOX}"')
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", before).group(1))  # type: ignore[union-attr]
    a1.ok("FETCH 3 (BODY.PEEK[] FLAGS)")
    assert b"FETCH" not in a2.ok("NOOP")  # PEEK marks nothing
    a1.ok("UID FETCH 3 (BODY[])")
    out = a2.ok("NOOP")
    m = re.fullmatch(rb"\* 3 FETCH \(UID 3 FLAGS \(\\Seen\) MODSEQ \((\d+)\)\)\r\n", out)
    assert m and int(m.group(1)) > highest, out
    assert b"FETCH" not in b.ok("NOOP")
    # The MODSEQ moved for everyone (one MODSEQ per message, as Dovecot does).
    assert a2.ok(f"FETCH 3 (FLAGS) (CHANGEDSINCE {highest})") == out


def test_copy_and_append_into_a_private_seen_box(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("for the secretary"))
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok("SELECT INBOX")
    a.ok("FETCH 1 (BODY[])")
    a.ok(f'COPY 1 "{BOX}"')
    a.ok(f'APPEND "{BOX}" (\\Seen \\Flagged) {{{len(message("note"))}+}}\r\n'
         + message("note").decode())
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    assert a.ok("SEARCH SEEN") == b"* SEARCH 5 6\r\n"
    assert b.ok("SEARCH SEEN") == b"* SEARCH\r\n"
    assert b.ok("FETCH 6 (FLAGS)") == b"* 6 FETCH (FLAGS (\\Flagged))\r\n"
    # Out again to her own (shared-seen) box: her \Seen becomes the flag.
    b.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
    b.ok("COPY 2 INBOX")
    b.ok("SELECT INBOX")
    assert b.ok("FETCH 1 (FLAGS)") == b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n"


def test_expunge_takes_the_private_states(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    a.ok("FETCH 1:2 (BODY[])")
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    assert _unseen_status(a.ok(f'STATUS "{BOX}" (UNSEEN)')) == 2
    assert _unseen_status(b.ok(f'STATUS "{BOX}" (UNSEEN)')) == 3


def test_a_shared_seen_box_behaves_as_before(tmp_path: Path, store: Any) -> None:
    env = _env(tmp_path, store, private=False)
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    a.ok("FETCH 1 (BODY[])")
    assert b.ok("NOOP") == b"* 1 FETCH (FLAGS (\\Seen))\r\n"
    assert b.ok("SEARCH UNSEEN") == b"* SEARCH 2 3 4\r\n"
    assert _unseen_status(b.ok(f'STATUS "{BOX}" (UNSEEN)')) == 3
    b.ok("STORE 1 -FLAGS (\\Seen)")
    assert a.ok("NOOP") == b"* 1 FETCH (FLAGS ())\r\n"
