"""Transcripts after the examples of RFC 3501 section 6."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    SECRETARY,
    ImapEnv,
    deliver,
    make_env,
    message,
    populate,
)


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def test_capability_noop_logout(env: ImapEnv) -> None:
    c = env.connect()
    out = c.cmd("abcd CAPABILITY")
    assert out.startswith(b"* CAPABILITY IMAP4rev1 ")
    assert out.endswith(b"abcd OK Capability completed\r\n")
    assert c.cmd("a002 NOOP") == b"a002 OK NOOP completed\r\n"
    assert c.cmd("A023 LOGOUT") == b"* BYE Logging out\r\nA023 OK LOGOUT completed\r\n"
    assert c.closed


def test_commands_checked_against_state(env: ImapEnv) -> None:
    c = env.connect()
    assert c.cmd("a1 SELECT INBOX") == b"a1 BAD SELECT not allowed now\r\n"
    c = env.login()
    assert c.cmd("a2 FETCH 1 FLAGS") == b"a2 BAD FETCH not allowed now\r\n"
    assert c.cmd("a3 LOGIN x y") == b"a3 BAD LOGIN not allowed now\r\n"


def test_unknown_command_and_garbage(env: ImapEnv) -> None:
    c = env.connect()
    assert c.cmd("a1 FROBNICATE").startswith(b"a1 BAD ")
    assert c.cmd("").startswith(b"* BAD ")


def test_too_many_bad_commands_disconnect(env: ImapEnv) -> None:
    c = env.connect()
    out = b""
    for i in range(env.settings.limits.bad_commands):
        out += c.cmd(f"a{i} FROB")
    assert out.endswith(b"* BYE Too many invalid commands\r\n")
    assert c.closed


def test_create_list_rename_delete(env: ImapEnv) -> None:
    c = env.login()
    c.ok("CREATE owatagusiam/")
    c.ok("CREATE owatagusiam/blurdybloop")
    out = c.ok('LIST "" "owatagusiam/%"')
    assert out == b'* LIST (\\HasNoChildren) "/" "owatagusiam/blurdybloop"\r\n'
    out = c.ok('LIST "" "owata%"')
    assert out == b'* LIST (\\HasChildren) "/" "owatagusiam"\r\n'
    _, done = c.tagged("CREATE INBOX")
    assert b"NO [ALREADYEXISTS]" in done
    c.ok("RENAME owatagusiam sarasoop")
    out = c.ok('LIST "" "*"')
    assert b'"sarasoop/blurdybloop"' in out and b"owatagusiam" not in out
    c.ok("DELETE sarasoop/blurdybloop")
    _, done = c.tagged("DELETE sarasoop/blurdybloop")
    assert done.endswith(b"NO [NONEXISTENT] No such mailbox\r\n")


def test_list_empty_pattern_and_wildcards(env: ImapEnv) -> None:
    c = env.login()
    assert c.ok('LIST "" ""') == b'* LIST (\\Noselect) "/" ""\r\n'
    out = c.ok('LIST "" "*"')
    names = re.findall(rb'"/" "([^"]+)"', out)
    assert names[0] == b"INBOX"
    assert set(names) >= {b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive",
                          b"Shared", b"Shared/cardiologie@hopital.test",
                          b"Shared/cardiologie@hopital.test/INBOX"}
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in out
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Shared"' in out
    out = c.ok('LIST "" "%"')
    assert b'"Shared/cardiologie' not in out
    out = c.ok('LIST "" "inbox"')
    assert out == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'


def test_subscribe_lsub(env: ImapEnv) -> None:
    c = env.login()
    c.ok("CREATE Projets/2026")
    c.ok("SUBSCRIBE Projets/2026")
    out = c.ok('LSUB "" "Projets/*"')
    assert out == b'* LSUB () "/" "Projets/2026"\r\n'
    out = c.ok('LSUB "" "%"')
    assert b'* LSUB (\\Noselect) "/" "Projets"' in out
    c.ok("UNSUBSCRIBE Projets/2026")
    assert c.ok('LSUB "" "Projets/*"') == b""


def test_status(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("a"))
    deliver(env.store, SECRETARY, message("b"), flags=("\\Seen",))
    c = env.login()
    out = c.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)")
    assert out == b'* STATUS "INBOX" (MESSAGES 2 RECENT 2 UIDNEXT 3 UNSEEN 1)\r\n'
    _, done = c.tagged("STATUS nowhere (MESSAGES)")
    assert b"NO [NONEXISTENT]" in done


def test_append_with_synchronising_literal(env: ImapEnv) -> None:
    c = env.login()
    raw = message("appended")
    out = c.cmd(b'A003 APPEND saved-messages (\\Seen) {%d}' % len(raw))
    assert out == b"A003 NO [TRYCREATE] Mailbox does not exist\r\n" or out.startswith(b"+ ")
    if out.startswith(b"+ "):
        out = c.send(raw + b"\r\n")
        assert b"TRYCREATE" in out
    c.ok("CREATE saved-messages")
    assert c.cmd(b'A004 APPEND saved-messages (\\Seen) "05-jan-1999 20:55:23 +0000" {%d}'
                 % len(raw)) == b"+ Ready for literal data\r\n"
    out = c.send(raw + b"\r\n")
    m = re.match(rb"A004 OK \[APPENDUID (\d+) 1\] APPEND completed\r\n", out)
    assert m, out
    c.ok("SELECT saved-messages")
    out = c.ok("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert b'INTERNALDATE "05-Jan-1999 20:55:23 +0000"' in out
    assert b"FLAGS (\\Recent \\Seen)" in out
    assert raw in out


def test_append_literal_plus_and_too_big(tmp_path: Path, store: Any) -> None:
    from conf.settings import LimitSettings

    populate(store)
    env = make_env(tmp_path, store, limits=LimitSettings(message_size=2048))
    c = env.login()
    raw = message("small")
    out = c.send(b"a1 APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
    assert out.startswith(b"a1 OK [APPENDUID ")
    # Synchronising: refused before the client sends a byte of it.
    out = c.cmd(b"a2 APPEND INBOX {999999}")
    assert out == b"a2 NO [TOOBIG] Message too big\r\n"
    # Non-synchronising: skipped without being buffered, then refused.
    out = c.send(b"a3 APPEND INBOX {5000+}\r\n" + b"x" * 5000 + b"\r\n")
    assert out == b"a3 NO [TOOBIG] Message too big\r\n"
    assert c.ok("NOOP") == b""
    assert b"APPENDLIMIT=2048" in c.ok("CAPABILITY")


def test_check_close_expunge(env: ImapEnv) -> None:
    for i in range(4):
        deliver(env.store, SECRETARY, message(f"m{i}"))
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok("CHECK")
    out = c.ok("STORE 1,3 +FLAGS (\\Deleted)")
    assert b"* 1 FETCH (FLAGS (\\Deleted \\Recent))" in out
    out = c.ok("EXPUNGE")
    assert out == b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n"
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    _, done = c.tagged("CLOSE")
    assert done.endswith(b"OK CLOSE completed\r\n") and _ == b""
    out = c.ok("SELECT INBOX")
    assert b"* 1 EXISTS" in out


def test_store_variants(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("a"))
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.ok("STORE 1 FLAGS (\\Seen $Label1)")
    # A new keyword is listed in FLAGS before it is used (RFC 3501 7.2.6).
    assert out.startswith(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)\r\n")
    assert out.endswith(b"* 1 FETCH (FLAGS (\\Recent \\Seen $Label1))\r\n")
    assert c.ok("STORE 1 -FLAGS ($Label1)") == b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n"
    assert c.ok("STORE 1 +FLAGS.SILENT (\\Answered)") == b""
    assert c.ok("UID STORE 1 +FLAGS (\\Draft)") == b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Draft \\Recent \\Seen))\r\n"
    _, done = c.tagged("STORE 2 +FLAGS (\\Seen)")
    assert b"BAD" in done


def test_examine_is_read_only(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("a"))
    c = env.login()
    untagged, done = c.tagged("EXAMINE INBOX")
    assert b"[READ-ONLY]" in done
    assert b"* OK [PERMANENTFLAGS ()]" in untagged
    _, done = c.tagged("STORE 1 +FLAGS (\\Seen)")
    assert b"NO" in done


def test_fetch_items(env: ImapEnv) -> None:
    raw = (
        b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        b"Subject: afternoon meeting\r\n"
        b"To: mooch@owatagu.siam.edu.example\r\n"
        b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n"
        b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    )
    deliver(env.store, SECRETARY, raw)
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.ok("FETCH 1 (ENVELOPE BODYSTRUCTURE RFC822.SIZE)")
    assert b'"afternoon meeting"' in out
    assert b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example"))' in out
    assert b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "US-ASCII")' in out.upper()
    assert b"RFC822.SIZE %d" % len(raw) in out
    out = c.ok("FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.5>)")
    assert b"BODY[HEADER.FIELDS (SUBJECT)] {30}\r\nSubject: afternoon meeting\r\n\r\n" in out
    assert b"BODY[TEXT]<0> {5}\r\nHello" in out
    out = c.ok("FETCH 1 (RFC822.HEADER)")
    assert b"RFC822.HEADER {" in out
    out = c.ok("FETCH 1 FAST")
    assert re.search(rb"FLAGS \(.*\) INTERNALDATE \".*\" RFC822.SIZE \d+", out)


def test_search(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("Rendez-vous", "alpha\r\n"), flags=("\\Flagged",))
    deliver(env.store, SECRETARY, message("Resultats", "beta gamma\r\n"))
    deliver(env.store, SECRETARY, message("Compte rendu", "gamma\r\n"), flags=("\\Seen",))
    c = env.login()
    c.ok("SELECT INBOX")
    assert c.ok("SEARCH FLAGGED") == b"* SEARCH 1\r\n"
    assert c.ok("SEARCH UNSEEN") == b"* SEARCH 1 2\r\n"
    assert c.ok("SEARCH BODY gamma") == b"* SEARCH 2 3\r\n"
    assert c.ok('SEARCH CHARSET UTF-8 SUBJECT "rendu"') == b"* SEARCH 3\r\n"
    assert c.ok("SEARCH OR FLAGGED SEEN") == b"* SEARCH 1 3\r\n"
    assert c.ok("SEARCH NOT SEEN 2:*") == b"* SEARCH 2\r\n"
    assert c.ok("UID SEARCH UID 2:3 TEXT gamma") == b"* SEARCH 2 3\r\n"
    assert c.ok("SEARCH FROM dr.martin LARGER 10") == b"* SEARCH 1 2 3\r\n"
    _, done = c.tagged("SEARCH CHARSET KOI8-R TEXT x")
    assert b"NO [BADCHARSET" in done


def test_invalid_sequence_numbers(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("a"))
    c = env.login()
    c.ok("SELECT INBOX")
    _, done = c.tagged("FETCH 5 FLAGS")
    assert b"BAD" in done
    assert c.ok("UID FETCH 5:7 FLAGS") == b""  # missing UIDs are ignored
    # "5:*" always includes the largest UID (RFC 3501 6.4.8).
    assert c.ok("UID FETCH 5:* FLAGS") == b"* 1 FETCH (UID 1 FLAGS (\\Recent))\r\n"
