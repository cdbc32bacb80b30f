"""policy.audit.FileAuditSink: one JSON line per event, flushed, never clobbered."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

from policy.audit import FileAuditSink

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_json_lines_flushed_per_event(tmp_path):
    path = tmp_path / "logs" / "audit.log"
    sink = FileAuditSink(path, clock=lambda: T0)
    sink.record("dr.martin@hopital.test", "login", "imaps", "allow", method="external",
                when=T0, names={"a", "b"} - {"b"})
    # readable before close: a crash loses nothing already decided
    [line] = path.read_text().splitlines()
    obj = json.loads(line)
    assert obj == {"time": T0.isoformat(), "actor": "dr.martin@hopital.test", "action": "login",
                   "target": "imaps", "result": "allow", "method": "external",
                   "when": str(T0), "names": ["a"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    sink.close()


def test_details_cannot_overwrite_the_fixed_fields(tmp_path):
    sink = FileAuditSink(tmp_path / "a.log", clock=lambda: T0)
    sink.record("alice", "login", "imap", "deny", time="1970-01-01")
    obj = json.loads((tmp_path / "a.log").read_text())
    assert obj["time"] == T0.isoformat()
    assert obj["detail_time"] == "1970-01-01"
    sink.close()


def test_newlines_cannot_forge_lines(tmp_path):
    sink = FileAuditSink(tmp_path / "a.log")
    sink.record('x\n{"actor": "forged"}', "login", "imap", "deny")
    assert len((tmp_path / "a.log").read_text().splitlines()) == 1
    sink.close()


def test_empty_actor_and_store_mirror(store):
    sink = FileAuditSink(None, store=store, clock=lambda: T0)
    sink.record("", "rcpt", "x@hopital.test", "deny", reason="unknown-recipient")
    [ev] = store.audit_events()
    assert ev.actor == "-" and ev.details == {"reason": "unknown-recipient"}


def test_each_line_is_the_json_of_its_event_record(tmp_path):
    """The line is built from the details' JSON, made once for the file and
    the database mirror: byte for byte what encoding the whole record gives,
    with or without details, with a detail named like a field, in any script."""
    from policy.audit import event_record

    path = tmp_path / "a.log"
    sink = FileAuditSink(path, clock=lambda: T0)
    cases = [
        {},
        {"uids": [1, 2, 3], "message_ids": ["<a@x>", "<b@x>"], "session": "s1"},
        {"time": "1970-01-01", "reason": "tried"},
        {"name": "Dossier patient – Éléonore", "nested": {"k": [1, {"x": None}], "f": 1.5}},
        {"flag": True, "count": 0, "empty": [], "tuple": (1, "a")},
    ]
    events = [sink.record("alice", "select", "box@hopital.test/INBOX", "allow", **details)
              for details in cases]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [json.dumps(event_record(e), ensure_ascii=False) for e in events]
    for event in events:
        assert event.details_json == json.dumps(event.details, ensure_ascii=False)
    sink.close()


def test_the_mirror_stores_the_details_it_was_given(store):
    sink = FileAuditSink(None, store=store, clock=lambda: T0)
    sink.record("alice", "expunge", "box@hopital.test/INBOX", "ok",
                uids=[4, 5], message_ids={"4": "<é@x>"}, note="Ünïcode")
    [ev] = store.audit_events()
    assert ev.details == {"uids": [4, 5], "message_ids": {"4": "<é@x>"}, "note": "Ünïcode"}
