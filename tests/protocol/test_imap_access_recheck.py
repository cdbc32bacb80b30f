"""Access is checked again while a session is open (issue: a revoked grant or
a disabled account must stop reading mail in an open session).

The store's access epoch moves with every withdrawal; a store call on the
selected mailbox compares it in the same call (no content leaves once access
is withdrawn), other commands compare the epoch the folder watcher last read,
and idling sessions are woken by the watcher."""

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
BYE_WITHDRAWN = b"* BYE Access to the selected mailbox was withdrawn\r\n"
BYE_DISABLED = b"* BYE Account disabled\r\n"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    ids = populate(store)
    deliver(store, CARDIO, message("Résultats", "Kaliémie 4,1 mmol/l\r\n"))
    deliver(store, SECRETARY, message("Perso", "own mail\r\n", to=SECRETARY))
    env = make_env(tmp_path, store)
    env.ids = ids  # type: ignore[attr-defined]
    return env


def _revoke(env: ImapEnv, login: str = SECRETARY) -> None:
    account = env.store.get_account(login)
    env.store.set_grant(account.id, env.store.get_mailbox(CARDIO).id, "")


def test_revoked_grant_stops_the_next_fetch_and_ends_the_session(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    assert b"Kali" in c.ok("FETCH 1 BODY.PEEK[]")
    _revoke(env)
    out = c.cmd("f2 FETCH 1 BODY.PEEK[]")
    assert out == BYE_WITHDRAWN  # no content, no tagged reply: the session ends
    assert c.closed
    denied = [e for e in env.audit.events if e.action == "session"]
    assert [(e.actor, e.target, e.result, e.details.get("reason")) for e in denied] == [
        (SECRETARY, CARDIO, "deny", "mailbox-withdrawn")]


@pytest.mark.parametrize("command", [
    "SEARCH BODY Kali", "UID SEARCH TEXT mmol", "STORE 1 +FLAGS (\\Flagged)",
    "COPY 1 INBOX", "EXPUNGE", "FETCH 1 (ENVELOPE)", "FETCH 1 BINARY.PEEK[1]",
])
def test_every_content_command_checks_in_the_same_store_call(env: ImapEnv, command: str) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    _revoke(env)
    out = c.cmd(f"x {command}")
    assert out == BYE_WITHDRAWN and c.closed
    # Nothing was changed on the agent's behalf either.
    cardio = env.store.get_mailbox(CARDIO)
    folder = env.store.get_folder(cardio.id, "INBOX")
    assert [e.flags for e in env.store.index(folder.id)] == [frozenset()]
    own = env.store.get_folder(env.store.get_mailbox(SECRETARY).id, "INBOX")
    assert len(env.store.index(own.id)) == 1


def test_the_mailbox_then_answers_as_missing_and_other_sessions_go_on(env: ImapEnv) -> None:
    shared = env.login()
    shared.ok(f"SELECT {SHARED}")
    own = env.login()
    own.ok("SELECT INBOX")
    other_agent = env.login(SECRETARY2)
    other_agent.ok(f"SELECT {SHARED}")
    _revoke(env)
    env.clock.advance(1)  # the watcher reads the new epoch
    assert shared.read() == BYE_WITHDRAWN and shared.closed
    # Her session on her own box goes on; the functional box is gone for her.
    assert b"Perso" in own.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert CARDIO.encode() not in own.ok('LIST "" "*"')
    _, done = own.tagged(f"SELECT {SHARED}")
    assert done.endswith(b"NO [NONEXISTENT] No such mailbox\r\n")
    _, done = own.tagged(f"STATUS {SHARED} (MESSAGES)")
    assert done.endswith(b"NO [NONEXISTENT] No such mailbox\r\n")
    # The other secretary keeps her grant.
    assert b"Kali" in other_agent.ok("FETCH 1 BODY.PEEK[]")


def test_a_disabled_account_is_ended_at_its_next_command(env: ImapEnv) -> None:
    c = env.login()
    c.ok("SELECT INBOX")
    env.store.set_account_active(SECRETARY, False)
    assert c.cmd("a FETCH 1 BODY.PEEK[]") == BYE_DISABLED and c.closed
    unselected = env.login(SECRETARY2)
    env.store.set_account_active(SECRETARY2, False)
    env.clock.advance(1)
    assert unselected.read() == BYE_DISABLED and unselected.closed


def test_an_idling_session_of_a_disabled_account_is_ended(env: ImapEnv) -> None:
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    out = c.cmd("i IDLE")
    assert out.startswith(b"+ ")
    env.store.set_account_active(SECRETARY, False)
    env.clock.advance(0.3)  # one watcher interval
    assert c.read() == BYE_DISABLED and c.closed
    events = [e for e in env.audit.events if e.action == "session"]
    assert events[-1].details.get("reason") == "account-disabled"


def test_a_grant_that_ends_by_itself_ends_the_session_at_its_end(env: ImapEnv) -> None:
    account = env.store.get_account(SECRETARY)
    cardio = env.store.get_mailbox(CARDIO)
    now = env.policy.now()
    env.store.set_grant(account.id, cardio.id, "lrswipkxte", valid_until=now + timedelta(minutes=10))
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    assert b"Kali" in c.ok("FETCH 1 BODY.PEEK[]")
    # Ten minutes later, without any write to the store.
    env.policy._clock = lambda: now + timedelta(minutes=10, seconds=1)  # type: ignore[method-assign]
    env.clock.advance(601)
    assert c.read() == BYE_WITHDRAWN and c.closed


def test_nothing_changes_nothing_is_rechecked(env: ImapEnv) -> None:
    """The check costs no store call per command while the epoch stays."""
    c = env.login()
    c.ok(f"SELECT {SHARED}")
    calls: list[str] = []
    session_access = env.policy.session_access

    def counting(*args: Any) -> Any:
        calls.append("recheck")
        return session_access(*args)

    env.policy.session_access = counting  # type: ignore[method-assign]
    for _ in range(5):
        c.ok("FETCH 1 BODY.PEEK[]")
        c.ok("NOOP")
    env.clock.advance(1)
    assert calls == []
    # A change elsewhere (another agent's grant) moves the epoch: one recheck, access kept.
    env.store.set_grant(env.store.get_account(SECRETARY2).id, env.store.get_mailbox(CARDIO).id, "lr")
    assert b"Kali" in c.ok("FETCH 1 BODY.PEEK[]")
    assert calls == ["recheck"]
