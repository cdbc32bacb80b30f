"""Transcripts for session-level behaviour: AUTHENTICATE LOGIN, which SASL
mechanisms are offered, the pre-authentication literal limit, over-long
continuation lines (AUTHENTICATE, IDLE), subscriptions of deleted folders,
STATUS DELETED-STORAGE and CONDSTORE staying on for the connection."""

from __future__ import annotations

import base64
import re

import compliance_support
import pytest
from compliance_support import (
    SECRETARY,
    ImapEnv,
    deliver,
    message,
    status_of,
    tagged_line,
)
from imap_transcript import PASSWORD

from imapd.protocol import PREAUTH_MAX_LITERAL

env = compliance_support.env
env3 = compliance_support.env3


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


# ---------------------------------------------------------------- AUTHENTICATE LOGIN


def test_authenticate_login_prompts_username_then_password(env: ImapEnv) -> None:
    """Thunderbird's fallback (draft-murchison-sasl-login): the two prompts are
    base64 "Username:" and "Password:"; success gives CAPABILITY."""
    c = env.connect()
    assert b"AUTH=LOGIN" in c.greeting and b"AUTH=PLAIN" in c.greeting
    assert c.cmd("a1 AUTHENTICATE LOGIN") == b"+ VXNlcm5hbWU6\r\n"
    assert c.cmd(b64(SECRETARY)) == b"+ UGFzc3dvcmQ6\r\n"
    out = c.cmd(b64(PASSWORD))
    assert out.startswith(b"a1 OK [CAPABILITY IMAP4rev1"), out
    assert c.ok("SELECT INBOX")


def test_authenticate_login_with_initial_response(env: ImapEnv) -> None:
    """SASL-IR (RFC 4959) for LOGIN carries the user name."""
    c = env.connect()
    assert c.cmd(b"a1 AUTHENTICATE LOGIN " + b64(SECRETARY)) == b"+ UGFzc3dvcmQ6\r\n"
    assert c.cmd(b64(PASSWORD)).startswith(b"a1 OK [CAPABILITY ")


def test_authenticate_login_wrong_password_and_cancel(env: ImapEnv) -> None:
    c = env.connect()
    c.cmd("a1 AUTHENTICATE LOGIN")
    c.cmd(b64(SECRETARY))
    assert c.cmd(b64("wrong")).startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    c.cmd("a2 AUTHENTICATE LOGIN")
    assert c.cmd("*").startswith(b"a2 BAD")  # RFC 3501 6.2.2: "*" cancels
    assert c.cmd("a3 AUTHENTICATE LOGIN").startswith(b"+ ")
    assert c.cmd("not base64!").startswith(b"a3 BAD")
    assert c.cmd("a4 NOOP") == b"a4 OK NOOP completed\r\n"


def test_authenticate_login_refused_without_tls(env: ImapEnv) -> None:
    """A password mechanism: not before STARTTLS, and not advertised there."""
    c = env.connect("imap-starttls")
    assert b"AUTH=LOGIN" not in c.greeting and b"AUTH=PLAIN" not in c.greeting
    out = c.cmd("a1 AUTHENTICATE LOGIN")
    assert out.startswith(b"a1 NO [PRIVACYREQUIRED]"), out  # no "+": nothing was asked


def test_external_not_offered_without_a_certificate(env: ImapEnv) -> None:
    """mbsync (cyrus-sasl) picks EXTERNAL whenever offered: only a client that
    presented a verified certificate may see it."""
    c = env.connect()
    assert b"AUTH=EXTERNAL" not in c.greeting
    assert b"AUTH=EXTERNAL" not in c.ok("CAPABILITY")
    session = c.proto.session
    session.tls = True
    assert "AUTH=EXTERNAL" not in session.capabilities()
    session.peer = session.peer.__class__(
        address="127.0.0.1", port=1, listener="imap", role=session.peer.role, tls=True,
        client_cert=object(),  # type: ignore[arg-type]
    )
    assert "AUTH=EXTERNAL" in session.capabilities()


# ---------------------------------------------------------------- literals before login


def test_append_before_login_is_refused_without_reading_the_literal(env: ImapEnv) -> None:
    c = env.connect()
    out = c.cmd("a1 APPEND INBOX {5000000}")
    assert out == b"a1 BAD APPEND not allowed now\r\n"  # no "+": the client sends nothing
    # A non-synchronising one is skipped, never buffered.
    out = c.send(b"a2 APPEND INBOX {5000000+}\r\n" + b"x" * 100_000)
    assert out == b"" and c.proto.reader.buffered == 0
    out = c.send(b"x" * (5_000_000 - 100_000) + b"\r\n")
    assert out == b"a2 BAD APPEND not allowed now\r\n", out
    assert c.cmd("a3 NOOP") == b"a3 OK NOOP completed\r\n"


def test_small_append_before_login_gets_bad(env: ImapEnv) -> None:
    c = env.connect()
    assert c.cmd("a1 APPEND INBOX {10}") == b"a1 BAD APPEND not allowed now\r\n"
    out = c.send(b"a2 APPEND INBOX {5+}\r\nhello\r\n")
    assert out.startswith(b"a2 BAD"), out


def test_literal_limit_is_raised_by_login(env: ImapEnv) -> None:
    c = env.connect()
    assert c.proto.reader.max_literal == PREAUTH_MAX_LITERAL
    # LOGIN itself may use (small) literals.
    out = c.cmd(f"a1 LOGIN {{{len(SECRETARY)}}}".encode())
    assert out.startswith(b"+ ")
    out = c.cmd(SECRETARY.encode() + f" {{{len(PASSWORD)}}}".encode())
    assert out.startswith(b"+ ")
    assert c.cmd(PASSWORD).startswith(b"a1 OK")
    raw = message("big", "x" * (PREAUTH_MAX_LITERAL * 3) + "\r\n")
    assert c.cmd(f"a2 APPEND INBOX {{{len(raw)}}}".encode()).startswith(b"+ ")
    assert c.cmd(raw).startswith(b"a2 OK [APPENDUID ")


def test_literal_limit_is_raised_by_authenticate(env: ImapEnv) -> None:
    c = env.connect()
    plain = base64.b64encode(f"\0{SECRETARY}\0{PASSWORD}".encode()).decode()
    assert c.cmd(f"a1 AUTHENTICATE PLAIN {plain}").startswith(b"a1 OK")
    raw = message("big", "y" * (PREAUTH_MAX_LITERAL * 2) + "\r\n")
    out = c.send(f"a2 APPEND INBOX {{{len(raw)}+}}\r\n".encode() + raw + b"\r\n")
    assert out.startswith(b"a2 OK [APPENDUID "), out


# ---------------------------------------------------------------- over-long continuation lines


def test_overlong_authenticate_response_ends_the_command(env: ImapEnv) -> None:
    limit = env.settings.limits.command_line_length
    c = env.connect()
    assert c.cmd("a1 AUTHENTICATE PLAIN") == b"+ \r\n"
    out = c.cmd(b"A" * (limit + 10))
    assert out.startswith(b"a1 BAD "), out
    assert b"* BAD" not in out
    assert c.cmd("a2 NOOP") == b"a2 OK NOOP completed\r\n"
    plain = base64.b64encode(f"\0{SECRETARY}\0{PASSWORD}".encode()).decode()
    assert c.cmd(f"a3 AUTHENTICATE PLAIN {plain}").startswith(b"a3 OK")


def test_overlong_line_in_idle_ends_idle(env3: ImapEnv) -> None:
    limit = env3.settings.limits.command_line_length
    c = env3.login()
    c.ok("SELECT INBOX")
    assert c.cmd("i1 IDLE") == b"+ idling\r\n"
    # Sent in pieces: the reader drops the line without buffering it.
    out = c.send(b"D" * (limit // 2))
    out += c.send(b"D" * (limit // 2 + 10))
    assert out == b""
    out = c.send(b"\r\n")
    assert out.startswith(b"i1 BAD "), out
    assert c.proto._idle_done is None
    assert c.cmd("a2 NOOP") == b"a2 OK NOOP completed\r\n"
    # and IDLE works again afterwards
    assert c.cmd("i2 IDLE") == b"+ idling\r\n"
    assert c.cmd("DONE") == b"i2 OK IDLE terminated\r\n"


# ---------------------------------------------------------------- subscriptions


def test_lsub_keeps_deleted_name_and_recreation_keeps_it_subscribed(env: ImapEnv) -> None:
    """RFC 3501 6.3.6: the subscription outlives the folder; LIST (without
    SUBSCRIBED selection) no longer lists it."""
    c = env.login()
    c.ok("CREATE projet/a")
    c.ok("SUBSCRIBE projet/a")
    c.ok("DELETE projet/a")
    assert c.ok('LSUB "" projet/*') == b'* LSUB () "/" "projet/a"\r\n'
    assert b"projet/a" not in c.ok('LIST "" projet/* RETURN (SUBSCRIBED)')
    out = c.ok('LIST (SUBSCRIBED) "" projet/*')
    assert out == b'* LIST (\\NonExistent \\Subscribed) "/" "projet/a"\r\n', out
    # "%" last: the unsubscribed (existing) parent comes as \Noselect
    assert c.ok('LSUB "" %').count(b'"projet"') == 1
    c.ok("CREATE projet/a")
    out = c.ok('LIST (SUBSCRIBED) "" projet/*')
    assert re.fullmatch(rb'\* LIST \(\\HasNoChildren \\Subscribed\) "/" "projet/a"\r\n', out), out
    c.ok("UNSUBSCRIBE projet/a")
    assert c.ok('LSUB "" projet/*') == b""


def test_unsubscribe_unknown_name_is_nonexistent(env: ImapEnv) -> None:
    c = env.login()
    _, done = c.tagged("UNSUBSCRIBE never-was")
    assert done.startswith(b"t1 NO [NONEXISTENT]"), done
    _, done = c.tagged("SUBSCRIBE never-was")
    assert b" NO " in done


def test_shared_mailbox_subscription_survives_delete(env: ImapEnv) -> None:
    c = env.login()
    name = "Shared/cardiologie@hopital.test/suivi"
    c.ok(f'CREATE "{name}"')
    c.ok(f'SUBSCRIBE "{name}"')
    c.ok(f'DELETE "{name}"')
    assert c.ok(f'LSUB "" "{name}"') == f'* LSUB () "/" "{name}"\r\n'.encode()
    c.ok(f'UNSUBSCRIBE "{name}"')
    assert c.ok(f'LSUB "" "{name}"') == b""


# ---------------------------------------------------------------- STATUS DELETED-STORAGE


def test_status_deleted_storage_counts_kilobytes_of_deleted(env: ImapEnv) -> None:
    sizes = []
    for i in range(3):
        raw = message(f"m{i}", "z" * (1500 * (i + 1)) + "\r\n")
        sizes.append(len(raw))
        deliver(env.store, SECRETARY, raw)
    c = env.login()
    assert status_of(c, "INBOX", "DELETED-STORAGE") == {"DELETED-STORAGE": 0}
    c.ok("SELECT INBOX")
    c.ok("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    got = status_of(c, "INBOX", "DELETED DELETED-STORAGE MESSAGES")
    assert got == {"DELETED": 2, "DELETED-STORAGE": -(-(sizes[0] + sizes[2]) // 1024),
                   "MESSAGES": 3}
    out = c.ok('LIST "" INBOX RETURN (STATUS (DELETED-STORAGE))')
    assert b"DELETED-STORAGE" in out


# ---------------------------------------------------------------- CONDSTORE for the connection


@pytest.mark.parametrize("enabling", ["FETCH 1 (MODSEQ)", "SEARCH MODSEQ 1",
                                      "STORE 1 (UNCHANGEDSINCE 100) +FLAGS.SILENT (x)"])
def test_condstore_enabled_by_a_command_lasts_for_the_connection(env3: ImapEnv,
                                                                 enabling: str) -> None:
    """RFC 7162 3.1: a CONDSTORE enabling command turns UID and MODSEQ on in
    every later untagged FETCH "until the connection is closed", including
    in the next selected mailbox and for changes made by others."""
    a, b = env3.login(), env3.login()
    a.ok("SELECT INBOX")
    a.ok(enabling)
    a.ok("EXAMINE INBOX")
    a.ok("SELECT INBOX")
    b.ok("SELECT INBOX")
    b.ok("STORE 2 +FLAGS.SILENT (\\Answered)")
    out = a.ok("NOOP")
    m = re.search(rb"\* 2 FETCH \((.*)\)\r\n", out)
    assert m and b"UID 2" in m.group(1) and b"MODSEQ (" in m.group(1), out
    out = a.ok("STORE 3 +FLAGS (\\Flagged)")
    assert re.search(rb"\* 3 FETCH \(UID 3 .*MODSEQ \(\d+\)", out), out


def test_no_modseq_without_condstore(env3: ImapEnv) -> None:
    a, b = env3.login(), env3.login()
    a.ok("SELECT INBOX")
    b.ok("SELECT INBOX")
    b.ok("STORE 2 +FLAGS.SILENT (\\Answered)")
    out = a.ok("NOOP")
    assert re.fullmatch(rb"\* 2 FETCH \(FLAGS \([^)]*\\Answered[^)]*\)\)\r\n", out), out
    assert tagged_line(a.cmd("x NOOP"), "x") == b"x OK NOOP completed"


def test_store_failure_when_idle_starts_does_not_end_idle(env3: ImapEnv,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A store hiccup while IDLE syncs must neither answer IDLE under the idling
    client nor leave a waiter that swallows its next line."""
    from storage.interface import StoreUnavailable

    c = env3.login()
    c.ok("SELECT INBOX")

    def down(*a: object, **k: object) -> object:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(env3.store, "changes_since", down)
    assert c.cmd("i1 IDLE") == b"+ idling\r\n"
    monkeypatch.undo()
    assert c.cmd("DONE") == b"i1 OK IDLE terminated\r\n"
    assert c.cmd("a2 NOOP") == b"a2 OK NOOP completed\r\n"
