"""FolderWatcher with a change feed (PostgreSQL LISTEN/NOTIFY): no polling
while the feed listens, a read of everything when it (re)starts listening, a
read of each newly watched folder (a change committed before the watch was
notified to nobody), pushed folder and access changes wake the right
sessions at no store cost, and polling again while the feed is down.

The feed here is a stand-in that hands the watcher's listener to the test
(the real one, storage.notify.PgChangeFeed, is tested against PostgreSQL in
tests/storage/test_change_feed.py and end to end in test_several_nodes.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from imapd.watcher import FolderWatcher, _read_states


class Reactor(Clock):
    """A Clock with what the watcher asks of a reactor."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[Any] = []

    def callFromThread(self, fn: Any, *args: Any) -> None:  # noqa: N802 - Twisted's name
        fn(*args)

    def addSystemEventTrigger(self, phase: str, event: str, fn: Any) -> None:  # noqa: N802
        self.triggers.append((phase, event, fn))


class ManualRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []
        self.deferreds: list[defer.Deferred[Any]] = []

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        self.calls.append((fn, args))
        d: defer.Deferred[Any] = defer.Deferred()
        self.deferreds.append(d)
        return d

    run_quick = run

    def reads(self) -> list[list[int]]:
        return [list(args[1]) for fn, args in self.calls if fn is _read_states]


class Feed:
    def __init__(self) -> None:
        self.listener: Any = None
        self.stopped = False

    def start(self, listener: Any) -> None:
        self.listener = listener

    def stop(self) -> None:
        self.stopped = True

    @property
    def live(self) -> bool:
        return False


def _setup() -> tuple[FolderWatcher, ManualRunner, Reactor, Feed]:
    runner, reactor, feed = ManualRunner(), Reactor(), Feed()
    w = FolderWatcher(store=None, runner=runner, reactor=reactor, feed=feed)  # type: ignore[arg-type]
    return w, runner, reactor, feed


def test_polls_until_the_feed_listens_then_only_reads_once() -> None:
    w, runner, reactor, feed = _setup()
    woken: list[int] = []
    w.watch(7, woken.append, (5, 10))
    assert feed.listener is not None  # started with the first watch
    assert any(t[2] == w.stop_feed for t in reactor.triggers)
    reactor.advance(0.25)  # not listening yet: the fallback poll
    assert runner.reads() == [[7]]
    runner.deferreds[-1].callback(({7: (5, 10)}, 0))
    feed.listener.feed_state(True)
    assert w.feed_live
    assert runner.reads() == [[7], [7]]  # everything once, as it listens
    runner.deferreds[-1].callback(({7: (6, 11)}, 0))  # a change nobody was told of
    assert woken == [7]
    reactor.advance(5.0)
    assert len(runner.reads()) == 2  # and no polling while it listens


def test_pushed_changes_wake_the_watchers_of_those_folders_at_no_cost() -> None:
    w, runner, reactor, feed = _setup()
    woken: list[tuple[str, int]] = []
    w.watch(7, lambda f: woken.append(("a", f)), (5, 10))
    w.watch(8, lambda f: woken.append(("b", f)), (1, 1))
    feed.listener.feed_state(True)
    runner.deferreds[-1].callback(({7: (5, 10), 8: (1, 1)}, 3))
    calls = len(runner.calls)
    feed.listener.folders_changed(frozenset({8, 99}))  # 99: nobody here watches it
    assert woken == [("b", 8)] and len(runner.calls) == calls


def test_a_new_watch_reads_its_folder_once_while_the_feed_listens() -> None:
    w, runner, reactor, feed = _setup()
    w.watch(7, lambda f: None, (5, 10))
    feed.listener.feed_state(True)
    runner.deferreds[-1].callback(({7: (5, 10)}, 0))
    woken: list[int] = []
    w.watch(9, woken.append, (2, 2))
    w.watch(10, woken.append, (4, 4))
    reactor.advance(0)  # both new watches: one read, of those two folders only
    assert runner.reads()[-1] == [9, 10]
    runner.deferreds[-1].callback(({9: (3, 3), 10: (4, 4)}, 0))  # 9 moved meanwhile
    assert woken == [9]


def test_access_changes_are_pushed_with_their_epoch() -> None:
    w, runner, reactor, feed = _setup()
    told: list[str] = []
    w.watch_access(lambda: told.append("x"))
    feed.listener.feed_state(True)
    runner.deferreds[-1].callback(({}, 4))
    assert w.access_epoch == 4 and told == ["x"]
    feed.listener.access_changed(5)
    assert w.access_epoch == 5 and told == ["x", "x"]
    feed.listener.access_changed(5)  # nothing new
    feed.listener.access_changed(3)  # older than what is known
    assert w.access_epoch == 5 and told == ["x", "x"]
    # A read that started before the last notification does not go back.
    w.watch(7, lambda f: None, (1, 1))
    reactor.advance(0)
    feed.listener.access_changed(6)
    runner.deferreds[-1].callback(({7: (1, 1)}, 5))
    assert w.access_epoch == 6 and told == ["x", "x", "x"]


def test_a_lost_feed_means_polling_again_and_an_unknown_epoch() -> None:
    w, runner, reactor, feed = _setup()
    w.watch(7, lambda f: None, (5, 10))
    w.watch_access(lambda: None)
    feed.listener.feed_state(True)
    runner.deferreds[-1].callback(({7: (5, 10)}, 4))
    reads = len(runner.reads())
    feed.listener.feed_state(False)
    assert not w.feed_live and w.access_epoch is None
    reactor.advance(0.25)
    assert len(runner.reads()) == reads + 1  # polling
    runner.deferreds[-1].callback(({7: (5, 10)}, 4))
    reactor.advance(0.25)
    assert len(runner.reads()) == reads + 2
    runner.deferreds[-1].callback(({7: (5, 10)}, 4))
    feed.listener.feed_state(True)  # back: one read, then quiet
    runner.deferreds[-1].callback(({7: (5, 10)}, 4))
    reactor.advance(2.0)
    assert len(runner.reads()) == reads + 3


def test_shutdown_stops_the_feed() -> None:
    w, runner, reactor, feed = _setup()
    w.watch(7, lambda f: None, (5, 10))
    w.stop_feed()
    assert feed.stopped


def test_without_a_feed_it_polls_as_before() -> None:
    runner, reactor = ManualRunner(), Reactor()
    w = FolderWatcher(store=None, runner=runner, reactor=reactor)  # type: ignore[arg-type]
    w.watch(7, lambda f: None, (5, 10))
    reactor.advance(0.25)
    runner.deferreds[-1].callback(({7: (5, 10)}, 0))
    reactor.advance(0.25)
    assert runner.reads() == [[7], [7]]
