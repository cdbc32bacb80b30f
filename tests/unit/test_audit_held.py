"""FileAuditSink.held: the events a quick store call records are written
when it ends, and dropped when it stops at `WouldWait` (it is made again on a
thread, where it records its decisions again): each decision once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from policy.audit import FileAuditSink
from storage.interface import WouldWait


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_held_events_are_written_at_the_end_in_order(tmp_path: Path) -> None:
    sink = FileAuditSink(tmp_path / "audit.log")
    counted: list[str] = []
    sink.observer = lambda action, result, details: counted.append(action)
    with sink.held():
        sink.record("dr", "select", "box/INBOX", "allow", right="r")
        with sink.held():  # nested: left to the outer block
            sink.record("dr", "fetch", "box/INBOX", "ok", uids="1")
        assert not (tmp_path / "audit.log").read_text() and counted == []
    assert [e["action"] for e in lines(tmp_path / "audit.log")] == ["select", "fetch"]
    assert counted == ["select", "fetch"]
    sink.record("dr", "status", "box/Sent", "allow")  # outside: at once
    assert len(lines(tmp_path / "audit.log")) == 3
    sink.close()


def test_events_of_a_call_stopped_by_would_wait_are_dropped(tmp_path: Path) -> None:
    sink = FileAuditSink(tmp_path / "audit.log")
    with pytest.raises(WouldWait), sink.held():
        sink.record("dr", "select", "box/INBOX", "allow")
        raise WouldWait("a write")
    # Made again on a thread: recorded once.
    sink.record("dr", "select", "box/INBOX", "allow")
    assert [e["action"] for e in lines(tmp_path / "audit.log")] == ["select"]
    # Any other end still records what was decided.
    with pytest.raises(KeyError), sink.held():
        sink.record("dr", "select", "box/Gone", "allow")
        raise KeyError("gone")
    assert [e["target"] for e in lines(tmp_path / "audit.log")] == ["box/INBOX", "box/Gone"]
    sink.close()


def test_held_is_this_threads_own(tmp_path: Path) -> None:
    sink = FileAuditSink(tmp_path / "audit.log")
    with sink.held():
        t = threading.Thread(target=sink.record, args=("lab", "deliver", "box", "ok"))
        t.start()
        t.join()
        assert [e["actor"] for e in lines(tmp_path / "audit.log")] == ["lab"]
    sink.close()
