"""Folder name events (`name_events`): what NOTIFY MailboxName and
SubscriptionChange (RFC 5465 5.4, 5.5) tell, shared by every IMAP process
and node through the store.

`create_folder`, `delete_folder`, `rename_folder` and `set_subscribed` each
record one event in their own transaction, naming the store object that made
it (`origin`, one per process): that process has told its own sessions
already, the others read the events after the last one they read
(`name_events_since`; on PostgreSQL a trigger NOTIFYs each at commit, channel
`mss_names`). Events are kept `KEEP`: a process away longer misses some, as
a NOTIFY client does not hear of what happened while it was not connected.

An id is handed out at insert, not at commit: on PostgreSQL an event can
commit after one with a larger id was read. So a read there also
returns the events recorded in the last `GRACE` whatever their id, and the
reader skips those it has seen (`imapd.watcher`): a change committed up to
`GRACE` after it was recorded is not missed. (SQLite commits one writer at a
time: ids come in commit order.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, func, insert, or_, select

from storage.interface import NameEvent
from storage.sqlbase import NE, StoreBase

KEEP = timedelta(hours=1)
GRACE = timedelta(seconds=60)
BATCH = 1000  # the most events one read returns
PRUNE_EVERY = 256  # events a store object records between two prunings


class NameEventsMixin(StoreBase):
    """The name-event part of `storage.interface.MessageStore`."""

    _origin: str = ""  # set by the store's constructor
    _recorded = 0

    @property
    def origin(self) -> str:
        return self._origin

    def _record_name_event(
        self, c: Connection, mailbox_id: int, name: str, *, old_name: str | None = None,
        deleted: bool = False, subscribed: bool | None = None,
    ) -> None:
        """In the transaction that makes the change."""
        now = datetime.now(UTC)
        c.execute(insert(NE).values(
            mailbox_id=mailbox_id, name=name, old_name=old_name, deleted=deleted,
            subscribed=subscribed, origin=self.origin, created=now))
        self._recorded += 1
        if self._recorded % PRUNE_EVERY == 1:
            c.execute(delete(NE).where(NE.c.created < now - KEEP))

    def name_events_since(self, after: int | None) -> tuple[int, list[NameEvent]]:
        with self._read() as c:
            if after is None:
                newest = c.execute(select(func.max(NE.c.id))).scalar()
                return int(newest or 0), []
            newer = NE.c.id > after
            query = select(NE).where(newer)
            if self._pg:  # SQLite commits one writer at a time: ids in commit order
                # The events past `after` first, then the late ones of the
                # window: a burst of more than BATCH in GRACE must not hand
                # back the same already-read batch at every read.
                query = select(NE).where(or_(newer, NE.c.created >= datetime.now(UTC) - GRACE)
                                         ).order_by(newer.desc())
            rows = c.execute(query.order_by(NE.c.id).limit(BATCH)).all()
        events = [NameEvent(r.id, r.mailbox_id, r.name, r.old_name, bool(r.deleted),
                            None if r.subscribed is None else bool(r.subscribed), r.origin)
                  for r in rows]
        return max([after, *(e.id for e in events)]), events
