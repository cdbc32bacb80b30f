"""Transcripts after the extension RFCs: ENABLE, CONDSTORE, ACL, QUOTA,
LIST-EXTENDED/LIST-STATUS/SPECIAL-USE, UNSELECT, ID, COMPRESS, NAMESPACE, and
the error mapping (store unavailable, invisible mailboxes)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    PASSWORD,
    SECRETARY,
    SECRETARY2,
    ImapEnv,
    add_user,
    deliver,
    lines,
    make_env,
    message,
    populate,
)

from imapd.commands import DISPATCH
from imapd.parser.commands import ALL_COMMANDS
from storage.interface import MailboxType, StoreUnavailable


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def test_every_command_type_has_a_handler() -> None:
    assert set(ALL_COMMANDS) <= set(DISPATCH)
    for kind in ALL_COMMANDS:
        assert kind.allowed_states, kind


def test_login_disabled_before_starttls(env: ImapEnv) -> None:
    c = env.connect("imap-starttls")
    assert b"LOGINDISABLED" in c.greeting and b"STARTTLS" in c.greeting
    assert b"AUTH=PLAIN" not in c.greeting
    out = c.cmd(f"a1 LOGIN {SECRETARY} \"{PASSWORD}\"")
    assert out.startswith(b"a1 NO [PRIVACYREQUIRED]")
    out = c.cmd("a2 AUTHENTICATE PLAIN AHNlY3JldGFpcmVAaG9waXRhbC50ZXN0AHg=")
    assert out.startswith(b"a2 NO [PRIVACYREQUIRED]")
    assert c.cmd("a3 AUTHENTICATE EXTERNAL =").startswith(b"a3 NO")


def test_enable_condstore_and_modseq(env: ImapEnv) -> None:
    deliver(env.store, SECRETARY, message("a"))
    deliver(env.store, SECRETARY, message("b"))
    c = env.login()
    assert c.ok("ENABLE CONDSTORE") == b"* ENABLED CONDSTORE\r\n"
    untagged = c.ok("SELECT INBOX")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", untagged).group(1))
    out = c.ok("FETCH 1:* (UID FLAGS MODSEQ)")
    modseqs = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", out)]
    assert len(modseqs) == 2 and max(modseqs) <= hms
    out = c.ok("STORE 1 +FLAGS (\\Flagged)")
    # RFC 7162 3.1: with CONDSTORE on, untagged FETCH carries UID and MODSEQ.
    m = re.search(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Flagged \\Recent\) MODSEQ \((\d+)\)\)", out)
    assert m, out
    new = int(m.group(1))
    assert new > hms
    out = c.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")
    assert out == b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ (%d))\r\n" % new
    untagged, done = c.tagged(f"STORE 1,2 (UNCHANGEDSINCE {hms}) +FLAGS (\\Seen)")
    assert b"[MODIFIED 1]" in done, done
    assert b"* 2 FETCH" in untagged and b"* 1 FETCH" not in untagged
    out = c.ok(f"SEARCH MODSEQ {new}")
    assert re.match(rb"\* SEARCH 1 2 \(MODSEQ \d+\)\r\n", out), out
    untagged = c.ok("STATUS Sent (HIGHESTMODSEQ)")
    assert b"HIGHESTMODSEQ" in untagged


def test_shared_mailbox_namespace_acl_and_invisible_boxes(env: ImapEnv, store: Any) -> None:
    stranger = add_user(store, "autre@hopital.test")
    store.add_mailbox("pneumologie@hopital.test", MailboxType.ORG)
    c = env.login(SECRETARY)
    out = c.ok(f'MYRIGHTS "Shared/{CARDIO}/INBOX"')
    assert out == f'* MYRIGHTS "Shared/{CARDIO}/INBOX" lrswipkxte\r\n'.encode()
    # Not granted: exactly like a missing mailbox, for every command.
    for name in ("Shared/pneumologie@hopital.test/INBOX", "Shared/nope@hopital.test/INBOX"):
        for command in (f'SELECT "{name}"', f'STATUS "{name}" (MESSAGES)',
                        f'MYRIGHTS "{name}"', f'GETACL "{name}"', f'DELETE "{name}"'):
            _, done = c.tagged(command)
            assert done.split(b" ", 1)[1] == b"NO [NONEXISTENT] No such mailbox\r\n", command
    assert b"pneumologie" not in c.ok('LIST "" "*"')
    # GETACL needs the "a" right: the agent has "l" so it is a permission error.
    _, done = c.tagged(f'GETACL "Shared/{CARDIO}/INBOX"')
    assert b"NO [NOPERM]" in done
    # The owner of a personal box shares it, the grantee sees it under Other Users.
    out = c.ok(f'SETACL INBOX {stranger.login} lr')
    out = c.ok("GETACL INBOX")
    assert out == f'* ACL "INBOX" "{SECRETARY}" lrswipkxtea "{stranger.login}" lr\r\n'.encode()
    c.ok(f"SETACL INBOX {stranger.login} +s")
    assert b'"autre@hopital.test" lrs' in c.ok("GETACL INBOX")
    out = c.ok(f"LISTRIGHTS INBOX {stranger.login}")
    assert out.startswith(b'* LISTRIGHTS "INBOX" "autre@hopital.test" "" l r s')
    d = env.login("autre@hopital.test")
    out = d.ok("NAMESPACE")
    assert out == b'* NAMESPACE (("" "/")) (("Other Users/" "/")) NIL\r\n'
    d.ok(f'EXAMINE "Other Users/{SECRETARY}/INBOX"')
    c.ok(f"DELETEACL INBOX {stranger.login}")
    _, done = d.tagged(f'STATUS "Other Users/{SECRETARY}/INBOX" (MESSAGES)')
    assert b"NO [NONEXISTENT]" in done


def test_agents_work_in_the_functional_mailbox(env: ImapEnv, store: Any) -> None:
    deliver(store, CARDIO, message("patient"))
    c = env.login(SECRETARY2)
    c.ok(f'SELECT "Shared/{CARDIO}/INBOX"')
    c.ok(f'UID MOVE 1 "Shared/{CARDIO}/Archive"')
    out = c.ok(f'STATUS "Shared/{CARDIO}/Archive" (MESSAGES)')
    assert b"MESSAGES 1" in out
    # Every shared access is traced to the agent.
    assert any(e.actor == SECRETARY2 and e.action == "move" for e in env.audit.events)


def test_quota(env: ImapEnv, store: Any) -> None:
    mb = store.get_mailbox(SECRETARY)
    store.set_quota(mb.id, 100 * 1024)
    deliver(store, SECRETARY, message("x", "y" * 3000))
    c = env.login()
    out = c.ok("GETQUOTAROOT INBOX")
    assert lines(out) == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE 4 100)']
    assert c.ok('GETQUOTA ""') == b'* QUOTA "" (STORAGE 4 100)\r\n'
    _, done = c.tagged('SETQUOTA "" (STORAGE 10)')
    assert b"NO" in done
    store.set_quota(mb.id, 1024)
    _, done = c.tagged("APPEND INBOX {2000+}\r\n" + "z" * 2000)
    assert b"NO [OVERQUOTA]" in done


def test_list_extended_status_special_use(env: ImapEnv, store: Any) -> None:
    deliver(store, SECRETARY, message("a"))
    c = env.login()
    out = c.ok('LIST (SPECIAL-USE) "" "*"')
    assert {x.rsplit(b" ", 1)[1] for x in lines(out)} == {
        b'"Sent"', b'"Drafts"', b'"Trash"', b'"Junk"', b'"Archive"'}
    out = c.ok('LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN UIDVALIDITY))')
    assert lines(out)[0] == b'* LIST (\\HasNoChildren) "/" "INBOX"'
    assert re.match(rb'\* STATUS "INBOX" \(MESSAGES 1 UNSEEN 1 UIDVALIDITY \d+\)', lines(out)[1])
    c.ok("SUBSCRIBE Sent")
    out = c.ok('LIST (SUBSCRIBED) "" "*"')
    assert out == b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"\r\n' or \
        b'"Sent"' in out
    assert b"\\Subscribed" in out
    c.ok("CREATE Modeles (USE (\\Drafts))")
    _, done = c.tagged("CREATE Bizarre (USE (\\Important))")
    assert b"NO [USEATTR]" in done
    c.ok('CREATE "Dossiers/Ann&AOk-e"')
    out = c.ok('LIST "Dossiers/" "%"')
    assert out == b'* LIST (\\HasNoChildren) "/" "Dossiers/Ann&AOk-e"\r\n'


def test_unselect_and_closed(env: ImapEnv, store: Any) -> None:
    deliver(store, SECRETARY, message("a"))
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok("STORE 1 +FLAGS (\\Deleted)")
    c.ok("UNSELECT")  # no expunge, unlike CLOSE
    assert b"* 1 EXISTS" in c.ok("SELECT INBOX")
    c.ok("ENABLE CONDSTORE")
    out = c.ok("SELECT Sent")
    assert out.startswith(b"* OK [CLOSED]")


def test_compress_deflate(env: ImapEnv) -> None:
    c = env.login()
    assert c.cmd("z1 COMPRESS DEFLATE") == b"z1 OK DEFLATE active\r\n"
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    data = deflate.compress(b"z2 NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH)
    out = inflate.decompress(c.send(data))
    assert out == b"z2 OK NOOP completed\r\n"
    data = deflate.compress(b"z3 COMPRESS DEFLATE\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert b"COMPRESSIONACTIVE" in inflate.decompress(c.send(data))


def test_listrights_identifier_with_crlf_comes_back_as_a_literal(env: ImapEnv) -> None:
    c = env.login()
    out = c.send(b"l1 LISTRIGHTS INBOX {8+}\r\nx\r\n* BYE\r\n")
    assert out.startswith(b'* LISTRIGHTS "INBOX" {8}\r\nx\r\n* BYE "" l r s')
    assert out.endswith(b"l1 OK LISTRIGHTS completed\r\n")


def test_compress_with_pipelined_garbage_says_bye(env: ImapEnv) -> None:
    # Bytes pipelined after COMPRESS are inflated when the switch happens:
    # invalid ones end the session like invalid data arriving later, never a
    # second tagged reply to COMPRESS.
    c = env.login()
    out = c.send(b"z1 COMPRESS DEFLATE\r\n" + b"\xff" * 16)
    assert out.count(b"z1 ") == 1
    assert out.startswith(b"z1 OK DEFLATE active\r\n")
    assert c.closed


def test_store_unavailable_is_a_temporary_no(env: ImapEnv, monkeypatch: Any) -> None:
    c = env.login()

    def down(*a: Any, **k: Any) -> Any:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(env.store, "index_columns", down)
    _, done = c.tagged("SELECT INBOX")
    assert done.split(b" ", 1)[1] == b"NO [UNAVAILABLE] Service temporarily unavailable, try again\r\n"
    assert not c.closed
    monkeypatch.setattr(env.store, "folder_status", lambda *a: 1 / 0)
    _, done = c.tagged("STATUS INBOX (MESSAGES)")
    assert re.match(rb"t\d+ NO \[SERVERBUG\] Internal error, reference [0-9a-f]{12}\r\n", done)
    assert b"division" not in done


def test_autologout_after_idle_timeout(env: ImapEnv) -> None:
    c = env.login()
    env.clock.advance(env.settings.limits.imap_idle_timeout - 1)
    assert not c.closed
    c.ok("NOOP")
    env.clock.advance(env.settings.limits.imap_idle_timeout + 1)
    assert c.read() == b"* BYE Autologout; idle for too long\r\n"
    assert c.closed


def test_id_and_pipelining(env: ImapEnv) -> None:
    c = env.connect()
    out = c.send(f'p1 LOGIN {SECRETARY} "{PASSWORD}"\r\np2 ID NIL\r\np3 NOOP\r\n'.encode())
    ls = lines(out)
    assert ls[0].startswith(b"p1 OK")
    assert ls[1].startswith(b"* ID (") and ls[2] == b"p2 OK ID completed"
    assert ls[3] == b"p3 OK NOOP completed"


def test_qresync(env: ImapEnv, store: Any) -> None:
    """RFC 7162 3.2: ENABLE QRESYNC, SELECT (QRESYNC ...), VANISHED."""
    for i in range(4):
        deliver(store, SECRETARY, message(f"m{i}"))
    c = env.login()
    _, done = c.tagged("SELECT INBOX (QRESYNC (1 1))")
    assert b"BAD" in done  # not enabled yet
    assert c.ok("ENABLE QRESYNC") == b"* ENABLED QRESYNC\r\n"
    untagged = c.ok("SELECT INBOX")
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", untagged).group(1))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", untagged).group(1))
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    out = c.ok("EXPUNGE")
    assert out == b"* VANISHED 1\r\n"
    c.ok("STORE 2 +FLAGS (\\Flagged)")
    # Another client (or this one, later) resynchronises from hms.
    d = env.login()
    d.ok("ENABLE QRESYNC")
    untagged = d.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {hms} 1:4))")
    assert b"* VANISHED (EARLIER) 1\r\n" in untagged
    assert re.search(rb"\* 2 FETCH \(UID 3 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", untagged)
    out = d.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
    assert out.startswith(b"* VANISHED (EARLIER) 1\r\n")
    assert b"UID 3 FLAGS (\\Flagged)" in out
    # Expunges made elsewhere arrive as VANISHED too.
    c.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    assert d.ok("NOOP") == b"* VANISHED 4\r\n"


def test_idle_is_ended_after_the_idle_timeout(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    assert c.cmd("i1 IDLE") == b"+ idling\r\n"
    env.clock.advance(env.settings.limits.imap_idle_command_timeout - 1)
    assert not c.closed
    env.clock.advance(2)
    assert c.read() == b"* BYE Autologout; idle for too long\r\n"
    assert c.closed
