"""SELECT / EXAMINE / STATUS and \\Recent (RFC 3501 6.3.1, 6.3.2, 6.3.10, 2.3.2;
imaptest `select`, `append`)."""

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
    tagged_line,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3


def test_select_untagged_set_and_read_write(env3: ImapEnv) -> None:
    """RFC 3501 6.3.1: FLAGS, EXISTS, RECENT, OK [UNSEEN], OK [PERMANENTFLAGS],
    OK [UIDNEXT], OK [UIDVALIDITY]; tagged OK [READ-WRITE]. imaptest `select`."""
    c = env3.login()
    out = c.cmd("a1 SELECT INBOX")
    ls = lines(out)
    assert ls[-1].startswith(b"a1 OK [READ-WRITE]")
    body = b"\n".join(ls[:-1])
    assert re.search(rb"^\* FLAGS \(.*\\Seen.*\)$", body, re.M)
    assert b"* 3 EXISTS" in ls and b"* 3 RECENT" in ls
    assert b"* OK [UNSEEN 1]" in body
    assert re.search(rb"\* OK \[UIDVALIDITY [1-9]\d*\]", body)
    assert b"* OK [UIDNEXT 4]" in body
    assert re.search(rb"\* OK \[PERMANENTFLAGS \([^)]*\\\*\)\]", body)


def test_examine_is_read_only_and_permanentflags_empty(env3: ImapEnv) -> None:
    """RFC 3501 6.3.2: EXAMINE -> OK [READ-ONLY]; nothing can change permanently."""
    c = env3.login()
    out = c.cmd("a1 EXAMINE INBOX")
    assert tagged_line(out, "a1").startswith(b"a1 OK [READ-ONLY]")
    assert b"* OK [PERMANENTFLAGS ()]" in out
    assert b"* 3 EXISTS" in out


def test_examine_does_not_set_seen_on_body_fetch(env3: ImapEnv) -> None:
    """RFC 3501 6.4.5 BODY[]: \\Seen is set only "if the mailbox is writable"... the
    mailbox opened with EXAMINE is read-only; no implicit \\Seen, no FLAGS."""
    c = selected(env3, examine=True)
    out = c.ok("FETCH 1 BODY[TEXT]")
    assert b"FLAGS" not in out
    c2 = selected(env3)
    assert c2.ok("FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Recent))\r\n"


def test_store_and_expunge_refused_in_examined_mailbox(env3: ImapEnv) -> None:
    """RFC 3501 6.3.2: the mailbox is read-only; STORE / EXPUNGE must fail."""
    c = selected(env3, examine=True)
    _, done = c.tagged("STORE 1 +FLAGS (\\Deleted)")
    assert b" NO " in done or b" BAD " in done
    _, done = c.tagged("EXPUNGE")
    assert b" NO " in done or b" BAD " in done


def test_close_on_examined_mailbox_does_not_expunge(env3: ImapEnv) -> None:
    """RFC 3501 6.4.2: "No messages are removed ... if the mailbox is selected by
    EXAMINE or is otherwise selected read-only"."""
    w = selected(env3)
    w.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    r = selected(env3, examine=True)
    r.ok("CLOSE")
    assert status_of(r, "INBOX", "MESSAGES") == {"MESSAGES": 3}


def test_select_failure_leaves_no_mailbox_selected(env3: ImapEnv) -> None:
    """RFC 3501 6.3.1: a failed SELECT returns to the authenticated state."""
    c = selected(env3)
    _, done = c.tagged("SELECT nowhere")
    assert b"NO" in done
    _, done = c.tagged("FETCH 1 FLAGS")
    assert b" BAD " in done or b" NO " in done


def test_recent_goes_to_exactly_one_session(env3: ImapEnv) -> None:
    """RFC 3501 2.3.2: \\Recent is set for only the first session to see the message."""
    a = env3.login()
    out = a.ok("SELECT INBOX")
    assert b"* 3 RECENT" in out
    b = env3.login()
    out = b.ok("SELECT INBOX")
    assert b"* 0 RECENT" in out
    assert b"\\Recent" not in b.ok("FETCH 1:* FLAGS")
    assert a.ok("FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Recent))\r\n"
    assert b.ok("SEARCH RECENT") == b"* SEARCH\r\n"
    assert a.ok("SEARCH RECENT") == b"* SEARCH 1 2 3\r\n"
    assert a.ok("SEARCH NEW") == b"* SEARCH 1 2 3\r\n"


def test_recent_of_new_mail_and_status_recent(env: ImapEnv) -> None:
    """imaptest `append`: two sessions selected, a third asks STATUS. \\Recent
    goes to one selected session only; STATUS RECENT is 0 once it was claimed."""
    a = selected(env)
    b = selected(env)
    third = env.login()
    deliver(env.store, SECRETARY, message("new"))
    out_a = a.ok("NOOP")
    out_b = b.ok("NOOP")
    assert b"* 1 EXISTS" in out_a and b"* 1 EXISTS" in out_b
    recents = [o for o in (a.ok("FETCH 1 FLAGS"), b.ok("FETCH 1 FLAGS")) if b"\\Recent" in o]
    assert len(recents) == 1
    assert status_of(third, "INBOX", "MESSAGES UNSEEN RECENT") == {
        "MESSAGES": 1, "UNSEEN": 1, "RECENT": 0}


def test_append_to_selected_mailbox_announces_exists(env: ImapEnv) -> None:
    """imaptest `append`: "1 ok append $mailbox (\\seen \\flagged)" answers "* 1 exists";
    the other selected session learns it at NOOP (RFC 3501 7.3.1)."""
    a = selected(env)
    b = selected(env)
    raw = message("appended")
    out = a.cmd(b"a1 APPEND INBOX (\\Seen \\Flagged) {%d+}\r\n" % len(raw) + raw)
    assert b"* 1 EXISTS" in out and b"a1 OK" in out
    assert b"* 1 EXISTS" in b.ok("NOOP")
    flags_a = a.ok("FETCH 1 (UID FLAGS)")
    assert b"\\Seen" in flags_a and b"\\Flagged" in flags_a


def test_status_items(env3: ImapEnv) -> None:
    """RFC 3501 6.3.10 (+ RFC 7162 3.1.6 HIGHESTMODSEQ)."""
    c = env3.login()
    st = status_of(c, "INBOX", "MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ")
    assert st["MESSAGES"] == 3 and st["RECENT"] == 3 and st["UIDNEXT"] == 4
    assert st["UNSEEN"] == 3 and st["UIDVALIDITY"] > 0 and st["HIGHESTMODSEQ"] > 0


def test_status_errors(env3: ImapEnv) -> None:
    """RFC 3501 6.3.10: unknown item -> BAD; unknown mailbox -> NO."""
    c = env3.login()
    _, done = c.tagged("STATUS INBOX (BOGUS)")
    assert b" BAD " in done
    _, done = c.tagged("STATUS nowhere (MESSAGES)")
    assert b" NO " in done


def test_uidvalidity_stable_across_selects(env3: ImapEnv) -> None:
    """RFC 3501 2.3.1.1: UIDVALIDITY must not change between sessions."""
    def uidvalidity(out: bytes) -> bytes:
        m = re.search(rb"UIDVALIDITY (\d+)", out)
        assert m
        return m.group(1)
    a = env3.login()
    v1 = uidvalidity(a.ok("SELECT INBOX"))
    b = env3.login()
    assert uidvalidity(b.ok("EXAMINE INBOX")) == v1
    assert status_of(b, "INBOX", "UIDVALIDITY")["UIDVALIDITY"] == int(v1)
