"""The server's Prometheus instruments (`metrics:` in mss.yaml).

One `Metrics` per worker process, made by `mssctl serve` after the fork
(`Services.metrics`; None when metrics are off, and every counting site
then does nothing). Each kind of event is counted at the one place it
happens:

- policy decisions, logins, flow rules and certificate refusals: the audit
  sink (`AuditCounter`, called by `FileAuditSink.record` for every event),
  since every one of them is recorded there once;
- connections: the protocol factories (`connection_opened` / `_closed`);
- messages received: `mssmtpd.delivery` once a message is committed;
  relayed and bounced: `mssmtpd.relay` once an attempt is recorded;
- store writes: the store's write paths (`StoreBase.write_observer`), and on SQLite
  the write lock's waits and holds (`WriteGate.observer`).

Across worker processes, `mssctl serve` uses prometheus_client's
multiprocess mode (`enable_multiprocess`): each process counts in memory and
its `Publisher` copies the values every second to its memory-mapped files of
one directory; the endpoint sums every process's files at scrape time
(`exposition`). Gauges read from the database (queue depth, age of the
oldest entry) are not kept there: the process answering a scrape reads them
(`QueueGauges`, off the reactor, cached briefly).

Labels are bounded and never name a person: listener, method, result,
reason, action, flow rule id. A value outside the known set of a label
(a login method, say) is counted as "other".
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "mss_"

# Login methods as the audit names them (`auth_method` when the policy knew
# it, else the method the client tried); anything else is "other".
LOGIN_METHODS = frozenset({"card", "org-certificate", "password", "password+totp", "token",
                           "external", "plain", "login", "oauthbearer", "xoauth2"})

# Store write latency (seconds): a commit is an fsync (about 1-10 ms), more
# while the write lock is held by the other worker.
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# The files of prometheus_client's multiprocess mode: kind, pid.
VALUE_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")
PUBLISH_INTERVAL = 1.0  # seconds: how stale another worker's values may be


def enable_multiprocess(directory: Path) -> None:
    """Before any worker is forked: every process of this server (and its
    children) publishes its values to files of `directory`, which is
    emptied first (the counts of a previous run, and the files of its dead
    processes, must not be summed again). Raises OSError naming the problem
    when the directory cannot be made or holds other databases."""
    from prometheus_client import values

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The scrape reads every *.db file there: another one (the instance's
    # mss.db, when pointed at the settings directory) is refused, never
    # deleted; only prometheus_client's own files are.
    foreign = sorted(e.name for e in directory.glob("*.db") if not VALUE_FILE.match(e.name))
    if foreign:
        raise OSError(f"it holds {', '.join(foreign)}, not metrics files: give metrics a "
                      "directory of its own")
    for entry in directory.iterdir():
        if VALUE_FILE.match(entry.name) and entry.is_file():
            entry.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)  # where MultiProcessValue writes
    # The instruments themselves stay in-process (a lock and an add, ~10
    # times cheaper than a write to the file per event): `Publisher` copies
    # them to the files.
    values.ValueClass = values.MutexValue


def multiprocess_directory() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def process_exited(pid: int) -> None:
    """In the supervisor, when worker `pid` is gone: its live gauges (open
    connections) no longer count; its counters stay in the sums."""
    if multiprocess_directory() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class _Children:
    """labels() of one instrument, memoised: the hot paths pay a dict lookup."""

    __slots__ = ("_metric", "_known", "_lock")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._known: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def get(self, *values: str) -> Any:
        child = self._known.get(values)
        if child is None:
            with self._lock:
                child = self._known.get(values)
                if child is None:
                    child = self._metric.labels(*values)
                    self._known[values] = child
        return child


class Metrics:
    """Every instrument of the server. `registry`: where they are registered
    (None: a private one, which the `Publisher` copies in multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connections_total = Counter(
            f"{PREFIX}connections", "Connections accepted, by listener",
            ["listener"], registry=r)
        self.connections_open = Gauge(
            f"{PREFIX}connections_open", "Connections open now, by listener",
            ["listener"], registry=r, multiprocess_mode="livesum")
        self.logins = Counter(
            f"{PREFIX}logins", "Logins decided, by method and result (allow, deny, tempfail)",
            ["method", "result"], registry=r)
        self.decisions = Counter(
            f"{PREFIX}policy_decisions", "Audited decisions and actions, by action and result",
            ["action", "result"], registry=r)
        self.flow_decisions = Counter(
            f"{PREFIX}flow_decisions", "Flow matrix decisions, by rule id and result",
            ["rule", "result"], registry=r)
        self.certificate_refusals = Counter(
            f"{PREFIX}certificate_refusals", "Certificates refused in a TLS handshake, by reason",
            ["reason"], registry=r)
        self.messages_received = Counter(
            f"{PREFIX}messages_received", "Messages accepted over SMTP and committed",
            registry=r)
        self.messages_relayed = Counter(
            f"{PREFIX}messages_relayed",
            "Recipients handed to another MTA (delivered), failed for good, or deferred",
            ["result"], registry=r)
        self.messages_bounced = Counter(
            f"{PREFIX}messages_bounced", "Recipients the queue gave up on (failed for good)",
            registry=r)
        self.store_write_seconds = Histogram(
            f"{PREFIX}store_write_seconds",
            "Store write transactions, lock wait to commit, by kind (single, group)",
            ["kind"], buckets=WRITE_BUCKETS, registry=r)
        self.store_write_lock_seconds = Histogram(
            f"{PREFIX}store_write_lock_seconds",
            "SQLite's write lock, shared by every process: time waited for it, time held",
            ["phase"], buckets=WRITE_BUCKETS, registry=r)
        self.group_commit_size = Histogram(
            f"{PREFIX}store_group_commit_size", "Writes committed together by one group commit",
            buckets=GROUP_BUCKETS, registry=r)
        self._connections_total = _Children(self.connections_total)
        self._connections_open = _Children(self.connections_open)
        self._logins = _Children(self.logins)
        self._decisions = _Children(self.decisions)
        self._flows = _Children(self.flow_decisions)
        self._certificates = _Children(self.certificate_refusals)
        self._relayed = _Children(self.messages_relayed)
        self._write_single = self.store_write_seconds.labels("single")
        self._write_group = self.store_write_seconds.labels("group")
        self._lock_wait = self.store_write_lock_seconds.labels("wait")
        self._lock_held = self.store_write_lock_seconds.labels("held")
        # Copies the values to the multiprocess files (`start_publishing`).
        self.publisher: Publisher | None = None

    def start_publishing(self, interval: float = PUBLISH_INTERVAL) -> Publisher | None:
        """In multiprocess mode: starts this process's `Publisher` (stop it
        at shutdown, which publishes a last time); else None."""
        if multiprocess_directory() is None:
            return None
        self.publisher = Publisher(self, interval)
        self.publisher.start()
        return self.publisher

    # ------------------------------------------------------------ connections

    def connection_opened(self, listener: str) -> None:
        self._connections_total.get(listener).inc()
        self._connections_open.get(listener).inc()

    def connection_closed(self, listener: str) -> None:
        self._connections_open.get(listener).dec()

    # ------------------------------------------------------------ audit events

    def audit_event(self, action: str, result: str, details: Mapping[str, Any]) -> None:
        """One audited decision (`FileAuditSink.record`)."""
        self._decisions.get(action, result).inc()
        rule = details.get("flow_rule")
        if rule is not None:
            self._flows.get(str(rule), result).inc()
        if action == "login":
            method = str(details.get("auth_method") or details.get("method") or "other")
            self._logins.get(method if method in LOGIN_METHODS else "other", result).inc()
        elif action == "certificate" and result == "deny":
            self._certificates.get(str(details.get("reason") or "other")).inc()

    # ------------------------------------------------------------ mail

    def message_received(self) -> None:
        self.messages_received.inc()

    def relay_attempt(self, delivered: int, failed: int, deferred: int) -> None:
        if delivered:
            self._relayed.get("delivered").inc(delivered)
        if failed:
            self._relayed.get("failed").inc(failed)
            self.messages_bounced.inc(failed)
        if deferred:
            self._relayed.get("deferred").inc(deferred)

    # ------------------------------------------------------------ store

    def store_write(self, seconds: float, calls: int) -> None:
        """A committed write transaction carrying `calls` writes (> 1: a
        group commit). Called on store threads."""
        if calls > 1:
            self._write_group.observe(seconds)
            self.group_commit_size.observe(calls)
        else:
            self._write_single.observe(seconds)

    def store_write_lock(self, waited: float, held: float) -> None:
        """One hold of SQLite's write lock (`storage.engine.WriteGate`):
        when the time held adds up to most of the time, the lock bounds the
        server's writes (more workers will not help; PostgreSQL will).
        Called on store threads."""
        self._lock_wait.observe(waited)
        self._lock_held.observe(held)


# ---------------------------------------------------------------- publishing

class Publisher:
    """Copies this process's values (`Metrics.registry`) into its own files
    of the multiprocess directory, in prometheus_client's format, every
    `interval` seconds on a thread of its own, before this process answers
    a scrape, and when it stops. Counting stays an in-process add; a scrape
    sees another worker's counts at most `interval` old, and a worker
    killed outright loses at most its last `interval` of counts."""

    def __init__(self, metrics: Metrics, interval: float = PUBLISH_INTERVAL) -> None:
        from prometheus_client import values

        self._metrics = metrics
        self._interval = interval
        self._value_class = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self._shadows: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.publish()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.publish()

    def publish(self) -> None:
        with self._lock:
            for family in self._metrics.registry.collect():
                typ = family.type
                below = 0.0  # the cumulative count of the bucket before
                for sample in family.samples:
                    name = sample.name
                    if name.endswith("_created") or (typ == "histogram"
                                                     and name.endswith("_count")):
                        continue
                    value = sample.value
                    if name.endswith("_bucket"):
                        # The files hold each bucket's own count (the reader
                        # accumulates them), the registry the running total.
                        value, below = value - below, value
                        if sample.labels.get("le") == "+Inf":
                            below = 0.0
                    key = (typ, family.name, name, tuple(sample.labels.items()))
                    shadow = self._shadows.get(key)
                    if shadow is None:
                        shadow = self._value_class(
                            typ, family.name, name, list(sample.labels),
                            list(sample.labels.values()), family.documentation,
                            multiprocess_mode="livesum" if typ == "gauge" else "")
                        self._shadows[key] = shadow
                    shadow.set(value)


# ---------------------------------------------------------------- scraping


class QueueGauges(Collector):
    """Queue depth and the age of its oldest entry, read from the database
    by `refresh` (on a store thread) at most every `cache_seconds`."""

    def __init__(self, read: Callable[[], tuple[int, datetime | None]],
                 cache_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._cache = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._entries = 0
        self._oldest: datetime | None = None
        self.ok = False  # the last read succeeded

    def refresh(self) -> None:
        """Blocking (database): never on the reactor thread."""
        now = self._clock()
        with self._lock:
            if self._at is not None and now - self._at < self._cache:
                return
            try:
                self._entries, self._oldest = self._read()
                self.ok = True
            except Exception:  # noqa: BLE001 - the scrape says so (mss_queue_up 0)
                self.ok = False
            self._at = now

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(f"{PREFIX}queue_up",
                                "1 when the queue gauges could be read from the database",
                                value=1 if self.ok else 0)
        if not self.ok:
            return
        yield GaugeMetricFamily(f"{PREFIX}queue_entries",
                                "Messages waiting in the outbound queue", value=self._entries)
        age = 0.0
        if self._oldest is not None:
            oldest = self._oldest if self._oldest.tzinfo else self._oldest.replace(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        yield GaugeMetricFamily(f"{PREFIX}queue_oldest_age_seconds",
                                "Age of the oldest queued message (0 when the queue is empty)",
                                value=age)


def exposition(metrics: Metrics, extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of every process's values (multiprocess mode:
    read from the directory's files, which is blocking work), or of
    `metrics`' own registry, plus the `extra` collectors."""
    directory = multiprocess_directory()
    if directory is not None:
        from prometheus_client import multiprocess

        if metrics.publisher is not None:
            metrics.publisher.publish()  # this worker's counts up to now

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    else:
        registry = metrics.registry
    text = generate_latest(registry)
    collectors = list(extra)
    if collectors:
        own = CollectorRegistry()
        for collector in collectors:
            own.register(collector)
        text += generate_latest(own)
    return text
