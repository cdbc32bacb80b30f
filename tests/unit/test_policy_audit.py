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
