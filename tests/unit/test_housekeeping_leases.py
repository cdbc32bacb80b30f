"""Housekeeping under job leases (`mssctl.runtime.run_leased`): of the
workers and nodes sharing a database, one runs each periodic job per period,
and a holder that stopped (died) gives the job up when its lease ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer

from mssctl.runtime import AUDIT_PURGE_INTERVAL, housekeeping, run_leased
from storage.interface import AuditEvent
from storage.threaded import InlineRunner

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _worker(store: Any) -> Any:
    """What run_leased needs of a worker's Services: its store and runner."""
    return SimpleNamespace(store=store, runner=InlineRunner())


def test_one_worker_runs_the_job_per_period(store: Any) -> None:
    workers = [_worker(store) for _ in range(3)]
    runs: list[int] = []

    def job(i: int) -> Any:
        return lambda services: defer.succeed(runs.append(i))

    for i, w in enumerate(workers):  # three workers tick at once: one runs it
        run_leased(w, "job", 3600, job(i), now=T0)
    assert runs == [0]
    for i, w in enumerate(workers):  # later in the period: nobody
        run_leased(w, "job", 3600, job(i), now=T0 + timedelta(minutes=59))
    assert runs == [0]
    # Worker 0 is gone (it never asks again); once its lease ended, another runs it.
    for i, w in enumerate(workers[1:], start=1):
        run_leased(w, "job", 3600, job(i), now=T0 + timedelta(hours=1))
    assert runs == [0, 1]
    assert store.job_lease("job")[1] == T0 + timedelta(hours=2)


def test_a_failed_claim_is_logged_not_raised(store: Any, caplog: Any) -> None:
    runs: list[int] = []
    d = run_leased(_worker(store), "", 3600, lambda s: runs.append(1), now=T0)  # bad name
    assert d.called and runs == []
    assert "cannot take the job lease" in caplog.text


def test_housekeeping_purges_old_audit_events_once(store: Any) -> None:
    """The real jobs: the first worker's round purges, the second's skips
    (its lease is taken) and says so by not touching a newer old event."""
    settings = SimpleNamespace(audit=SimpleNamespace(retention_days=183))
    throttle = SimpleNamespace(purge=lambda: 0)
    w1, w2 = (SimpleNamespace(store=store, runner=InlineRunner(), settings=settings,
                              policy=SimpleNamespace(throttle=throttle)) for _ in range(2))
    old = datetime.now(UTC) - timedelta(days=200)
    store.record_audit([AuditEvent(old, "tester", "login", "imap", "allow")])
    housekeeping(w1)
    assert store.audit_events(actor="tester") == []
    store.record_audit([AuditEvent(old, "tester2", "login", "imap", "allow")])
    housekeeping(w2)
    assert [e.actor for e in store.audit_events(actor="tester2")] == ["tester2"]
    holder, until = store.job_lease("audit-purge")
    assert until > datetime.now(UTC) + timedelta(seconds=AUDIT_PURGE_INTERVAL - 60)
    assert store.job_lease("login-throttle-purge") is not None
