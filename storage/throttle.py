"""Login throttling state of `SqlStore` (`login_failures`): what the policy's
throttle (`policy.throttle`) counts, shared by every process and node.

The read every password login makes is fixed SQL (`FixedSelect`). Updates
are read-modify-write in one transaction per call: SQLite serialises writers
(``BEGIN IMMEDIATE``); on PostgreSQL a missing row is first inserted with
``ON CONFLICT DO NOTHING`` so that there is always a row to lock ``FOR
UPDATE`` (two processes counting the first failure of a key at once then
meet on that row instead of one failing on the unique constraint).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.interface import (
    MAX_THROTTLE_SUBJECT,
    LoginFailures,
    StoreUnavailable,
    ThrottleKey,
    ThrottleScope,
)
from storage.sqlbase import (
    LF,
    FixedSelect,
    StoreBase,
    login_failures_record,
    times_text,
    utcnow,
)

# A row deleted by another transaction between our insert and our lock is
# looked for again; more than this many times in a row means something is
# wrong with the database.
_ATTEMPTS = 5


def _check_key(key: ThrottleKey) -> None:
    if len(key[1]) > MAX_THROTTLE_SUBJECT:
        raise ValueError(f"throttle subject longer than {MAX_THROTTLE_SUBJECT} characters")


class ThrottleMixin(StoreBase):
    """The login-throttling part of `storage.interface.MessageStore`."""

    def _failures_select(self, count: int) -> FixedSelect:
        where = " OR ".join(["(t.scope = ? AND t.subject = ?)"] * count)
        return self._fixed(f"login_failures.{count}", LF, where)

    def login_failures(self, keys: Sequence[ThrottleKey]) -> list[LoginFailures]:
        if not keys:
            return []
        params: list[Any] = []
        for scope, subject in keys:
            params += [scope.name, subject]
        with self._dbapi(write=False) as cur:
            rows = self._failures_select(len(keys)).rows(cur, params)
        return [login_failures_record(r) for r in rows]

    def update_login_failures(
        self,
        keys: Sequence[ThrottleKey],
        update_fn: Callable[[ThrottleKey, LoginFailures | None], LoginFailures | None],
    ) -> list[LoginFailures | None]:
        for key in keys:
            _check_key(key)
        results: dict[ThrottleKey, LoginFailures | None] = {}
        # One lock order for every caller: no deadlock on PostgreSQL.
        ordered = sorted(set(keys), key=lambda k: (k[0].name, k[1]))
        with self._write() as c:
            for key in ordered:
                results[key] = self._update_one(c, key, update_fn)
        return [results[key] for key in keys]

    def _update_one(
        self,
        c: Any,
        key: ThrottleKey,
        update_fn: Callable[[ThrottleKey, LoginFailures | None], LoginFailures | None],
    ) -> LoginFailures | None:
        scope, subject = key
        insert = pg_insert if self._pg else sqlite_insert
        placeholder = (
            insert(LF)
            .values(scope=scope, subject=subject, last_failure=utcnow(), recent="", level=0,
                    locked_until=None, refused=0)
            .on_conflict_do_nothing(index_elements=[LF.c.scope, LF.c.subject])
            .returning(LF.c.id)
        )
        lookup = select(LF).where(LF.c.scope == scope, LF.c.subject == subject)
        if self._pg:
            lookup = lookup.with_for_update()
        for _ in range(_ATTEMPTS):
            row_id = c.execute(placeholder).scalar()
            current: LoginFailures | None = None
            if row_id is None:  # the row was there: lock it and read it
                row = c.execute(lookup).first()
                if row is None:
                    continue  # deleted meanwhile by another transaction
                row_id, current = row.id, login_failures_record(row)
            new = update_fn(key, current)
            if new is None:
                c.execute(delete(LF).where(LF.c.id == row_id))
                return None
            if (new.scope, new.subject) != key:
                raise ValueError("update returned the state of another key")
            c.execute(
                update(LF).where(LF.c.id == row_id).values(
                    last_failure=new.last_failure, recent=times_text(new.recent),
                    level=new.level, locked_until=new.locked_until, refused=new.refused,
                )
            )
            return new
        raise StoreUnavailable("login throttle row kept disappearing")

    def clear_login_failures(self, key: ThrottleKey) -> LoginFailures | None:
        scope, subject = key
        lookup = select(LF).where(LF.c.scope == scope, LF.c.subject == subject)
        if self._pg:
            lookup = lookup.with_for_update()
        with self._write() as c:
            row = c.execute(lookup).first()
            if row is None:
                return None
            c.execute(delete(LF).where(LF.c.id == row.id))
        return login_failures_record(row)

    def list_login_failures(self, scope: ThrottleScope | None = None) -> list[LoginFailures]:
        q = select(LF).order_by(LF.c.scope, LF.c.subject)
        if scope is not None:
            q = q.where(LF.c.scope == scope)
        with self._read() as c:
            return [login_failures_record(r) for r in c.execute(q)]

    def purge_login_failures(self, before: datetime) -> int:
        with self._write() as c:
            return int(c.execute(
                delete(LF).where(
                    LF.c.last_failure < before,
                    or_(LF.c.locked_until.is_(None), LF.c.locked_until < before),
                )
            ).rowcount)
