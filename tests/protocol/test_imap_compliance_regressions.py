"""Conformance defects found by comparing with the RFCs and Dovecot, each
with its regression test (issue 11): mailbox names that are not modified
UTF-7, EXAMINE's \\Recent, SEARCH in MIME part headers, ENVELOPE's quoted
local parts, HEADER.FIELDS.NOT of a header-only message, [CLOSED], the
BODYSTRUCTURE line count, STORE \\Recent, STORE on expunged messages
(RFC 2180 4.2) and UIDVALIDITY unique across mailboxes."""

from __future__ import annotations

import compliance_support
from compliance_support import (
    SECRETARY,
    ImapEnv,
    deliver,
    message,
    selected,
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


# ------------------------------------------------ SEARCH in MIME part headers

_WITH_ATTACHMENT = (
    b"From: <dr.martin@hopital.test>\r\n"
    b"To: <secretaire@hopital.test>\r\n"
    b"Subject: compte rendu\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Voir la piece jointe.\r\n"
    b"--b1\r\n"
    b"Content-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="cr-echographie.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--b1--\r\n"
)


def test_search_text_and_body_look_into_body_part_headers(env: ImapEnv) -> None:
    """RFC 3501 6.4.4: TEXT matches "the header or body of the message", BODY
    "the body": the MIME header of a body part is in the body (an attachment's
    file name in its Content-Disposition is found, as Dovecot finds it); the
    message's own header is not in BODY."""
    deliver(env.store, SECRETARY, message("autre", "rien\r\n"))
    deliver(env.store, SECRETARY, _WITH_ATTACHMENT)
    c = selected(env)
    assert c.ok('SEARCH TEXT "cr-echographie"') == b"* SEARCH 2\r\n"
    assert c.ok('SEARCH BODY "cr-echographie.pdf"') == b"* SEARCH 2\r\n"
    assert c.ok("SEARCH BODY application/pdf") == b"* SEARCH 2\r\n"
    assert c.ok('SEARCH BODY "piece jointe"') == b"* SEARCH 2\r\n"
    # the top-level header stays out of BODY, in TEXT
    assert c.ok('SEARCH BODY "compte rendu"') == b"* SEARCH\r\n"
    assert c.ok('SEARCH TEXT "compte rendu"') == b"* SEARCH 2\r\n"
    # base64 content is not text
    assert c.ok("SEARCH BODY JVBERi0xLjQK") == b"* SEARCH\r\n"


# ---------------------------------------------------- ENVELOPE addr-mailbox


def test_envelope_mailbox_of_a_quoted_local_part_is_unquoted(env: ImapEnv) -> None:
    """RFC 3501 9: addr-mailbox is the local-part "after removing [RFC-822]
    quoting"; the client quotes it again when it writes the address."""
    deliver(env.store, SECRETARY, (
        b'From: "John Doe" <"john..doe"@hopital.test>\r\n'
        b'To: "a \\"b\\" c"@hopital.test, plain@hopital.test\r\n'
        b"Subject: q\r\n\r\nx\r\n"))
    c = selected(env)
    out = c.ok("FETCH 1 ENVELOPE")
    assert b'(("John Doe" NIL "john..doe" "hopital.test"))' in out, out
    assert b'((NIL NIL "a \\"b\\" c" "hopital.test")(NIL NIL "plain" "hopital.test"))' in out, out
    assert b'\\"john' not in out


# ------------------------------------- HEADER.FIELDS.NOT of a header-only message


def test_header_fields_not_of_a_message_without_blank_line(env: ImapEnv) -> None:
    """RFC 3501 6.4.5: HEADER.FIELDS.NOT is the header minus the named fields.
    A message that is all header (no blank line) has no blank line to give:
    the fields only (Dovecot). With a blank line, it is kept."""
    deliver(env.store, SECRETARY, b"Subject: only\r\nX-Test: 1\r\n")
    deliver(env.store, SECRETARY, b"Subject: with body\r\nX-Test: 2\r\n\r\nbody\r\n")
    c = selected(env)
    out = c.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (X-Test)]")
    assert out == b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (X-Test)] {15}\r\nSubject: only\r\n)\r\n", out
    out = c.ok("FETCH 2 BODY.PEEK[HEADER.FIELDS.NOT (X-Test)]")
    assert out.endswith(b"{22}\r\nSubject: with body\r\n\r\n)\r\n"), out
    # BODY[HEADER] of the first is the whole message, as it is
    assert c.ok("FETCH 1 BODY.PEEK[HEADER]").endswith(b"{26}\r\nSubject: only\r\nX-Test: 1\r\n)\r\n")


# ------------------------------------------------------------------ [CLOSED]


def test_closed_is_sent_without_enable(env3: ImapEnv) -> None:
    """RFC 7162 3.2.11: a server advertising QRESYNC (we do, always) sends
    OK [CLOSED] when SELECT or EXAMINE closes the selected mailbox, ENABLE
    or not; not for the first SELECT."""
    c = env3.login()
    assert b"[CLOSED]" not in c.ok("SELECT INBOX")
    out = c.ok("EXAMINE INBOX")
    assert out.startswith(b"* OK [CLOSED] "), out
    # also when the new SELECT fails: the previous mailbox is closed all the same
    untagged, done = c.tagged("SELECT nowhere")
    assert untagged.startswith(b"* OK [CLOSED] ") and b" NO " in done
    assert b"[CLOSED]" not in c.ok("SELECT INBOX")  # nothing was selected


# ------------------------------------------------------ BODYSTRUCTURE lines


def test_bodystructure_lines_count_terminated_lines(env: ImapEnv) -> None:
    """RFC 3501 7.4.2 body-fld-lines: "the size of the body in text lines".
    A last line without its line ending is not counted, as Dovecot counts
    (the number of line endings)."""
    deliver(env.store, SECRETARY, b"Subject: a\r\n\r\none\r\ntwo")
    deliver(env.store, SECRETARY, b"Subject: b\r\n\r\none\r\ntwo\r\n")
    c = selected(env)
    first = c.ok("FETCH 1 BODYSTRUCTURE")
    second = c.ok("FETCH 2 BODYSTRUCTURE")
    assert b'"7BIT" 8 1 NIL' in first, first
    assert b'"7BIT" 10 2 NIL' in second, second


# ------------------------------------------------------------ STORE \Recent


def test_store_of_recent_is_bad(env3: ImapEnv) -> None:
    """RFC 3501 2.3.2: \\Recent "can not be altered by the client": refused
    (BAD, the stricter servers' answer), in every STORE form; nothing changes."""
    c = selected(env3)
    for command in ("STORE 1 +FLAGS (\\Recent)", "STORE 1 -FLAGS (\\Recent)",
                    "UID STORE 1 FLAGS (\\Seen \\Recent)", "STORE 1 +FLAGS.SILENT \\Recent"):
        _, done = c.tagged(command)
        assert b" BAD " in done, (command, done)
    assert c.ok("FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Recent))\r\n"


# --------------------------------------- STORE on messages expunged elsewhere


def _expunge_elsewhere(env: ImapEnv, uid: int) -> None:
    other = selected(env)
    other.ok(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
    other.ok(f"UID EXPUNGE {uid}")


def test_uid_store_ignores_uids_expunged_elsewhere(env3: ImapEnv) -> None:
    """RFC 2180 4.2 / RFC 3501 6.4.8: UID STORE ignores UIDs that no longer
    exist (OK), applies the flags to the others, and sends no FETCH for the
    expunged message: only its EXPUNGE, after the FETCH of the others."""
    c = selected(env3)
    _expunge_elsewhere(env3, 2)
    untagged, done = c.tagged("UID STORE 1:3 +FLAGS (\\Flagged)")
    assert b" OK " in done, done
    assert untagged == (b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\n"
                        b"* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))\r\n"
                        b"* 2 EXPUNGE\r\n"), untagged
    assert c.ok("UID FETCH 1:* FLAGS") == (b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\n"
                                           b"* 2 FETCH (UID 3 FLAGS (\\Flagged \\Recent))\r\n")


def test_store_silent_on_a_message_expunged_elsewhere_is_ok(env3: ImapEnv) -> None:
    """RFC 2180 4.2.1: STORE .SILENT completed for the non-expunged
    messages: tagged OK; the EXPUNGE waits (not during STORE, RFC 3501 7.4.1)."""
    c = selected(env3)
    _expunge_elsewhere(env3, 2)
    untagged, done = c.tagged("STORE 1:3 +FLAGS.SILENT (\\Seen)")
    assert b" OK " in done and untagged == b"", (untagged, done)
    out = c.ok("NOOP")
    assert out == b"* 2 EXPUNGE\r\n", out
    assert c.ok("SEARCH SEEN") == b"* SEARCH 1 2\r\n"
    # The same when the session already knows of the expunge but may not
    # announce it yet (learned during a FETCH: RFC 3501 7.4.1).
    _expunge_elsewhere(env3, 3)
    assert b"EXPUNGE" not in c.ok("FETCH 1 FLAGS")
    untagged, done = c.tagged("STORE 1:2 +FLAGS.SILENT (\\Flagged)")
    assert b" OK " in done and untagged == b"", (untagged, done)
    assert c.ok("NOOP") == b"* 2 EXPUNGE\r\n"
    assert c.ok("FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Flagged \\Recent \\Seen))\r\n"


def test_store_naming_a_message_expunged_elsewhere(env3: ImapEnv) -> None:
    """RFC 2180 4.2.3 / 4.2.2: STORE without .SILENT sets the flags of the
    others and sends their FETCH, none for the expunged one (its flags did not
    change: a FETCH would be stale), and answers NO [EXPUNGEISSUED]; naming
    only expunged messages gives only the tagged NO."""
    c = selected(env3)
    _expunge_elsewhere(env3, 2)
    untagged, done = c.tagged("STORE 1:3 +FLAGS (\\Answered)")
    assert b" NO [EXPUNGEISSUED] " in done, done
    assert untagged == (b"* 1 FETCH (FLAGS (\\Answered \\Recent))\r\n"
                        b"* 3 FETCH (FLAGS (\\Answered \\Recent))\r\n"), untagged
    untagged, done = c.tagged("STORE 2 +FLAGS (\\Seen)")
    assert b" NO [EXPUNGEISSUED] " in done and untagged == b"", (untagged, done)
    assert c.ok("NOOP") == b"* 2 EXPUNGE\r\n"


def test_store_already_set_flags_on_live_messages_still_answers_fetch(env3: ImapEnv) -> None:
    """Nothing expunged: flags already set still get their FETCH (RFC 3501
    6.4.6), and OK."""
    c = selected(env3)
    c.ok("STORE 1:3 +FLAGS.SILENT (\\Seen)")
    untagged, done = c.tagged("STORE 1:3 +FLAGS (\\Seen)")
    assert b" OK " in done
    assert len(untagged.splitlines()) == 3 and untagged.count(b"\\Seen") == 3
