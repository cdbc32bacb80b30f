"""The outbound queue and the audit table of `SqlStore`.

Queue entries keep their envelope clear (routing, `mssctl queue`) and their
message encrypted; audit rows never hold message content."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from storage import crypto
from storage.interface import (
    AuditEvent,
    DSNParams,
    NotFound,
    QueueEntry,
    QueueOrigin,
    StoreUnavailable,
    audit_mailbox,
)
from storage.sqlbase import (
    AU,
    QUEUE_COLUMNS,
    Q,
    StoreBase,
    dsn_to_json,
    origin_to_json,
    queue_entry_record,
    utcnow,
)

_INSERT_AUDIT = (
    "INSERT INTO audit (time, actor, action, target, result, details, mailbox)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _same(value: Any) -> Any:
    return value


class OutboundMixin(StoreBase):
    """Queue and audit part of `storage.interface.MessageStore`."""

    # -- outbound queue ----------------------------------------------------

    def enqueue(
        self, sender: str, recipients: Sequence[str], raw: bytes, dsn: DSNParams | None = None,
        origin: QueueOrigin | None = None,
    ) -> QueueEntry:
        dsn = dsn or DSNParams()
        key_id, blob = self._keys.ring().encrypt(raw, crypto.AAD_QUEUE)
        now = utcnow().replace(microsecond=0)
        values = {
            "sender": sender,
            "recipients": json.dumps(list(recipients)),
            "dsn": dsn_to_json(dsn),
            "created": now,
            "next_attempt": now,
            "lease_until": None,
            "attempts": 0,
            "last_error": None,
            "size": len(raw),
            "key_id": key_id,
            "body": blob,
            "origin": origin_to_json(origin),
        }
        with self._write() as c:
            new_id = c.execute(insert(Q).values(**values)).inserted_primary_key[0]
        return QueueEntry(new_id, sender, tuple(recipients), now, now, 0, None, len(raw), dsn,
                          origin)

    def due_entries(self, now: datetime, limit: int = 100) -> list[QueueEntry]:
        q = (
            select(*QUEUE_COLUMNS)
            .where(
                Q.c.next_attempt <= now,
                or_(Q.c.lease_until.is_(None), Q.c.lease_until <= now),
            )
            .order_by(Q.c.next_attempt, Q.c.id)
            .limit(limit)
        )
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        with self._write() as c:
            rows = c.execute(q).all()
            if rows:
                c.execute(
                    update(Q)
                    .where(Q.c.id.in_([r.id for r in rows]))
                    .values(lease_until=now + self._lease)
                )
        return [queue_entry_record(r) for r in rows]

    def queue_body(self, entry_id: int) -> bytes:
        with self._read() as c:
            r = c.execute(select(Q.c.key_id, Q.c.body).where(Q.c.id == entry_id)).first()
        if r is None:
            raise NotFound(f"queue entry {entry_id}")
        return self._decrypt(r.key_id, r.body, crypto.AAD_QUEUE)

    def record_attempt(
        self,
        entry_id: int,
        *,
        delivered: Sequence[str],
        failed: Sequence[str],
        error: str | None,
        next_attempt: datetime | None,
    ) -> None:
        done = {a.lower() for a in (*delivered, *failed)}
        with self._write() as c:
            r = c.execute(
                select(Q.c.recipients, Q.c.next_attempt).where(Q.c.id == entry_id).with_for_update()
            ).first()
            if r is None:
                raise NotFound(f"queue entry {entry_id}")
            remaining = [a for a in json.loads(r.recipients) if a.lower() not in done]
            if not remaining:
                c.execute(delete(Q).where(Q.c.id == entry_id))
                return
            c.execute(
                update(Q)
                .where(Q.c.id == entry_id)
                .values(
                    recipients=json.dumps(remaining),
                    attempts=Q.c.attempts + 1,
                    last_error=error,
                    next_attempt=next_attempt or r.next_attempt,
                    lease_until=None,
                )
            )

    def remove_entry(self, entry_id: int) -> None:
        with self._write() as c:
            n = c.execute(delete(Q).where(Q.c.id == entry_id)).rowcount
        if n == 0:
            raise NotFound(f"queue entry {entry_id}")

    def retry_entry(self, entry_id: int) -> None:
        with self._write() as c:
            n = c.execute(
                update(Q)
                .where(Q.c.id == entry_id)
                .values(next_attempt=utcnow().replace(microsecond=0), lease_until=None)
            ).rowcount
        if n == 0:
            raise NotFound(f"queue entry {entry_id}")

    def queue_stats(self) -> tuple[int, datetime | None]:
        with self._read() as c:
            count, oldest = c.execute(select(func.count(Q.c.id), func.min(Q.c.created))).one()
        return int(count), oldest

    def list_queue(self) -> list[QueueEntry]:
        with self._read() as c:
            return [
                queue_entry_record(r) for r in c.execute(select(*QUEUE_COLUMNS).order_by(Q.c.id))
            ]

    # -- audit -------------------------------------------------------------

    def record_audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        # The audit mirror writes hundreds of rows a second: one DB-API
        # executemany, with the column type's own conversion of the time (so
        # rows read back exactly as through SQLAlchemy). The rows are made
        # before the transaction: on SQLite its write lock is every
        # process's, and building them is most of the work (about 30 µs an
        # event: a batch of 300 held the lock 20 ms).
        dialect = self._engine.dialect
        dbapi: Any = dialect.dbapi
        to_db = AU.c.time.type.dialect_impl(dialect).bind_processor(dialect) or _same
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        sql = _INSERT_AUDIT.replace("?", mark)
        rows = [
            (
                to_db(e.time),
                e.actor,
                e.action,
                e.target,
                e.result,
                e.details_json if e.details_json is not None
                else json.dumps(e.details, ensure_ascii=False, default=str),
                audit_mailbox(e.target),
            )
            for e in events
        ]
        with self._write() as c:
            cursor = c.connection.dbapi_connection.cursor()
            try:
                cursor.executemany(sql, rows)
            except dbapi.Error as exc:
                if isinstance(exc, dbapi.OperationalError):
                    raise StoreUnavailable("database unavailable") from exc
                raise
            finally:
                cursor.close()

    def audit_events(
        self,
        *,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        until: datetime | None = None,
        actions: Sequence[str] = (),
        mailbox: str | None = None,
        actor_prefix: bool = False,
        newest: bool = False,
    ) -> list[AuditEvent]:
        q = select(AU)
        if actor is not None:
            if actor_prefix:
                # Not LIKE: SQLite's ignores ASCII case, PostgreSQL's does not.
                q = q.where(func.substr(AU.c.actor, 1, len(actor)) == actor)
            else:
                q = q.where(AU.c.actor == actor)
        if since is not None:
            q = q.where(AU.c.time >= since)
        if until is not None:
            q = q.where(AU.c.time < until)
        if actions:
            q = q.where(AU.c.action.in_(list(actions)))
        if mailbox is not None:
            q = q.where(AU.c.mailbox == (audit_mailbox(mailbox) or mailbox))
        if newest:
            q = q.order_by(AU.c.time.desc(), AU.c.id.desc())
        else:
            q = q.order_by(AU.c.time, AU.c.id)
        with self._read() as c:
            rows = c.execute(q.limit(max(0, limit))).all()
        if newest:
            rows.reverse()
        return [
            AuditEvent(r.time, r.actor, r.action, r.target, r.result, json.loads(r.details))
            for r in rows
        ]

    def purge_audit(self, before: datetime) -> int:
        with self._write() as c:
            return int(c.execute(delete(AU).where(AU.c.time < before)).rowcount)
