"""EXPUNGE, CLOSE, UNSELECT, UID EXPUNGE, LOGOUT (RFC 3501 6.4.3, 6.4.2, 7.4.1,
6.1.3; RFC 3691; RFC 4315 2.1; imaptest `expunge`, `expunge2`)."""

from __future__ import annotations

import re

import compliance_support
from compliance_support import (
    SECRETARY,
    ImapEnv,
    deliver,
    lines,
    message,
    selected,
    status_of,
    two_sessions,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3


def _apply_expunges(seqs: list[int], uids: list[int], out: bytes) -> list[int]:
    """Plays the EXPUNGE responses in order on a client's UID list (RFC 3501 7.4.1:
    each EXPUNGE renumbers the following messages at once)."""
    uids = list(uids)
    for m in re.finditer(rb"\* (\d+) EXPUNGE\r\n", out):
        n = int(m.group(1))
        assert 1 <= n <= len(uids), (n, uids)
        del uids[n - 1]
    return uids


def test_expunge_renumbering_is_consistent(env: ImapEnv) -> None:
    """RFC 3501 7.4.1: "the message sequence number of each subsequent message is
    decremented immediately"; any order is valid if applied one by one."""
    for i in range(6):
        deliver(env.store, SECRETARY, message(f"m{i}"))
    c = selected(env)
    c.ok("STORE 2,3,5 +FLAGS.SILENT (\\Deleted)")
    out = c.ok("EXPUNGE")
    assert len(re.findall(rb"EXPUNGE", out)) == 3
    left = _apply_expunges([], [1, 2, 3, 4, 5, 6], out)
    assert left == [1, 4, 6]
    assert c.ok("FETCH 1:* UID") == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 4)\r\n* 3 FETCH (UID 6)\r\n"


def test_expunge_announced_to_other_session_at_noop_not_fetch(env3: ImapEnv) -> None:
    """imaptest `expunge`: session 2's FETCH by sequence number gets no EXPUNGE;
    NOOP does (RFC 3501 7.4.1: EXPUNGE is not sent during FETCH, STORE, SEARCH)."""
    a, b = two_sessions(env3)
    assert b.ok("FETCH 3 UID") == b"* 3 FETCH (UID 3)\r\n"
    a.ok("STORE 3 FLAGS (\\Deleted)")
    assert a.ok("EXPUNGE") == b"* 3 EXPUNGE\r\n"
    out = b.ok("FETCH 3 UID")
    assert b"EXPUNGE" not in out
    assert b"EXPUNGE" not in b.ok("STORE 1 +FLAGS (\\Flagged)")
    assert b"EXPUNGE" not in b.ok("SEARCH ALL")
    assert b.ok("NOOP") == b"* 3 EXPUNGE\r\n"


def test_expunge2_uid_commands_and_check(env: ImapEnv) -> None:
    """imaptest `expunge2`: UID FETCH/UID STORE keep working across another
    session's expunges; CHECK reports pending EXPUNGEs just as NOOP does."""
    for i in range(5):
        deliver(env.store, SECRETARY, message(f"m{i}"))
    a, b = two_sessions(env)
    a.ok("STORE 1,3 +FLAGS (\\Deleted)")
    a.ok("EXPUNGE")
    out = b.ok("UID FETCH 2,4 UID")
    assert b"(UID 2)" in out and b"(UID 4)" in out
    b.ok("NOOP")
    a.ok("STORE 1 +FLAGS (\\Deleted)")  # UID 2
    a.ok("EXPUNGE")
    out = b.ok("UID STORE 4 FLAGS (\\Seen)")
    m = re.search(rb"\* (\d+) FETCH \(([^\r]*)\)\r\n", out)
    assert m and b"UID 4" in m.group(2) and b"\\Seen" in m.group(2), out
    b.ok("NOOP")
    a.ok("STORE 1 +FLAGS (\\Deleted)")
    a.ok("EXPUNGE")
    assert b.ok("CHECK") == b"* 1 EXPUNGE\r\n"


def test_close_expunges_silently(env3: ImapEnv) -> None:
    """RFC 3501 6.4.2: CLOSE removes \\Deleted messages; "no untagged EXPUNGE
    responses are sent"; the state becomes authenticated."""
    a, b = two_sessions(env3)
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert a.ok("CLOSE") == b""
    _, done = a.tagged("FETCH 1 FLAGS")
    assert b" BAD " in done
    assert status_of(a, "INBOX", "MESSAGES") == {"MESSAGES": 2}
    assert b.ok("NOOP") == b"* 1 EXPUNGE\r\n"


def test_unselect_does_not_expunge(env3: ImapEnv) -> None:
    """RFC 3691 2: UNSELECT leaves \\Deleted messages in place."""
    c = selected(env3)
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert c.ok("UNSELECT") == b""
    assert status_of(c, "INBOX", "MESSAGES") == {"MESSAGES": 3}
    _, done = c.tagged("UNSELECT")
    assert b" BAD " in done


def test_uid_expunge_only_the_given_uids(env3: ImapEnv) -> None:
    """RFC 4315 2.1: UID EXPUNGE removes only \\Deleted messages within the set."""
    c = selected(env3)
    c.ok("STORE 1,2 +FLAGS.SILENT (\\Deleted)")
    assert c.ok("UID EXPUNGE 2:10") == b"* 2 EXPUNGE\r\n"
    assert c.ok("FETCH 1:* UID") == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n"


def test_expunge_of_nothing(env3: ImapEnv) -> None:
    c = selected(env3)
    assert c.ok("EXPUNGE") == b""


def test_logout_sends_bye_before_ok(env3: ImapEnv) -> None:
    """RFC 3501 6.1.3: "The server MUST send a BYE untagged response before the
    (tagged) OK response, and then close the network connection"."""
    c = env3.connect()
    assert c.cmd("a1 LOGOUT") == b"* BYE Logging out\r\na1 OK LOGOUT completed\r\n"
    assert c.closed
    c = selected(env3)
    out = c.cmd("a2 LOGOUT")
    assert lines(out)[0].startswith(b"* BYE") and lines(out)[-1].startswith(b"a2 OK")
    assert c.closed


def test_logout_sends_nothing_after_bye(env3: ImapEnv) -> None:
    """RFC 3501 7.1.5: BYE "indicates that the server is about to close the
    connection"; pending mailbox updates must not follow it (Dovecot sends BYE
    then the tagged OK only)."""
    a, b = two_sessions(env3)
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    deliver(env3.store, SECRETARY, message("late"))
    out = b.cmd("z LOGOUT")
    ls = lines(out)
    bye = next(i for i, x in enumerate(ls) if x.startswith(b"* BYE"))
    assert ls[bye + 1:] == [b"z OK LOGOUT completed"], ls


def test_flags_of_other_session_during_uid_fetch(env3: ImapEnv) -> None:
    """RFC 3501 7.4.1: flag updates may be sent during any command; the
    sequence number used must be the receiving session's current one."""
    a, b = two_sessions(env3)
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    a.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")  # UID 2, seq 2 for b until it learns
    out = b.ok("FETCH 1:3 UID")  # no EXPUNGE yet: b still numbers UID 2 as 2
    for m in re.finditer(rb"\* (\d+) FETCH \(FLAGS \(\\Flagged\)\)", out):
        assert m.group(1) == b"2"
    out = b.ok("NOOP")
    assert out.startswith(b"* 1 EXPUNGE\r\n") or b"* 1 EXPUNGE" in out
    assert b.ok("FETCH 1 (UID FLAGS)") == b"* 1 FETCH (UID 2 FLAGS (\\Flagged))\r\n"


def test_no_unsolicited_expunge_between_commands(env3: ImapEnv) -> None:
    """RFC 3501 7.4.1: "An EXPUNGE response MUST NOT be sent when no command is in
    progress" (IDLE aside). The folder watcher runs, yet nothing is pushed; the
    next command that allows it reports the EXPUNGE."""
    a, b = two_sessions(env3)
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    env3.clock.advance(1.0)
    assert b"EXPUNGE" not in a.read()
    out = a.ok("STORE 2 +FLAGS (\\Seen)")  # seq 2 is still UID 2 for a
    assert b"EXPUNGE" not in out and b"* 2 FETCH (FLAGS (" in out
    assert a.ok("NOOP") == b"* 1 EXPUNGE\r\n"
    assert a.ok("FETCH 1 (UID FLAGS)").startswith(b"* 1 FETCH (UID 2 FLAGS (")
