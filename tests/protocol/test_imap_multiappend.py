"""MULTIAPPEND (RFC 3502): several messages in one APPEND, stored in one
transaction or not at all; the OK carries the APPENDUID of all of them
(RFC 4315 uid-set) and comes only after the commit. Limits: each message
within APPENDLIMIT (NO [TOOBIG]), at most `limits.imap_append_messages`
messages and `limits.imap_append_octets` octets per command (NO [LIMIT])."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    ImapClient,
    ImapEnv,
    add_user,
    lines,
    make_env,
    message,
    populate,
)

from conf.settings import LimitSettings
from storage.interface import StoreUnavailable

HELLO = message("hello", "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
WORLD = message("world", "Hello Fred, I'll be there.\r\n")


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def folder_state(env: ImapEnv, address: str = SECRETARY, name: str = "INBOX") -> tuple[int, int]:
    """(messages, uidnext) of a folder, from the store."""
    st = env.store.folder_status(env.store.get_folder(env.store.get_mailbox(address).id, name).id)
    return st.messages, st.uidnext


def appended(c: ImapClient, tag: str, *parts: bytes) -> bytes:
    """Sends a command made of `parts` (each ending with a synchronising
    literal's marker but the last), checking the "+" after each; returns the
    final answer."""
    for part in parts[:-1]:
        out = c.send(part)
        assert out == b"+ Ready for literal data\r\n", (part, out)
    return c.send(parts[-1])


def test_rfc3502_example_two_messages_one_command(env: ImapEnv) -> None:
    c = env.login()
    assert b"MULTIAPPEND" in c.ok("CAPABILITY")
    c.ok("CREATE saved-messages")
    before = folder_state(env, name="saved-messages")
    out = appended(
        c, "A003",
        b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(HELLO),
        HELLO + b' (\\Seen) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(WORLD),
        WORLD + b"\r\n",
    )
    m = re.fullmatch(rb"A003 OK \[APPENDUID (\d+) (\d+):(\d+)\] APPEND completed\r\n", out)
    assert m, out
    first, last = int(m.group(2)), int(m.group(3))
    assert (first, last) == (before[1], before[1] + 1)
    assert folder_state(env, name="saved-messages") == (2, before[1] + 2)
    c.ok("SELECT saved-messages")
    fetched = c.ok("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[])")
    assert fetched.count(b"\\Seen") == 2
    assert b'INTERNALDATE "08-Feb-1994 06:43:04 +0000"' in fetched  # the same instant
    assert HELLO in fetched and WORLD in fetched
    # In order: the first message has the first UID.
    assert fetched.index(HELLO) < fetched.index(WORLD)


def test_literal_plus_and_literal8_mixed(env: ImapEnv) -> None:
    c = env.login()
    blob = b"Subject: bin\r\n\r\n\x00\x01\x02\r\n"
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s ~{%d+}\r\n%s" % (len(HELLO), HELLO, len(blob), blob))
    assert re.fullmatch(rb"a1 OK \[APPENDUID \d+ 1:2\] APPEND completed\r\n", out), out
    assert folder_state(env) == (2, 3)


def test_selected_folder_sees_every_appended_message(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s {%d+}\r\n%s" % (
        len(HELLO), HELLO, len(WORLD), WORLD, len(HELLO), HELLO))
    assert out.startswith(b"* 3 EXISTS\r\n* 3 RECENT\r\n"), out
    assert re.search(rb"a1 OK \[APPENDUID \d+ 1:3\]", out), out


def test_a_bad_message_midway_stores_none(env: ImapEnv) -> None:
    c = env.login()
    before = folder_state(env)
    # The second message is empty: the whole command fails.
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s {0+}\r\n {%d+}\r\n%s" % (
        len(HELLO), HELLO, len(WORLD), WORLD))
    assert out == b"a1 NO [CANNOT] Cannot save a zero-byte message\r\n"
    # A bad flag in the third.
    out = c.cmd(b"a2 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s (\\Bogus) {%d+}\r\n%s" % (
        len(HELLO), HELLO, len(WORLD), WORLD, len(HELLO), HELLO))
    assert out == b"a2 BAD Invalid system flag\r\n"
    assert folder_state(env) == before


def test_over_quota_midway_stores_none(env: ImapEnv) -> None:
    mailbox = env.store.get_mailbox(SECRETARY)
    used = env.store.mailbox_usage(mailbox.id)[0]
    # Room for two of the three messages.
    env.store.set_quota(mailbox.id, used + len(HELLO) + len(WORLD) + 10)
    c = env.login()
    before = folder_state(env)
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s {%d+}\r\n%s" % (
        len(HELLO), HELLO, len(WORLD), WORLD, len(HELLO), HELLO))
    assert out == b"a1 NO [OVERQUOTA] Quota exceeded\r\n"
    # Nothing stored, no UID used up, nothing charged.
    assert folder_state(env) == before
    assert env.store.mailbox_usage(mailbox.id)[0] == used
    out = c.cmd(b"a2 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s" % (
        len(HELLO), HELLO, len(WORLD), WORLD))
    assert re.fullmatch(rb"a2 OK \[APPENDUID \d+ %d:%d\] APPEND completed\r\n"
                        % (before[1], before[1] + 1), out), out


def test_store_failure_at_commit_acknowledges_nothing(env: ImapEnv, monkeypatch: Any) -> None:
    c = env.login()
    before = folder_state(env)

    def down(*a: Any, **k: Any) -> Any:
        raise StoreUnavailable("disk busy")

    monkeypatch.setattr(env.store, "append_many", down)
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s" % (
        len(HELLO), HELLO, len(WORLD), WORLD))
    # A temporary failure, never an OK: the client keeps its copies.
    assert out == b"a1 NO [UNAVAILABLE] Service temporarily unavailable, try again\r\n"
    assert folder_state(env) == before


def limited_env(tmp_path: Path, store: Any, **limits: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store, limits=LimitSettings(**limits))


def test_too_many_messages_is_limit(tmp_path: Path, store: Any) -> None:
    env = limited_env(tmp_path, store, imap_append_messages=2)
    c = env.login()
    before = folder_state(env)
    three = b" {%d+}\r\n%s" % (len(HELLO), HELLO) * 3
    out = c.cmd(b"a1 APPEND INBOX" + three)
    assert out == b"a1 NO [LIMIT] Too many messages in one APPEND\r\n"
    assert folder_state(env) == before
    assert b"a2 OK" in c.cmd(b"a2 APPEND INBOX" + three[: len(three) * 2 // 3])


def test_a_literal_past_the_total_is_refused_before_it_is_sent(
        tmp_path: Path, store: Any) -> None:
    one = message("one", "x" * 600 + "\r\n")
    env = limited_env(tmp_path, store, imap_append_octets=1024)
    c = env.login()
    before = folder_state(env)
    assert c.send(b"a1 APPEND INBOX {%d}\r\n" % len(one)) == b"+ Ready for literal data\r\n"
    # No "+" for the second literal: the command is over, the client sends
    # nothing more of it, and nothing was stored.
    out = c.send(one + b" {%d}\r\n" % len(one))
    assert out == b"a1 NO [LIMIT] Too much data in one APPEND\r\n"
    assert folder_state(env) == before
    c.ok("NOOP")
    # With LITERAL+ the octets are skipped, then the command is answered.
    out = c.cmd(b"a2 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s" % (len(one), one, len(one), one))
    assert out == b"a2 NO [LIMIT] Too much data in one APPEND\r\n"
    assert folder_state(env) == before


def test_one_message_over_appendlimit_midway_is_toobig(tmp_path: Path, store: Any) -> None:
    big = message("big", "x" * 2000 + "\r\n")
    env = limited_env(tmp_path, store, message_size=1024)
    c = env.login()
    assert b"APPENDLIMIT=1024" in c.ok("CAPABILITY")
    before = folder_state(env)
    assert c.send(b"a1 APPEND INBOX {%d}\r\n" % len(HELLO)) == b"+ Ready for literal data\r\n"
    out = c.send(HELLO + b" {%d}\r\n" % len(big))
    assert out == b"a1 NO [TOOBIG] Message too big\r\n"
    assert folder_state(env) == before


def test_missing_or_forbidden_destination(env: ImapEnv, store: Any) -> None:
    add_user(store, "autre@hopital.test")
    c = env.login()
    two = b" {%d+}\r\n%s {%d+}\r\n%s" % (len(HELLO), HELLO, len(WORLD), WORLD)
    for name in (b"nope", b'"Shared/pneumologie@hopital.test/INBOX"',
                 b'"Other Users/autre@hopital.test/INBOX"'):
        out = c.cmd(b"a1 APPEND " + name + two)
        assert out == b"a1 NO [TRYCREATE] Mailbox does not exist\r\n", (name, out)
    # A shared box one may read but not insert into: permission denied.
    env.store.set_grant(env.store.get_account(SECRETARY).id,
                        env.store.get_mailbox(CARDIO).id, "lr")
    out = c.cmd(b"a2 APPEND \"Shared/" + CARDIO.encode() + b"/INBOX\"" + two)
    assert out == b"a2 NO [NOPERM] Permission denied\r\n"


def test_append_is_one_decision_and_one_event(env: ImapEnv) -> None:
    c = env.login()
    c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s" % (len(HELLO), HELLO, len(WORLD), WORLD))
    decision, done = [e for e in env.audit.events if e.action == "append"]
    assert (decision.actor, decision.result, decision.target) == (
        SECRETARY, "allow", f"{SECRETARY}/INBOX")
    assert (done.actor, done.result, done.target) == (SECRETARY, "ok", f"{SECRETARY}/INBOX")
    assert done.details["messages"] == 2 and done.details["uids"] == "1:2"
    assert all(b"Hello" not in repr(e).encode() for e in env.audit.events)
    # Refused: the decision only, nothing stored to record.
    c.cmd(b"a2 APPEND INBOX {%d+}\r\n%s {0+}\r\n" % (len(HELLO), HELLO))
    assert [e.result for e in env.audit.events if e.action == "append"] == ["allow", "ok"]


def test_pipelined_after_multiappend(env: ImapEnv) -> None:
    c = env.login()
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\na2 NOOP" % (
        len(HELLO), HELLO, len(WORLD), WORLD))
    assert [x[:5] for x in lines(out)] == [b"a1 OK", b"a2 OK"]
