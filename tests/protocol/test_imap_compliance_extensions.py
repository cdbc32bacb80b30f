"""Extensions: CONDSTORE (RFC 7162), MOVE (RFC 6851), UIDPLUS (RFC 4315),
NAMESPACE (RFC 2342), ACL (RFC 4314), QUOTA (RFC 9208), IDLE (RFC 2177),
ENABLE (RFC 5161), ID (RFC 2971), LIST-EXTENDED / LIST-STATUS / SPECIAL-USE
(RFC 5258, 5819, 6154), APPENDLIMIT (RFC 7889); imaptest `move`."""

from __future__ import annotations

import re

import compliance_support
from compliance_support import (
    SECRETARY,
    ImapEnv,
    deliver,
    lines,
    literal_append,
    message,
    selected,
    status_of,
    tagged_line,
    two_sessions,
)
from imap_transcript import CARDIO

env = compliance_support.env  # fixtures, shared by the compliance modules
env3 = compliance_support.env3

SHARED = f"Shared/{CARDIO}/INBOX"


def _capabilities(c: object, out: bytes) -> set[bytes]:
    m = re.search(rb"\* CAPABILITY ([^\r]*)\r\n", out)
    assert m, out
    return set(m.group(1).upper().split())


def test_capabilities_advertised_after_login(env: ImapEnv) -> None:
    """Each extension under test is advertised (RFC 3501 7.2.1)."""
    c = env.login()
    caps = _capabilities(c, c.ok("CAPABILITY"))
    assert {b"IMAP4REV1", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"SPECIAL-USE", b"LIST-EXTENDED",
            b"LIST-STATUS", b"ENABLE", b"ID", b"UNSELECT", b"CONDSTORE", b"ACL", b"QUOTA",
            b"IDLE", b"LITERAL+", b"SASL-IR", b"COMPRESS=DEFLATE", b"CHILDREN"} <= caps
    assert any(x.startswith(b"APPENDLIMIT=") for x in caps)


# ---------------------------------------------------------------- CONDSTORE

def test_condstore_highestmodseq_in_select(env3: ImapEnv) -> None:
    """RFC 7162 3.1.2.1: a CONDSTORE server sends OK [HIGHESTMODSEQ] on SELECT/EXAMINE."""
    c = env3.login()
    assert re.search(rb"\* OK \[HIGHESTMODSEQ \d+\]", c.ok("SELECT INBOX (CONDSTORE)"))
    assert re.search(rb"\* OK \[HIGHESTMODSEQ \d+\]", c.ok("EXAMINE INBOX"))


def test_condstore_fetch_modseq_and_changedsince(env3: ImapEnv) -> None:
    """RFC 7162 3.1.4/3.1.4.1: FETCH MODSEQ; CHANGEDSINCE returns only changed
    messages and implies MODSEQ."""
    c = env3.login()
    c.ok("ENABLE CONDSTORE")
    c.ok("SELECT INBOX")
    mods = dict(re.findall(rb"\* (\d) FETCH \(MODSEQ \((\d+)\)\)", c.ok("FETCH 1:* MODSEQ")))
    assert set(mods) == {b"1", b"2", b"3"}
    top = max(int(v) for v in mods.values())
    out = c.ok("STORE 2 +FLAGS (\\Seen)")
    m = re.search(rb"\* 2 FETCH \((?=.*FLAGS)(?=.*MODSEQ \((\d+)\)).*\)\r\n", out)
    assert m and int(m.group(1)) > top, out
    out = c.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {top})")
    assert re.fullmatch(rb"\* 2 FETCH \((?=.*FLAGS)(?=.*MODSEQ).*\)\r\n", out), out
    out = c.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {top})")
    assert b"UID 2" in out and out.count(b"FETCH") == 1


def test_condstore_unchangedsince_modified(env3: ImapEnv) -> None:
    """RFC 7162 3.1.3: STORE (UNCHANGEDSINCE m): messages changed after m are not
    touched and listed in OK [MODIFIED set]; the others are stored."""
    c = env3.login()
    c.ok("SELECT INBOX (CONDSTORE)")
    mods = {int(k): int(v) for k, v in re.findall(rb"\* (\d) FETCH \(MODSEQ \((\d+)\)\)", c.ok("FETCH 1:* MODSEQ"))}
    c.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
    untagged, done = c.tagged(f"STORE 1:2 (UNCHANGEDSINCE {mods[2]}) +FLAGS (\\Flagged)")
    assert b"OK [MODIFIED 1]" in done
    assert b"* 2 FETCH" in untagged and b"* 1 FETCH" not in untagged
    _, done = c.tagged("UID STORE 3 (UNCHANGEDSINCE 0) +FLAGS (\\Flagged)")
    assert b"[MODIFIED 3]" in done


def test_condstore_search_modseq(env3: ImapEnv) -> None:
    """RFC 7162 3.1.5: SEARCH MODSEQ answers with (MODSEQ highest) appended."""
    c = env3.login()
    c.ok("SELECT INBOX (CONDSTORE)")
    c.ok("STORE 3 +FLAGS.SILENT (\\Seen)")
    m = re.search(rb"MODSEQ \((\d+)\)", c.ok("FETCH 3 MODSEQ"))
    assert m
    assert c.ok(f"SEARCH MODSEQ {m.group(1).decode()}") == b"* SEARCH 3 (MODSEQ " + m.group(1) + b")\r\n"


def test_condstore_flag_update_from_other_session_has_modseq(env3: ImapEnv) -> None:
    """RFC 7162 3.2: once CONDSTORE is enabled, unsolicited FETCH FLAGS carry MODSEQ."""
    a, b = two_sessions(env3)
    a.ok("ENABLE CONDSTORE")
    b.ok("STORE 1 +FLAGS.SILENT (\\Answered)")
    out = a.ok("NOOP")
    assert re.search(rb"\* 1 FETCH \((?=.*FLAGS \([^)]*\\Answered)(?=.*MODSEQ \(\d+\)).*\)\r\n", out), out


# ---------------------------------------------------------------- MOVE / UIDPLUS

def test_imaptest_move_script(env3: ImapEnv) -> None:
    """imaptest `move` / RFC 6851 3.3: untagged OK [COPYUID] before EXPUNGE; MOVE to
    the same mailbox gives the message a new UID (EXPUNGE then EXISTS)."""
    c = env3.login()
    c.ok("CREATE box2")
    dest = c.ok("SELECT box2")
    uidv_dest = int(re.search(rb"UIDVALIDITY (\d+)", dest).group(1))  # type: ignore[union-attr]
    src = c.ok("SELECT INBOX")
    uidv = int(re.search(rb"UIDVALIDITY (\d+)", src).group(1))  # type: ignore[union-attr]
    out = c.ok("MOVE 1 box2")
    assert lines(out) == [f"* OK [COPYUID {uidv_dest} 1 1] Moved".encode(), b"* 1 EXPUNGE"] or (
        lines(out)[0].startswith(f"* OK [COPYUID {uidv_dest} 1 1]".encode()) and lines(out)[1] == b"* 1 EXPUNGE")
    out = c.ok("UID MOVE 2 box2")
    assert lines(out)[0].startswith(f"* OK [COPYUID {uidv_dest} 2 2]".encode())
    assert lines(out)[1] == b"* 1 EXPUNGE"
    out = c.ok("MOVE 1 INBOX")
    ls = lines(out)
    assert ls[0].startswith(f"* OK [COPYUID {uidv} 3 4]".encode())
    assert b"* 1 EXPUNGE" in ls and b"* 1 EXISTS" in ls
    assert ls.index(b"* 1 EXPUNGE") < ls.index(b"* 1 EXISTS")


def test_move_to_nonexistent_is_trycreate(env3: ImapEnv) -> None:
    """RFC 6851 3.3 (as COPY, RFC 3501 6.4.7): NO [TRYCREATE], nothing expunged."""
    c = selected(env3)
    untagged, done = c.tagged("MOVE 1 nowhere")
    assert b"NO [TRYCREATE]" in done and b"EXPUNGE" not in untagged


def test_move_keeps_flags_and_other_session_sees_expunge(env3: ImapEnv) -> None:
    """RFC 6851 3.1: flags are kept; other sessions see EXPUNGE."""
    a, b = two_sessions(env3)
    a.ok("STORE 2 +FLAGS.SILENT (\\Flagged $Work)")
    a.ok("MOVE 2 Archive")
    assert b.ok("NOOP").startswith(b"* 2 EXPUNGE")
    out = a.ok("EXAMINE Archive")
    assert b"* 1 EXISTS" in out
    f = a.ok("FETCH 1 FLAGS")
    assert b"\\Flagged" in f and b"$Work" in f


def test_copyuid_uses_uid_sets(env3: ImapEnv) -> None:
    """RFC 4315 3: COPYUID <uidvalidity> <source uid-set> <dest uid-set>."""
    c = selected(env3)
    uidv = status_of(c, "Archive", "UIDVALIDITY")["UIDVALIDITY"]
    _, done = c.tagged("COPY 1:3 Archive")
    assert f"OK [COPYUID {uidv} 1:3 1:3]".encode() in done


def test_uidplus_uid_expunge_requires_selected(env: ImapEnv) -> None:
    c = env.login()
    _, done = c.tagged("UID EXPUNGE 1")
    assert b" BAD " in done


# ---------------------------------------------------------------- NAMESPACE / ACL / QUOTA

def test_namespace_format(env: ImapEnv) -> None:
    """RFC 2342 5: three namespace lists, each NIL or ((prefix delimiter) ...)."""
    c = env.login()
    out = c.ok("NAMESPACE")
    nsl = rb'(?:NIL|\((?:\("[^"]*" (?:"."|NIL)(?: [^)]*)?\))+\))'
    assert re.fullmatch(rb"\* NAMESPACE " + nsl + rb" " + nsl + rb" " + nsl + rb"\r\n", out), out
    assert out.startswith(b'* NAMESPACE (("" "/"))')


def test_myrights_and_getacl_on_own_mailbox(env: ImapEnv) -> None:
    """RFC 4314 3.5/3.6: the owner has all rights incl. 'a'; GETACL lists them."""
    c = env.login()
    out = c.ok("MYRIGHTS INBOX")
    m = re.fullmatch(rb'\* MYRIGHTS "?INBOX"? ([a-z0-9]+)\r\n', out)
    assert m and set(b"lrswipkxtea") <= set(m.group(1)), out
    out = c.ok("GETACL INBOX")
    assert re.match(rb'\* ACL "?INBOX"? "?secretaire@hopital\.test"? [a-z0-9]+', out)


def test_acl_on_shared_mailbox(env: ImapEnv) -> None:
    """RFC 4314: MYRIGHTS shows the grant; GETACL without 'a' is refused with NO."""
    c = env.login()
    out = c.ok(f'MYRIGHTS "{SHARED}"')
    m = re.search(rb" ([a-z0-9]+)\r\n", out)
    assert m and b"a" not in m.group(1) and b"l" in m.group(1) and b"r" in m.group(1)
    _, done = c.tagged(f'GETACL "{SHARED}"')
    assert b" NO " in done


def test_acl_on_nonexistent_mailbox(env: ImapEnv) -> None:
    c = env.login()
    _, done = c.tagged("MYRIGHTS nowhere")
    assert b" NO " in done


def test_setacl_then_getacl(env: ImapEnv) -> None:
    """RFC 4314 3.1/3.3/3.2: SETACL, GETACL shows it, DELETEACL removes it."""
    c = env.login()
    c.ok("SETACL Trash accueil@hopital.test lr")
    assert re.search(rb'"?accueil@hopital\.test"? lr\b', c.ok("GETACL Trash"))
    c.ok("DELETEACL Trash accueil@hopital.test")
    assert b"accueil" not in c.ok("GETACL Trash")


def test_getquotaroot_inbox_with_a_quota(env: ImapEnv) -> None:
    """RFC 9208 4.3.1: GETQUOTAROOT answers QUOTAROOT then QUOTA for each root."""
    mb = env.store.get_mailbox(SECRETARY)
    env.store.set_quota(mb.id, 1024 * 1024)
    deliver(env.store, SECRETARY, message("q"))
    c = env.login()
    out = c.ok("GETQUOTAROOT INBOX")
    m = re.match(rb'\* QUOTAROOT "?INBOX"? ("[^"]*"|\S+)\r\n\* QUOTA \1 \(STORAGE (\d+) 1024\)\r\n$', out)
    assert m and int(m.group(2)) >= 1, out
    assert c.ok(f"GETQUOTA {m.group(1).decode()}").startswith(b"* QUOTA ")


def test_getquotaroot_without_quota(env: ImapEnv) -> None:
    """RFC 9208 4.3.1: no quota -> QUOTAROOT with zero roots."""
    c = env.login()
    assert c.ok("GETQUOTAROOT INBOX") == b'* QUOTAROOT "INBOX"\r\n' or c.ok(
        "GETQUOTAROOT INBOX").startswith(b"* QUOTAROOT INBOX")


def test_append_over_quota_is_overquota(env: ImapEnv) -> None:
    """RFC 9208 4.2 / 7: APPEND over the limit -> NO [OVERQUOTA]."""
    mb = env.store.get_mailbox(SECRETARY)
    env.store.set_quota(mb.id, 100)
    c = env.login()
    out = literal_append(c, "a1", "INBOX", message("big", "x" * 500 + "\r\n"))
    assert tagged_line(out, "a1").startswith(b"a1 NO [OVERQUOTA]")


# ---------------------------------------------------------------- IDLE / ENABLE / ID / LIST-*

def test_idle_pushes_new_mail_and_flag_changes(env: ImapEnv) -> None:
    """RFC 2177 3: updates are sent while idling; DONE ends with the tagged OK."""
    a, b = two_sessions(env)
    assert a.cmd("i1 IDLE").startswith(b"+ ")
    deliver(env.store, SECRETARY, message("pushed"))
    env.clock.advance(1.0)
    assert b"* 1 EXISTS" in a.read()
    b.ok("NOOP")
    b.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
    env.clock.advance(1.0)
    assert re.search(rb"\* 1 FETCH \(FLAGS \([^)]*\\Flagged", a.read())
    assert a.cmd("DONE") == b"i1 OK IDLE terminated\r\n"


def test_idle_requires_done(env: ImapEnv) -> None:
    """RFC 2177 3: anything but DONE ends IDLE with BAD."""
    a = selected(env)
    a.cmd("i1 IDLE")
    out = a.cmd("NOPE")
    assert out.startswith(b"i1 BAD")


def test_enable_responses(env: ImapEnv) -> None:
    """RFC 5161 3.1: ENABLED lists only the extensions actually enabled; ENABLE is
    valid only in the authenticated state."""
    c = env.connect()
    _, done = c.tagged("ENABLE CONDSTORE")
    assert b" BAD " in done
    c = env.login()
    assert c.ok("ENABLE CONDSTORE X-UNKNOWN") == b"* ENABLED CONDSTORE\r\n"
    assert c.ok("ENABLE X-UNKNOWN") in (b"* ENABLED\r\n", b"")


def test_id_any_state(env: ImapEnv) -> None:
    """RFC 2971 3.1: ID NIL or a list; the server answers one ID response."""
    c = env.connect()
    out = c.ok('ID ("name" "imaptest")')
    assert re.fullmatch(rb'\* ID (NIL|\(.*\))\r\n', out)
    assert c.ok("ID NIL").startswith(b"* ID ")


def test_list_status_returns_status_after_list(env3: ImapEnv) -> None:
    """RFC 5819 2: each STATUS follows its LIST; none for \\Noselect names."""
    c = env3.login()
    out = c.ok('LIST "" % RETURN (STATUS (MESSAGES UNSEEN))')
    ls = lines(out)
    i = ls.index(b'* LIST (\\HasNoChildren) "/" "INBOX"')
    assert ls[i + 1] == b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 3)'
    j = next(k for k, x in enumerate(ls) if x.endswith(b'"Shared"'))
    assert j + 1 == len(ls) or not ls[j + 1].startswith(b'* STATUS "Shared"')


def test_list_special_use_selection(env: ImapEnv) -> None:
    """RFC 6154 5.1: LIST (SPECIAL-USE) returns only special-use mailboxes."""
    c = env.login()
    out = c.ok('LIST (SPECIAL-USE) "" *')
    uses = set(re.findall(rb"(\\Sent|\\Drafts|\\Trash|\\Junk|\\Archive)", out))
    assert uses == {b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk", b"\\Archive"}
    assert b'"INBOX"' not in out


def test_list_extended_subscribed(env: ImapEnv) -> None:
    """RFC 5258 3.1: LIST (SUBSCRIBED) marks names with \\Subscribed."""
    c = env.login()
    c.ok("CREATE proj")
    c.ok("SUBSCRIBE proj")
    out = c.ok('LIST (SUBSCRIBED) "" proj')
    assert re.fullmatch(rb'\* LIST \((?=[^)]*\\Subscribed)[^)]*\) "/" "?proj"?\r\n', out), out


def test_list_multiple_patterns(env: ImapEnv) -> None:
    """RFC 5258 3: a parenthesised list of patterns."""
    c = env.login()
    out = c.ok('LIST "" (INBOX Sent)')
    assert set(re.findall(rb'"/" "([^"]+)"', out)) == {b"INBOX", b"Sent"}


def test_appendlimit_toobig(env: ImapEnv) -> None:
    """RFC 7889 / RFC 4469: APPEND larger than APPENDLIMIT -> NO [TOOBIG]
    (answered without reading the literal for a synchronising literal)."""
    c = env.login()
    caps = _capabilities(c, c.ok("CAPABILITY"))
    limit = int(next(x for x in caps if x.startswith(b"APPENDLIMIT=")).split(b"=")[1])
    out = c.cmd(f"a1 APPEND INBOX {{{limit + 1}}}")
    assert out.startswith(b"a1 NO [TOOBIG]"), out


def test_condstore_implicit_seen_fetch_carries_modseq(env3: ImapEnv) -> None:
    """RFC 7162 3.1: once CONDSTORE is enabled, "the server MUST automatically
    include MODSEQ fetch response data items in all subsequent unsolicited FETCH
    responses" - including the FLAGS (\\Seen) a BODY[] fetch reports."""
    c = env3.login()
    c.ok("ENABLE CONDSTORE")
    c.ok("SELECT INBOX")
    out = c.ok("FETCH 1 BODY[TEXT]")
    assert b"\\Seen" in out and b"MODSEQ (" in out, out


def test_condstore_enabled_by_fetch_modseq(env3: ImapEnv) -> None:
    """RFC 7162 3.1: FETCH MODSEQ is a CONDSTORE enabling command; later flag
    updates from another session carry MODSEQ."""
    a, b = two_sessions(env3)
    a.ok("FETCH 1 MODSEQ")
    b.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    out = a.ok("NOOP")
    assert re.search(rb"\* 2 FETCH \((?=.*FLAGS)(?=.*MODSEQ \(\d+\)).*\)\r\n", out), out


def test_condstore_silent_store_still_reports_modseq(env3: ImapEnv) -> None:
    """RFC 7162 3.1.3 (example 10): STORE .SILENT still returns FETCH (MODSEQ)."""
    c = env3.login()
    c.ok("SELECT INBOX (CONDSTORE)")
    assert re.fullmatch(rb"\* 2 FETCH \((UID 2 )?MODSEQ \(\d+\)\)\r\n", c.ok("STORE 2 +FLAGS.SILENT (\\Flagged)"))


# ---------------------------------------------------------------- ACL in use

def _org_box(env: ImapEnv, address: str, rights: str | None) -> str:
    from storage.interface import MailboxType

    mb = env.store.add_mailbox(address, MailboxType.ORG, display_name="X", responsible="CH Test")
    if rights is not None:
        env.store.set_grant(env.store.get_account(SECRETARY).id, mb.id, rights)
    deliver(env.store, address, message("org"))
    return f'"Shared/{address}/INBOX"'


def test_acl_lookup_read_only_grant(env: ImapEnv) -> None:
    """RFC 4314 4: with "lr" only: SELECT works read-only, FETCH BODY[] does not
    set \\Seen (no "s"), STORE/EXPUNGE/APPEND are refused with NO."""
    box = _org_box(env, "radiologie@hopital.test", "lr")
    c = env.login()
    out = c.ok(f"SELECT {box}")
    assert b"* 1 EXISTS" in out
    c.ok("FETCH 1 BODY[TEXT]")
    assert b"\\Seen" not in c.ok("FETCH 1 FLAGS")
    _, done = c.tagged("STORE 1 +FLAGS (\\Flagged)")
    assert b" NO " in done
    _, done = c.tagged("EXPUNGE")
    assert b" NO " in done
    assert c.ok(f"MYRIGHTS {box}").endswith(b" lr\r\n")
    out = c.cmd(f"a1 APPEND {box} {{3+}}\r\nabc".encode())
    assert tagged_line(out, "a1").startswith(b"a1 NO")


def test_acl_invisible_mailbox_answers_like_nonexistent(env: ImapEnv) -> None:
    """RFC 4314 6: without "l" (and "r") the server must not reveal the mailbox:
    same answers as for a name that does not exist; not listed."""
    hidden = _org_box(env, "secret@hopital.test", None)
    missing = '"Shared/nowhere@hopital.test/INBOX"'
    c = env.login()
    for cmd in ("SELECT {}", "EXAMINE {}", "STATUS {} (MESSAGES)", "MYRIGHTS {}", "DELETE {}",
                "GETQUOTAROOT {}"):
        _, d1 = c.tagged(cmd.format(hidden))
        _, d2 = c.tagged(cmd.format(missing))
        assert d1.split(b" ", 1)[1] == d2.split(b" ", 1)[1], (cmd, d1, d2)
    assert b"secret@" not in c.ok('LIST "" *')


# ---------------------------------------------------------------- QUOTA STATUS items, LIST-EXTENDED, COMPRESS

def test_quota_storage_requires_status_deleted_storage(env: ImapEnv) -> None:
    """RFC 9208 5.1 (STORAGE): "When the server supports this resource type, it
    MUST also support the DELETED-STORAGE status data item"."""
    c = env.login()
    assert "DELETED-STORAGE" in status_of(c, "INBOX", "DELETED-STORAGE")


def test_status_deleted(env3: ImapEnv) -> None:
    """RFC 9208 4.2 / RFC 9051 6.3.11: STATUS DELETED counts \\Deleted messages."""
    c = selected(env3)
    c.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert status_of(c, "INBOX", "DELETED") == {"DELETED": 2}


def test_list_extended_recursivematch_childinfo(env: ImapEnv) -> None:
    """RFC 5258 3.5 / 4: (SUBSCRIBED RECURSIVEMATCH) returns an unsubscribed
    parent of a subscribed child with CHILDINFO ("SUBSCRIBED"); RECURSIVEMATCH
    alone is a syntax error (BAD)."""
    c = env.login()
    c.ok("CREATE par/kid")
    c.ok("SUBSCRIBE par/kid")
    out = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
    assert re.search(rb'\* LIST \([^)]*\) "/" "?par"? \("CHILDINFO" \("SUBSCRIBED"\)\)\r\n', out), out
    _, done = c.tagged('LIST (RECURSIVEMATCH) "" %')
    assert b" BAD " in done


def test_compress_twice_is_compressionactive(env: ImapEnv) -> None:
    """RFC 4978 3: a second COMPRESS gets NO [COMPRESSIONACTIVE]; before login BAD/NO."""
    import zlib

    c = env.connect()
    _, done = c.tagged("COMPRESS DEFLATE")
    assert b" BAD " in done or b" NO " in done
    c = env.login()
    assert c.cmd("z1 COMPRESS DEFLATE").startswith(b"z1 OK")
    comp, dec = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    out = dec.decompress(c.send(comp.compress(b"z2 COMPRESS DEFLATE\r\n") + comp.flush(zlib.Z_SYNC_FLUSH)))
    assert out.startswith(b"z2 NO [COMPRESSIONACTIVE]"), out
    out = dec.decompress(c.send(comp.compress(b"z3 NOOP\r\n") + comp.flush(zlib.Z_SYNC_FLUSH)))
    assert out == b"z3 OK NOOP completed\r\n"


# ---------------------------------------------------------------- QRESYNC (RFC 7162 3.2)

def test_qresync_select_vanished_earlier_and_changes(env: ImapEnv) -> None:
    """RFC 7162 3.2.5: SELECT (QRESYNC (uidvalidity modseq [known-uids])) sends
    VANISHED (EARLIER) for expunged UIDs and FETCH (UID FLAGS MODSEQ) for changed
    ones; without ENABLE QRESYNC the parameter is a BAD (3.2.3)."""
    for s in "abcde":
        deliver(env.store, SECRETARY, message(s))
    a, b = env.login(), selected(env)
    out = a.ok("EXAMINE INBOX")
    uv = re.search(rb"UIDVALIDITY (\d+)", out).group(1).decode()  # type: ignore[union-attr]
    hm = re.search(rb"HIGHESTMODSEQ (\d+)", out).group(1).decode()  # type: ignore[union-attr]
    a.ok("CLOSE")
    b.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    b.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    _, done = a.tagged(f"SELECT INBOX (QRESYNC ({uv} {hm}))")
    assert b" BAD " in done
    a.ok("ENABLE QRESYNC")
    out = a.ok(f"SELECT INBOX (QRESYNC ({uv} {hm} 1:5))")
    ls = lines(out)
    assert b"* VANISHED (EARLIER) 3" in ls
    fetch = [x for x in ls if b" FETCH " in x]
    assert len(fetch) == 1 and b"UID 2" in fetch[0] and b"\\Flagged" in fetch[0] and b"MODSEQ" in fetch[0]
    assert ls.index(b"* VANISHED (EARLIER) 3") < ls.index(fetch[0])


def test_qresync_vanished_replaces_expunge_and_closed(env3: ImapEnv) -> None:
    """RFC 7162 3.2.10: with QRESYNC enabled, VANISHED replaces EXPUNGE;
    3.2.11: selecting another mailbox sends OK [CLOSED] first."""
    a, b = env3.login(), selected(env3)
    a.ok("ENABLE QRESYNC")
    a.ok("SELECT INBOX")
    b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    assert a.ok("NOOP") == b"* VANISHED 1\r\n"
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert a.ok("EXPUNGE") == b"* VANISHED 2\r\n"
    out = a.ok("EXAMINE Trash")
    assert lines(out)[0].startswith(b"* OK [CLOSED]")


def test_condstore_untagged_fetch_carries_uid_and_modseq(env3: ImapEnv) -> None:
    """RFC 7162 3.1: "Once a CONDSTORE enabling command is issued by the client,
    the server MUST automatically include both UID and mod-sequence data in all
    subsequent untagged FETCH responses (until the connection is closed), whether
    they were caused by a regular STORE/UID STORE, a STORE/UID STORE with an
    UNCHANGEDSINCE modifier, a FETCH/UID FETCH that implicitly set the \\Seen
    flag, or an external agent"."""
    a, b = two_sessions(env3)
    a.ok("ENABLE CONDSTORE")
    outs = [a.ok("STORE 1 +FLAGS (\\Flagged)"), a.ok("FETCH 2 BODY[TEXT]")]
    b.ok("STORE 3 +FLAGS.SILENT (\\Answered)")
    outs.append(a.ok("NOOP"))
    for out in outs:
        m = re.search(rb"\* \d FETCH \(.*\)\r\n", out, re.S)
        assert m and b"UID " in m.group(0) and b"MODSEQ (" in m.group(0), out
