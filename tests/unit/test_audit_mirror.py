"""policy.audit.FileAuditSink's batched store mirror: the JSON-lines file is
written per event; the store copy goes in batches (one transaction for many
events) from a background thread, flushed on demand and at close, and a store
failure never reaches the caller."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from policy.audit import FileAuditSink
from storage.interface import AuditEvent, StoreUnavailable

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class CountingStore:
    """The real store, counting the record_audit transactions it is asked for."""

    def __init__(self, store: Any, fail: bool = False) -> None:
        self._store = store
        self.calls: list[int] = []
        self.fail = fail

    def record_audit(self, events: Sequence[AuditEvent]) -> None:
        self.calls.append(len(events))
        if self.fail:
            raise StoreUnavailable("database unavailable")
        self._store.record_audit(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_mirror_is_batched_with_a_file(tmp_path: Path, store: Any) -> None:
    counting = CountingStore(store)
    sink = FileAuditSink(tmp_path / "audit.log", counting, clock=lambda: T0, interval=60)
    for i in range(50):
        sink.record(f"peer{i}", "rcpt", f"u{i}@hopital.test", "allow", n=i)
    # The file has every event at once, in order.
    assert [x["n"] for x in lines(tmp_path / "audit.log")] == list(range(50))
    # The store copy waits for the batch (the interval is long here) ...
    assert store.audit_events() == []
    assert sink.flush(timeout=10)
    # ... and then all 50 arrive in one transaction.
    assert counting.calls == [50]
    stored = store.audit_events()
    assert [e.details["n"] for e in stored] == list(range(50))
    assert stored[3] == AuditEvent(T0, "peer3", "rcpt", "u3@hopital.test", "allow", {"n": 3})
    sink.close()


def test_batches_are_bounded_and_close_flushes(tmp_path: Path, store: Any) -> None:
    counting = CountingStore(store)
    sink = FileAuditSink(tmp_path / "audit.log", counting, interval=60, max_batch=20)
    for i in range(45):
        sink.record("a", "mail", "x", "allow", n=i)
    sink.close()
    assert sum(counting.calls) == 45 and max(counting.calls) <= 20
    assert len(store.audit_events()) == 45
    # After close, recording still reaches the store (synchronously).
    sink.record("late", "mail", "x", "allow")
    assert store.audit_events(actor="late") != []


def test_the_writer_sends_on_its_own_timer(tmp_path: Path, store: Any) -> None:
    sink = FileAuditSink(tmp_path / "audit.log", store, interval=0.01)
    sink.record("a", "login", "imap", "allow")
    import time

    deadline = time.monotonic() + 10
    while not store.audit_events() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling with a deadline: the writer runs by itself
    assert [e.actor for e in store.audit_events()] == ["a"]
    sink.close()


def test_store_failure_is_logged_never_raised(
    tmp_path: Path, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    failing = CountingStore(store, fail=True)
    sink = FileAuditSink(tmp_path / "audit.log", failing, interval=60)
    with caplog.at_level(logging.WARNING, logger="policy.audit"):
        for i in range(3):
            sink.record("a", "rcpt", "x", "deny", n=i)  # no exception here
        assert sink.flush(timeout=10)
    assert failing.calls == [3]
    assert "not mirrored" in caplog.text
    assert len(lines(tmp_path / "audit.log")) == 3  # the file is authoritative
    sink.close()
    # Without a file the store copy is the only record: written at once, and
    # a failure is still only logged.
    direct = FileAuditSink(None, failing)
    direct.record("b", "rcpt", "x", "deny")
    assert failing.calls == [3, 1]


def test_a_full_queue_keeps_events_in_the_file_only(tmp_path: Path, store: Any) -> None:
    counting = CountingStore(store)
    sink = FileAuditSink(tmp_path / "audit.log", counting, interval=60, queue_size=5,
                         max_batch=100)
    for i in range(8):
        sink.record("a", "rcpt", "x", "allow", n=i)
    assert sink.dropped == 3
    sink.close()
    assert [e.details["n"] for e in store.audit_events()] == [0, 1, 2, 3, 4]
    assert len(lines(tmp_path / "audit.log")) == 8


def test_without_a_file_the_mirror_is_synchronous(store: Any) -> None:
    sink = FileAuditSink(None, store)
    sink.record("a", "login", "imap", "allow")
    assert [e.actor for e in store.audit_events()] == ["a"]
    sink.close()


def test_events_recorded_while_a_batch_is_written_wait_for_the_next_turn(
    tmp_path: Path, store: Any
) -> None:
    # Under load, events keep arriving while a batch waits for the write lock
    # and commits. They must wait for the writer's next turn (its interval),
    # not be written at once in batches of one or two: each batch is a
    # write-lock turn and an fsync taken from the protocol's own writes.
    sink: FileAuditSink

    class BusyStore(CountingStore):
        def record_audit(self, events: Sequence[AuditEvent]) -> None:
            super().record_audit(events)
            if len(self.calls) <= 5:
                sink.record("late", "select", "x", "allow", n=len(self.calls))

    counting = BusyStore(store)
    sink = FileAuditSink(tmp_path / "audit.log", counting, interval=60)
    for i in range(5):
        sink.record("a", "select", "x", "allow", n=i)
    assert sink.flush(timeout=10)
    # One transaction for the five recorded before the flush; the one that
    # arrived meanwhile is still queued (the interval is long here).
    assert counting.calls == [5]
    assert [e.actor for e in store.audit_events()] == ["a"] * 5
    assert sink.flush(timeout=10)
    assert counting.calls == [5, 1]
    sink.close()  # writes everything, those recorded meanwhile included
    assert sum(counting.calls) == len(store.audit_events()) == 5 + 5
    assert len(lines(tmp_path / "audit.log")) == 5 + 5
