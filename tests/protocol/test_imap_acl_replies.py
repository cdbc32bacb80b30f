"""RFC 4314 replies after the ACL decisions moved into `Policy`: the imapd
handlers only map the policy's reasons, so every refusal keeps its reply,
word for word, and every decision is in the audit log under the actor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imap_transcript import CARDIO, SECRETARY, SECRETARY2, ImapEnv, add_user, make_env, populate

from storage.interface import MailboxType


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    add_user(store, "autre@hopital.test")
    return make_env(tmp_path, store)


@pytest.mark.parametrize(("command", "reply"), [
    ("SETACL INBOX nobody@hopital.test lr", b"NO [CANNOT] Unknown identifier\r\n"),
    ("DELETEACL INBOX nobody@hopital.test", b"NO [CANNOT] Unknown identifier\r\n"),
    (f"SETACL INBOX {SECRETARY} lr", b"NO [CANNOT] The owner's rights cannot be changed\r\n"),
    ("SETACL INBOX autre@hopital.test lrz", b"BAD Unknown right\r\n"),
    ("SETACL INBOX autre@hopital.test +z", b"BAD Unknown right\r\n"),
    ("SETACL INBOX autre@hopital.test -z", b"BAD Unknown right\r\n"),
    ("SETACL Nope autre@hopital.test lr", b"NO [NONEXISTENT] No such mailbox\r\n"),
    ("GETACL Nope", b"NO [NONEXISTENT] No such mailbox\r\n"),
    ("MYRIGHTS Nope", b"NO [NONEXISTENT] No such mailbox\r\n"),
    ("LISTRIGHTS Nope autre@hopital.test", b"NO [NONEXISTENT] No such mailbox\r\n"),
    # The agent holds "l" on the functional box but not "a": permission error.
    (f'SETACL "Shared/{CARDIO}/INBOX" autre@hopital.test lr', b"NO [NOPERM] Permission denied\r\n"),
    (f'DELETEACL "Shared/{CARDIO}/INBOX" {SECRETARY2}', b"NO [NOPERM] Permission denied\r\n"),
    (f'LISTRIGHTS "Shared/{CARDIO}/INBOX" {SECRETARY2}', b"NO [NOPERM] Permission denied\r\n"),
    (f'GETACL "Shared/{CARDIO}/Nope"', b"NO [NOPERM] Permission denied\r\n"),
])
def test_acl_refusals(env: ImapEnv, command: str, reply: bytes) -> None:
    c = env.login()
    untagged, done = c.tagged(command)
    assert untagged == b""
    assert done.split(b" ", 1)[1] == reply, command
    assert b"autre" not in c.ok("GETACL INBOX")


def test_a_visible_box_without_l_or_r_answers_like_a_missing_one(env: ImapEnv,
                                                                  store: Any) -> None:
    """MYRIGHTS needs "l" or "r"; without "l" every ACL command is NONEXISTENT."""
    box = store.add_mailbox("courrier@hopital.test", MailboxType.ORG)
    store.set_grant(store.get_account(SECRETARY).id, box.id, "i")
    c = env.login()
    for command in ('MYRIGHTS "Shared/courrier@hopital.test/INBOX"',
                    'GETACL "Shared/courrier@hopital.test/INBOX"',
                    'LISTRIGHTS "Shared/courrier@hopital.test/INBOX" x',
                    'SETACL "Shared/courrier@hopital.test/INBOX" autre@hopital.test lr'):
        _, done = c.tagged(command)
        assert done.split(b" ", 1)[1] == b"NO [NONEXISTENT] No such mailbox\r\n", command


def test_acl_decisions_are_audited_under_the_actor(env: ImapEnv) -> None:
    c = env.login()
    c.ok("MYRIGHTS INBOX")
    c.ok("GETACL INBOX")
    c.ok("LISTRIGHTS INBOX autre@hopital.test")
    c.ok("SETACL INBOX autre@hopital.test lr")
    c.ok("DELETEACL INBOX autre@hopital.test")
    events = [(e.actor, e.action, e.target, e.result) for e in env.audit.events
              if e.action in ("myrights", "getacl", "listrights", "setacl")]
    assert events == [
        (SECRETARY, "myrights", f"{SECRETARY}/INBOX", "allow"),
        (SECRETARY, "getacl", f"{SECRETARY}/INBOX", "allow"),
        (SECRETARY, "listrights", f"{SECRETARY}/INBOX", "allow"),
        (SECRETARY, "setacl", f"{SECRETARY}/INBOX", "allow"),
        (SECRETARY, "setacl", f"{SECRETARY}/INBOX", "ok"),  # the folder's grant
        (SECRETARY, "setacl", f"{SECRETARY}/INBOX", "allow"),
        (SECRETARY, "setacl", f"{SECRETARY}/INBOX", "ok"),
    ]


def test_getquota_is_decided_and_audited_by_the_policy(env: ImapEnv, store: Any) -> None:
    """GETQUOTA on a shared root: allowed with "r" (recorded under the agent),
    and a root the agent may not read answers like one that does not exist."""
    cardio = store.get_mailbox(CARDIO)
    store.set_quota(cardio.id, 100 * 1024)
    c = env.login()
    assert c.ok(f'GETQUOTA "{CARDIO}"') == f'* QUOTA "{CARDIO}" (STORAGE 0 100)\r\n'.encode()
    store.set_grant(store.get_account(SECRETARY).id, cardio.id, "l")
    _, done = c.tagged(f'GETQUOTA "{CARDIO}"')
    assert done.split(b" ", 1)[1] == b"NO [NONEXISTENT] No such quota root\r\n"
    events = [(e.actor, e.action, e.target, e.result) for e in env.audit.events
              if e.action == "getquota"]
    assert events == [(SECRETARY, "getquota", f"{CARDIO}/", "allow"),
                      (SECRETARY, "getquota", f"{CARDIO}/", "deny")]
