"""STORE and flags (RFC 3501 6.4.6, 2.3.2, 7.2.6; imaptest `store`, `search-flags`)."""

from __future__ import annotations

import re

import compliance_support
from compliance_support import (
    ImapEnv,
    lines,
    message,
    selected,
    two_sessions,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3


def test_store_replace_add_remove(env3: ImapEnv) -> None:
    """RFC 3501 6.4.6 FLAGS / +FLAGS / -FLAGS, each answered by FETCH FLAGS."""
    holder = selected(env3)
    c2 = env3.login()
    c2.ok("SELECT INBOX")  # `holder` holds \Recent; c2 sees plain flags
    assert c2.ok("STORE 1:3 FLAGS (\\Seen)") == (
        b"* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 3 FETCH (FLAGS (\\Seen))\r\n")
    assert c2.ok("STORE 3 FLAGS (\\Draft)") == b"* 3 FETCH (FLAGS (\\Draft))\r\n"
    assert c2.ok("STORE 2 -FLAGS (\\Seen)") == b"* 2 FETCH (FLAGS ())\r\n"
    assert c2.ok("STORE 2 +FLAGS (\\Answered \\Flagged)") == b"* 2 FETCH (FLAGS (\\Answered \\Flagged))\r\n"
    # imaptest `store`: "2 ok check" -> the other session gets the final flags.
    out = holder.ok("CHECK")
    assert b"* 2 FETCH (FLAGS (" in out and b"\\Answered" in out and b"\\Recent" in out


def test_store_silent_sends_nothing(env3: ImapEnv) -> None:
    """RFC 3501 6.4.6: .SILENT -> no untagged FETCH for this session's own change."""
    c = selected(env3)
    assert c.ok("STORE 1 +FLAGS.SILENT (\\Flagged)") == b""
    assert c.ok("STORE 1 FLAGS.SILENT (\\Seen)") == b""
    assert c.ok("STORE 1 -FLAGS.SILENT (\\Seen)") == b""
    assert c.ok("FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Recent))\r\n"


def test_store_keeps_session_recent(env3: ImapEnv) -> None:
    """RFC 3501 2.3.2: \\Recent can not be altered by the client; FLAGS replacement
    keeps it in the session that holds it."""
    c = selected(env3)
    out = c.ok("STORE 1 FLAGS (\\Seen)")
    assert out == b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n" or out == b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"


def test_recent_cannot_be_stored(env3: ImapEnv) -> None:
    """RFC 3501 2.3.2: "\\Recent ... This flag can not be altered by the client."
    Refused (BAD, as the stricter servers answer), never set on a message
    of another session."""
    a, b = two_sessions(env3)  # a holds \Recent
    _, done = b.tagged("STORE 1 +FLAGS (\\Recent)")
    assert b" BAD " in done
    assert b"\\Recent" not in b.ok("FETCH 1 FLAGS")
    assert b.ok("SEARCH RECENT") == b"* SEARCH\r\n"


def test_unknown_system_flag_is_refused(env3: ImapEnv) -> None:
    """RFC 3501 9 flag-extension: "Server implementations MUST NOT generate
    flag-extension flags except as defined by future standard". Dovecot answers
    BAD "Invalid system flag"; imaptest reports "Invalid system flag" for such a FETCH."""
    c = selected(env3)
    untagged, done = c.tagged("STORE 1 +FLAGS (\\Bogus)")
    assert b"\\Bogus" not in untagged
    assert b" BAD " in done or b" NO " in done
    assert b"\\Bogus" not in c.ok("FETCH 1 FLAGS")


def test_keywords_stored_and_removed(env3: ImapEnv) -> None:
    """imaptest `store` keywords: STORE 2,4 +FLAGS ($$hello $$world)."""
    a, b = two_sessions(env3)
    out = b.ok("STORE 1:2 +FLAGS ($$hello $$world)")
    assert b"* 1 FETCH (FLAGS ($$hello $$world))" in out
    out = b.ok("STORE 1 -FLAGS ($$hello)")
    assert b"* 1 FETCH (FLAGS ($$world))" in out


def test_new_keyword_is_announced_in_flags_before_use(env3: ImapEnv) -> None:
    """RFC 3501 7.2.6: FLAGS lists the flags applicable to the mailbox; a server
    that lets a keyword be created sends an updated FLAGS (and PERMANENTFLAGS)
    before using it. imaptest checks every FETCH FLAGS keyword against the last
    FLAGS it saw."""
    c = selected(env3)
    out = c.ok("STORE 1 +FLAGS ($$hello)")
    ls = lines(out)
    flags_i = next(i for i, x in enumerate(ls) if x.startswith(b"* FLAGS ("))
    fetch_i = next(i for i, x in enumerate(ls) if x.startswith(b"* 1 FETCH"))
    assert flags_i < fetch_i and b"$$hello" in ls[flags_i]


def test_keyword_from_other_session_is_announced(env3: ImapEnv) -> None:
    """RFC 3501 7.2.6 / 7.4.1: the other session must get FLAGS with the keyword
    before a FETCH that uses it (imaptest `store` with connections: 2)."""
    a, b = two_sessions(env3)
    b.ok("STORE 1 +FLAGS.SILENT ($$other)")
    out = a.ok("NOOP")
    assert re.search(rb"\* FLAGS \([^)]*\$\$other", out), out
    raw = message("kw")
    b.cmd(b"x1 APPEND INBOX ($Foo) {%d+}\r\n" % len(raw) + raw)
    out = a.ok("NOOP")
    assert re.search(rb"\* FLAGS \([^)]*\$Foo", out), out


def test_concurrent_stores_do_not_overwrite(env3: ImapEnv) -> None:
    """imaptest `store`: two sessions' +FLAGS/-FLAGS merge; both end with the same flags."""
    a, b = two_sessions(env3)
    a.ok("STORE 1 FLAGS.SILENT (\\Seen)")
    b.ok("NOOP")
    a.ok("STORE 1 +FLAGS (\\Draft)")
    b.ok("STORE 1 -FLAGS (\\Seen)")
    a.ok("CHECK")
    b.ok("CHECK")
    fa = a.ok("FETCH 1 FLAGS")
    fb = b.ok("FETCH 1 FLAGS")
    assert b"\\Draft" in fa and b"\\Seen" not in fa
    assert fb == b"* 1 FETCH (FLAGS (\\Draft))\r\n"


def test_flag_change_by_other_session_announced_at_noop(env3: ImapEnv) -> None:
    """imaptest `store`: "2 ok check" shows session 1's STORE as FETCH FLAGS (RFC 3501 7.4.1)."""
    a, b = two_sessions(env3)
    b.ok("STORE 1:3 FLAGS.SILENT (\\Seen)")
    out = a.ok("CHECK")
    assert b"* 1 FETCH (FLAGS (" in out and b"* 3 FETCH (FLAGS (" in out
    assert all(b"\\Seen" in x for x in lines(out))


def test_search_flags(env: ImapEnv) -> None:
    """imaptest `search-flags` (RFC 3501 6.4.4 flag keys)."""
    from compliance_support import SECRETARY, deliver
    for i in range(5):
        deliver(env.store, SECRETARY, message(f"m{i}"))
    c = selected(env)
    c.ok("STORE 1 FLAGS.SILENT ($$hello)")
    c.ok("STORE 2 FLAGS.SILENT (\\Seen \\Flagged)")
    c.ok("STORE 3 FLAGS.SILENT (\\Answered $$hello)")
    c.ok("STORE 4 FLAGS.SILENT (\\Flagged \\Draft)")
    c.ok("STORE 5 FLAGS.SILENT (\\Deleted \\Answered)")
    expect = {
        "ANSWERED": "3 5", "UNANSWERED": "1 2 4", "DELETED": "5", "UNDELETED": "1 2 3 4",
        "DRAFT": "4", "UNDRAFT": "1 2 3 5", "FLAGGED": "2 4", "UNFLAGGED": "1 3 5",
        "SEEN": "2", "UNSEEN": "1 3 4 5", "KEYWORD $$hello": "1 3", "UNKEYWORD $$hello": "2 4 5",
        "NEW": "1 3 4 5", "OLD": "", "RECENT": "1 2 3 4 5",
    }
    for key, result in expect.items():
        want = f"* SEARCH {result}".rstrip() + "\r\n"
        assert c.ok(f"SEARCH {key}") == want.encode(), key
