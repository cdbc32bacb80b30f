"""policy.audit: the audit file follows log rotation (reopen on SIGHUP), and
events recorded from the reactor thread never wait for the database."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import defer

from policy.audit import FileAuditSink, event_record, record_nonblocking
from storage.interface import AuditEvent

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def actions(path: Path) -> list[str]:
    return [json.loads(x)["action"] for x in path.read_text().splitlines()]


def test_reopen_after_rename_writes_a_new_file(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    sink = FileAuditSink(log, None, clock=lambda: T0)
    sink.record("a", "before", "t", "ok")
    log.rename(tmp_path / "audit.log.1")
    sink.record("a", "renamed", "t", "ok")  # still the old file, as logrotate expects
    assert sink.reopen()
    sink.record("a", "after", "t", "ok")
    sink.close()
    assert actions(tmp_path / "audit.log.1") == ["before", "renamed"]
    assert actions(log) == ["after"]
    assert oct(log.stat().st_mode & 0o777) == oct(0o640)


def test_reopen_without_rotation_keeps_appending(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    sink = FileAuditSink(log, None, clock=lambda: T0)
    sink.record("a", "one", "t", "ok")
    assert sink.reopen()
    sink.record("a", "two", "t", "ok")
    sink.close()
    assert actions(log) == ["one", "two"]


def test_reopen_while_other_threads_write_loses_no_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    sink = FileAuditSink(log, None, clock=lambda: T0)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        n = 0
        while not stop.is_set() or n < 200:
            sink.record("w", "x", "t", "ok", n=n)
            n += 1
        written.append(n)

    t = threading.Thread(target=writer)
    t.start()
    for i in range(20):
        os.rename(log, tmp_path / f"audit.log.{i}")
        assert sink.reopen()
    stop.set()
    t.join(30)
    sink.close()
    numbers = []
    for path in tmp_path.glob("audit.log*"):
        numbers += [json.loads(x)["n"] for x in path.read_text().splitlines()]
    assert sorted(numbers) == list(range(written[0]))  # every line whole, each once


def test_reopen_failure_keeps_the_old_file(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "audit.log"
    sink = FileAuditSink(log, None, clock=lambda: T0)
    log.rename(tmp_path / "moved.log")
    (tmp_path / "sub").rmdir()
    (tmp_path / "sub").write_text("a file where the directory was")
    assert not sink.reopen()
    sink.record("a", "still", "t", "ok")
    sink.close()
    assert actions(tmp_path / "moved.log") == ["still"]
    assert not sink.reopen()  # closed, no file: nothing to reopen
    assert not FileAuditSink(None, None).reopen()


def test_event_record_keeps_the_five_fields_first() -> None:
    event = AuditEvent(T0, "a", "store", "b@h.test/INBOX", "ok", {"uids": "1:3", "result": "x"})
    assert list(event_record(event)) == [
        "time", "actor", "action", "target", "result", "uids", "detail_result"]


class Sink:
    def __init__(self, nonblocking: bool) -> None:
        self.nonblocking = nonblocking
        self.calls: list[tuple[Any, ...]] = []

    def record(self, *args: Any, **details: Any) -> Any:
        self.calls.append((args, details, threading.current_thread()))
        return None


def test_record_nonblocking_calls_a_nonblocking_sink_in_place() -> None:
    sink = Sink(True)
    ran: list[Any] = []
    record_nonblocking(sink, lambda *a, **k: ran.append(a), "a", "reload", "h", "ok", n=1)
    assert ran == [] and sink.calls[0][:2] == (("a", "reload", "h", "ok"), {"n": 1})


def test_record_nonblocking_hands_a_blocking_sink_to_the_runner() -> None:
    sink = Sink(False)
    queued: list[Any] = []

    def run(fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        queued.append((fn, args, kwargs))
        return defer.Deferred()

    record_nonblocking(sink, run, "a", "reload", "h", "ok")
    assert sink.calls == [] and queued[0][1] == ("a", "reload", "h", "ok")


def test_record_nonblocking_never_raises() -> None:
    class Broken:
        nonblocking = True

        def record(self, *args: Any, **details: Any) -> Any:
            raise OSError("disk gone")

    record_nonblocking(Broken(), lambda *a, **k: None, "a", "x", "t", "ok")  # type: ignore[arg-type]
