"""ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and WITHIN (RFC 5032): the RFCs'
examples over the real store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import compliance_support
from compliance_support import SECRETARY, ImapClient, ImapEnv, deliver, message, selected

env = compliance_support.env


def esearch(c: ImapClient, rest: str) -> str:
    """The ESEARCH response's data after its (TAG "...") correlator."""
    out = c.ok(rest)
    prefix = f'* ESEARCH (TAG "t{c._n}")'.encode()
    assert out.startswith(prefix) and out.count(b"\r\n") == 1, out
    return out[len(prefix):].decode().strip()


def eleven(env: ImapEnv) -> ImapClient:
    """11 messages; 2, 10 and 11 are \\Flagged, 5 is from Smith."""
    for i in range(1, 12):
        sender = "smith@h.test" if i == 5 else "dr.martin@hopital.test"
        deliver(env.store, SECRETARY, message(f"m{i}", f"body {i}\r\n", sender=sender),
                ("\\Flagged",) if i in (2, 5, 10, 11) else ())
    return selected(env)


# ------------------------------------------------------------------ ESEARCH


def test_rfc4731_examples(env: ImapEnv) -> None:
    c = eleven(env)
    key = 'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'
    assert esearch(c, f"SEARCH RETURN (MIN COUNT) {key}") == "MIN 2 COUNT 3"
    assert esearch(c, f"SEARCH RETURN () {key}") == "ALL 2,10:11"
    assert esearch(c, f"SEARCH RETURN (MIN MAX COUNT ALL) {key}") == (
        "MIN 2 MAX 11 COUNT 3 ALL 2,10:11")
    # nothing matches: only COUNT is returned
    assert esearch(c, "SEARCH RETURN (MIN MAX ALL) SUBJECT nowhere") == ""
    assert esearch(c, "SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT nowhere") == "COUNT 0"
    c.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    # UID forms name the UIDs and say so
    assert esearch(c, f"UID SEARCH RETURN (ALL MAX) {key}") == "UID MAX 11 ALL 2,10:11"
    assert esearch(c, f"SEARCH RETURN (ALL) {key}") == "ALL 2,9:10"
    # the classic response is unchanged without RETURN
    assert c.ok(f"SEARCH {key}") == b"* SEARCH 2 9 10\r\n"


def test_esearch_with_modseq(env: ImapEnv) -> None:
    c = eleven(env)
    out = esearch(c, "SEARCH RETURN (COUNT) MODSEQ 1")
    assert out.startswith("COUNT 11 MODSEQ "), out


def test_esearch_is_bad_outside_selected_or_with_unknown_options(env: ImapEnv) -> None:
    c = eleven(env)
    assert c.cmd("x1 SEARCH RETURN (NOTIFY) ALL").startswith(b"x1 BAD")
    assert c.cmd("x2 SEARCH RETURN (MIN ALL").startswith(b"x2 BAD")
    c.ok("UNSELECT")
    assert c.cmd("x3 SEARCH RETURN (MIN) ALL").startswith(b"x3 BAD")


# ------------------------------------------------------------------ SEARCHRES


def test_rfc5182_save_then_fetch(env: ImapEnv) -> None:
    """RFC 5182 2.1/3.1: SAVE alone answers no ESEARCH; FETCH $ then reads
    the saved messages."""
    c = eleven(env)
    assert c.ok('SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == b""
    out = c.ok("FETCH $ (UID FLAGS)")
    assert [ln.split(b" ")[1] for ln in out.splitlines()] == [b"2", b"10", b"11"], out
    out = c.ok("UID FETCH $ (FLAGS)")
    assert out.count(b" FETCH ") == 3


def test_rfc5182_save_with_min_max(env: ImapEnv) -> None:
    """2.4: with MIN and/or MAX only the minimum and/or maximum are saved;
    with ALL or COUNT every match."""
    c = eleven(env)
    assert esearch(c, "SEARCH RETURN (MIN SAVE) FLAGGED") == "MIN 2"
    assert c.ok("SEARCH $") == b"* SEARCH 2\r\n"
    assert esearch(c, "SEARCH RETURN (SAVE MAX MIN) FLAGGED") == "MIN 2 MAX 11"
    assert c.ok("SEARCH $") == b"* SEARCH 2 11\r\n"
    assert esearch(c, "SEARCH RETURN (SAVE MIN COUNT) FLAGGED") == "MIN 2 COUNT 4"
    assert c.ok("SEARCH $") == b"* SEARCH 2 5 10 11\r\n"


def test_rfc5182_dollar_in_later_commands(env: ImapEnv) -> None:
    c = eleven(env)
    c.ok("UID SEARCH RETURN (SAVE) FLAGGED")
    # combined with other keys (3.3)
    assert c.ok("SEARCH $ SMALLER 10000 NOT 5") == b"* SEARCH 2 10 11\r\n"
    assert c.ok("UID SEARCH UID $ NOT FROM smith") == b"* SEARCH 2 10 11\r\n"
    out = c.ok("STORE $ +FLAGS (\\Answered)")
    assert out.count(b"\\Answered") == 4, out
    c.ok("UID STORE $ -FLAGS.SILENT (\\Answered)")
    assert c.ok("SEARCH ANSWERED") == b"* SEARCH\r\n"
    c.ok("CREATE saved")
    untagged, done = c.tagged("COPY $ saved")
    assert b"OK [COPYUID" in done and b" 2,5,10:11 1:4]" in done, done
    untagged, done = c.tagged("UID MOVE $ saved")
    assert b"OK" in done
    assert untagged.count(b"EXPUNGE") == 4, untagged
    # the saved messages are gone: $ is now empty, and that is no error
    assert c.ok("FETCH $ (FLAGS)") == b""
    assert c.ok("SEARCH $") == b"* SEARCH\r\n"
    assert c.ok("STATUS saved (MESSAGES)") == b'* STATUS "saved" (MESSAGES 8)\r\n'


def test_rfc5182_move_with_sequence_numbers(env: ImapEnv) -> None:
    c = eleven(env)
    c.ok("SEARCH RETURN (SAVE) 4:5")
    c.ok("CREATE dest")
    untagged, done = c.tagged("MOVE $ dest")
    assert b"OK" in done and untagged.count(b" EXPUNGE") == 2, untagged
    assert c.ok("SEARCH ALL") == b"* SEARCH 1 2 3 4 5 6 7 8 9\r\n"


def test_rfc5182_reset_on_select_and_failed_search(env: ImapEnv) -> None:
    c = eleven(env)
    # before any SAVE, $ is empty
    assert c.ok("FETCH $ (UID)") == b""
    c.ok("SEARCH RETURN (SAVE) 1:3")
    assert c.ok("SEARCH $") == b"* SEARCH 1 2 3\r\n"
    # a SEARCH with SAVE that fails empties $
    out = c.cmd("f1 SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")
    assert out.startswith(b"f1 NO [BADCHARSET"), out
    assert c.ok("SEARCH $") == b"* SEARCH\r\n"
    c.ok("SEARCH RETURN (SAVE) 1:3")
    # a SEARCH without SAVE leaves it alone
    c.ok("SEARCH RETURN (COUNT) 4")
    c.ok("SEARCH 5")
    assert c.ok("SEARCH $") == b"* SEARCH 1 2 3\r\n"
    # SELECT (even of the same mailbox) starts afresh
    c.ok("SELECT INBOX")
    assert c.ok("SEARCH $") == b"* SEARCH\r\n"
    c.ok("SEARCH RETURN (SAVE) 1:3")
    c.ok("EXAMINE INBOX")
    assert c.ok("UID SEARCH $") == b"* SEARCH\r\n"


def test_rfc5182_sort_save(env: ImapEnv) -> None:
    c = eleven(env)
    assert c.ok("SORT RETURN (SAVE) (REVERSE SUBJECT) UTF-8 FLAGGED") == b""
    assert c.ok("SEARCH $") == b"* SEARCH 2 5 10 11\r\n"
    # MIN of a sort is its first message: subjects M10 M11 M2 M5, reversed
    assert esearch(c, "SORT RETURN (SAVE MIN MAX) (REVERSE SUBJECT) UTF-8 FLAGGED") == (
        "MIN 5 MAX 10")
    assert c.ok("SEARCH $") == b"* SEARCH 5 10\r\n"


def test_rfc5182_dollar_sees_expunges_by_others(env: ImapEnv) -> None:
    c = eleven(env)
    c.ok("UID SEARCH RETURN (SAVE) 1:4")
    other = selected(env)
    other.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.ok("EXPUNGE")
    out = c.ok("NOOP")
    assert b"* 2 EXPUNGE" in out
    out = c.ok("UID FETCH $ (UID)")
    assert [int(x) for x in re.findall(rb"UID (\d+)", out)] == [1, 3, 4]


# ------------------------------------------------------------------ WITHIN


def test_rfc5032_older_and_younger(env: ImapEnv) -> None:
    folder = env.store.get_folder(env.store.get_mailbox(SECRETARY).id, "INBOX")
    now = datetime.now(UTC)
    for age in (timedelta(days=10), timedelta(days=2), timedelta(hours=1), timedelta(minutes=1)):
        env.store.append(folder.id, message(str(age)), internal_date=now - age)
    c = selected(env)
    # RFC 5032 3: YOUNGER 259200 (three days)
    assert c.ok("SEARCH YOUNGER 259200") == b"* SEARCH 2 3 4\r\n"
    assert c.ok("SEARCH OLDER 259200") == b"* SEARCH 1\r\n"
    assert c.ok("SEARCH OLDER 7200 YOUNGER 259200") == b"* SEARCH 2\r\n"
    assert esearch(c, "UID SEARCH RETURN (COUNT) YOUNGER 1800") == "UID COUNT 1"
    assert c.cmd("w1 SEARCH YOUNGER 0").startswith(b"w1 BAD")
    assert c.cmd("w2 SEARCH OLDER -5").startswith(b"w2 BAD")


def test_rfc5182_uid_expunge_dollar(env: ImapEnv) -> None:
    c = eleven(env)
    c.ok("UID SEARCH RETURN (SAVE) 3:4")
    c.ok("STORE 1:5 +FLAGS.SILENT (\\Deleted)")
    out = c.ok("UID EXPUNGE $")
    assert out == b"* 4 EXPUNGE\r\n* 3 EXPUNGE\r\n", out
    assert c.ok("SEARCH DELETED") == b"* SEARCH 1 2 3\r\n"
