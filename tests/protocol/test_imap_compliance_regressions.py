"""Conformance defects found by comparing with the RFCs and Dovecot, each
with its regression test (issue 11): mailbox names that are not modified
UTF-7, EXAMINE's \\Recent, SEARCH in MIME part headers, ENVELOPE's quoted
local parts, HEADER.FIELDS.NOT of a header-only message, [CLOSED], the
BODYSTRUCTURE line count, STORE \\Recent, STORE on expunged messages
(RFC 2180 4.2) and UIDVALIDITY unique across mailboxes."""

from __future__ import annotations

import compliance_support
from compliance_support import (
    ImapEnv,
    status_of,
)

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3


# ------------------------------------------------- names not modified UTF-7


def test_select_of_a_name_not_modified_utf7_is_no_not_bad(env: ImapEnv) -> None:
    """RFC 3501 5.1.3: "&Jjo" is a valid atom but not modified UTF-7 (an
    unterminated shift). The command is well-formed: NO as for a missing
    mailbox (not BAD), and the session goes on."""
    c = env.login()
    for command in ("SELECT &Jjo", "EXAMINE &Jjo", "STATUS &Jjo (MESSAGES)",
                    'SELECT "a&AGE-b"', "SELECT &Jjo/INBOX", "MYRIGHTS &Jjo",
                    "SUBSCRIBE &Jjo", "GETQUOTAROOT &Jjo"):
        _, done = c.tagged(command)
        assert done.startswith(tagged_prefix(done) + b" NO [NONEXISTENT]"), (command, done)
    _, done = c.tagged("CREATE &Jjo")
    assert done.endswith(b"NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n"), done
    _, done = c.tagged("RENAME Sent &Jjo")
    assert b" NO [CANNOT] " in done, done
    # Nothing was made under either name.
    assert b"Jjo" not in c.ok('LIST "" *')
    c.ok("NOOP")


def test_list_of_a_pattern_not_modified_utf7_is_ok_and_empty(env: ImapEnv) -> None:
    """The same for LIST and LSUB: OK, and the pattern matches nothing (Dovecot).
    "&Jjo" with a wildcard would otherwise match a folder named by its octets."""
    c = env.login()
    c.ok('CREATE "a&-Jjo"')  # the folder "a&Jjo", whose wire name is a&-Jjo
    assert c.ok('LIST "" a&Jjo*') == b""
    assert c.ok('LIST "" (a&Jjo* INBOX)') == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
    assert c.ok('LIST &Jjo *') == b""
    assert c.ok('LSUB "" a&Jjo*') == b""
    assert b'"a&-Jjo"' in c.ok('LIST "" a*')


def tagged_prefix(done: bytes) -> bytes:
    return done.split(b" ", 1)[0]


# ------------------------------------------------------- EXAMINE and \Recent


def test_examine_reports_recent_as_select_does_and_keeps_it(env3: ImapEnv) -> None:
    """RFC 3501 6.3.2: EXAMINE returns the same output as SELECT, and "MUST
    NOT cause messages to lose the \\Recent flag"."""
    viewer = env3.login()
    out = viewer.ok("EXAMINE INBOX")
    assert b"* 3 RECENT\r\n" in out
    assert viewer.ok("SEARCH RECENT") == b"* SEARCH 1 2 3\r\n"
    assert status_of(env3.login(), "INBOX", "RECENT") == {"RECENT": 3}
    # Examining again, or from another session, still reports them...
    assert b"* 3 RECENT\r\n" in env3.login().ok("EXAMINE INBOX")
    # ... and the session that selects the folder still gets them.
    c = env3.login()
    assert b"* 3 RECENT\r\n" in c.ok("SELECT INBOX")
    # Once claimed, nobody else sees them as recent (EXAMINE included).
    assert b"* 0 RECENT\r\n" in env3.login().ok("EXAMINE INBOX")
