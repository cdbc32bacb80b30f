"""Found by review: an updating search (RFC 5267 CONTEXT) swallowed the end
of the session's access, and NOTIFY kept telling of a mailbox whose grant
had ended by itself. Both must behave as a session without them: the
session ends (BYE) when its selected mailbox is withdrawn, and nothing is
said of a mailbox the user may no longer read."""

from __future__ import annotations

from datetime import timedelta
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

SHARED = f'"Shared/{CARDIO}/INBOX"'
TICK = 0.3
BYE_WITHDRAWN = b"* BYE Access to the selected mailbox was withdrawn\r\n"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    for i in range(1, 4):
        deliver(store, CARDIO, message(f"patient {i}"))
    return make_env(tmp_path, store)


@pytest.mark.parametrize("updating", [False, True])
def test_a_revoked_grant_ends_the_session_with_or_without_an_updating_search(
    env: ImapEnv, updating: bool,
) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    if updating:
        c.ok("SEARCH RETURN (UPDATE) SUBJECT patient")
    sec = env.store.get_account(SECRETARY)
    env.store.set_grant(sec.id, env.store.get_mailbox(CARDIO).id, "")
    deliver(env.store, CARDIO, message("patient 4"))
    # the feed tells of the delivery before the watcher has polled the epoch
    folder = env.store.get_folder(env.store.get_mailbox(CARDIO).id, "INBOX")
    env.watcher.on_folders_changed(frozenset({folder.id}))
    out = c.cmd("n1 NOOP")
    env.clock.advance(TICK)
    env.clock.advance(TICK)
    out += c.read()
    assert b"ADDTO" not in out and b"patient 4" not in out, out
    assert BYE_WITHDRAWN in out and c.closed, out


def test_notify_says_nothing_of_a_mailbox_whose_grant_ended_by_itself(env: ImapEnv) -> None:
    account = env.store.get_account(SECRETARY)
    cardio = env.store.get_mailbox(CARDIO)
    now = env.policy.now()
    env.store.set_grant(account.id, cardio.id, "lrswipkxte",
                        valid_until=now + timedelta(minutes=10))
    c = env.login()
    c.ok("SELECT INBOX")
    c.ok(f"NOTIFY SET (mailboxes {SHARED} (MessageNew MessageExpunge)) "
         f'(subtree "Shared/{CARDIO}" (MailboxName SubscriptionChange))')
    env.policy._clock = lambda: now + timedelta(minutes=11)  # type: ignore[attr-defined]
    env.clock.advance(660)
    _, done = c.tagged(f"STATUS {SHARED} (MESSAGES)")
    assert b" NO " in done, done  # the grant has ended
    deliver(env.store, CARDIO, message("patient 4"))
    env.clock.advance(TICK)
    env.clock.advance(TICK)
    out = c.read()
    other = env.login(SECRETARY2)
    other.ok(f'CREATE "Shared/{CARDIO}/Psychiatrie Dupont"')
    out += c.read()
    assert out == b"", out


def test_folders_made_in_a_mailbox_one_cannot_see_cost_a_notify_session_nothing(
    env: ImapEnv, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by review: any CREATE/DELETE in the process made every NOTIFY
    # session list all of its mailboxes again.
    import imapd.commands.notify as notify_mod

    watchers = [env.login(SECRETARY2) for _ in range(5)]
    for w in watchers:
        w.ok("NOTIFY SET (personal (MailboxName MessageNew MessageExpunge))")
    calls: list[int] = []
    real = notify_mod.candidates
    monkeypatch.setattr(notify_mod, "candidates", lambda *a: (calls.append(1), real(*a))[1])
    doer = env.login(SECRETARY)  # another user, in his own mailbox
    for i in range(5):
        doer.ok(f"CREATE Private{i}")
        doer.ok(f"DELETE Private{i}")
    env.clock.advance(0)
    assert all(w.read() == b"" for w in watchers)
    assert calls == []


def test_a_grant_ended_by_time_tells_no_folder_name(env: ImapEnv) -> None:
    account = env.store.get_account(SECRETARY)
    cardio = env.store.get_mailbox(CARDIO)
    now = env.policy.now()
    env.store.set_grant(account.id, cardio.id, "lrswipkxte",
                        valid_until=now + timedelta(minutes=10))
    c = env.login()
    c.ok(f'NOTIFY SET (subtree "Shared/{CARDIO}" (MailboxName))')
    env.policy._clock = lambda: now + timedelta(minutes=11)  # type: ignore[attr-defined]
    env.clock.advance(660)
    other = env.login(SECRETARY2)
    other.ok(f'CREATE "Shared/{CARDIO}/Psychiatrie Dupont"')
    env.clock.advance(TICK)
    assert c.read() == b""


def test_idle_with_notify_on_the_selected_mailbox_updates_the_searches(env: ImapEnv) -> None:
    # Found by review: NOTIFY's path told EXISTS during IDLE, never ADDTO.
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    c.ok("NOTIFY SET (selected (MessageNew MessageExpunge))")
    c.ok("SEARCH RETURN (UPDATE) SUBJECT patient")
    assert c.cmd("i IDLE").startswith(b"+ ")
    deliver(env.store, CARDIO, message("patient 4"))
    env.clock.advance(TICK)
    out = c.read()
    assert b"* 4 EXISTS\r\n" in out and b'ADDTO (0 4)' in out, out


def test_searches_that_must_be_redone_whole_are_not_kept_on_a_large_folder(
    env: ImapEnv, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by review: a key on sequence numbers (or a SORT) is computed
    # again over the whole folder at every change anyone makes.
    import imapd.contexts as contexts

    monkeypatch.setattr(contexts, "WHOLE_UPDATE_MAX", 2)  # the folder has 3
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    out = c.ok("SEARCH RETURN (UPDATE ALL) 1:* SUBJECT patient")
    assert b"* NO [NOUPDATE \"" in out and b"\"] Folder too large" in out
    assert b") ALL 1:3\r\n" in out  # the rest is answered
    out = c.ok("SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL")
    assert b"NOUPDATE" in out
    out = c.ok("SEARCH RETURN (UPDATE) SUBJECT patient")  # only each message: kept
    assert b"NOUPDATE" not in out
    deliver(env.store, CARDIO, message("patient 4"))
    env.clock.advance(TICK)
    assert b"ADDTO (0 4)" in c.cmd("n NOOP")
