"""Several sessions on one functional mailbox (cardiologie@hopital.test):
each keeps its own sequence numbers; changes made by the others are announced
at the moments RFC 3501 7.4.1 allows, and never make a command act on the
wrong message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    SECRETARY2,
    ImapEnv,
    deliver,
    lines,
    make_env,
    message,
    populate,
)

BOX = f"Shared/{CARDIO}/INBOX"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    for i in range(1, 5):
        deliver(store, CARDIO, message(f"patient {i}"))
    return make_env(tmp_path, store)


def test_expunge_by_one_is_learnt_by_the_other_at_an_allowed_moment(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    out = a.ok("EXPUNGE")
    assert out == b"* 2 EXPUNGE\r\n"

    # B's FETCH (non-UID) must not see EXPUNGE; its numbers stay as they were.
    out = b.ok("FETCH 2:3 (UID)")
    assert b"EXPUNGE" not in out
    assert b"* 2 FETCH (UID 2)" in out and b"* 3 FETCH (UID 3)" in out
    # A STORE by sequence number still means the message B knows as 3 (UID 3),
    # and the flag update for the expunged one is not sent; no EXPUNGE either.
    out = b.ok("STORE 3 +FLAGS (\\Flagged)")
    assert b"* 3 FETCH (FLAGS (\\Flagged))" in out
    assert b"EXPUNGE" not in out
    # SEARCH: still no EXPUNGE, numbers unchanged.
    out = b.ok("SEARCH FLAGGED")
    assert out == b"* SEARCH 3\r\n"
    # NOOP is an allowed moment.
    out = b.ok("NOOP")
    assert out == b"* 2 EXPUNGE\r\n"
    out = b.ok("FETCH 2 (UID FLAGS)")
    assert out == b"* 2 FETCH (UID 3 FLAGS (\\Flagged))\r\n"
    # A learns of B's flag change (no EXPUNGE repeated).
    out = a.ok("NOOP")
    assert out == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"  # A claimed \\Recent


def test_uid_fetch_may_report_expunge(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    a.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.ok("UID EXPUNGE 1")
    out = b.ok("UID FETCH 1:* (FLAGS)")
    assert out.endswith(b"* 1 EXPUNGE\r\n")


def test_new_mail_announced_to_other_session(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    a.ok(f'SELECT "{BOX}"')
    deliver(env.store, CARDIO, message("patient 5"))
    out = a.ok("NOOP")
    assert lines(out) == [b"* 5 EXISTS", b"* 5 RECENT"]  # 4 claimed at SELECT + 1


def test_fetch_of_message_expunged_elsewhere(env: ImapEnv) -> None:
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    untagged, done = b.tagged("FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: patient 2" in untagged
    assert b"* 1 FETCH" not in untagged
    assert done.startswith(b"t1 NO [EXPUNGEISSUED]") or b"NO [EXPUNGEISSUED]" in done


def test_reading_a_shared_mailbox_is_audited_to_the_agent(env: ImapEnv) -> None:
    b = env.login(SECRETARY2)
    b.ok(f'SELECT "{BOX}"')
    b.ok("FETCH 1:2 (BODY.PEEK[])")
    events = [e for e in env.audit.events if e.action == "fetch"]
    assert len(events) == 1
    assert events[0].actor == SECRETARY2 and events[0].target == f"{CARDIO}/INBOX"
    assert events[0].details == {"messages": 2, "uids": "1:2"}


def test_one_query_for_many_idle_sessions(env: ImapEnv, monkeypatch: Any) -> None:
    clients = [env.login(SECRETARY if i % 2 else SECRETARY2) for i in range(20)]
    for c in clients:
        c.ok(f'SELECT "{BOX}"')
        assert c.cmd("i IDLE") == b"+ idling\r\n"
    calls = []
    real = env.store.changes_since

    def counting(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(env.store, "changes_since", counting)
    deliver(env.store, CARDIO, message("patient 5"))
    env.clock.advance(0.3)
    outs = [c.read() for c in clients]
    assert all(b"* 5 EXISTS\r\n" in o for o in outs)
    assert sum(b" RECENT\r\n" in o for o in outs) == 1  # one session claims \\Recent
    assert len(calls) == 1


def test_fetch_waits_for_a_slow_client(env: ImapEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from imapd.commands import fetch

    # A batch of bodies is at most BODY_BATCH_BYTES: at 1, one body a batch,
    # so the wait between batches shows after the first message.
    monkeypatch.setattr(fetch, "BODY_BATCH_BYTES", 1)
    b = env.login(SECRETARY2)
    b.ok(f'SELECT "{BOX}"')
    b.proto.pauseProducing()  # the transport's buffer is full
    # No command starts while the client reads nothing of what we send.
    assert b.cmd("f FETCH 1:4 (BODY.PEEK[])") == b""
    # Once it reads again, the FETCH starts; its first message fills the buffer again.
    write = b.transport.write

    def write_then_full(data: bytes) -> None:
        write(data)
        if b" FETCH (" in data and b.proto._paused is None:
            b.transport.write = write  # type: ignore[method-assign]
            b.proto.pauseProducing()

    b.transport.write = write_then_full  # type: ignore[method-assign]
    b.proto.resumeProducing()
    out = b.read()
    assert out.count(b" FETCH (") == 1 and b"f OK" not in out
    b.proto.resumeProducing()
    out = b.read()
    assert out.count(b" FETCH (") == 3 and out.endswith(b"f OK FETCH completed\r\n")
