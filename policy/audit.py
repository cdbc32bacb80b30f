"""The audit sink: one structured event per policy decision or action.

Events name the actor, action, target and result, never message content. The
sink writes one JSON object per line to the audit log file (one write(2) per
event, so a crash of the process loses nothing already decided;
fsync'ed by a timer, so a crash of the machine loses at most a second) and,
when a store is attached, keeps a copy in the store's audit table so that
every node's events meet in one place.

The store copy is a mirror of the authoritative file. Committing it per event
would cost a durable database commit per SMTP command, so, when there is a
file, the mirror is batched: `record` queues the event and a background thread
writes what accumulated (up to `max_batch` events, or what came within
`interval` seconds) in one transaction. The queue is bounded: past it, events
reach only the file (counted and logged), the protocol is never held up. A
store failure is logged, never raised to the caller. `flush()` waits until
everything queued so far is in the store; `close()` flushes and stops.
Without a file the store copy is the only record: it is then written
synchronously, one transaction per event.

Log rotation: `reopen()` (on SIGHUP) opens the path again, so after
``mv audit.log audit.log.1`` new events go to a new ``audit.log``.
The event schema (actions, targets, details, results) is in README.md.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from storage.interface import AuditEvent, MessageStore, StoreError, WouldWait

if TYPE_CHECKING:
    from certs.tls import CertificateRefusal

log = logging.getLogger(__name__)

# Defaults of the batched store mirror.
MIRROR_INTERVAL = 0.5  # seconds an event may wait for companions (fewer write-lock turns)
MIRROR_MAX_BATCH = 2000  # events per transaction
MIRROR_QUEUE = 20_000  # events waiting; beyond, the store copy is skipped
FSYNC_INTERVAL = 1.0  # seconds between fsyncs of the file while it changes


class AuditSink(Protocol):
    def record(
        self, actor: str, action: str, target: str, result: str, **details: Any
    ) -> AuditEvent: ...


# Exact types JSON takes as they are: checked first by a set lookup, since
# every event's details go through _jsonable (lists of UIDs and Message-IDs
# item by item: it was half of `record`'s CPU).
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _jsonable(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [v if type(v) in _SCALARS else _jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): v if type(v) in _SCALARS else _jsonable(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool):  # their subclasses: enums
        return value
    return str(value)


def event_record(event: AuditEvent) -> dict[str, Any]:
    """The JSON object of one event, as the audit file holds it: the five
    fields, then the details (a detail named like a field is prefixed
    ``detail_``)."""
    record: dict[str, Any] = {
        "time": event.time.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "result": event.result,
    }
    for key, value in event.details.items():
        # A detail never overwrites the five fields a reader relies on.
        record[f"detail_{key}" if key in record else key] = value
    return record


_FIELDS = frozenset({"time", "actor", "action", "target", "result"})


def _line(event: AuditEvent, details_json: str) -> str:
    """`json.dumps(event_record(event))` (the file's line), reusing the
    details' JSON when no detail is named like one of the five fields."""
    head = json.dumps({"time": event.time.isoformat(), "actor": event.actor,
                       "action": event.action, "target": event.target,
                       "result": event.result}, ensure_ascii=False)
    if not event.details:
        return head
    if _FIELDS.isdisjoint(event.details):
        return f"{head[:-1]}, {details_json[1:]}"
    return json.dumps(event_record(event), ensure_ascii=False)


def record_nonblocking(
    sink: AuditSink, run: Callable[..., Any], actor: str, action: str, target: str,
    result: str, **details: Any,
) -> None:
    """Records from the reactor thread: right here when the sink never waits
    for the database, else through `run` (a `StoreRunner.run`: a thread).
    Never raises: a lost event is logged."""
    try:
        if getattr(sink, "nonblocking", False):
            sink.record(actor, action, target, result, **details)
            return
        d = run(sink.record, actor, action, target, result, **details)
        d.addErrback(lambda f: log.warning("audit event lost: %s %s: %s", action, target,
                                           f.getErrorMessage()))
    except Exception:  # noqa: BLE001 - the audit trail never breaks the caller
        log.exception("audit event lost: %s %s", action, target)


def record_certificate_refusal(
    sink: AuditSink, run: Callable[..., Any], event: CertificateRefusal
) -> None:
    """One "certificate" deny event per certificate refused in a handshake
    (called inside it, on the reactor thread). The actor is the subject the
    certificate claims; the target is our listener, or the host we relay to."""
    r = event.refusal
    record_nonblocking(
        sink, run, r.subject or "-", "certificate", event.listener or event.server_name or "-",
        "deny", reason=r.reason, direction=event.direction, listener=event.listener,
        peer=event.peer, peer_port=event.peer_port, server_name=event.server_name,
        subject=r.subject, issuer=r.issuer, serial=r.serial, depth=r.depth, error=r.error,
    )


# Sinks whose mirror thread runs, flushed at interpreter exit (a daemon thread
# would otherwise die with events still queued).
_LIVE: weakref.WeakSet[FileAuditSink] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for sink in list(_LIVE):
        sink.close()


class FileAuditSink:
    """JSON lines on disk, optionally mirrored into the store (see the module
    docstring). `batch`: None = batched when there is a file and a store."""

    def __init__(
        self,
        path: Path | None,
        store: MessageStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        batch: bool | None = None,
        interval: float = MIRROR_INTERVAL,
        max_batch: int = MIRROR_MAX_BATCH,
        queue_size: int = MIRROR_QUEUE,
        fsync_interval: float = FSYNC_INTERVAL,
    ) -> None:
        self._path = path
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        # One os.write per event on an O_APPEND descriptor: the line reaches
        # the file (the kernel) at once, whole, without a lock or a buffer
        # shared between threads.
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.events: list[AuditEvent] = []  # last events, for tests and `mssctl`
        self._keep = 1000
        self._batch = (path is not None and store is not None) if batch is None else batch
        self._interval = interval
        self._max_batch = max(1, max_batch)
        self._queue: deque[AuditEvent] = deque()
        self._queue_size = max(1, queue_size)
        self._wake = threading.Event()
        self._markers: list[threading.Event] = []
        self._stopping = False
        self._fsync_interval = fsync_interval
        self._dirty = False  # file written since the last fsync
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0  # events that reached the file but not the store
        self._held = threading.local()  # .events: this thread's `held` block
        # Told of every event (`policy.metrics.Metrics.audit_event`): the one
        # place where decisions, logins and refusals are counted.
        self.observer: Callable[[str, str, Mapping[str, Any]], None] | None = None

    @property
    def nonblocking(self) -> bool:
        """True when `record` never waits for the database (no store, or a
        batched mirror): it may then be called on the reactor thread."""
        return self._store is None or (self._batch and not self._closed)

    # ------------------------------------------------------------ recording

    def record(
        self, actor: str, action: str, target: str, result: str, **details: Any
    ) -> AuditEvent:
        time_ = self._clock()
        actor = actor or "-"
        jsonable = {k: _jsonable(v) for k, v in details.items()}
        details_json = json.dumps(jsonable, ensure_ascii=False)
        event = AuditEvent(time=time_, actor=actor, action=action, target=target,
                           result=result, details=jsonable, details_json=details_json)
        line = _line(event, details_json)
        held: list[tuple[AuditEvent, str]] | None = getattr(self._held, "events", None)
        if held is not None:
            held.append((event, line))  # recorded when the `held` block ends
            return event
        self._emit(event, line)
        return event

    def _emit(self, event: AuditEvent, line: str) -> None:
        observer = self.observer
        if observer is not None:
            try:
                observer(event.action, event.result, event.details)
            except Exception:  # noqa: BLE001 - counting never breaks the audit trail
                log.exception("metrics: audit event not counted")
        self.events.append(event)  # atomic; trimmed now and then, under the lock
        if len(self.events) > 2 * self._keep:
            with self._lock:
                del self.events[: len(self.events) - self._keep]
        if self._fd is not None:
            self._write_line((line + "\n").encode("utf-8"))
        if self._store is not None:
            if self._batch and not self._closed:
                self._enqueue(event)
            else:
                self._mirror([event])

    @contextmanager
    def held(self) -> Iterator[None]:
        """The events this thread records in the block are recorded when it
        ends, in their order, unless it ends by `WouldWait`: a quick store
        call (`storage.threaded.StoreRunner.run_quick`) stopped before a
        write or a large read, to be made again on a thread, where it
        records its decisions again. Nests: an inner block leaves them to
        the outer one."""
        if getattr(self._held, "events", None) is not None:
            yield
            return
        events: list[tuple[AuditEvent, str]] = []
        self._held.events = events
        try:
            yield
        except WouldWait:
            events.clear()  # made again where the call runs again
            raise
        finally:
            self._held.events = None
            self._emit_all(events)

    def _emit_all(self, events: list[tuple[AuditEvent, str]]) -> None:
        for event, line in events:
            self._emit(event, line)

    def reopen(self) -> bool:
        """Log rotation: opens the path again (creating it when it was renamed
        away) and writes there from now on; the old file is fsynced first.
        The new file takes over the old descriptor's number (dup2), so a
        thread writing meanwhile writes whole lines to one file or the
        other, never to a closed or reused descriptor. Returns False (and
        logs why) when there is no file or the path cannot be opened: events
        then keep going to the old file."""
        if self._path is None:
            return False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fresh = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                            0o640)
        except OSError as exc:
            log.error("audit log %s cannot be reopened (%s): writing to the old file",
                      self._path, exc.strerror or exc)
            return False
        try:
            with self._lock:
                fd = self._fd
                if fd is None:  # closed
                    return False
                try:
                    os.fsync(fd)
                except OSError:
                    log.warning("audit log fsync failed", exc_info=True)
                os.dup2(fresh, fd, inheritable=False)
                self._dirty = True
        finally:
            os.close(fresh)
        return True

    def _write_line(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            while data:
                written = os.write(fd, data)
                data = data[written:]
        except OSError:
            # Disk full or closed under us: say so loudly, keep serving.
            log.error("audit log write failed", exc_info=True)
            return
        self._dirty = True

    def _enqueue(self, event: AuditEvent) -> None:
        self._ensure_thread()
        # deque.append is atomic: no lock and no wake-up per event (the writer
        # wakes on its timer, or early when a batch is full).
        if len(self._queue) >= self._queue_size:
            # The store is far behind: the file keeps the event; the protocol
            # must not wait for the database to catch up.
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("audit mirror queue full: %d events only in the file", self.dropped)
            return
        self._queue.append(event)
        if len(self._queue) == self._max_batch:
            self._wake.set()

    def _mirror(self, events: list[AuditEvent]) -> None:
        assert self._store is not None
        try:
            self._store.record_audit(events)
        except StoreError:
            # The file copy is authoritative; the store copy is a convenience.
            log.warning("%d audit events not mirrored to the store", len(events), exc_info=True)
        except Exception:  # noqa: BLE001 - an audit mirror never breaks a protocol
            log.exception("%d audit events not mirrored to the store", len(events))

    # ------------------------------------------------------------ the writer

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name="audit-mirror", daemon=True
            )
            self._thread.start()
            _LIVE.add(self)

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stopping
            # Markers taken before draining: everything recorded before a
            # flush() call is in the queue by now and is written below.
            with self._lock:
                markers, self._markers = self._markers, []
            # Only what is queued now: the events recorded while a batch waits
            # for the write lock and commits wait for the next turn. Draining
            # until empty wrote a batch of a few events every few
            # milliseconds under load, each a write-lock turn and an fsync
            # taken from the protocol's writes (a tenth of the lock's time).
            # Stopping writes everything.
            pending = len(self._queue)
            while pending > 0 or (stopping and self._queue):
                batch: list[AuditEvent] = []
                while self._queue and len(batch) < self._max_batch:
                    batch.append(self._queue.popleft())
                pending -= len(batch)
                self._write_batch(batch)
            for marker in markers:
                marker.set()
            if stopping:
                return
            last_sync = self._maybe_fsync(last_sync)

    def _write_batch(self, batch: list[AuditEvent]) -> None:
        self._mirror(batch)

    def _maybe_fsync(self, last_sync: float) -> float:
        now = time.monotonic()
        if now - last_sync < self._fsync_interval:
            return last_sync
        self._fsync()
        return now

    def _fsync(self) -> None:
        fd = self._fd
        if fd is None or not self._dirty:
            return
        self._dirty = False
        try:
            os.fsync(fd)
        except OSError:
            log.warning("audit log fsync failed", exc_info=True)

    # ------------------------------------------------------------ flushing

    def flush(self, timeout: float = 30.0) -> bool:
        """Waits until every event recorded so far is in the store (or was
        given up on); True unless `timeout` passed first."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        marker = threading.Event()
        with self._lock:
            self._markers.append(marker)
        self._wake.set()
        return marker.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Writes what is queued to the store, stops the writer, fsyncs and
        closes the file. Safe to call twice."""
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._stopping = True
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                log.warning("audit mirror did not drain before close")
        self._thread = None
        _LIVE.discard(self)
        # Events queued by a record() racing with close: write them now.
        leftover: list[AuditEvent] = []
        while self._queue:
            leftover.append(self._queue.popleft())
        if leftover and self._store is not None:
            self._mirror(leftover)
        self._fsync()
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
