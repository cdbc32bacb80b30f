"""Limits and subscriptions: literal sizes (RFC 7888 4, RFC 7889, RFC 4469 TOOBIG),
every command gets one tagged reply (RFC 3501 2.2.2), the subscription list
(RFC 3501 6.3.6-6.3.7), UIDVALIDITY of re-created names (RFC 3501 2.3.1.1)."""

from __future__ import annotations

import re

import compliance_support
from compliance_support import (
    ImapEnv,
    literal_append,
    message,
    status_of,
    tagged_line,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
small_env = compliance_support.small_env


def test_sync_literal_over_appendlimit_refused_before_reading(small_env: ImapEnv) -> None:
    """RFC 7889 / RFC 4469: NO [TOOBIG] instead of the "+" continuation."""
    c = small_env.login()
    out = c.cmd("a1 APPEND INBOX {5000}")
    assert out.startswith(b"a1 NO [TOOBIG]"), out
    assert c.ok("NOOP") == b""


def test_nonsync_literal_over_limit_gets_a_tagged_reply(small_env: ImapEnv) -> None:
    """RFC 7888 4: a server that cannot accept a non-synchronising literal must
    still answer the command (tagged NO [TOOBIG] / BAD after discarding the
    octets) or close the connection with BYE; RFC 3501 2.2.2: every command
    gets a completion result."""
    c = small_env.login()
    out = c.send(b"a1 APPEND INBOX {5000+}\r\n" + b"x" * 5000 + b"\r\n")
    out += c.cmd("a2 NOOP")
    assert re.search(rb"^a1 (NO|BAD)", out, re.M) or (b"* BYE" in out and c.closed), out


def test_append_within_limit_ok(small_env: ImapEnv) -> None:
    c = small_env.login()
    out = literal_append(c, "a1", "INBOX", message("small"))
    assert tagged_line(out, "a1").startswith(b"a1 OK [APPENDUID ")


def test_too_long_command_line_is_bad_not_a_drop(env: ImapEnv) -> None:
    """RFC 7162 4 / RFC 2683 3.2.1.5: an over-long line gets BAD (or BYE), and a
    BAD leaves the session usable."""
    c = env.login()
    out = c.cmd("a1 NOOP " + "x" * (env.settings.limits.command_line_length + 10))
    assert out.startswith(b"a1 BAD") or out.startswith(b"* BAD") or b"* BYE" in out
    if not c.closed:
        assert c.cmd("a2 NOOP") == b"a2 OK NOOP completed\r\n"


def test_empty_append_is_no_not_bad(env: ImapEnv) -> None:
    """RFC 3501 7.1.3: BAD is for protocol-level errors; "APPEND INBOX {0}" is
    valid syntax (literal = "{" number "}" CRLF *CHAR8). Dovecot: NO "Can't save
    a zero byte message"."""
    c = env.login()
    out = c.send(b"a1 APPEND INBOX {0+}\r\n\r\n")
    assert tagged_line(out, "a1").startswith((b"a1 NO", b"a1 OK")), out


def test_subscription_survives_delete(env: ImapEnv) -> None:
    """RFC 3501 6.3.6: the server "MUST NOT unilaterally remove an existing
    mailbox name from the subscription list even if a mailbox by that name no
    longer exists"; 6.3.7: UNSUBSCRIBE removes the name."""
    c = env.login()
    c.ok("CREATE gone")
    c.ok("SUBSCRIBE gone")
    c.ok("DELETE gone")
    assert re.fullmatch(rb'\* LSUB \([^)]*\) "/" "?gone"?\r\n', c.ok('LSUB "" gone'))
    c.ok("UNSUBSCRIBE gone")
    assert c.ok('LSUB "" gone') == b""


def test_recreated_name_gets_new_uidvalidity(env: ImapEnv) -> None:
    """RFC 3501 2.3.1.1: a mailbox deleted and created again, or a name freed by
    RENAME, must not reuse UIDs under the same UIDVALIDITY."""
    c = env.login()
    c.ok("CREATE y")
    literal_append(c, "a1", "y", message("1"))
    before = status_of(c, "y", "UIDVALIDITY UIDNEXT")
    c.ok("DELETE y")
    c.ok("CREATE y")
    after = status_of(c, "y", "UIDVALIDITY UIDNEXT")
    assert after["UIDVALIDITY"] != before["UIDVALIDITY"] or after["UIDNEXT"] >= before["UIDNEXT"]
    literal_append(c, "a2", "y", message("2"))
    moved = status_of(c, "y", "UIDVALIDITY UIDNEXT")
    c.ok("RENAME y z")
    c.ok("CREATE y")
    fresh = status_of(c, "y", "UIDVALIDITY UIDNEXT")
    assert fresh["UIDVALIDITY"] != moved["UIDVALIDITY"] or fresh["UIDNEXT"] >= moved["UIDNEXT"]


def test_delete_noselect_with_inferiors_is_no(env: ImapEnv) -> None:
    """RFC 3501 6.3.4: deleting a \\Noselect name that has inferiors is an error."""
    c = env.login()
    c.ok("CREATE p/q")
    c.ok("DELETE p")
    _, done = c.tagged("DELETE p")
    assert b" NO " in done
    assert b'"p/q"' in c.ok('LIST "" p*')


def test_idle_in_authenticated_state(env: ImapEnv) -> None:
    """RFC 2177 3: IDLE is valid in the authenticated state too."""
    c = env.login()
    assert c.cmd("i1 IDLE").startswith(b"+ ")
    assert c.cmd("DONE") == b"i1 OK IDLE terminated\r\n"
