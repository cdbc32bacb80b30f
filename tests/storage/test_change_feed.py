"""`MessageStore.change_feed`: PostgreSQL pushes committed folder and access
changes (LISTEN/NOTIFY, triggers of migration 0014) to a listener on the
feed's own thread; a rolled-back change is never announced; a lost listening
connection is reported and opened again. SQLite has no feed."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import open_store
from storage.interface import AccountClass, Delivery, FlagMode, MailboxType

pytestmark = pytest.mark.postgres
WAIT = 5.0


class Collector:
    """A ChangeListener that queues what it is told, for the test thread."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def folders_changed(self, folder_ids: frozenset[int]) -> None:
        self.events.put(("folders", folder_ids))

    def access_changed(self, epoch: int) -> None:
        self.events.put(("access", epoch))

    def names_changed(self, last_id: int) -> None:
        self.events.put(("names", last_id))

    def feed_state(self, live: bool) -> None:
        self.events.put(("state", live))

    def next(self, timeout: float = WAIT) -> tuple[str, Any]:
        return self.events.get(timeout=timeout)

    def wait_for(self, kind: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got_kind, value = self.next(max(0.01, deadline - time.monotonic()))
            if got_kind == kind:
                return value

    def quiet(self, seconds: float) -> list[tuple[str, Any]]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.events.get(timeout=left))
            except queue.Empty:
                break
        return out


@pytest.fixture
def pg_store(pg_cluster: Any, tmp_path: Path) -> Iterator[Any]:
    from storage.crypto import generate_key_file

    generate_key_file(tmp_path / "keys")
    s = open_store(pg_cluster.url(pg_cluster.new_database()), tmp_path / "keys")
    s.add_domain("hopital.test")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def feed(pg_store: Any) -> Iterator[tuple[Any, Collector]]:
    f = pg_store.change_feed()
    assert f is not None
    f.backoff_initial = 0.05
    c = Collector()
    f.start(c)
    assert c.next() == ("state", True)
    assert f.live
    try:
        yield f, c
    finally:
        f.stop()


def _box(store: Any, login: str = "dr@hopital.test") -> tuple[Any, Any]:
    acc = store.add_account(login, "Dr", AccountClass.PRACTITIONER)
    box = store.add_mailbox(login, MailboxType.PER, owner_account_id=acc.id)
    return acc, box


RAW = b"From: <a@labo.test>\r\nSubject: r\r\nMessage-ID: <r@labo.test>\r\n\r\nx\r\n"


def test_sqlite_has_no_feed(store: Any) -> None:
    assert store.change_feed() is None


def test_committed_changes_reach_the_listener(
    pg_store: Any, feed: tuple[Any, Collector]
) -> None:
    _, c = feed
    acc, box = _box(pg_store)
    inbox = pg_store.get_folder(box.id, "INBOX")
    trash = pg_store.get_folder(box.id, "Trash")
    c.quiet(0.3)  # whatever creating the box announced
    t0 = time.monotonic()
    [res] = pg_store.deliver(Delivery(RAW, (box.id,)))
    assert c.wait_for("folders") == frozenset({inbox.id})
    assert time.monotonic() - t0 < 1.0
    pg_store.store_flags(inbox.id, [res.uid], FlagMode.ADD, {"\\Deleted"})
    assert c.wait_for("folders") == frozenset({inbox.id})
    pg_store.copy(inbox.id, [res.uid], trash.id)
    assert c.wait_for("folders") == frozenset({trash.id})
    pg_store.expunge(inbox.id)
    assert c.wait_for("folders") == frozenset({inbox.id})
    # The access epoch comes with its value.
    before = pg_store.access_epoch()
    pg_store.set_account_active(acc.login, False)
    assert c.wait_for("access") == before + 1 == pg_store.access_epoch()
    # A deleted folder is announced too.
    pg_store.delete_folder(box.id, "Trash")
    assert c.wait_for("folders") == frozenset({trash.id})


def test_a_rolled_back_change_is_never_announced(
    pg_store: Any, feed: tuple[Any, Collector]
) -> None:
    from sqlalchemy import text

    _, c = feed
    _, box = _box(pg_store)
    inbox = pg_store.get_folder(box.id, "INBOX")
    c.quiet(0.3)
    with pg_store.engine.connect() as conn:
        conn.execute(text("UPDATE folders SET highestmodseq = highestmodseq + 1 "
                          "WHERE id = :id"), {"id": inbox.id})
        conn.rollback()
    assert c.quiet(0.5) == []
    with pg_store.engine.begin() as conn:
        conn.execute(text("UPDATE folders SET highestmodseq = highestmodseq + 1 "
                          "WHERE id = :id"), {"id": inbox.id})
    assert c.wait_for("folders") == frozenset({inbox.id})


def test_a_lost_connection_is_reported_and_reopened(
    pg_cluster: Any, pg_store: Any, feed: tuple[Any, Collector]
) -> None:
    f, c = feed
    _, box = _box(pg_store)
    inbox = pg_store.get_folder(box.id, "INBOX")
    c.quiet(0.3)
    # The server ends the listening session (as a restart or a network cut would).
    dbname = pg_store.engine.url.database
    pg_cluster.admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = 'mss-change-feed' AND datname = '{dbname}'")
    assert c.wait_for("state") is False
    assert c.wait_for("state") is True
    assert f.live
    pg_store.deliver(Delivery(RAW, (box.id,)))
    assert c.wait_for("folders") == frozenset({inbox.id})
    # The same from our side of the connection.
    f.break_connection()
    assert c.wait_for("state") is False
    assert c.wait_for("state") is True


def test_stop_returns_promptly(pg_store: Any) -> None:
    f = pg_store.change_feed()
    c = Collector()
    f.start(c)
    assert c.next() == ("state", True)
    t0 = time.monotonic()
    f.stop()
    assert time.monotonic() - t0 < 2.0
    assert c.next() == ("state", False)


def test_name_events_are_announced_and_read_by_another_store(
    pg_cluster: Any, pg_store: Any, feed: tuple[Any, Collector], tmp_path: Path
) -> None:
    """A folder created, renamed, subscribed or deleted through one store
    object (one process) is announced on `mss_names` at its commit and read
    by another (NOTIFY MailboxName across processes, migration 0017)."""
    _, c = feed
    _, box = _box(pg_store)
    other = open_store(pg_store._engine.url.render_as_string(hide_password=False),
                       tmp_path / "keys")
    try:
        start, none = other.name_events_since(None)
        assert none == []
        c.quiet(0.3)
        pg_store.create_folder(box.id, "Projets")
        last = c.wait_for("names")
        pg_store.rename_folder(box.id, "Projets", "Dossiers")
        assert c.wait_for("names") > last
        after, events = other.name_events_since(start)
        assert [(e.name, e.old_name, e.deleted, e.origin) for e in events] == [
            ("Projets", None, False, pg_store.origin),
            ("Dossiers", "Projets", False, pg_store.origin)]
        assert after == events[-1].id
        # Read again within storage.names.GRACE: the same events come back
        # (one may have committed late); the reader skips those it has seen.
        assert [e.id for e in other.name_events_since(after)[1]] == [e.id for e in events]
    finally:
        other.close()
