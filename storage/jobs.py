"""Leases of periodic jobs (`job_leases`): with several worker processes and
several nodes on one database, each periodic job (audit purge, login-throttle
purge) is run by whichever worker takes its lease, for one period.

A lease is taken by one conditional UPDATE (``WHERE lease_until <= now``),
or, the first time, by an INSERT that a concurrent one makes a no-op
(PostgreSQL ``ON CONFLICT DO NOTHING``; SQLite serialises writers anyway): of
the workers asking at the same moment exactly one gets it. Nobody renews a
lease: it lapses at its end whoever held it, so a holder that died mid-job
costs at most one period.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.sqlbase import JL, StoreBase

MAX_JOB_NAME = 64
MAX_HOLDER = 255


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
