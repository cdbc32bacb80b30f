"""Which store calls of a session run on the reactor thread (`run_quick`,
inside the store's `no_waiting`, as `serve` runs them on SQLite) and which
go to a thread: reads of a folder the session saw small, a short folder list, a
few messages, a small APPEND's parsing; never a write (the \\Recent claim of
SELECT goes to the writer lane), nor the index of a large folder, nor a
large body. The answers are the same either way."""

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
    make_env,
    message,
    populate,
)

from imapd.commands import listing as listing_module
from imapd.commands import mailbox as mailbox_module
from storage.interface import NO_WAIT_BODY_BYTES
from storage.threaded import InlineRunner, nested_scopes

BOX = f"Shared/{CARDIO}/INBOX"  # the functional mailbox as its agents see it


class RecordingRunner(InlineRunner):
    """Records the name of each call: ("quick" | "thread" | "write", name);
    a quick call that reached WouldWait is recorded again as "retry"."""

    def __init__(self, quick: Any) -> None:
        super().__init__(quick)
        self.log: list[tuple[str, str]] = []

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("thread", _name(fn, args)))
        return super().run(fn, *args, **kwargs)

    def run_quick(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        retries = self.quick_retries
        self.log.append(("quick", _name(fn, args)))
        d = super().run_quick(fn, *args, **kwargs)
        if self.quick_retries != retries:
            self.log.append(("retry", _name(fn, args)))
        return d

    def run_write(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("write", _name(fn, args)))
        return super().run_write(fn, *args, **kwargs)

    def take(self) -> list[tuple[str, str]]:
        out, self.log = self.log, []
        return out


def _name(fn: Any, args: tuple[Any, ...]) -> str:
    name = getattr(fn, "__name__", "?")
    if name == "checked":  # run_selected's wrapper: the call it carries is not visible
        return "selected"
    return str(name)


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    for i in range(1, 4):
        deliver(store, CARDIO, message(f"patient {i}"))
    e = make_env(tmp_path, store)
    e.services.runner = e.runner = RecordingRunner(
        nested_scopes(e.audit.held, store.no_waiting))
    return e


def kinds(log: list[tuple[str, str]], name: str) -> list[str]:
    return [k for k, n in log if n == name]


def test_a_long_sessions_round_reads_on_the_reactor_thread_and_writes_on_the_lane(
        env: ImapEnv) -> None:
    runner: RecordingRunner = env.services.runner  # type: ignore[assignment]
    c = env.login(SECRETARY)
    c.ok(f'SELECT "{BOX}"')  # never seen: its index is read on a thread
    assert kinds(runner.take(), "_open") == ["thread"]
    c.ok("CLOSE")
    runner.take()
    first = c.ok('LIST "" "*"')  # never listed: on a thread
    listing = c.ok('LIST "" "*"')
    assert BOX.encode() in listing and listing == first
    assert kinds(runner.take(), "_collect") == ["thread", "quick"]
    st = c.ok(f'STATUS "{BOX}" (MESSAGES UIDNEXT UNSEEN)')
    assert b"MESSAGES 3" in st
    assert kinds(runner.take(), "_status") == ["quick"]  # SELECT saw 3 messages
    sel = c.ok(f'SELECT "{BOX}"')
    assert b"* 3 EXISTS" in sel and b"* 0 RECENT" in sel  # claimed by the first SELECT
    assert kinds(runner.take(), "_open") == ["quick"]
    headers = c.ok("FETCH 1:3 (UID BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert all(f"Subject: patient {i}".encode() in headers for i in (1, 2, 3))
    body = c.ok("FETCH 2 (BODY.PEEK[])")
    assert b"patient 2" in body
    assert runner.take() == [("quick", "selected"), ("quick", "selected")]
    c.ok("STORE 2 +FLAGS (\\Flagged)")
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    log = runner.take()
    assert [k for k, _ in log if k in ("write", "retry")] == ["write", "write", "write"]
    appended = c.send(b'a APPEND "' + BOX.encode() + b'" {' + str(len(message("x"))).encode()
                      + b"+}\r\n" + message("x") + b"\r\n")
    assert b"a OK [APPENDUID" in appended
    log = runner.take()
    assert kinds(log, "_prepare") == ["quick"] and ("write", "append_many") in log
    assert runner.quick_retries == 0  # no quick call reached a write


def test_select_claims_new_recent_messages_on_the_writer_lane(env: ImapEnv) -> None:
    runner: RecordingRunner = env.services.runner  # type: ignore[assignment]
    a, b = env.login(SECRETARY), env.login(SECRETARY2)
    assert b"* 3 RECENT" in a.ok(f'SELECT "{BOX}"')
    a.ok("CLOSE")
    deliver(env.store, CARDIO, message("patient 4"))
    runner.take()
    sel = a.ok(f'SELECT "{BOX}"')
    assert b"* 4 EXISTS" in sel and b"* 1 RECENT" in sel
    log = runner.take()
    assert ("quick", "_open") in log and ("write", "claim_recent") in log
    assert ("retry", "_open") not in log
    assert b"* 0 RECENT" in b.ok(f'SELECT "{BOX}"')  # claimed once, by one session
    a.ok("CLOSE")
    a.ok(f'EXAMINE "{BOX}"')  # EXAMINE claims nothing
    assert ("write", "claim_recent") not in runner.take()


def test_a_large_body_and_a_large_folder_are_read_on_a_thread(
        env: ImapEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    runner: RecordingRunner = env.services.runner  # type: ignore[assignment]
    big = "x" * (NO_WAIT_BODY_BYTES + 100) + "\r\n"
    deliver(env.store, CARDIO, message("scanner", big))  # UID 4
    c = env.login(SECRETARY)
    c.ok(f'SELECT "{BOX}"')
    runner.take()
    out = c.ok("UID FETCH 4 (BODY.PEEK[])")
    assert big.encode() in out
    # Tried here, stopped before the body (WouldWait), read on a thread.
    assert runner.take() == [("quick", "selected"), ("thread", "selected"),
                             ("retry", "selected")]
    # A folder this session saw with more messages than QUICK_SELECT_MESSAGES.
    monkeypatch.setattr(mailbox_module, "QUICK_SELECT_MESSAGES", 3)
    monkeypatch.setattr(mailbox_module, "QUICK_STATUS_MESSAGES", 3)
    c.ok("CLOSE")
    c.ok(f'SELECT "{BOX}"')
    c.ok(f'STATUS "{BOX}" (MESSAGES)')
    log = runner.take()
    assert kinds(log, "_open") == ["thread"] and kinds(log, "_status") == ["thread"]
    # A session whose last LIST had more names than QUICK_LIST_ENTRIES.
    monkeypatch.setattr(listing_module, "QUICK_LIST_ENTRIES", 3)
    c.ok('LIST "" "*"')
    c.ok('LIST "" "*"')
    c.ok('LSUB "" "*"')
    assert kinds(runner.take(), "_collect") == ["thread", "thread", "thread"]
    # DELETED reads the whole index: never on the reactor thread.
    monkeypatch.setattr(mailbox_module, "QUICK_STATUS_MESSAGES", 5000)
    c.ok(f'STATUS "{BOX}" (MESSAGES DELETED)')
    assert kinds(runner.take(), "_status") == ["thread"]


def test_a_folder_grown_since_the_session_saw_it_is_read_on_a_thread_its_decision_audited_once(
        env: ImapEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # The session saw 3 messages; the store finds more than NO_WAIT_ROWS
    # (another session filled the folder): the quick read stops before the
    # scan, runs again on a thread, and its access decision is recorded once.
    from storage import store as store_module

    runner: RecordingRunner = env.services.runner  # type: ignore[assignment]
    c = env.login(SECRETARY)
    c.ok(f'SELECT "{BOX}"')
    c.ok("CLOSE")
    monkeypatch.setattr(store_module, "NO_WAIT_ROWS", 2)
    runner.take()
    env.audit.events.clear()
    sel = c.ok(f'SELECT "{BOX}"')
    assert b"* 3 EXISTS" in sel
    log = runner.take()
    assert log[:3] == [("quick", "_open"), ("thread", "_open"), ("retry", "_open")]
    selects = [e for e in env.audit.events if e.action == "select"]
    assert [(e.result, e.actor) for e in selects] == [("allow", SECRETARY)]
