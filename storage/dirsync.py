"""Directory synchronisation state of `SqlStore` (`directory_sync`): the
lease that lets one process of one node run a sync at a time, and the last
run's result.

The lease is taken with one conditional UPDATE (``… WHERE lease free or
lapsed``): atomic on SQLite (one writer) and on PostgreSQL (the row is
locked by the UPDATE, and the WHERE clause is evaluated again on the row
another transaction committed), so two nodes can never both hold it. A
holder that dies keeps it only until `lease_until`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.interface import DirectorySyncStatus
from storage.sqlbase import DS, StoreBase


class DirectorySyncMixin(StoreBase):
    """The directory-sync part of `storage.interface.MessageStore`."""

    def _ensure_sync_row(self, c: Any, name: str) -> None:
        insert = pg_insert if self._pg else sqlite_insert
        c.execute(insert(DS).values(name=name, last_counts="{}").on_conflict_do_nothing())

    def take_directory_lease(self, name: str, holder: str, now: datetime, until: datetime,
                             *, not_started_after: datetime | None = None) -> bool:
        with self._write() as c:
            self._ensure_sync_row(c, name)
            free = or_(DS.c.lease_until.is_(None), DS.c.lease_until <= now,
                       DS.c.lease_holder == holder)
            where = and_(DS.c.name == name, free)
            if not_started_after is not None:
                where = and_(where, or_(DS.c.last_started.is_(None),
                                        DS.c.last_started <= not_started_after))
            n = c.execute(update(DS).where(where).values(
                lease_holder=holder, lease_until=until, last_started=now)).rowcount
        return bool(n == 1)

    def release_directory_lease(self, name: str, holder: str) -> None:
        with self._write() as c:
            c.execute(update(DS).where(DS.c.name == name, DS.c.lease_holder == holder)
                      .values(lease_holder=None, lease_until=None))

    def record_directory_sync(self, name: str, *, holder: str, started: datetime,
                              finished: datetime, result: str, counts: dict[str, int],
                              error: str | None) -> None:
        with self._write() as c:
            self._ensure_sync_row(c, name)
            c.execute(update(DS).where(DS.c.name == name).values(
                last_started=started, last_finished=finished,
                last_duration=(finished - started).total_seconds(), last_result=result,
                last_counts=json.dumps(counts, sort_keys=True), last_error=error,
                last_holder=holder))

    def directory_sync_status(self, name: str) -> DirectorySyncStatus | None:
        with self._read() as c:
            r = c.execute(select(DS).where(DS.c.name == name)).first()
        if r is None:
            return None
        try:
            counts = {str(k): int(v) for k, v in json.loads(r.last_counts or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            counts = {}
        return DirectorySyncStatus(
            name=r.name, lease_holder=r.lease_holder, lease_until=r.lease_until,
            last_started=r.last_started, last_finished=r.last_finished,
            last_duration=r.last_duration, last_result=r.last_result, last_counts=counts,
            last_error=r.last_error, last_holder=r.last_holder)
