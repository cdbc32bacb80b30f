"""Leases of periodic jobs (`job_leases`): with several worker processes and
several nodes on one database, each periodic job (audit purge, login-throttle
purge) is run by whichever worker takes its lease, for one period.

A lease is taken by one conditional UPDATE (``WHERE lease_until <= now``),
or, the first time, by an INSERT that a concurrent one makes a no-op
(PostgreSQL ``ON CONFLICT DO NOTHING``; SQLite serialises writers anyway): of
the workers asking at the same moment exactly one gets it. Nobody renews a
lease: it lapses at its end whoever held it, so a holder that died mid-job
costs at most one period.

Shared files: what the holder of a fetching job got (the agency's whitelist)
is kept in `shared_files`, so that the other workers and nodes take it from
the database instead of fetching it again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.sqlbase import JL, SF, StoreBase

MAX_JOB_NAME = 64
MAX_HOLDER = 255
MAX_SHARED_NAME = 64


@dataclass(frozen=True, slots=True)
class SharedFile:
    data: bytes
    digest: str  # SHA-256 of data, hex
    fetched_at: datetime


class JobLeaseMixin(StoreBase):
    """The job-lease part of `storage.interface.MessageStore`."""

    def claim_job(self, job: str, holder: str, now: datetime, until: datetime) -> bool:
        if not job or len(job) > MAX_JOB_NAME:
            raise ValueError(f"job name must be 1 to {MAX_JOB_NAME} characters")
        holder = holder[:MAX_HOLDER]
        if until <= now:
            raise ValueError("a lease must end after it starts")
        with self._write() as c:
            taken = c.execute(
                update(JL)
                .where(JL.c.job == job, JL.c.lease_until <= now)
                .values(holder=holder, lease_until=until)
            ).rowcount
            if taken:
                return True
            insert = pg_insert(JL) if self._pg else sqlite_insert(JL)
            return bool(
                c.execute(
                    insert.values(job=job, holder=holder, lease_until=until)
                    .on_conflict_do_nothing(index_elements=["job"])
                ).rowcount
            )

    def job_lease(self, job: str) -> tuple[str, datetime] | None:
        with self._read() as c:
            r = c.execute(select(JL.c.holder, JL.c.lease_until).where(JL.c.job == job)).first()
        return (r.holder, r.lease_until) if r is not None else None

    def put_shared_file(self, name: str, data: bytes, fetched_at: datetime) -> str:
        if not name or len(name) > MAX_SHARED_NAME:
            raise ValueError(f"shared file name must be 1 to {MAX_SHARED_NAME} characters")
        digest = hashlib.sha256(data).hexdigest()
        row = {"digest": digest, "fetched_at": fetched_at, "data": data}
        insert = pg_insert(SF) if self._pg else sqlite_insert(SF)
        with self._write() as c:
            c.execute(insert.values(name=name, **row).on_conflict_do_update(
                index_elements=["name"], set_=row))
        return digest

    def shared_file(self, name: str, unless_digest: str | None = None) -> SharedFile | None:
        with self._read() as c:
            head = c.execute(select(SF.c.digest).where(SF.c.name == name)).first()
            if head is None or head.digest == unless_digest:
                return None
            r = c.execute(select(SF.c.data, SF.c.digest, SF.c.fetched_at)
                          .where(SF.c.name == name)).first()
        if r is None:
            return None
        return SharedFile(bytes(r.data), r.digest, r.fetched_at)
