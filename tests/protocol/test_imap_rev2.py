"""IMAP4rev2 (RFC 9051) beside IMAP4rev1: both are advertised; a session is
rev1 until ``ENABLE IMAP4rev2`` (authenticated state), and then has no
\\Recent (no RECENT response, flag, status item or search key), SEARCH is
answered with ESEARCH, SELECT/EXAMINE send a LIST response and no UNSEEN
code, unsolicited FETCH carries the UID, mailbox names are UTF-8, DELETE of a
\\Noselect level with inferiors is ``NO [HASCHILDREN]``. A rev1 session is
unchanged (last tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    ImapClient,
    ImapEnv,
    add_user,
    deliver,
    lines,
    make_env,
    message,
    populate,
)


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    deliver(store, SECRETARY, message("one"))
    deliver(store, SECRETARY, message("two"), ("\\Seen",))
    deliver(store, SECRETARY, message("three"))
    return make_env(tmp_path, store)


def rev2(env: ImapEnv) -> ImapClient:
    c = env.login()
    assert c.ok("ENABLE IMAP4rev2") == b"* ENABLED IMAP4rev2\r\n"
    return c


def test_both_revisions_advertised(env: ImapEnv) -> None:
    c = env.connect()
    assert b"[CAPABILITY IMAP4rev1 IMAP4rev2 " in c.greeting
    c = env.login()
    caps = c.ok("CAPABILITY").split()
    assert caps[:4] == [b"*", b"CAPABILITY", b"IMAP4rev1", b"IMAP4rev2"]
    # RFC 8438, for rev1 sessions (rev2 has STATUS SIZE built in).
    assert b"STATUS=SIZE" in caps


def test_enable_answers_once_and_keeps_capabilities(env: ImapEnv) -> None:
    c = env.login()
    before = c.ok("CAPABILITY")
    untagged, done = c.tagged("ENABLE imap4REV2")  # capability names: any case
    assert untagged == b"* ENABLED IMAP4rev2\r\n" and b" OK " in done
    assert c.ok("ENABLE IMAP4rev2") == b"* ENABLED\r\n"  # already on
    assert c.ok("CAPABILITY") == before


def test_not_enabled_in_the_selected_state(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    # As UTF8=ACCEPT: the selected view's \Recent and names would change.
    assert c.ok("ENABLE IMAP4rev2") == b"* ENABLED\r\n"
    assert c.ok("SEARCH ALL") == b"* SEARCH 1 2 3\r\n"
    c.ok("UNSELECT")
    assert c.ok("ENABLE IMAP4rev2") == b"* ENABLED IMAP4rev2\r\n"


def test_select_rfc9051_example_shape(env: ImapEnv) -> None:
    """RFC 9051 6.3.2: FLAGS, EXISTS, LIST, PERMANENTFLAGS, UIDNEXT and
    UIDVALIDITY; no RECENT response, no UNSEEN code (rev1 sends both)."""
    c = rev2(env)
    out = c.ok("SELECT INBOX")
    got = lines(out)
    assert b"* 3 EXISTS" in got
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in got
    assert any(x.startswith(b"* OK [UIDVALIDITY ") for x in got)
    assert any(x.startswith(b"* OK [UIDNEXT 4]") for x in got)
    assert any(x.startswith(b"* OK [PERMANENTFLAGS (") for x in got)
    assert b"RECENT" not in out and b"[UNSEEN" not in out
    # The messages stay \Recent for a rev1 session: rev2 claims none.
    d = env.login()
    assert b"* 3 RECENT" in d.ok("EXAMINE INBOX")


def test_select_list_response_attributes(env: ImapEnv) -> None:
    c = rev2(env)
    c.ok("CREATE Archive/2024")
    out = c.ok("EXAMINE Archive")
    # Accurate attributes: children, special use.
    assert b'* LIST (\\HasChildren \\Archive) "/" "Archive"\r\n' in out
    assert b"* OK [CLOSED]" not in out  # nothing was selected before
    # The name as LIST gives it.
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n' in c.ok("SELECT inbox")
    out = c.ok(f'SELECT "Shared/{CARDIO}/INBOX"')
    assert out.startswith(b"* OK [CLOSED] ")
    assert f'* LIST (\\HasNoChildren) "/" "Shared/{CARDIO}/INBOX"\r\n'.encode() in out


def test_search_answers_esearch(env: ImapEnv) -> None:
    """RFC 9051 6.4.4: ESEARCH with the command's tag, ALL when no RETURN;
    no ALL when nothing matches; UID for UID SEARCH."""
    c = rev2(env)
    c.ok("SELECT INBOX")
    untagged, done = c.tagged("SEARCH UNSEEN")
    tag = done.split()[0].decode()
    assert untagged == f'* ESEARCH (TAG "{tag}") ALL 1,3\r\n'.encode()
    untagged, done = c.tagged("UID SEARCH ALL")
    assert untagged == f'* ESEARCH (TAG "{done.split()[0].decode()}") UID ALL 1:3\r\n'.encode()
    untagged, done = c.tagged("SEARCH DELETED")
    assert untagged == f'* ESEARCH (TAG "{done.split()[0].decode()}")\r\n'.encode()
    untagged, done = c.tagged("SEARCH RETURN (MIN COUNT) ALL")
    assert untagged == f'* ESEARCH (TAG "{done.split()[0].decode()}") MIN 1 COUNT 3\r\n'.encode()
    assert b"* SEARCH" not in c.ok("SEARCH SEEN")


def test_search_charset_stays_valid(env: ImapEnv) -> None:
    # RFC 9051 6.4.4 keeps CHARSET (UTF-8 and US-ASCII); only UTF8=ACCEPT
    # (RFC 6855 3) refuses it.
    c = rev2(env)
    c.ok("SELECT INBOX")
    assert b"ALL 3" in c.ok("SEARCH CHARSET UTF-8 SUBJECT three")
    d = env.login()
    d.ok("ENABLE UTF8=ACCEPT IMAP4rev2")
    d.ok("SELECT INBOX")
    _, done = d.tagged("SEARCH CHARSET UTF-8 SUBJECT three")
    assert b" BAD " in done


@pytest.mark.parametrize("command", [
    "SEARCH NEW", "SEARCH OLD", "UID SEARCH RECENT", "SEARCH NOT OR SEEN RECENT",
    "SEARCH RETURN (COUNT) UNSEEN NEW", "SORT (DATE) UTF-8 RECENT",
    "THREAD REFERENCES UTF-8 NEW",
])
def test_recent_search_keys_refused(env: ImapEnv, command: str) -> None:
    c = rev2(env)
    c.ok("SELECT INBOX")
    untagged, done = c.tagged(command)
    assert untagged == b""
    assert done.endswith(b" BAD NEW, OLD and RECENT are not IMAP4rev2 search keys\r\n")


def test_status_size_deleted_and_no_recent(env: ImapEnv) -> None:
    c = rev2(env)
    c.ok("SELECT INBOX")
    c.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    folder = env.store.get_folder(env.store.get_mailbox(SECRETARY).id, "INBOX")
    size = env.store.folder_status(folder.id).size
    assert size > 0
    assert c.ok("STATUS INBOX (MESSAGES SIZE DELETED)") == (
        f'* STATUS "INBOX" (MESSAGES 3 SIZE {size} DELETED 2)\r\n'.encode())
    untagged, done = c.tagged("STATUS INBOX (MESSAGES RECENT)")
    assert untagged == b"" and b" BAD RECENT is not an IMAP4rev2 status item" in done
    untagged, done = c.tagged('LIST "" "INBOX" RETURN (STATUS (RECENT))')
    assert untagged == b"" and b" BAD " in done
    assert b"(MESSAGES 3 DELETED 2)" in c.ok('LIST "" "INBOX" RETURN (STATUS (MESSAGES DELETED))')


def test_no_recent_after_delivery_and_uid_in_unsolicited_fetch(env: ImapEnv) -> None:
    c = rev2(env)
    c.ok("SELECT INBOX")
    deliver(env.store, SECRETARY, message("four"))
    out = c.ok("NOOP")
    assert b"* 4 EXISTS\r\n" in out and b"RECENT" not in out
    assert b"\\Recent" not in c.ok("FETCH 1:* (FLAGS)")
    # A change made by another session reaches this one as a FETCH with UID
    # (RFC 9051: every unsolicited FETCH carries the UID).
    d = env.login()
    d.ok("SELECT INBOX")
    d.ok("STORE 1 +FLAGS (\\Flagged)")
    assert c.ok("NOOP") == b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n"
    # The delivered message was left \Recent for the rev1 session: it was
    # the first to select the folder after it came.
    assert b"\\Recent" in d.ok("FETCH 4 (FLAGS)")


def test_append_to_selected_folder_is_not_recent(env: ImapEnv) -> None:
    c = rev2(env)
    c.ok("SELECT INBOX")
    raw = message("appended").decode()
    out, done = c.tagged(f"APPEND INBOX (\\Seen) {{{len(raw)}+}}\r\n{raw}")
    assert b"APPENDUID" in done and b"* 4 EXISTS" in out and b"RECENT" not in out
    assert c.ok("FETCH 4 (FLAGS)") == b"* 4 FETCH (FLAGS (\\Seen))\r\n"


def test_append_takes_8bit_header_fields(env: ImapEnv) -> None:
    # RFC 9051: headers may be UTF-8 (RFC 6532); a rev1 session needs
    # ENABLE UTF8=ACCEPT for that (RFC 6855 4).
    raw = "Subject: R\u00e9sultats\r\n\r\nBonjour\r\n".encode()
    command = b"APPEND INBOX {%d+}\r\n" % len(raw) + raw
    d = env.login()
    assert b" NO " in d.send(b"a1 " + command + b"\r\n")
    c = rev2(env)
    assert b"a2 OK [APPENDUID " in c.send(b"a2 " + command + b"\r\n")


def test_store_recent_still_refused(env: ImapEnv) -> None:
    c = rev2(env)
    c.ok("SELECT INBOX")
    _, done = c.tagged("STORE 1 +FLAGS (\\Recent)")
    assert b" BAD " in done


def test_mailbox_names_are_utf8(env: ImapEnv) -> None:
    # RFC 9051 5.1: UTF-8 names; modified UTF-7 is for IMAP4rev1 clients.
    c = rev2(env)
    c.ok('CREATE "R\u00e9sultats & co"')
    assert '* LIST (\\HasNoChildren) "/" "R\u00e9sultats & co"'.encode() in c.ok('LIST "" "R*"')
    out = c.ok('SELECT "R\u00e9sultats & co"')
    assert '* LIST (\\HasNoChildren) "/" "R\u00e9sultats & co"'.encode() in out
    d = env.login()  # rev1: the same folder in modified UTF-7
    assert b'"R&AOk-sultats &- co"' in d.ok('LIST "" "R*"')


def test_delete_noselect_level_has_children(env: ImapEnv) -> None:
    c = rev2(env)
    c.ok("CREATE Projets/2026")
    c.ok("DELETE Projets")  # a folder with inferiors: deleted, its name stays \Noselect
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Projets"' in c.ok('LIST "" "Projets*"')
    _, done = c.tagged("DELETE Projets")
    assert b" NO [HASCHILDREN] " in done
    _, done = c.tagged("DELETE Nothing")  # a name that does not exist at all
    assert b" NO [NONEXISTENT] " in done
    d = env.login()  # rev1 keeps NONEXISTENT (as Dovecot 2.3)
    _, done = d.tagged("DELETE Projets")
    assert b" NO [NONEXISTENT] " in done


def test_children_one_may_not_see_are_not_told(env: ImapEnv) -> None:
    """HASCHILDREN and SELECT's LIST attributes count only the folders LIST
    shows: an agent granted one folder of the functional box learns nothing
    of the others (not permitted looks like not found)."""
    cardio = env.store.get_mailbox(CARDIO)
    env.store.create_folder(cardio.id, "INBOX/Archives")
    env.store.create_folder(cardio.id, "Dossiers/Patients")
    env.store.delete_folder(cardio.id, "Dossiers")  # a \\Noselect level now
    agent = add_user(env.store, "interim@hopital.test")
    env.store.set_grant(agent.id, cardio.id, "lr", folder="INBOX")
    c = env.login("interim@hopital.test")
    c.ok("ENABLE IMAP4rev2")
    assert f'* LIST (\\HasNoChildren) "/" "Shared/{CARDIO}/INBOX"'.encode() in c.ok(
        f'SELECT "Shared/{CARDIO}/INBOX"')
    _, done = c.tagged(f'DELETE "Shared/{CARDIO}/Dossiers"')
    assert b" NO [NONEXISTENT] " in done
    s = rev2(env)  # the secretary, granted the whole box
    assert f'* LIST (\\HasChildren) "/" "Shared/{CARDIO}/INBOX"'.encode() in s.ok(
        f'SELECT "Shared/{CARDIO}/INBOX"')
    _, done = s.tagged(f'DELETE "Shared/{CARDIO}/Dossiers"')
    assert b" NO [HASCHILDREN] " in done


def test_list_extended_rfc9051_items(env: ImapEnv) -> None:
    """RFC 9051 6.3.9 (from LIST-EXTENDED): \\Subscribed, \\NonExistent for a
    subscribed name that is gone, CHILDINFO for a subscribed descendant."""
    c = rev2(env)
    c.ok("CREATE Gone")
    c.ok("SUBSCRIBE Gone")
    c.ok("DELETE Gone")
    c.ok("CREATE Dossiers/Patients")
    c.ok("SUBSCRIBE Dossiers/Patients")
    assert b'* LIST (\\NonExistent \\Subscribed) "/" "Gone"' in c.ok(
        'LIST (SUBSCRIBED) "" "Gone"')
    assert b'* LIST (\\HasChildren) "/" "Dossiers" ("CHILDINFO" ("SUBSCRIBED"))' in c.ok(
        'LIST (SUBSCRIBED RECURSIVEMATCH) "" "Dossiers"')
    # LSUB is deprecated in IMAP4rev2 but still answered.
    assert b'* LSUB () "/" "Dossiers/Patients"' in c.ok('LSUB "" "Dossiers/*"')


# ---------------------------------------------------------------- rev1


def test_rev1_session_unchanged(env: ImapEnv) -> None:
    c = env.login()
    out = c.ok("SELECT INBOX")
    assert b"* 3 RECENT\r\n" in out and b"* OK [UNSEEN 1]" in out
    assert b"* LIST" not in out
    assert c.ok("SEARCH UNSEEN") == b"* SEARCH 1 3\r\n"
    assert c.ok("SEARCH NEW") == b"* SEARCH 1 3\r\n"
    assert b"\\Recent" in c.ok("FETCH 1 (FLAGS)")
    assert c.ok("STATUS INBOX (RECENT SIZE)").startswith(b'* STATUS "INBOX" (RECENT 0 SIZE ')
    d = env.login()
    d.ok("SELECT INBOX")
    d.ok("STORE 1 +FLAGS (\\Flagged)")
    # Unsolicited FETCH without UID, as before (no CONDSTORE, no rev2).
    assert c.ok("NOOP") == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"


GLOBAL_MESSAGE = (
    "From: <a@hopital.test>\r\nSubject: transfert\r\n"
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: message/global\r\n\r\n"
    "Subject: Re\u00e7u\r\nFrom: <b@hopital.test>\r\n\r\nline1\r\nline2\r\n"
    "--b--\r\n"
).encode()
INNER_HEADER = "Subject: Re\u00e7u\r\nFrom: <b@hopital.test>\r\n\r\n".encode()


def test_message_global_is_an_encapsulated_message(env: ImapEnv) -> None:
    """RFC 9051 7.5.2 and 6.4.5: a message/global part shows its envelope,
    structure and lines as message/rfc822 does, and its part numbers go on
    inside it."""
    deliver(env.store, SECRETARY, GLOBAL_MESSAGE)
    c = rev2(env)
    c.ok("SELECT INBOX")
    out = c.ok("FETCH 4 BODYSTRUCTURE")
    assert (b'(("message" "global" NIL NIL NIL "7BIT" 54 (NIL {5}\r\nRe\xc3\xa7u '
            b'((NIL NIL "b" "hopital.test")) ((NIL NIL "b" "hopital.test")) '
            b'((NIL NIL "b" "hopital.test")) NIL NIL NIL NIL NIL) '
            b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 12 2 NIL NIL NIL NIL) 5 '
            b'NIL NIL NIL NIL) "mixed"') in out, out
    out = c.ok("FETCH 4 (BODY.PEEK[1.HEADER] BODY.PEEK[1.1] BINARY.PEEK[1.1])")
    assert b"BODY[1.HEADER] {%d}\r\n%s" % (len(INNER_HEADER), INNER_HEADER) in out
    assert b"BODY[1.1] {12}\r\nline1\r\nline2" in out
    assert b"BINARY[1.1] {12}\r\nline1\r\nline2" in out


def test_message_global_stays_a_basic_part_for_rev1(env: ImapEnv) -> None:
    """RFC 3501 knows message/rfc822 only: for an IMAP4rev1 session (with or
    without UTF8=ACCEPT, RFC 6855 leaves BODYSTRUCTURE as it was) the part is
    a basic one, as Dovecot 2.3 shows it."""
    deliver(env.store, SECRETARY, GLOBAL_MESSAGE)
    for enable in (None, "UTF8=ACCEPT"):
        c = env.login()
        if enable:
            c.ok(f"ENABLE {enable}")
        c.ok("SELECT INBOX")
        out = c.ok("FETCH 4 BODYSTRUCTURE")
        assert b'(("message" "global" NIL NIL NIL "7BIT" 54 NIL NIL NIL NIL) "mixed"' in out
        out = c.ok("FETCH 4 (BODY.PEEK[1.HEADER] BODY.PEEK[1])")
        assert b"BODY[1.HEADER] {0}\r\n" in out or b'BODY[1.HEADER] ""' in out
        assert b"BODY[1] {54}\r\n" + INNER_HEADER in out
