"""UTF8=ACCEPT (RFC 6855): ENABLE UTF8=ACCEPT in the authenticated state;
then mailbox names are UTF-8 both ways (no modified UTF-7), quoted strings
must be valid UTF-8, SEARCH takes no CHARSET, and APPEND takes the
``UTF8 (literal8)`` data item, which is refused before."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    ImapEnv,
    deliver,
    make_env,
    message,
    populate,
)

EAI = (
    "From: Jos\u00e9 Mart\u00edn <jos\u00e9@h\u00f4pital.test>\r\n"
    "To: <secretaire@hopital.test>\r\n"
    "Subject: R\u00e9sultats d'analyse\r\n"
    "\r\n"
    "Bonjour\r\n"
).encode()


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def test_capability_and_enable(env: ImapEnv) -> None:
    c = env.connect()
    assert b"UTF8=ACCEPT" not in c.greeting  # offered once logged in (ENABLE needs it)
    c = env.login()
    assert b" UTF8=ACCEPT" in c.ok("CAPABILITY")
    assert c.ok("ENABLE UTF8=ACCEPT") == b"* ENABLED UTF8=ACCEPT\r\n"
    assert c.ok("ENABLE UTF8=ACCEPT") == b"* ENABLED\r\n"  # already on


def test_not_enabled_in_the_selected_state(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    # RFC 6855 3: only valid in the authenticated state; names keep their
    # modified UTF-7 form for this session.
    assert c.ok("ENABLE UTF8=ACCEPT") == b"* ENABLED\r\n"
    c.ok('CREATE "&AOk-t&AOk-"')
    assert b'"&AOk-t&AOk-"' in c.ok('LIST "" "*"')


def test_mailbox_names_are_utf8_after_enable(env: ImapEnv) -> None:
    c = env.login()
    c.ok('CREATE "&AOk-t&AOk-"')  # modified UTF-7 before ENABLE: "été"
    c.ok('CREATE "A&-B"')  # "A&B"
    assert b'* LIST (\\HasNoChildren) "/" "&AOk-t&AOk-"' in c.ok('LIST "" "*"')
    c.ok("ENABLE UTF8=ACCEPT")
    listed = c.ok('LIST "" "*"')
    assert '* LIST (\\HasNoChildren) "/" "\u00e9t\u00e9"'.encode() in listed
    assert b'* LIST (\\HasNoChildren) "/" "A&B"' in listed
    assert b"&AOk-" not in listed
    # Names in UTF-8 as sent; "&" is a plain character now.
    c.ok('CREATE "R\u00e9sum\u00e9s & co"')
    assert '"R\u00e9sum\u00e9s & co"'.encode() in c.ok('LIST "" "R\u00e9*"')
    assert c.ok('STATUS "\u00e9t\u00e9" (MESSAGES)') == (
        '* STATUS "\u00e9t\u00e9" (MESSAGES 0)\r\n'.encode())
    assert c.ok('MYRIGHTS "A&B"') == b'* MYRIGHTS "A&B" lrswipkxtea\r\n'
    out = c.ok('GETQUOTAROOT "\u00e9t\u00e9"')
    assert out.startswith('* QUOTAROOT "\u00e9t\u00e9"'.encode())
    c.ok('SELECT "\u00e9t\u00e9"')
    # Another session (not enabled) sees the same folders in modified UTF-7.
    d = env.login()
    other = d.ok('LIST "" "*"')
    assert b'"R&AOk-sum&AOk-s &- co"' in other and b'"A&-B"' in other


def test_invalid_utf8_is_bad_after_enable(env: ImapEnv) -> None:
    c = env.login()
    c.ok("ENABLE UTF8=ACCEPT")
    out = c.cmd(b'a1 CREATE "\xc3("')
    assert out == b"a1 BAD Invalid UTF-8 in quoted string\r\n"
    out = c.cmd(b"a2 CREATE {2+}\r\n\xc3(")
    assert out == b"a2 BAD Mailbox name is not valid UTF-8\r\n"


def test_names_must_be_net_unicode(env: ImapEnv) -> None:
    """RFC 6855 3: names are Net-Unicode (NFC) without C1 controls or line and
    paragraph separators; such a CREATE or RENAME is a NO naming the name as
    invalid, in UTF-8 or in modified UTF-7 alike, and nothing is made."""
    c = env.login()
    nfd = "Re\u0301sultats"  # "e" + combining acute: NFC is "\u00e9"
    assert c.cmd('a1 CREATE "Re&AwE-sultats"') == b"a1 NO [CANNOT] Invalid mailbox name\r\n"
    c.ok("ENABLE UTF8=ACCEPT")
    for i, bad in enumerate((nfd, "a\u2028b", "p\u2029")):  # (C1: BAD at the parser)
        assert c.cmd(f'b{i} CREATE "{bad}"'.encode()) == (
            f"b{i} NO [CANNOT] Invalid mailbox name\r\n".encode())
    c.ok("CREATE Tmp")
    assert c.cmd(f'c1 RENAME Tmp "{nfd}"'.encode()) == (
        b"c1 NO [CANNOT] Cannot rename to that name\r\n")
    c.ok('CREATE "R\u00e9sultats"')  # the same name in NFC
    listed = c.ok('LIST "" "*"')
    assert '"R\u00e9sultats"'.encode() in listed and b"Tmp" in listed
    assert nfd.encode() not in listed and "\u2028".encode() not in listed


def test_search_charset_is_bad_after_enable(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("R\u00e9sultats"))
    c = env.login()
    c.ok("ENABLE UTF8=ACCEPT")
    c.ok("SELECT INBOX")
    out = c.cmd('a1 SEARCH CHARSET UTF-8 SUBJECT "r\u00e9sultats"')
    assert out == b"a1 BAD No CHARSET once UTF8=ACCEPT is enabled\r\n"
    out = c.cmd('a2 SEARCH SUBJECT "R\u00e9sultats"'.encode())
    assert out == b"* SEARCH 1\r\na2 OK SEARCH completed\r\n"


def test_append_utf8_data_item(env: ImapEnv) -> None:
    c = env.login()
    # Refused before ENABLE UTF8=ACCEPT (RFC 6855 4).
    out = c.cmd(b"a1 APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(EAI), EAI))
    assert out == b"a1 BAD UTF8 data needs ENABLE UTF8=ACCEPT\r\n"
    out = c.cmd(b"a2 APPEND INBOX CATENATE (TEXT {1+}\r\nx UTF8 (~{%d+}\r\n%s))" % (len(EAI), EAI))
    assert out == b"a2 BAD UTF8 data needs ENABLE UTF8=ACCEPT\r\n"
    assert env.store.folder_status(env.store.get_folder(
        env.store.get_mailbox(SECRETARY).id, "INBOX").id).messages == 0
    c.ok("ENABLE UTF8=ACCEPT")
    out = c.cmd(b"a3 APPEND INBOX (\\Seen) UTF8 (~{%d+}\r\n%s)" % (len(EAI), EAI))
    assert re.fullmatch(rb"a3 OK \[APPENDUID \d+ 1\] APPEND completed\r\n", out), out
    # With MULTIAPPEND and in a CATENATE part (RFC 6855 4).
    out = c.cmd(b"a4 APPEND INBOX UTF8 (~{%d+}\r\n%s) CATENATE (UTF8 (~{%d+}\r\n%s))" % (
        len(EAI), EAI, len(EAI), EAI))
    assert re.fullmatch(rb"a4 OK \[APPENDUID \d+ 2:3\] APPEND completed\r\n", out), out
    c.ok("SELECT INBOX")
    out = c.ok("FETCH 1:3 BODY.PEEK[]")
    assert out.count(EAI) == 3
    subject = c.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert "R\u00e9sultats".encode() in subject


def test_shared_box_names_stay_ascii(env: ImapEnv) -> None:
    c = env.login()
    c.ok("ENABLE UTF8=ACCEPT")
    c.ok(f'CREATE "Shared/{CARDIO}/Proc\u00e9dures"')
    listed = c.ok(f'LIST "Shared/{CARDIO}/" "*"')
    assert f'"Shared/{CARDIO}/Proc\u00e9dures"'.encode() in listed


def test_commands_pipelined_after_enable_are_read_in_utf8(env: ImapEnv) -> None:
    c = env.login()
    out = c.send(b'a1 ENABLE UTF8=ACCEPT\r\na2 CREATE "A&B"\r\na3 LIST "" "A*"\r\n')
    assert b"a2 OK" in out and b'* LIST (\\HasNoChildren) "/" "A&B"\r\n' in out, out
    # The store has the name itself; a session without UTF8=ACCEPT sees it encoded.
    assert b'"A&-B"' in env.login().ok('LIST "" "A*"')


def test_8bit_header_fields_need_enable(env: ImapEnv) -> None:
    """RFC 6855 4: before ENABLE UTF8=ACCEPT, an APPEND whose header fields
    hold 8-bit octets is refused (NO); 8-bit in the body is not concerned."""
    c = env.login()
    out = c.cmd(b"a1 APPEND INBOX {%d+}\r\n%s" % (len(EAI), EAI))
    assert out == b"a1 NO 8-bit header fields need ENABLE UTF8=ACCEPT\r\n"
    # All or nothing: the ASCII message before it is not stored either.
    ascii_one = message("ascii")
    out = c.cmd(b"a2 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s" % (
        len(ascii_one), ascii_one, len(EAI), EAI))
    assert out == b"a2 NO 8-bit header fields need ENABLE UTF8=ACCEPT\r\n"
    body_8bit = b"Subject: ascii\r\n\r\nR\xc3\xa9sultats\r\n"
    out = c.cmd(b"a3 APPEND INBOX {%d+}\r\n%s" % (len(body_8bit), body_8bit))
    assert re.fullmatch(rb"a3 OK \[APPENDUID \d+ 1\] APPEND completed\r\n", out), out
    c.ok("ENABLE UTF8=ACCEPT")
    out = c.cmd(b"a4 APPEND INBOX {%d+}\r\n%s" % (len(EAI), EAI))
    assert re.fullmatch(rb"a4 OK \[APPENDUID \d+ 2\] APPEND completed\r\n", out), out


def test_8bit_header_fields_delivered_are_served_as_stored(env: ImapEnv) -> None:
    """A message that arrived with 8-bit header fields (SMTPUTF8) is served
    to a session without UTF8=ACCEPT as stored, as Dovecot 2.3 serves it:
    ENVELOPE strings with 8-bit octets are literals (RFC 3501 CHAR8), the
    header section is the message's own; nothing is downgraded."""
    deliver(env.store, SECRETARY, EAI)
    c = env.login()
    c.ok("SELECT INBOX")
    out = c.ok("FETCH 1 (ENVELOPE BODY.PEEK[HEADER])")
    subject = "R\u00e9sultats d'analyse".encode()
    assert b"ENVELOPE (NIL {%d}\r\n%s ((" % (len(subject), subject) in out
    assert "(({13}\r\nJos\u00e9 Mart\u00edn NIL {5}\r\njos\u00e9 {13}\r\nh\u00f4pital.test))".encode() in out
    header = EAI[: EAI.index(b"\r\n\r\n") + 4]
    assert b"BODY[HEADER] {%d}\r\n%s" % (len(header), header) in out
