"""NOTIFY (RFC 5465) transcripts: the command's grammar and errors, events of
the selected mailbox sent between commands (EXISTS + the FETCH MessageNew
asks for, EXPUNGE, FlagChange), STATUS of other mailboxes as they change,
access withdrawn, the bound on watched mailboxes, and the client that does
not read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    SECRETARY2,
    ImapEnv,
    deliver,
    make_env,
    message,
    populate,
)

from imapd.notify import MAX_WATCHED

SHARED = f'"Shared/{CARDIO}/INBOX"'
TICK = 0.3  # one folder-watcher interval
BADEVENT = (b"NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName "
            b"SubscriptionChange)]")


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    for i in range(1, 4):
        deliver(store, CARDIO, message(f"patient {i}"))
    return make_env(tmp_path, store)


def _status(data: bytes) -> dict[str, int]:
    m = re.search(rb"\* STATUS \S+ \(([^)]*)\)", data)
    assert m, data
    items = m.group(1).split()
    return {items[i].decode(): int(items[i + 1]) for i in range(0, len(items), 2)}


def test_capability_advertises_notify_after_login(env: ImapEnv) -> None:
    c = env.connect()
    assert b"NOTIFY" not in c.cmd("a CAPABILITY")
    c = env.login()
    assert b" NOTIFY" in c.ok("CAPABILITY")


@pytest.mark.parametrize("events", ["(MessageNew MessageExpunge AnnotationChange)",
                                    "(MailboxMetadataChange)", "(XFOO)"])
def test_unsupported_events_are_refused_with_badevent(env: ImapEnv, events: str) -> None:
    c = env.login()
    _, done = c.tagged(f"NOTIFY SET (personal {events})")
    assert done.split(b" ", 1)[1].startswith(BADEVENT), done


@pytest.mark.parametrize("args", [
    "SET (selected (MessageNew))",  # MessageNew without MessageExpunge (RFC 5465 5)
    "SET (personal (FlagChange))",  # FlagChange alone
    "SET (selected (MailboxName))",  # not a message event (6.1)
    "SET (selected (MessageNew MessageExpunge)) (selected-delayed NONE)",  # two (6.1)
    "SET (elsewhere (MessageNew MessageExpunge))",
    "SET (mailboxes () (MessageNew MessageExpunge))",
    "SET (personal ())",
    "SOMETHING",
])
def test_malformed_notify_is_bad(env: ImapEnv, args: str) -> None:
    c = env.login()
    _, done = c.tagged(f"NOTIFY {args}")
    assert done.split(b" ")[1] == b"BAD", done


def test_set_status_sends_the_state_of_each_mailbox_before_ok(env: ImapEnv) -> None:
    c = env.login()
    out = c.ok(f"NOTIFY SET STATUS (mailboxes {SHARED} (MessageNew MessageExpunge))")
    assert out.startswith(f"* STATUS {SHARED} (MESSAGES 3 UIDNEXT 4 UIDVALIDITY ".encode()), out
    # Without STATUS, nothing before the OK.
    assert c.ok(f"NOTIFY SET (mailboxes {SHARED} (MessageNew MessageExpunge))") == b""


def test_rfc_example_new_message_in_selected_mailbox_between_commands(env: ImapEnv) -> None:
    """RFC 5465 3.1's example, on the selected functional mailbox: the new
    message is announced with no command running, EXISTS then FETCH."""
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("NOTIFY SET STATUS (selected (MessageNew (uid body.peek[header.fields "
         "(from to subject)]) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))")
    deliver(env.store, CARDIO, message("patient 4"))
    assert c.read() == b""  # not yet polled
    env.clock.advance(TICK)
    out = c.read()
    assert out.startswith(b"* 4 EXISTS\r\n* 4 RECENT\r\n"
                          b"* 4 FETCH (UID 4 BODY[HEADER.FIELDS (from to subject)] {"), out
    assert b"Subject: patient 4\r\n" in out
    # Told once: the next command repeats nothing.
    assert c.ok("NOOP") == b""


def test_expunge_by_another_session_is_sent_at_once_with_selected(env: ImapEnv) -> None:
    a = env.login()
    b = env.login(SECRETARY2)
    a.ok(f"SELECT {SHARED}")
    b.ok(f"SELECT {SHARED}")
    a.ok("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange))")
    b.ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert a.read() == b"* 2 FETCH (UID 2 FLAGS (\\Deleted \\Recent))\r\n"
    b.ok("UID EXPUNGE 2")
    assert a.read() == b"* 2 EXPUNGE\r\n"


def test_selected_delayed_keeps_expunges_for_a_command_that_allows_them(env: ImapEnv) -> None:
    a = env.login()
    b = env.login(SECRETARY2)
    a.ok(f"SELECT {SHARED}")
    b.ok(f"SELECT {SHARED}")
    a.ok("NOTIFY SET (selected-delayed (MessageNew MessageExpunge))")
    b.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.ok("UID EXPUNGE 1")
    deliver(env.store, CARDIO, message("patient 4"))
    env.clock.advance(TICK)
    # EXISTS goes (the expunged message still counted), the EXPUNGE waits;
    # no FlagChange asked: no FETCH of flags between commands.
    assert a.read() == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    # FETCH by sequence number: still no EXPUNGE (RFC 3501 7.4.1).
    out = a.ok("FETCH 1 (UID)")
    assert out == b"* 1 FETCH (UID 1)\r\n"
    assert a.ok("NOOP") == b"* 1 EXPUNGE\r\n"
    # IDLE allows expunges: they go as they come.
    assert a.cmd("i IDLE").startswith(b"+ ")
    b.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    b.ok("UID EXPUNGE 3")
    assert a.read() == b"* 2 EXPUNGE\r\n"
    assert a.cmd("DONE") == b"i OK IDLE terminated\r\n"


def test_without_flagchange_flags_wait_for_a_command(env: ImapEnv) -> None:
    a = env.login()
    b = env.login(SECRETARY2)
    a.ok(f"SELECT {SHARED}")
    b.ok(f"SELECT {SHARED}")
    a.ok("NOTIFY SET (selected (MessageNew MessageExpunge))")
    b.ok("UID STORE 3 +FLAGS.SILENT (\\Flagged)")
    assert a.read() == b""
    assert a.ok("NOOP") == b"* 3 FETCH (FLAGS (\\Flagged \\Recent))\r\n"


def test_delivery_to_another_mailbox_sends_status(env: ImapEnv) -> None:
    """An SMTP-like delivery through the store to the personal INBOX while
    the functional box is selected: an unsolicited STATUS, once."""
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("NOTIFY SET (selected (MessageNew MessageExpunge)) (inboxes (MessageNew MessageExpunge))")
    deliver(env.store, SECRETARY, message("perso"))
    env.clock.advance(TICK)
    out = c.read()
    assert out.startswith(b'* STATUS "INBOX" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY '), out
    assert b"HIGHESTMODSEQ" not in out
    env.clock.advance(TICK)
    assert c.read() == b""
    # After CONDSTORE is enabled, HIGHESTMODSEQ too.
    c.ok("ENABLE CONDSTORE")
    deliver(env.store, SECRETARY, message("perso 2"))
    env.clock.advance(TICK)
    st = _status(c.read())
    assert st["MESSAGES"] == 2 and st["UIDNEXT"] == 3 and st["HIGHESTMODSEQ"] >= 1


def test_flag_change_elsewhere_is_status_only_with_flagchange_and_condstore(env: ImapEnv) -> None:
    c = env.login()
    other = env.login(SECRETARY2)
    c.ok("ENABLE CONDSTORE")
    c.ok(f"NOTIFY SET (mailboxes {SHARED} (MessageNew MessageExpunge))")
    other.ok(f"SELECT {SHARED}")
    other.ok("UID STORE 1 +FLAGS.SILENT (\\Flagged)")
    env.clock.advance(TICK)
    assert c.read() == b""
    c.ok(f"NOTIFY SET (mailboxes {SHARED} (MessageNew MessageExpunge FlagChange))")
    other.ok("UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    env.clock.advance(TICK)
    st = _status(c.read())
    assert st["MESSAGES"] == 3 and "HIGHESTMODSEQ" in st


def test_change_by_the_same_process_is_told_without_polling(env: ImapEnv) -> None:
    c = env.login()
    other = env.login(SECRETARY2)
    c.ok(f"NOTIFY SET (mailboxes {SHARED} (MessageNew MessageExpunge))")
    other.ok(f"SELECT {SHARED}")
    other.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.ok("EXPUNGE")
    env.clock.advance(TICK)
    assert _status(c.read())["MESSAGES"] == 2


def test_notify_none_stops_the_events(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok(f"NOTIFY SET (selected (MessageNew MessageExpunge)) (mailboxes {SHARED} "
         "(MessageNew MessageExpunge))")
    c.ok("NOTIFY NONE")
    deliver(env.store, CARDIO, message("patient 4"))
    deliver(env.store, SECRETARY, message("perso"))
    env.clock.advance(TICK)
    assert c.read() == b""
    assert env.watcher.folders == [env.store.get_folder(
        env.store.get_mailbox(SECRETARY).id, "INBOX").id]  # only the selected one
    # RFC 3501 still applies at the next command.
    assert c.ok("NOOP") == b"* 1 EXISTS\r\n* 1 RECENT\r\n"


def test_a_withdrawn_grant_stops_notifications_about_that_mailbox(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok(f"NOTIFY SET (mailboxes {SHARED} (MessageNew MessageExpunge)) "
         "(inboxes (MessageNew MessageExpunge))")
    sec = env.store.get_account(SECRETARY)
    env.store.set_grant(sec.id, env.store.get_mailbox(CARDIO).id, "")
    env.clock.advance(TICK)  # the watcher reads the new epoch
    deliver(env.store, CARDIO, message("patient 4"))
    env.clock.advance(TICK)
    assert c.read() == b""
    cardio_inbox = env.store.get_folder(env.store.get_mailbox(CARDIO).id, "INBOX").id
    assert cardio_inbox not in env.watcher.folders
    # The session goes on, and its own mailboxes are still reported.
    assert not c.closed
    c.ok("UNSELECT")
    deliver(env.store, SECRETARY, message("perso"))
    env.clock.advance(TICK)
    assert _status(c.read())["MESSAGES"] == 1


def test_only_mailboxes_one_may_read_are_watched(env: ImapEnv) -> None:
    """A mailbox named but not visible is never watched nor told about."""
    c = env.login(SECRETARY2)
    out = c.ok(f'NOTIFY SET STATUS (mailboxes ("Shared/{SECRETARY}/INBOX" {SHARED}) '
               "(MessageNew MessageExpunge))")
    assert out.count(b"* STATUS") == 1 and CARDIO.encode() in out
    deliver(env.store, SECRETARY, message("perso"))
    env.clock.advance(TICK)
    assert c.read() == b""


def test_the_number_of_watched_mailboxes_is_bounded(env: ImapEnv) -> None:
    box = env.store.get_mailbox(SECRETARY)
    for i in range(MAX_WATCHED):
        env.store.create_folder(box.id, f"F{i}")
    c = env.login()
    _, done = c.tagged("NOTIFY SET (personal (MessageNew MessageExpunge))")
    assert b"NO [NOTIFICATIONOVERFLOW]" in done
    assert env.watcher.folders == []
    # A narrower set is fine.
    c.ok("NOTIFY SET (subtree F1 (MessageNew MessageExpunge))")
    assert len(env.watcher.folders) == 1  # F1 (F10 is not below it)


def test_a_client_that_does_not_read_gets_one_status_when_it_reads_again(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f"NOTIFY SET (mailboxes {SHARED} (MessageNew MessageExpunge))")
    c.proto.pauseProducing()  # the transport's buffer is full
    for i in range(4, 30):
        deliver(env.store, CARDIO, message(f"patient {i}"))
        env.clock.advance(TICK)
    assert c.read() == b""
    c.proto.resumeProducing()
    out = c.read()
    assert out.count(b"* STATUS") == 1 and _status(out)["MESSAGES"] == 29


def test_events_wait_for_the_tagged_reply_of_a_running_command(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("NOTIFY SET (selected (MessageNew MessageExpunge))")
    deliver(env.store, CARDIO, message("patient 4"))
    env.clock.advance(TICK)
    assert c.read() == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    # During IDLE, the events go too.
    assert c.cmd("i IDLE").startswith(b"+ ")
    deliver(env.store, CARDIO, message("patient 5"))
    env.clock.advance(TICK)
    assert c.read() == b"* 5 EXISTS\r\n* 5 RECENT\r\n"
    assert c.cmd("DONE") == b"i OK IDLE terminated\r\n"


def test_a_delivery_started_in_idle_ends_before_the_next_command(env: ImapEnv) -> None:
    """An event delivery that began during IDLE and still waits for the store
    when DONE comes is finished before IDLE's tagged OK, so the next command
    runs alone: its EXISTS/EXPUNGE never come in the middle of the next
    command (an EXPUNGE during a FETCH is what RFC 3501 7.4.1 forbids). The
    watcher's shared query gave that order by chance (the end of IDLE joined
    the delivery's read); `_notify_settled` now gives it whatever the query
    (checked by making the end of IDLE read on its own: this test then
    fails without `_notify_settled`)."""
    from twisted.internet import defer

    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("NOTIFY SET (selected (MessageNew MessageExpunge))")
    runner = env.services.runner
    held: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...], dict[str, Any]]] = []
    inline = runner.run

    def gated(fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if getattr(fn, "__name__", "") == "_pull" and not held:  # the delivery's read
            d: defer.Deferred[Any] = defer.Deferred()
            held.append((d, fn, args, kwargs))
            return d
        return inline(fn, *args, **kwargs)

    def release() -> None:
        d, fn, args, kwargs = held[-1]
        inline(fn, *args, **kwargs).chainDeferred(d)

    assert c.cmd("i IDLE").startswith(b"+ ")
    runner.run = gated  # type: ignore[method-assign]
    deliver(env.store, CARDIO, message("patient 4"))
    env.clock.advance(TICK)  # the delivery starts and waits for the store
    assert len(held) == 1 and c.read() == b""
    out = c.send(b"DONE\r\nf1 FETCH 1:* (FLAGS)\r\n")
    assert out == b""  # neither IDLE's OK nor the FETCH before the delivery is done
    release()
    out = c.read()
    assert out.startswith(b"* 4 EXISTS\r\n* 4 RECENT\r\ni OK IDLE terminated\r\n"), out
    assert out.endswith(b"f1 OK FETCH completed\r\n") and out.count(b"EXISTS") == 1, out


def test_mailbox_name_events_from_another_session(env: ImapEnv) -> None:
    """RFC 5465 5.4: LIST for a created, renamed (OLDNAME) and deleted
    mailbox; not to the session that made the change; not for a mailbox
    outside the filters."""
    watching = env.login()
    doer = env.login()
    watching.ok("NOTIFY SET (personal (MailboxName SubscriptionChange)) "
                "(subtree Other (MessageNew MessageExpunge))")
    doer.ok("NOTIFY SET (personal (MailboxName))")
    assert doer.ok("CREATE Projets") == b""
    env.clock.advance(0)
    assert watching.read() == b'* LIST () "/" "Projets"\r\n'
    doer.ok("RENAME Projets Dossiers")
    assert watching.read() == b'* LIST () "/" "Dossiers" ("OLDNAME" ("Projets"))\r\n'
    doer.ok("SUBSCRIBE Dossiers")
    assert watching.read() == b'* LIST (\\Subscribed) "/" "Dossiers"\r\n'
    doer.ok("UNSUBSCRIBE Dossiers")
    assert watching.read() == b'* LIST () "/" "Dossiers"\r\n'
    doer.ok("DELETE Dossiers")
    assert watching.read() == b'* LIST (\\NonExistent) "/" "Dossiers"\r\n'
    assert doer.read() == b""


def test_subscribed_filter_hears_of_subscribed_mailboxes_only(env: ImapEnv) -> None:
    """RFC 5465 6.2 `subscribed`: the MailboxName events of the mailboxes on
    the subscription list (found by review: the filter never matched a name
    change, only subscription changes). The list is the one the session knew
    when the change came: a RENAME moves the subscription (of inferiors too),
    a DELETE leaves it (RFC 3501 6.3.4)."""
    doer = env.login()
    doer.ok("CREATE Suivi")
    doer.ok("CREATE Suivi/Bilans")
    doer.ok("CREATE Brouillons")
    doer.ok("SUBSCRIBE Suivi")
    doer.ok("SUBSCRIBE Suivi/Bilans")
    watching = env.login()
    watching.ok("NOTIFY SET (subscribed (MailboxName))")
    doer.ok("RENAME Brouillons Notes")  # not subscribed: nothing
    doer.ok("RENAME Suivi Dossiers")
    assert watching.read() == (
        b'* LIST () "/" "Dossiers" ("OLDNAME" ("Suivi"))\r\n')
    doer.ok("RENAME Dossiers/Bilans Dossiers/Resultats")  # its subscription moved along
    assert watching.read() == (
        b'* LIST () "/" "Dossiers/Resultats" ("OLDNAME" ("Dossiers/Bilans"))\r\n')
    doer.ok("SUBSCRIBE Notes")  # heard (as the list), then its deletion is told
    doer.ok("DELETE Notes")
    assert watching.read() == b'* LIST (\\NonExistent) "/" "Notes"\r\n'
    doer.ok("CREATE Autre")
    doer.ok("DELETE Autre")
    assert watching.read() == b""


def test_mailbox_events_of_a_shared_mailbox_follow_the_grant(env: ImapEnv) -> None:
    watching = env.login()
    other = env.login(SECRETARY2)
    watching.ok(f'NOTIFY SET (subtree "Shared/{CARDIO}" (MailboxName))')
    other.ok(f'CREATE "Shared/{CARDIO}/Urgences"')
    assert watching.read() == f'* LIST () "/" "Shared/{CARDIO}/Urgences"\r\n'.encode()
    sec = env.store.get_account(SECRETARY)
    env.store.set_grant(sec.id, env.store.get_mailbox(CARDIO).id, "")
    env.clock.advance(TICK)  # the watcher reads the new epoch
    other.ok(f'DELETE "Shared/{CARDIO}/Urgences"')
    assert watching.read() == b""


def test_a_created_folder_is_then_watched_for_messages(env: ImapEnv) -> None:
    c = env.login()
    other = env.login()
    c.ok("NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))")
    other.ok("CREATE Dossiers")
    assert c.read() == b'* LIST () "/" "Dossiers"\r\n'
    other.ok("APPEND Dossiers {4+}\r\nHi\r\n")
    env.clock.advance(TICK)
    assert _status(c.read())["MESSAGES"] == 1


def test_too_many_unread_mailbox_events_overflow(env: ImapEnv) -> None:
    from imapd.protocol import NOTIFY_NAMES_MAX

    c = env.login()
    other = env.login()
    c.ok("NOTIFY SET (personal (SubscriptionChange))")
    c.proto.pauseProducing()
    for i in range(NOTIFY_NAMES_MAX // 2 + 1):
        other.ok("SUBSCRIBE INBOX")
        other.ok("UNSUBSCRIBE INBOX")
    assert c.read() == b"* OK [NOTIFICATIONOVERFLOW] Notifications stopped\r\n"
    c.proto.resumeProducing()
    other.ok("SUBSCRIBE INBOX")
    assert c.read() == b""  # as after NOTIFY NONE


def test_a_withdrawn_grant_on_the_selected_mailbox_ends_the_session_untold(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("NOTIFY SET (selected (MessageNew MessageExpunge))")
    sec = env.store.get_account(SECRETARY)
    env.store.set_grant(sec.id, env.store.get_mailbox(CARDIO).id, "")
    deliver(env.store, CARDIO, message("patient 4"))
    # As with PostgreSQL's feed, the folder's news may reach the session
    # before the new epoch's listeners run.
    env.watcher.access_epoch = env.store.access_epoch()
    folder = env.store.get_folder(env.store.get_mailbox(CARDIO).id, "INBOX")
    env.watcher.on_folders_changed(frozenset({folder.id}))
    out = c.read()
    assert b"EXISTS" not in out
    assert out.startswith(b"* BYE") and c.closed
