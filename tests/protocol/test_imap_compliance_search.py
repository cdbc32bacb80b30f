"""SEARCH (RFC 3501 6.4.4, 7.2.5; imaptest `search-sets`, `search-size`, `nil`)."""

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


def _six_with_gap(env: ImapEnv) -> object:
    for i in range(6):
        deliver(env.store, SECRETARY, message(f"m{i}", f"body {i}\r\n"))
    c = selected(env)
    c.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert c.ok("EXPUNGE") == b"* 2 EXPUNGE\r\n"
    return c


def test_imaptest_search_sets(env: ImapEnv) -> None:
    """imaptest `search-sets`: sequence and UID sets once seq != uid."""
    c = _six_with_gap(env)
    uidnext = status_of(c, "INBOX", "UIDNEXT")["UIDNEXT"]
    cases = {
        "ALL": "1 2 3 4 5", "1:3,5": "1 2 3 5", "4:2": "2 3 4",
        "UID 1:3,5": "1 2 4", "UID 4:2": "2 3", "1:3 NOT UID 3": "1 3",
        "NOT 2,4": "1 3 5", "OR 1 UID 3": "1 2", "*": "5", "UID *": "5",
        "6:*": "5", "*:6": "5", f"UID {uidnext}:*": "5", "*:3": "3 4 5", "1,4,*": "1 4 5",
    }
    for key, want in cases.items():
        assert c.ok(f"SEARCH {key}") == f"* SEARCH {want}\r\n".encode(), key
    assert c.ok("UID SEARCH ALL") == b"* SEARCH 1 3 4 5 6\r\n"


def test_search_empty_result_format(env3: ImapEnv) -> None:
    """RFC 3501 7.2.5: "* SEARCH" with no numbers when nothing matches."""
    c = selected(env3)
    assert c.ok("SEARCH SUBJECT nomatch") == b"* SEARCH\r\n"


def test_search_nil_is_a_string(env3: ImapEnv) -> None:
    """imaptest `nil`: SEARCH SUBJECT NIL / BODY nil are valid (NIL is an astring);
    our messages contain neither, so the result is empty but OK."""
    c = selected(env3)
    assert c.ok("SEARCH SUBJECT NIL") == b"* SEARCH\r\n"
    assert c.ok("SEARCH BODY nil") == b"* SEARCH\r\n"


def test_search_charset_utf8_literal(env: ImapEnv) -> None:
    """RFC 3501 6.4.4: CHARSET UTF-8 with an 8-bit literal search string."""
    deliver(env.store, SECRETARY, message("Réunion de service"))
    deliver(env.store, SECRETARY, message("plain"))
    c = selected(env)
    out = c.send(b"s1 SEARCH CHARSET UTF-8 SUBJECT {8+}\r\nR\xc3\xa9union\r\n")
    assert out == b"* SEARCH 1\r\ns1 OK SEARCH completed\r\n" or out.startswith(b"* SEARCH 1\r\ns1 OK")
    out = c.send(b"s2 SEARCH CHARSET UTF-8 SUBJECT {2}\r\n")
    assert out.startswith(b"+")
    assert c.send(b"\xc3\xa9\r\n").startswith(b"* SEARCH 1\r\ns2 OK")
    assert c.ok("SEARCH CHARSET US-ASCII SUBJECT plain") == b"* SEARCH 2\r\n"


def test_search_badcharset(env3: ImapEnv) -> None:
    """RFC 3501 6.4.4 / 7.1: an unsupported charset -> NO [BADCHARSET (...)]."""
    c = selected(env3)
    _, done = c.tagged("SEARCH CHARSET KOI8-R SUBJECT a")
    assert b"NO [BADCHARSET" in done


def test_search_keys_headers_text_dates_sizes(env3: ImapEnv) -> None:
    """RFC 3501 6.4.4 keys: HEADER (empty string matches presence), TEXT, BODY,
    SENTON/SENTBEFORE (Date: header), ON (internal date), LARGER/SMALLER, OR, ()."""
    c = selected(env3)
    assert c.ok("SEARCH HEADER Subject b") == b"* SEARCH 2\r\n"
    assert c.ok('SEARCH HEADER Message-ID ""') == b"* SEARCH 1 2 3\r\n"
    assert c.ok('SEARCH HEADER X-Absent ""') == b"* SEARCH\r\n"
    assert c.ok('SEARCH TEXT "body b"') == b"* SEARCH 2\r\n"
    assert c.ok("SEARCH BODY c") == b"* SEARCH 3\r\n"
    assert c.ok("SEARCH SENTON 7-Feb-1994") == b"* SEARCH 1 2 3\r\n"
    assert c.ok("SEARCH SENTBEFORE 7-Feb-1994") == b"* SEARCH\r\n"
    assert c.ok("SEARCH ON 1-Jan-1990") == b"* SEARCH\r\n"
    assert c.ok("SEARCH SINCE 1-Jan-1990") == b"* SEARCH 1 2 3\r\n"
    assert c.ok("SEARCH LARGER 1 SMALLER 100000") == b"* SEARCH 1 2 3\r\n"
    assert c.ok("SEARCH LARGER 100000") == b"* SEARCH\r\n"
    assert c.ok("SEARCH OR SUBJECT a SUBJECT c") == b"* SEARCH 1 3\r\n"
    assert c.ok("SEARCH (SUBJECT a) UNSEEN") == b"* SEARCH 1\r\n"
    assert c.ok("SEARCH FROM martin TO secretaire") == b"* SEARCH 1 2 3\r\n"


def test_search_errors_are_bad(env3: ImapEnv) -> None:
    """RFC 3501 7.1.3: unknown key, bad date, missing argument -> BAD."""
    for cmd in ("SEARCH BOGUS", "SEARCH SINCE 32-Jan-2000", "SEARCH SUBJECT", "SEARCH"):
        c = selected(env3)
        _, done = c.tagged(cmd)
        assert b" BAD " in done, (cmd, done)


def test_uid_search_returns_uids(env3: ImapEnv) -> None:
    """RFC 3501 6.4.8: UID SEARCH answers UIDs; a sequence-set key is still seqs."""
    c = selected(env3)
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    assert c.ok("UID SEARCH 1") == b"* SEARCH 2\r\n"
    assert c.ok("UID SEARCH UID 3") == b"* SEARCH 3\r\n"


HEADER_MBOX = [
    b"Subject: hello beautiful world\r\n\r\nbody\r\n",
    b"X-Extra: hello beautiful header\r\n\r\nbody\r\n",
]


def test_imaptest_search_header(env: ImapEnv) -> None:
    """imaptest `search-header` / RFC 3501 6.4.4 SUBJECT, HEADER: case-insensitive
    substring; HEADER with "" matches every message having the field."""
    for raw in HEADER_MBOX:
        deliver(env.store, SECRETARY, raw)
    c = selected(env)
    c.ok('SEARCH SUBJECT ""')
    cases = {
        "SUBJECT hello": "1", "SUBJECT beautiful": "1", "SUBJECT world": "1",
        'SUBJECT "hello beautiful"': "1", 'SUBJECT "hello beautiful world"': "1",
        'SUBJECT "eautiful worl"': "1", 'HEADER subject ""': "1", 'NOT HEADER subject ""': "2",
        'HEADER x-extra ""': "2", 'NOT HEADER x-extra ""': "1", "HEADER x-extra hello": "2",
        'HEADER x-extra "hello beautiful"': "2", 'HEADER x-extra "eautiful head"': "2",
    }
    for key, want in cases.items():
        assert c.ok(f"SEARCH {key}") == f"* SEARCH {want}\r\n".encode(), key


ADDRESS_MBOX = [
    b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\nCc: user-cc@domain.org\r\n"
    b"Bcc: user-bcc@domain.org\r\n\r\nbody\r\n",
    b"From: RealFrom <user-from@domain.org>\r\nTo: RealTo <user-to@domain.org>\r\n"
    b"Cc: RealCc <user-cc@domain.org>\r\nBcc: RealBcc <user-bcc@domain.org>\r\n\r\nbody2\r\n",
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\n"
    b"Cc: <user-cc@domain.org>\r\nBcc: <user-bcc@domain.org>\r\n\r\nbody3\r\n",
    b"From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\n"
    b"Cc: user-cc@domain.org (RealCc)\r\nBcc: user-bcc@domain.org (RealBcc)\r\n\r\nbody4\r\n",
    b"From: user-from1@domain.org, user-from2@domain.org\r\nCc: user-cc@domain.org\r\n\r\nbody5\r\n",
    b"To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n"
    b"  groupname2: groupuser3@domain.org;\r\n\r\nbody5\r\n",
]


def test_imaptest_search_addresses(env: ImapEnv) -> None:
    """imaptest `search-addresses` / RFC 3501 6.4.4 FROM/TO/CC/BCC: substring of
    the address or display name (comments included), groups, several addresses."""
    for raw in ADDRESS_MBOX:
        deliver(env.store, SECRETARY, raw)
    c = selected(env)
    cases = {
        "FROM user-from@domain.org": "1 2 3 4", "TO user-to@domain.org": "1 2 3 4",
        "CC user-cc@domain.org": "1 2 3 4 5", "BCC user-bcc@domain.org": "1 2 3 4",
        "FROM realfrom": "2 4", "TO realto": "2 4", "CC realcc": "2 4", "BCC realbcc": "2 4",
        'HEADER from ""': "1 2 3 4 5", 'HEADER to ""': "1 2 3 4 6", 'HEADER cc ""': "1 2 3 4 5",
        'HEADER bcc ""': "1 2 3 4",
        "FROM ser-fro": "1 2 3 4 5", "TO ser-t": "1 2 3 4", "CC ser-c": "1 2 3 4 5", "BCC ser-bc": "1 2 3 4",
        "FROM ealfro": "2 4", "TO ealt": "2 4", "CC ealc": "2 4", "BCC ealbc": "2 4",
        "FROM user-from1": "5", "FROM user-from2": "5",
        "TO groupname": "6", "TO groupname2": "6", "TO groupuser1": "6", "TO groupuser2": "6",
        "TO groupuser3": "6", "TO groupuser4": "",
    }
    failures = {}
    for key, want in cases.items():
        got = c.ok(f"SEARCH {key}")
        if got != f"* SEARCH {want}".rstrip().encode() + b"\r\n":
            failures[key] = (want, got)
    assert not failures, failures


def test_imaptest_search_size(env: ImapEnv) -> None:
    """imaptest `search-size` / RFC 3501 6.4.4 LARGER/SMALLER use RFC822.SIZE."""
    import re
    for n in (1, 10, 20, 30):
        deliver(env.store, SECRETARY, message(f"s{n}", "x" * n + "\r\n"))
    c = selected(env)
    size = int(re.search(rb"\* 3 FETCH \(RFC822.SIZE (\d+)\)", c.ok("FETCH 1:4 RFC822.SIZE")).group(1))  # type: ignore[union-attr]
    cases = {
        f"SMALLER {size}": "1 2", f"LARGER {size}": "4", f"NOT SMALLER {size}": "3 4",
        f"NOT LARGER {size}": "1 2 3", f"NOT SMALLER {size} NOT LARGER {size}": "3",
        f"OR SMALLER {size} LARGER {size}": "1 2 4",
    }
    for key, want in cases.items():
        assert c.ok(f"SEARCH {key}") == f"* SEARCH {want}\r\n".encode(), key


def test_sent_dates_ignore_time_and_zone(env: ImapEnv) -> None:
    """imaptest `search-date` / RFC 3501 6.4.4: SENTBEFORE/SENTON/SENTSINCE use
    the Date: header "disregarding time and timezone"."""
    deliver(env.store, SECRETARY, b"Date: Sat, 24 Mar 2007 23:30:00 -0500\r\nSubject: late\r\n\r\nx\r\n")
    deliver(env.store, SECRETARY, b"Date: Sun, 25 Mar 2007 00:30:00 +0300\r\nSubject: early\r\n\r\nx\r\n")
    c = selected(env)
    assert c.ok("SEARCH SENTON 24-Mar-2007") == b"* SEARCH 1\r\n"
    assert c.ok("SEARCH SENTON 25-Mar-2007") == b"* SEARCH 2\r\n"
    assert c.ok("SEARCH SENTBEFORE 25-Mar-2007") == b"* SEARCH 1\r\n"
    assert c.ok("SEARCH SENTSINCE 25-Mar-2007") == b"* SEARCH 2\r\n"
    assert c.ok("SEARCH SENTSINCE 24-Mar-2007") == b"* SEARCH 1 2\r\n"
