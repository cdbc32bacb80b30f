"""policy.metrics and the `metrics:` / `logging:` settings: what is counted
from which event, with which labels; the queue gauges read from a real
store; the settings' validation."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conf.loader import ConfigError, load_settings
from conf.settings import LogFormat, MetricsSettings
from policy.audit import FileAuditSink
from policy.metrics import Metrics, QueueGauges, exposition

TEMPLATE = """\
hostname: mx.hopital.test
domains: [hopital.test]
listeners:
  - {name: smtp-mx, port: 2525, role: mx}
  - {name: imap, port: 1143, role: imap}
database:
  url: sqlite:///mss.db
tls:
  cert_file: pki/server.pem
  key_file: pki/server.key
audit:
  path: audit.log
key_file: keys
"""


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(metrics: Metrics, *extra: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return values(exposition(metrics, extra).decode())


# ---------------------------------------------------------------- settings


def load(tmp_path: Path, extra: str) -> Any:
    path = tmp_path / "mss.yaml"
    path.write_text(TEMPLATE + extra, encoding="utf-8")
    return load_settings(path)


def problems(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    return [line.split(": ", 1)[1] for line in info.value.lines]


def test_metrics_are_off_and_logs_text_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.metrics is None
    assert settings.logging.format is LogFormat.TEXT


def test_metrics_default_to_loopback_and_a_directory_beside_the_file(tmp_path: Path) -> None:
    settings = load(tmp_path, "metrics: {}\nlogging: {format: json}\n")
    assert settings.metrics == MetricsSettings(directory=tmp_path.resolve() / "metrics")
    assert (settings.metrics.address, settings.metrics.port) == ("127.0.0.1", 9154)
    assert settings.logging.format is LogFormat.JSON
    settings = load(tmp_path, "metrics: {address: '::1', port: 0, directory: run/m}\n")
    assert settings.metrics.directory == tmp_path.resolve() / "run" / "m"


@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.10", "::"])
def test_a_public_metrics_address_needs_allow_remote(tmp_path: Path, address: str) -> None:
    assert problems(tmp_path, f"metrics: {{address: '{address}'}}\n") == [
        f"metrics.address: expected a loopback address (127.0.0.0/8 or ::1), got {address!r}; "
        "the endpoint has no TLS and no authentication: set metrics.allow_remote: true only "
        "behind a firewall that lets the Prometheus server alone reach it"]
    settings = load(tmp_path, f"metrics: {{address: '{address}', allow_remote: true}}\n")
    assert settings.metrics.address == address


@pytest.mark.parametrize(("extra", "expected"), [
    ("metrics: {address: localhost}\n",
     "metrics.address: expected an IPv4 or IPv6 address (e.g. 127.0.0.1), got 'localhost'"),
    ("metrics: {port: 70000}\n",
     "metrics.port: expected an integer from 0 to 65535, got 70000"),
    ("metrics: {port: 2525}\n",
     "metrics.port: expected a free address, 127.0.0.1:2525 is also listeners.0"),
    ("metrics: {prot: 9154}\n", "metrics.prot: unknown key (did you mean port?)"),
    ("metrics: {cache_seconds: -1}\n",
     "metrics.cache_seconds: expected a number from 0 to 300, got -1"),
    ("logging: {format: jsno}\n",
     "logging.format: expected one of text, json, got 'jsno' (did you mean json?)"),
])
def test_bad_metrics_and_logging_settings_are_named(tmp_path: Path, extra: str,
                                                    expected: str) -> None:
    assert problems(tmp_path, extra) == [expected]


# ---------------------------------------------------------------- counting


def test_audit_events_count_decisions_logins_flows_and_certificates(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = FileAuditSink(tmp_path / "audit.log")
    sink.observer = metrics.audit_event
    sink.record("a@hopital.test", "login", "imap", "allow", method="password",
                auth_method="password")
    sink.record("a@hopital.test", "login", "imap", "deny", method="password", reason="bad")
    sink.record("-", "login", "imap", "deny", method="external", reason="no-certificate")
    sink.record("x", "login", "imap", "deny", method="gssapi-from-nowhere")
    sink.record("b@hopital.test", "login", "imaps", "allow", method="external",
                auth_method="card")
    sink.record("a@hopital.test", "rcpt", "c@hopital.test", "allow", flow_rule="local",
                flow_matrix="abcd")
    sink.record("a@hopital.test", "rcpt", "d@gmail.test", "deny", flow_rule="default",
                flow_matrix="abcd", reason="flow-denied")
    sink.record("CN=x", "certificate", "imaps", "deny", reason="revoked")
    sink.record("CN=y", "certificate", "smtp-mx", "deny", reason="revoked")
    sink.record("CN=z", "certificate", "smtp-mx", "deny", reason="unknown-ca")
    sink.close()
    v = scrape(metrics)
    assert v[("mss_logins_total", (("method", "password"), ("result", "allow")))] == 1
    assert v[("mss_logins_total", (("method", "password"), ("result", "deny")))] == 1
    assert v[("mss_logins_total", (("method", "external"), ("result", "deny")))] == 1
    assert v[("mss_logins_total", (("method", "other"), ("result", "deny")))] == 1
    assert v[("mss_logins_total", (("method", "card"), ("result", "allow")))] == 1
    assert v[("mss_policy_decisions_total", (("action", "login"), ("result", "deny")))] == 3
    assert v[("mss_policy_decisions_total", (("action", "rcpt"), ("result", "allow")))] == 1
    assert v[("mss_flow_decisions_total", (("result", "allow"), ("rule", "local")))] == 1
    assert v[("mss_flow_decisions_total", (("result", "deny"), ("rule", "default")))] == 1
    assert v[("mss_certificate_refusals_total", (("reason", "revoked"),))] == 2
    assert v[("mss_certificate_refusals_total", (("reason", "unknown-ca"),))] == 1
    # Nobody's address or certificate subject became a label.
    labels = {value for key in v for _, value in key[1]}
    assert not [x for x in labels if "@" in x or "CN=" in x]


def test_a_failing_observer_never_loses_the_audit_event(tmp_path: Path) -> None:
    sink = FileAuditSink(tmp_path / "audit.log")

    def broken(action: str, result: str, details: Any) -> None:
        raise RuntimeError("boom")

    sink.observer = broken
    sink.record("a", "login", "imap", "allow")
    sink.close()
    assert json.loads((tmp_path / "audit.log").read_text())["action"] == "login"


def test_connections_relay_and_store_writes() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.connection_opened("imaps")
    metrics.connection_closed("imaps")
    metrics.relay_attempt(delivered=2, failed=1, deferred=0)
    metrics.relay_attempt(delivered=0, failed=0, deferred=4)
    metrics.message_received()
    metrics.store_write(0.003, 1)
    metrics.store_write(0.02, 12)
    v = scrape(metrics)
    assert v[("mss_connections_total", (("listener", "imaps"),))] == 3
    assert v[("mss_connections_open", (("listener", "imaps"),))] == 2
    assert v[("mss_messages_relayed_total", (("result", "delivered"),))] == 2
    assert v[("mss_messages_relayed_total", (("result", "failed"),))] == 1
    assert v[("mss_messages_relayed_total", (("result", "deferred"),))] == 4
    assert v[("mss_messages_bounced_total", ())] == 1
    assert v[("mss_messages_received_total", ())] == 1
    assert v[("mss_store_write_seconds_count", (("kind", "single"),))] == 1
    assert v[("mss_store_write_seconds_count", (("kind", "group"),))] == 1
    assert v[("mss_store_write_seconds_bucket", (("kind", "single"), ("le", "0.005")))] == 1
    assert v[("mss_store_group_commit_size_bucket", (("le", "16.0"),))] == 1
    assert v[("mss_store_group_commit_size_bucket", (("le", "8.0"),))] == 0


def test_the_store_reports_its_write_transactions(store: Any) -> None:
    from storage.interface import Delivery, MailboxType

    seen: list[tuple[float, int]] = []
    store.write_observer = lambda seconds, calls: seen.append((seconds, calls))
    box = store.add_mailbox("a@hopital.test", MailboxType.ORG)
    seen.clear()
    raw = b"From: x@hopital.test\r\nSubject: s\r\n\r\nbody\r\n"
    store.deliver_many([Delivery(raw=raw, mailbox_ids=(box.id,)) for _ in range(3)])
    assert [calls for _, calls in seen] == [3]
    assert all(0 <= seconds < 30 for seconds, _ in seen)
    inbox = store.get_folder(box.id, "INBOX")
    seen.clear()
    store.append(inbox.id, raw)  # a fixed-SQL write of its own
    assert [calls for _, calls in seen] == [1]
    seen.clear()
    with store.write_batch() as batch:  # the IMAP writer lane's group commit
        for _ in range(2):
            batch.call(store.append, inbox.id, raw)
    assert [calls for _, calls in seen] == [2]



def test_the_sqlite_write_lock_reports_its_waits_and_holds(store: Any, tmp_path: Any) -> None:
    """Each hold of the database's write lock is reported as (waited, held),
    and a writer that queues behind another (here a second gate on the same
    file, as another worker process has) reports the time it waited."""
    import threading

    from storage.engine import WriteGate
    from storage.interface import MailboxType

    gate = store.write_gate
    assert gate is not None  # the `store` fixture is SQLite
    seen: list[tuple[float, float]] = []
    gate.observer = lambda waited, held: seen.append((waited, held))
    box = store.add_mailbox("a@hopital.test", MailboxType.ORG)
    inbox = store.get_folder(box.id, "INBOX")
    seen.clear()
    with store.write_batch() as batch:
        batch.call(store.append, inbox.id, b"Subject: s\r\n\r\nbody\r\n")
    assert len(seen) == 1 and seen[0][1] > 0

    other = WriteGate(tmp_path / "db", timeout=10)
    mine = WriteGate(tmp_path / "db", timeout=10)
    reported: list[tuple[float, float]] = []
    mine.observer = lambda waited, held: reported.append((waited, held))
    holding, waiting = threading.Event(), threading.Event()

    def hold_a_while() -> None:
        with other.hold():
            holding.set()
            waiting.wait(10)
            # The time the other writer must wait: what is measured (it asks
            # right after `waiting` is set; the margin below allows it to be
            # scheduled up to 0.25 s late on a loaded machine).
            time.sleep(0.5)

    t = threading.Thread(target=hold_a_while)
    t.start()
    assert holding.wait(10)
    waiting.set()
    with mine.hold():
        pass
    t.join()
    other.close()
    mine.close()
    assert len(reported) == 1
    waited, held = reported[0]
    assert 0.25 <= waited < 10 and 0 <= held < 0.25


def test_a_hold_whose_write_failed_is_reported_too(tmp_path: Any) -> None:
    """A write that raised (and was undone) held the lock all the same: its
    hold is reported; a writer that never got the lock reports nothing."""
    from storage.engine import WriteGate
    from storage.interface import StoreUnavailable

    gate = WriteGate(tmp_path / "db", timeout=0.2)
    reported: list[tuple[float, float]] = []
    gate.observer = lambda waited, held: reported.append((waited, held))
    with pytest.raises(ValueError), gate.hold():
        time.sleep(0.05)
        raise ValueError("the write failed")
    assert len(reported) == 1 and reported[0][1] >= 0.05
    other = WriteGate(tmp_path / "db", timeout=0.2)
    with other.hold():
        with pytest.raises(StoreUnavailable), gate.hold():
            pass  # pragma: no cover - the lock is the other gate's
        assert len(reported) == 1
    with gate.hold():  # once its abandoned request is let go, the gate is had again
        pass
    assert len(reported) == 2
    other.close()
    gate.close()


def test_write_lock_histogram() -> None:
    metrics = Metrics()
    metrics.store_write_lock(0.004, 0.0007)
    metrics.store_write_lock(0.0002, 0.003)
    v = scrape(metrics)
    assert v[("mss_store_write_lock_seconds_count", (("phase", "wait"),))] == 2
    assert v[("mss_store_write_lock_seconds_count", (("phase", "held"),))] == 2
    assert v[("mss_store_write_lock_seconds_bucket", (("le", "0.001"), ("phase", "held")))] == 1
    assert v[("mss_store_write_lock_seconds_bucket", (("le", "0.005"), ("phase", "wait")))] == 2


# ---------------------------------------------------------------- queue gauges


def test_queue_gauges_read_the_store_and_cache(store: Any) -> None:
    now = [100.0]
    reads: list[int] = []

    def read() -> tuple[int, datetime | None]:
        reads.append(1)
        return store.queue_stats()  # type: ignore[no-any-return]

    gauges = QueueGauges(read, cache_seconds=5.0, clock=lambda: now[0])
    gauges.refresh()
    v = scrape(Metrics(), gauges)
    assert v[("mss_queue_up", ())] == 1
    assert v[("mss_queue_entries", ())] == 0
    assert v[("mss_queue_oldest_age_seconds", ())] == 0
    store.enqueue("a@hopital.test", ["b@operateur-pair.test"], b"Subject: x\r\n\r\nx\r\n")
    store.enqueue("a@hopital.test", ["c@operateur-pair.test"], b"Subject: y\r\n\r\ny\r\n")
    gauges.refresh()  # cached: not read again
    assert len(reads) == 1
    assert scrape(Metrics(), gauges)[("mss_queue_entries", ())] == 0
    now[0] += 6
    gauges.refresh()
    v = scrape(Metrics(), gauges)
    assert len(reads) == 2
    assert v[("mss_queue_entries", ())] == 2
    assert 0 <= v[("mss_queue_oldest_age_seconds", ())] < 60
    count, oldest = store.queue_stats()
    assert count == 2 and oldest is not None
    assert datetime.now(UTC) - oldest < timedelta(minutes=1)


def test_queue_gauges_say_when_the_database_is_down() -> None:
    def down() -> tuple[int, datetime | None]:
        raise OSError("database unavailable")

    gauges = QueueGauges(down, cache_seconds=0)
    gauges.refresh()
    v = scrape(Metrics(), gauges)
    assert v[("mss_queue_up", ())] == 0
    assert ("mss_queue_entries", ()) not in v


# ---------------------------------------------------------------- JSON logs


LOGGING_SCRIPT = r"""
import logging, sys
from conf.settings import LogFormat
from mssctl.serve import setup_logging
from twisted.logger import Logger, STDLibLogObserver
from twisted.python.failure import Failure

setup_logging("info", LogFormat.JSON)
log = logging.getLogger("mssctl.serve")
log.info("listening on %s:%d", "127.0.0.1", 2525)
log.warning("a line\nwith a newline \x1b[31m and \u00e9")
try:
    raise ValueError("broken\nvalue")
except ValueError:
    log.exception("delivery failed ref=%s", "abc123")
# Twisted's own events, as serve routes them (`_route_twisted_logs`).
twisted_log = Logger(observer=STDLibLogObserver(name="twisted"))
twisted_log.info("Twisted says {what}", what="hello")
try:
    1 / 0
except ZeroDivisionError:
    twisted_log.failure("Unhandled error in Deferred", Failure())
"""


def test_json_logs_one_object_per_line_with_the_traceback_in_one_field() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", LOGGING_SCRIPT], capture_output=True,
                          text=True, cwd=root, env={"PYTHONPATH": str(root)}, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 5, done.stderr
    records = [json.loads(line) for line in lines]
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message", "process"}
        assert record["time"].endswith("Z")
        assert datetime.fromisoformat(record["time"].replace("Z", "+00:00")).tzinfo is not None
    assert records[0]["level"] == "INFO"
    assert records[0]["logger"] == "mssctl.serve"
    assert records[0]["message"] == "listening on 127.0.0.1:2525"
    assert "exception" not in records[0]
    assert records[1]["message"] == "a line\nwith a newline \x1b[31m and \u00e9"
    assert records[2]["level"] == "ERROR"
    assert records[2]["message"] == "delivery failed ref=abc123"
    assert records[2]["exception"].startswith("Traceback (most recent call last):")
    assert records[2]["exception"].endswith("ValueError: broken\nvalue")
    assert records[3]["logger"] == "twisted"
    assert records[3]["message"] == "Twisted says hello"
    assert records[4]["level"] == "CRITICAL"
    assert records[4]["message"] == "Unhandled error in Deferred"
    assert "ZeroDivisionError: division by zero" in records[4]["exception"]


PUBLISH_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from policy.metrics import Metrics, enable_multiprocess, exposition, process_exited

directory = Path(sys.argv[1])
enable_multiprocess(directory)
children = []
for worker in range(2):  # two processes count, as serve's workers do
    pid = os.fork()
    if pid == 0:
        m = Metrics()
        m.start_publishing(interval=3600)  # only the final publication counts
        for _ in range(worker + 1):
            m.connection_opened("imaps")
        m.store_write(0.003, 1)
        m.store_write(0.2, 5)
        m.audit_event("login", "deny", {"method": "password"})
        m.publisher.stop()
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print(exposition(Metrics()).decode())
process_exited(children[0])
print("----")
print(exposition(Metrics()).decode())
"""


def test_the_publisher_sums_processes_and_forgets_dead_ones_gauges(tmp_path: Path) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_99999.db").write_bytes(b"")  # a previous run's, emptied at start
    (directory / "notes.txt").write_bytes(b"keep")  # not prometheus_client's: left alone
    done = subprocess.run([sys.executable, "-c", PUBLISH_SCRIPT, str(directory)],
                          capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": str(root)}, timeout=60)
    assert done.returncode == 0, done.stderr
    alive, after = (values(part) for part in done.stdout.split("----"))
    assert alive[("mss_connections_total", (("listener", "imaps"),))] == 3
    assert alive[("mss_connections_open", (("listener", "imaps"),))] == 3
    assert alive[("mss_logins_total", (("method", "password"), ("result", "deny")))] == 2
    single = (("kind", "single"),)
    assert alive[("mss_store_write_seconds_count", single)] == 2
    assert alive[("mss_store_write_seconds_bucket", (("kind", "single"), ("le", "0.001")))] == 0
    assert alive[("mss_store_write_seconds_bucket", (("kind", "single"), ("le", "0.005")))] == 2
    assert alive[("mss_store_write_seconds_bucket", (("kind", "group"), ("le", "0.25")))] == 2
    assert alive[("mss_store_write_seconds_bucket", (("kind", "group"), ("le", "0.1")))] == 0
    assert alive[("mss_store_group_commit_size_bucket", (("le", "8.0"),))] == 2
    assert alive[("mss_store_group_commit_size_count", ())] == 2
    # The first worker is gone: its open connections no longer count, its
    # counters still do.
    assert after[("mss_connections_open", (("listener", "imaps"),))] == 2
    assert after[("mss_connections_total", (("listener", "imaps"),))] == 3
    assert not (directory / "counter_99999.db").exists()
    assert (directory / "notes.txt").read_bytes() == b"keep"


def test_a_metrics_directory_holding_a_database_is_refused_not_emptied(tmp_path: Path) -> None:
    from policy.metrics import enable_multiprocess

    (tmp_path / "mss.db").write_bytes(b"the store")
    with pytest.raises(OSError, match="it holds mss.db, not metrics files: give metrics a "
                                      "directory of its own"):
        enable_multiprocess(tmp_path)
    assert (tmp_path / "mss.db").read_bytes() == b"the store"
