"""NOTIFY mailbox-name events across processes: a folder created, renamed,
deleted or (un)subscribed through one store object (another IMAP worker, a
node, `mssctl`) reaches the name listeners of a watcher on another store
object of the same database (a process of its own), from the store's name
events; those the watcher's own process made, told at once already, are not
told twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from imapd.watcher import FolderWatcher, NameChange
from storage import open_store
from storage.interface import MailboxType
from storage.store import SqlStore


class InlineRunner:
    """Runs store calls at once (the thread pool's result, without threads)."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        self.calls += 1
        return defer.maybeDeferred(fn, *args)


def _two_processes(tmp_path: Path, store: SqlStore) -> tuple[SqlStore, int]:
    mb = store.add_mailbox("cardiologie@hopital.test", MailboxType.ORG)
    url, key_file = f"sqlite:///{tmp_path / 'mss.db'}", tmp_path / "keys"
    return open_store(url, key_file), mb.id  # type: ignore[return-value]


def test_name_changes_of_another_process_reach_the_listeners(
        tmp_path: Path, store: Any) -> None:
    other, mbid = _two_processes(tmp_path, store)
    try:
        reactor = Clock()
        watcher = FolderWatcher(store, InlineRunner(), reactor)
        told: list[NameChange] = []
        assert other.origin != store.origin
        other.create_folder(mbid, "Avant")  # before anyone listened: nobody's news
        watcher.watch_names(told.append)
        reactor.advance(watcher.interval)
        assert told == []
        other.create_folder(mbid, "Projets")
        other.rename_folder(mbid, "Projets", "Dossiers")
        other.set_subscribed(mbid, "Dossiers", True)
        other.delete_folder(mbid, "Avant")
        assert told == []  # read at the next poll
        reactor.advance(watcher.interval)
        assert told == [
            NameChange(mbid, "Projets"),
            NameChange(mbid, "Dossiers", old_name="Projets"),
            NameChange(mbid, "Dossiers", subscribed=True),
            NameChange(mbid, "Avant", deleted=True),
        ]
        # Made through this process's own store: told at once by the session
        # (notify_names), so not again from the store.
        store.create_folder(mbid, "Local")
        reactor.advance(watcher.interval)
        reactor.advance(watcher.interval)
        assert len(told) == 4
    finally:
        other.close()


def test_nothing_is_read_while_nobody_listens(tmp_path: Path, store: Any) -> None:
    other, mbid = _two_processes(tmp_path, store)
    try:
        reactor, runner = Clock(), InlineRunner()
        watcher = FolderWatcher(store, runner, reactor)
        told: list[NameChange] = []
        token = watcher.watch_names(told.append)
        watcher.unwatch_names(token)
        calls = runner.calls
        other.create_folder(mbid, "Projets")
        reactor.advance(watcher.interval * 4)
        assert runner.calls == calls and told == []
        # A new listener starts from now: what came before is not told.
        watcher.watch_names(told.append)
        reactor.advance(watcher.interval)
        assert told == []
    finally:
        other.close()


def test_a_change_fed_by_the_database_is_read_at_once(tmp_path: Path, store: Any) -> None:
    """With a change feed (PostgreSQL NOTIFY on `mss_names`) nothing polls:
    the feed's news of a name event makes the watcher read them."""
    other, mbid = _two_processes(tmp_path, store)

    class Feed:
        listener: Any = None

        def start(self, listener: Any) -> None:
            self.listener = listener

        def stop(self) -> None:
            pass

        @property
        def live(self) -> bool:
            return True

    try:
        reactor, feed = Clock(), Feed()
        reactor.callFromThread = lambda fn, *a: fn(*a)  # type: ignore[attr-defined]
        reactor.addSystemEventTrigger = lambda *a: None  # type: ignore[attr-defined]
        watcher = FolderWatcher(store, InlineRunner(), reactor, feed=feed)
        told: list[NameChange] = []
        watcher.watch_names(told.append)
        feed.listener.feed_state(True)
        other.create_folder(mbid, "Projets")
        reactor.advance(watcher.interval * 4)
        assert told == []  # no polling while the feed listens
        last, _ = other.name_events_since(None)
        feed.listener.names_changed(last)
        assert told == [NameChange(mbid, "Projets")]
    finally:
        other.close()
