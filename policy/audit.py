"""The audit sink: one structured event per policy decision or action.

Events name the actor, action, target and result, never message content. The
sink writes one JSON object per line to the audit log file (flushed per event,
so a crash loses nothing already decided) and, when a store is attached, keeps a
copy in the store's audit table so that every node's events meet in one place.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from storage.interface import AuditEvent, MessageStore, StoreError

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    def record(
        self, actor: str, action: str, target: str, result: str, **details: Any
    ) -> AuditEvent: ...


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class FileAuditSink:
    """JSON lines on disk, optionally mirrored into the store."""

    def __init__(
        self,
        path: Path | None,
        store: MessageStore | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._path = path
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self.events: list[AuditEvent] = []  # last events, for tests and `mssctl`
        self._keep = 1000

    def record(
        self, actor: str, action: str, target: str, result: str, **details: Any
    ) -> AuditEvent:
        event = AuditEvent(
            time=self._clock(),
            actor=actor or "-",
            action=action,
            target=target,
            result=result,
            details={k: _jsonable(v) for k, v in details.items()},
        )
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
        line = json.dumps(record, ensure_ascii=False, sort_keys=False)
        with self._lock:
            self.events.append(event)
            if len(self.events) > self._keep:
                del self.events[: len(self.events) - self._keep]
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()
        if self._store is not None:
            try:
                self._store.record_audit([event])
            except StoreError:
                # The file copy is authoritative; the store copy is a convenience.
                log.warning("audit event not mirrored to the store", exc_info=True)
        return event

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
