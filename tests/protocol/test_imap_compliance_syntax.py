"""Command syntax, tags, literals and states (RFC 3501 2.2, 3, 4.3, 6.1-6.2,
7.1; RFC 7888 LITERAL+; RFC 4959 SASL-IR)."""

from __future__ import annotations

import base64

import compliance_support
import pytest
from compliance_support import (
    SECRETARY,
    ImapEnv,
    lines,
    selected,
)
from imap_transcript import PASSWORD

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3


def test_greeting_is_ok_with_capability(env: ImapEnv) -> None:
    """RFC 3501 7.1.1: the greeting is an untagged OK (may carry [CAPABILITY])."""
    c = env.connect()
    assert c.greeting.startswith(b"* OK ") and c.greeting.endswith(b"\r\n")
    assert b"IMAP4rev1" in c.greeting


@pytest.mark.parametrize("cmd", [
    "SELECT INBOX", "EXAMINE INBOX", "CREATE x", "DELETE x", "RENAME x y", "SUBSCRIBE x",
    'LIST "" *', 'LSUB "" *', "STATUS INBOX (MESSAGES)", "NAMESPACE", "GETQUOTAROOT INBOX",
    "MYRIGHTS INBOX", "IDLE", "CHECK", "CLOSE", "EXPUNGE", "FETCH 1 FLAGS", "STORE 1 FLAGS ()",
    "SEARCH ALL", "COPY 1 x", "UID FETCH 1 FLAGS", "UNSELECT", "MOVE 1 x",
])
def test_commands_refused_before_login(env: ImapEnv, cmd: str) -> None:
    """RFC 3501 3 / 6: commands are valid only in their states; otherwise BAD
    (Dovecot answers BAD for commands not valid in the state) or NO."""
    c = env.connect()
    _, done = c.tagged(cmd)
    assert b" BAD " in done or b" NO " in done, done
    assert not c.closed


@pytest.mark.parametrize("cmd", [
    "CHECK", "CLOSE", "EXPUNGE", "FETCH 1 FLAGS", "STORE 1 FLAGS ()", "SEARCH ALL",
    "COPY 1 Trash", "UID FETCH 1 FLAGS", "UNSELECT", "MOVE 1 Trash", "UID EXPUNGE 1",
])
def test_selected_state_commands_refused_when_authenticated(env: ImapEnv, cmd: str) -> None:
    c = env.login()
    _, done = c.tagged(cmd)
    assert b" BAD " in done or b" NO " in done, done


@pytest.mark.parametrize("cmd", ["LOGIN a b", "AUTHENTICATE PLAIN", "STARTTLS"])
def test_not_authenticated_commands_refused_after_login(env: ImapEnv, cmd: str) -> None:
    """RFC 3501 6.2: LOGIN/AUTHENTICATE/STARTTLS only in the not-authenticated state."""
    c = env.login()
    _, done = c.tagged(cmd)
    assert b" BAD " in done or b" NO " in done, done


def test_any_state_commands(env: ImapEnv) -> None:
    """RFC 3501 6.1: CAPABILITY, NOOP, LOGOUT valid in every state; case-insensitive."""
    c = env.connect()
    assert c.ok("noop") == b""
    assert c.ok("CaPaBiLiTy").startswith(b"* CAPABILITY IMAP4rev1")
    c = selected(env)
    assert c.ok("NoOp") == b""


def test_invalid_tag_and_empty_line(env: ImapEnv) -> None:
    """RFC 3501 9: tag = 1*<any ASTRING-CHAR except "+">; a line without a valid
    tag is answered by an untagged BAD."""
    c = env.connect()
    assert c.cmd("+bad NOOP").startswith(b"* BAD ")
    assert c.cmd("").startswith(b"* BAD ")
    assert c.cmd("a{3} NOOP").startswith(b"* BAD ")


def test_unknown_command_and_extra_arguments(env: ImapEnv) -> None:
    """RFC 3501 7.1.3: unknown command or trailing garbage -> tagged BAD."""
    c = env.connect()
    assert c.cmd("a1 FROBNICATE").startswith(b"a1 BAD ")
    assert c.cmd("a2 NOOP extra").startswith(b"a2 BAD ")


def test_login_with_synchronising_literals(env: ImapEnv) -> None:
    """RFC 3501 4.3 / 7.5: "+" continuation for each {n} literal."""
    c = env.connect()
    assert c.cmd(f"a1 LOGIN {{{len(SECRETARY)}}}").startswith(b"+ ")
    assert c.cmd(f"{SECRETARY} {{{len(PASSWORD)}}}").startswith(b"+ ")
    assert c.cmd(PASSWORD).startswith(b"a1 OK")


def test_login_with_quoted_and_literal_plus(env: ImapEnv) -> None:
    """RFC 7888: {n+} literals need no continuation."""
    c = env.connect()
    out = c.send(f"a1 LOGIN {{{len(SECRETARY)}+}}\r\n{SECRETARY} \"{PASSWORD}\"\r\n".encode())
    assert out.startswith(b"a1 OK")


def test_login_failure_is_no(env: ImapEnv) -> None:
    """RFC 3501 6.2.3: wrong credentials -> NO (connection stays usable)."""
    c = env.connect()
    _, done = c.tagged(f"LOGIN {SECRETARY} wrong")
    assert b" NO " in done and not c.closed


def test_authenticate_plain_with_and_without_initial_response(env: ImapEnv) -> None:
    """RFC 4959 SASL-IR and RFC 3501 6.2.2: continuation "+ " then base64 line;
    "*" cancels with BAD."""
    ir = base64.b64encode(f"\0{SECRETARY}\0{PASSWORD}".encode()).decode()
    c = env.connect()
    assert c.cmd(f"a1 AUTHENTICATE PLAIN {ir}").startswith(b"a1 OK")
    c = env.connect()
    assert c.cmd("a1 AUTHENTICATE PLAIN").startswith(b"+")
    assert c.cmd(ir).startswith(b"a1 OK")
    c = env.connect()
    c.cmd("a1 AUTHENTICATE PLAIN")
    assert c.cmd("*").startswith(b"a1 BAD")


def test_logindisabled_before_starttls(env: ImapEnv) -> None:
    """RFC 3501 6.2.3 / 7.2.1: LOGINDISABLED advertised -> LOGIN answered NO."""
    c = env.connect("imap-starttls")
    caps = c.ok("CAPABILITY")
    assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps
    _, done = c.tagged(f'LOGIN {SECRETARY} "{PASSWORD}"')
    assert b" NO " in done


def test_pipelined_commands_answered_in_order(env3: ImapEnv) -> None:
    """RFC 3501 5.5: several commands sent at once are all answered."""
    c = selected(env3)
    out = c.send(b"p1 NOOP\r\np2 FETCH 1 UID\r\np3 NOOP\r\n")
    ls = lines(out)
    assert [x.split()[0] for x in ls if not x.startswith(b"*")] == [b"p1", b"p2", b"p3"]
    assert b"* 1 FETCH (UID 1)" in ls
