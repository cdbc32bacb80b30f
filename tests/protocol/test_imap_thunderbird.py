"""What Thunderbird depends on (REFERENCE.md, "What a real client sends")."""

from __future__ import annotations

import base64
import re
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

BIG_BODY = "".join(f"line {i:06d} of a long clinical report\r\n" for i in range(5000))


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def literal_after(data: bytes, label: bytes) -> bytes:
    m = re.search(re.escape(label) + rb" \{(\d+)\}\r\n", data)
    assert m, (label, data[:300])
    start = m.end()
    return data[start : start + int(m.group(1))]


def test_authenticate_plain_waits_for_continuation(env: ImapEnv) -> None:
    c = env.connect()
    assert c.cmd("a1 AUTHENTICATE PLAIN") == b"+ \r\n"
    token = base64.b64encode(f"\0{SECRETARY}\0{PASSWORD}".encode())
    out = c.cmd(token)
    assert out.startswith(b"a1 OK [CAPABILITY IMAP4rev1 "), out


def test_authenticate_plain_sasl_ir(env: ImapEnv) -> None:
    c = env.connect()
    token = base64.b64encode(f"{SECRETARY}\0{SECRETARY}\0{PASSWORD}".encode()).decode()
    assert c.cmd(f"a1 AUTHENTICATE PLAIN {token}").startswith(b"a1 OK [CAPABILITY")


def test_authenticate_cancelled(env: ImapEnv) -> None:
    c = env.connect()
    c.cmd("a1 AUTHENTICATE PLAIN")
    assert c.cmd("*") == b"a1 BAD Authentication cancelled\r\n"


def test_setup_sequence(env: ImapEnv) -> None:
    c = env.login()
    out = c.ok("NAMESPACE")
    assert out == b'* NAMESPACE (("" "/")) NIL (("Shared/" "/"))\r\n'
    out = c.ok('ID ("name" "Thunderbird" "version" "153.0")')
    assert out.startswith(b'* ID ("name" "mss-imapd"')
    out = c.ok('LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)')
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"' in out or b"INBOX" in out
    out = c.ok('LIST "" "INBOX"')
    assert out == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
    out = c.ok('LIST "" "Trash"')
    assert out == b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\n'


def test_header_sync_and_partial_fetch_and_seen(env: ImapEnv) -> None:
    raw = message("gros compte rendu", BIG_BODY)
    assert len(raw) > 65536 * 2
    deliver(env.store, SECRETARY, raw)
    c = env.login()
    c.ok('SELECT "INBOX"')
    out = c.ok("UID FETCH 1:* (FLAGS)")
    assert out == b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n"
    out = c.ok("UID FETCH 1:1 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc "
               "Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
               "Content-Type Reply-To Received)])")
    assert out.startswith(b"* 1 FETCH (UID 1 RFC822.SIZE %d FLAGS (\\Recent) " % len(raw))
    header = literal_after(out, b"BODY[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID "
                                b"Priority X-Priority References Newsgroups In-Reply-To "
                                b"Content-Type Reply-To Received)]")
    assert b"Subject: gros compte rendu\r\n" in header and header.endswith(b"\r\n\r\n")
    # Partial fetches: exactly the slice, labelled with the origin only.
    got = b""
    offset = 0
    while offset < len(raw):
        out = c.ok(f"UID FETCH 1 (UID RFC822.SIZE BODY[]<{offset}.65536>)")
        chunk = literal_after(out, b"BODY[]<%d>" % offset)
        assert chunk == raw[offset : offset + 65536]
        got += chunk
        offset += 65536
    assert got == raw
    # BODY[] (not PEEK) set \Seen and says so.
    assert b"\\Seen" in c.ok("UID FETCH 1 (FLAGS)")


def test_body_fetch_sets_seen_and_reports_flags(env: ImapEnv) -> None:
    raw = message("court")
    deliver(env.store, SECRETARY, raw)
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.ok("UID FETCH 1 (UID RFC822.SIZE BODY[])")
    assert literal_after(out, b"BODY[]") == raw
    assert b"FLAGS (\\Recent \\Seen)" in out
    out = c.ok("FETCH 1 (FLAGS)")
    assert out == b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n"


def test_peek_does_not_set_seen(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("court"))
    c = env.login()
    c.ok("EXAMINE INBOX")
    c.ok("FETCH 1 (BODY.PEEK[] BODY[TEXT])")
    c.ok("CLOSE")
    c.ok("SELECT INBOX")
    assert c.ok("FETCH 1 (FLAGS)") == b"* 1 FETCH (FLAGS (\\Recent))\r\n"


def test_copy_and_move_keep_flags_and_return_copyuid(env: ImapEnv) -> None:
    for i in range(3):
        deliver(env.store, SECRETARY, message(f"m{i}"), flags=("\\Seen", "$Label1"))
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok("STORE 2 +FLAGS (\\Flagged)")
    untagged, done = c.tagged("UID COPY 1:2 Archive")
    m = re.match(rb"t\d+ OK \[COPYUID (\d+) 1:2 1:2\] COPY completed", done)
    assert m, done
    untagged, done = c.tagged("UID MOVE 3 Trash")
    assert re.search(rb"\* OK \[COPYUID \d+ 3 1\] Moved\r\n\* 3 EXPUNGE\r\n", untagged), untagged
    c.ok("SELECT Archive")
    out = c.ok("FETCH 1:2 (FLAGS)")
    assert b"* 1 FETCH (FLAGS ($Label1 \\Recent \\Seen))" not in out  # system flags first
    assert b"* 1 FETCH (FLAGS (\\Recent \\Seen $Label1))" in out
    assert b"* 2 FETCH (FLAGS (\\Flagged \\Recent \\Seen $Label1))" in out
    c.ok("SELECT Trash")
    assert c.ok("FETCH 1 (FLAGS)") == b"* 1 FETCH (FLAGS (\\Recent \\Seen $Label1))\r\n"


def test_copy_to_missing_mailbox_says_trycreate(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("x"))
    c = env.login()
    c.ok("SELECT INBOX")
    _, done = c.tagged("COPY 1 Nowhere")
    assert done.startswith(b"t2 NO [TRYCREATE]")


def test_idle_reports_new_mail_and_done(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    assert c.cmd("t9 IDLE") == b"+ idling\r\n"
    deliver(env.store, SECRETARY, message("pendant idle"))
    env.clock.advance(0.3)  # one folder-watcher round
    assert lines(c.read()) == [b"* 1 EXISTS", b"* 1 RECENT"]
    assert c.cmd("DONE") == b"t9 OK IDLE terminated\r\n"
    assert c.ok("NOOP") == b""


def test_failed_logins_disconnect(env: ImapEnv) -> None:
    c = env.connect()
    for i in range(env.settings.limits.failed_auth - 1):
        assert b"NO [AUTHENTICATIONFAILED]" in c.cmd(f"a{i} LOGIN {SECRETARY} wrong")
    out = c.cmd(f"z LOGIN {SECRETARY} wrong")
    assert out.endswith(b"* BYE Too many failed authentications\r\n")
    assert c.closed


def test_login_with_literals(env: ImapEnv) -> None:
    c = env.connect()
    assert c.cmd(b"a1 LOGIN {%d}" % len(SECRETARY)) == b"+ Ready for literal data\r\n"
    assert c.cmd(SECRETARY.encode() + b" {%d}" % len(PASSWORD)) == b"+ Ready for literal data\r\n"
    assert c.cmd(PASSWORD).startswith(b"a1 OK [CAPABILITY")
