"""One periodic task per process that notices changes to selected folders.

Mail delivered by the SMTP daemon in another process (or another node) only
shows in the store, which is the truth. Rather than one timer per session, the
process keeps a single `FolderWatcher`: every `interval` seconds it reads the
(uidnext, highestmodseq) of every folder that some session of this process has
selected, in one store call, and wakes the sessions of the folders that moved.
Sessions then pull their own `changes_since` (they may be at different points).
Changes made by this process are signalled at once with `notify_local`.

The same poll reads the store's access epoch (see `MessageStore.access_epoch`)
while any session of the process is logged in, and wakes them all when it
moves: a grant revoked or an account disabled by any process reaches idling
sessions within one interval.

Where the store pushes changes (`MessageStore.change_feed`: PostgreSQL
LISTEN/NOTIFY, one listening connection per process), nothing polls while the
feed listens: a committed change of a watched folder wakes its sessions as
the notification arrives, and the access epoch comes with its own. Because a
notification that arrives before a session registers is not for it, a new
watch reads that folder once (and the epoch, if unknown). When the feed loses
its connection the watcher polls every `interval` until the feed listens
again, then reads everything once (what committed in between was notified to
nobody) and stops polling.

Folder name events (NOTIFY MailboxName, SubscriptionChange) made by a session
of this process are told to the others at once (`notify_names`); those made
by other processes or nodes (or `mssctl`) are read from the store
(`MessageStore.name_events_since`) at each poll, or when the feed says some
committed, while a session listens for them. The process skips the events it
recorded itself (their `origin` is its store's): it told them already.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.python.failure import Failure

from storage.interface import ChangeFeed, FolderChanges, MessageStore, NameEvent
from storage.names import GRACE

log = logging.getLogger(__name__)

Listener = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class NameChange:
    """A folder created, deleted, renamed or (un)subscribed (NOTIFY
    MailboxName / SubscriptionChange, RFC 5465 5.4, 5.5), by a session of
    this process or read from the store's name events. `name`: the store's
    folder name after the change."""

    mailbox_id: int
    name: str
    old_name: str | None = None  # renamed from
    deleted: bool = False
    subscribed: bool | None = None  # a subscription change: subscribed now?
    # Set by the NOTIFY session that hears of a name change: whether the name
    # (or the old name of a RENAME) was on the subscription list as it knew
    # it, for a `subscribed` filter (RFC 5465 6.2).
    was_subscribed: bool = False


NameListener = Callable[[NameChange], None]
# (folder, MODSEQ since, claim \Recent, known max UID, seen account)
_PullKey = tuple[int, int, bool, int, int | None]


class FolderWatcher:
    def __init__(
        self, store: MessageStore, runner: Any, reactor: Any, interval: float = 0.25,
        feed: ChangeFeed | None = None,
    ) -> None:
        self._store = store
        self._feed = feed
        self._feed_started = False
        self.feed_live = False  # the feed listens: no polling
        self._check: set[int] = set()  # folders to read once (new watches, feed mode)
        self._check_epoch = False
        self._check_scheduled = False
        self._runner = runner
        self._reactor = reactor
        self.interval = interval
        self._listeners: dict[int, dict[int, Listener]] = {}  # folder -> token -> cb
        self._access_listeners: dict[int, Callable[[], None]] = {}  # token -> cb
        self._name_listeners: dict[int, NameListener] = {}  # token -> cb
        # The store's name events: the last id read (None: not known yet,
        # nobody listens), the id below which none is told (those before the
        # first listener came), the ids told (id -> when) for `GRACE`.
        self._names_after: int | None = None
        self._names_floor = 0
        self._names_seen: dict[int, float] = {}
        self._names_reading = False
        self._names_again = False
        # The store's access epoch as last polled (None: not polled yet).
        self.access_epoch: int | None = None
        self._state: dict[int, tuple[int, int]] = {}  # folder -> (uidnext, modseq)
        self._next_token = 0
        self._loop: task.LoopingCall | None = None
        self._polling = False
        self._inflight: dict[_PullKey, list[defer.Deferred[Any]]] = {}
        # Results already obtained while waking the sessions of one folder.
        self._round: dict[_PullKey, Any] | None = None

    # ------------------------------------------------------------ registry

    def watch(
        self, folder_id: int, listener: Listener, baseline: tuple[int, int] | None = None
    ) -> int:
        """`baseline` is (uidnext, highestmodseq) as the watching session knows
        the folder: a later difference wakes it."""
        self._next_token += 1
        if baseline is not None:
            self._state.setdefault(folder_id, baseline)
        token = self._next_token
        self._listeners.setdefault(folder_id, {})[token] = listener
        self._ensure_running()
        if self.feed_live:
            self._schedule_check(folder_id)
        return token

    def unwatch(self, folder_id: int, token: int) -> None:
        listeners = self._listeners.get(folder_id)
        if listeners is None:
            return
        listeners.pop(token, None)
        if not listeners:
            del self._listeners[folder_id]
            self._state.pop(folder_id, None)
        self._stop_when_unused()

    def watch_access(self, listener: Callable[[], None]) -> int:
        """A logged-in session: called whenever the access epoch moves."""
        self._next_token += 1
        self._access_listeners[self._next_token] = listener
        self._ensure_running()
        if self.feed_live and self.access_epoch is None:
            self._schedule_check(None)
        return self._next_token

    def unwatch_access(self, token: int) -> None:
        self._access_listeners.pop(token, None)
        self._stop_when_unused()

    def _stop_when_unused(self) -> None:
        if not self._name_listeners:
            self._names_after = None  # nobody listens: events are not read
            self._names_seen.clear()
        if not self._listeners and not self._access_listeners and not self._name_listeners:
            self.stop()
            self.access_epoch = None  # unknown again until the next poll

    def watch_names(self, listener: NameListener) -> int:
        """A session whose NOTIFY asks for mailbox events: told of every
        `NameChange` made through this process at once, and of those of
        other processes as the store's name events are read."""
        self._next_token += 1
        self._name_listeners[self._next_token] = listener
        self._ensure_running()
        if self._names_after is None:
            self._read_names()  # where to start from
        return self._next_token

    def unwatch_names(self, token: int) -> None:
        self._name_listeners.pop(token, None)
        self._stop_when_unused()

    def notify_names(self, change: NameChange, *, exclude: int | None = None) -> None:
        for token, listener in list(self._name_listeners.items()):
            if token == exclude:
                continue  # RFC 5465 5: not to the session that made it
            try:
                listener(change)
            except Exception:  # a broken session must not stop the others
                log.exception("name listener failed")

    @property
    def folders(self) -> list[int]:
        return list(self._listeners)

    def notify_local(self, folder_id: int, *, exclude: int | None = None) -> None:
        """This process changed the folder: wake its other sessions now."""
        self._fire(folder_id, exclude)

    # ------------------------------------------------------------ pulling

    def pull(
        self, folder_id: int, modseq: int, claim: bool, known_max_uid: int,
        *, fresh: bool = False, seen_account: int | None = None,
    ) -> defer.Deferred[tuple[FolderChanges, frozenset[int]]]:
        """`changes_since` (and `claim_recent` when new messages appeared),
        shared by every session asking the same question at the same time:
        1,000 sessions idling on one folder cost one query, not 1,000. The
        claimed \\Recent UIDs go to the first asker only (RFC 3501 2.3.2).

        `fresh`: the asker has just committed a change of its own (APPEND,
        COPY into the selected folder) and must see it, so it never joins a
        query that may have read the store before that commit; later askers
        may join the fresh one. `seen_account`: the changes as that account
        sees them (private \\Seen); only its sessions share the query."""
        key = (folder_id, modseq, claim, known_max_uid, seen_account)
        if not fresh and self._round is not None and key in self._round:
            changes, _claimed = self._round[key]
            return defer.succeed((changes, frozenset()))
        waiter: defer.Deferred[Any] = defer.Deferred()
        waiters = self._inflight.get(key)
        if waiters is not None and not fresh:
            waiters.append(waiter)
            return waiter
        if waiters is not None:
            # An older query for the same key is still running: this one
            # goes alone (the older one keeps its own waiters).
            d0 = self._run_pull(key)
            d0.chainDeferred(waiter)
            return waiter
        self._inflight[key] = [waiter]

        def fire(result: Any) -> None:
            if self._round is not None and not isinstance(result, Failure):
                self._round[key] = result
            for i, w in enumerate(self._inflight.pop(key, [])):
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    changes, claimed = result
                    w.callback((changes, claimed if i == 0 else frozenset()))

        d = self._run_pull(key)
        d.addBoth(fire)
        return waiter

    def _run_pull(self, key: _PullKey) -> defer.Deferred[Any]:
        """Usually a short read: on the reactor thread on SQLite
        (`StoreRunner.run_quick`). A pull that claims \\Recent writes: on a
        thread when the folder is known to have new messages (a quick call
        that finds some anyway reaches the claim's write, and runs again on
        a thread)."""
        folder_id, _modseq, claim, known_max_uid, _seen = key
        uidnext = self._state.get(folder_id, (0, 0))[0]
        run = self._runner.run if claim and uidnext > known_max_uid + 1 else self._runner.run_quick
        return run(_pull, self._store, *key)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ polling

    def _ensure_running(self) -> None:
        if self._feed is not None and not self._feed_started:
            self._feed_started = True
            self._feed.start(_ReactorBridge(self))
            self._reactor.addSystemEventTrigger("before", "shutdown", self.stop_feed)
        if self.feed_live:
            return  # notifications do the work
        if self._loop is None:
            self._loop = task.LoopingCall(self.poll)
            self._loop.clock = self._reactor
            d = self._loop.start(self.interval, now=False)
            d.addErrback(lambda f: log.error("folder watcher stopped: %s", f.value))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def stop_feed(self) -> None:
        if self._feed is not None and self._feed_started:
            self._feed.stop()
            self._feed_started = False
            self.feed_live = False

    # ------------------------------------------------------------ the feed

    def on_feed_state(self, live: bool) -> None:
        """On the reactor: the change feed listens (again), or lost its
        connection."""
        if live == self.feed_live:
            return
        self.feed_live = live
        if live:
            self.stop()
            # What committed while nobody listened (not `poll`: a periodic
            # poll still running may have read before the feed listened).
            if self._listeners or self._access_listeners:
                self._read(list(self._listeners), periodic=False)
            if self._name_listeners:
                self._read_names()
        else:
            self.access_epoch = None  # unknown until read again
            if self._listeners or self._access_listeners or self._name_listeners:
                self._ensure_running()

    def on_folders_changed(self, folder_ids: frozenset[int]) -> None:
        """On the reactor: these folders changed (committed)."""
        for fid in folder_ids:
            if fid in self._listeners:
                self._fire(fid, None)

    def on_names_changed(self, last_id: int) -> None:
        """On the reactor: name events up to `last_id` committed (any id:
        one may commit after a larger one was read)."""
        if self._name_listeners:
            self._read_names()

    def on_access_changed(self, epoch: int) -> None:
        """On the reactor: the access epoch is now `epoch`."""
        if self.access_epoch is not None and epoch <= self.access_epoch:
            return
        self.access_epoch = epoch
        self._fire_access()

    def _schedule_check(self, folder_id: int | None) -> None:
        if folder_id is None:
            self._check_epoch = True
        else:
            self._check.add(folder_id)
        if not self._check_scheduled:
            self._check_scheduled = True
            self._reactor.callLater(0, self._run_check)

    def _run_check(self) -> None:
        """One read of the folders watched since the last one (and the
        epoch): a change committed between a session's own read and its watch
        was notified before anyone listened for it."""
        self._check_scheduled = False
        ids = [fid for fid in self._check if fid in self._listeners]
        self._check.clear()
        epoch_wanted, self._check_epoch = self._check_epoch, False
        if ids or (epoch_wanted and self._access_listeners):
            self._read(ids, periodic=False)

    def poll(self) -> Any:
        """One round: a single store call for all watched folders (and one
        for the name events, while a session listens for them)."""
        if self._name_listeners:
            self._read_names()
        if self._polling or not (self._listeners or self._access_listeners):
            return None
        self._read(list(self._listeners), periodic=True)
        return None

    # ------------------------------------------------------------ name events

    def _read_names(self) -> None:
        if self._names_reading:
            self._names_again = True  # once this read is done
            return
        self._names_reading = True
        after = self._names_after
        d = self._runner.run(_read_name_events, self._store, after)

        def done(answer: tuple[int, list[NameEvent]]) -> None:
            self._names_reading = False
            last, events = answer
            if not self._name_listeners:
                return  # nobody listens any more
            if after is None:
                self._names_floor = last  # what came before is nobody's news
            else:
                self._tell_names(events)
            self._names_after = max(last, self._names_after or 0)
            if self._names_again:
                self._names_again = False
                self._read_names()

        def failed(failure: Any) -> None:
            self._names_reading = False
            self._names_again = False
            # StoreUnavailable: the next poll (or notification) reads again.
            log.warning("name events read failed: %s", type(failure.value).__name__)

        d.addCallbacks(done, failed)

    def _tell_names(self, events: list[NameEvent]) -> None:
        now = time.monotonic()
        horizon = now - 2 * GRACE.total_seconds()
        self._names_seen = {i: t for i, t in self._names_seen.items() if t >= horizon}
        origin = self._store.origin
        for e in events:
            if e.id <= self._names_floor or e.id in self._names_seen:
                continue
            self._names_seen[e.id] = now
            if e.origin == origin:
                continue  # made here: told at once (`notify_names`)
            self.notify_names(NameChange(e.mailbox_id, e.name, e.old_name, e.deleted,
                                         e.subscribed))

    def _read(self, ids: list[int], *, periodic: bool) -> None:
        if periodic:
            self._polling = True
        d = self._runner.run(_read_states, self._store, ids)

        def done(answer: tuple[dict[int, tuple[int, int] | None], int]) -> None:
            if periodic:
                self._polling = False
            states, epoch = answer
            if self.feed_live and self.access_epoch is not None and epoch < self.access_epoch:
                epoch = self.access_epoch  # a notification came after this read: newer
            if epoch != self.access_epoch:
                self.access_epoch = epoch
                self._fire_access()
            for fid, state in states.items():
                if fid not in self._listeners:
                    continue
                old = self._state.get(fid)
                if state is None:
                    self._fire(fid, None)  # deleted: sessions find out
                    continue
                self._state[fid] = state
                if old != state:
                    self._fire(fid, None)

        def failed(failure: Any) -> None:
            if periodic:
                self._polling = False
            # StoreUnavailable: try again at the next tick, sessions keep going.
            log.warning("folder watcher poll failed: %s", type(failure.value).__name__)
            if not periodic and self.feed_live:
                # No tick will come: read these folders again a little later.
                for fid in ids:
                    self._check.add(fid)
                self._check_epoch = True
                if not self._check_scheduled:
                    self._check_scheduled = True
                    self._reactor.callLater(self.interval * 4, self._run_check)

        d.addCallbacks(done, failed)

    def _fire_access(self) -> None:
        for listener in list(self._access_listeners.values()):
            try:
                listener()
            except Exception:  # a broken session must not stop the others
                log.exception("access listener failed")

    def _fire(self, folder_id: int, exclude: int | None) -> None:
        outer = self._round
        if outer is None:
            self._round = {}
        try:
            for token, listener in list(self._listeners.get(folder_id, {}).items()):
                if token == exclude:
                    continue
                try:
                    listener(folder_id)
                except Exception:  # a broken session must not stop the others
                    log.exception("folder listener failed")
        finally:
            if outer is None:
                self._round = None


def _pull(
    store: MessageStore, folder_id: int, modseq: int, claim: bool, known_max_uid: int,
    seen_account: int | None = None,
) -> tuple[FolderChanges, frozenset[int]]:
    if seen_account is None:  # a shared-seen folder: the call as it always was
        changes = store.changes_since(folder_id, modseq)
    else:
        changes = store.changes_since(folder_id, modseq, seen_account=seen_account)
    claimed: frozenset[int] = frozenset()
    if claim and any(e.uid > known_max_uid for e in changes.changed):
        claimed = store.claim_recent(folder_id)
    return changes, claimed


def _read_name_events(store: MessageStore, after: int | None) -> tuple[int, list[NameEvent]]:
    return store.name_events_since(after)


def _read_states(
    store: MessageStore, ids: Iterable[int]
) -> tuple[dict[int, tuple[int, int] | None], int]:
    """One read for every watched folder (a folder gone from the answer was
    deleted): 1,000 sessions idling on 1,000 folders cost one query a tick;
    and the access epoch."""
    wanted = list(ids)
    with store.read_scope():
        epoch = store.access_epoch()
        found = store.folder_versions(wanted) if wanted else {}
    return {fid: found.get(fid) for fid in wanted}, epoch


class _ReactorBridge:
    """The feed's `ChangeListener`: hands each piece of news from the feed's
    thread to the watcher on the reactor thread."""

    def __init__(self, watcher: FolderWatcher) -> None:
        self._watcher = watcher
        self._call = watcher._reactor.callFromThread

    def folders_changed(self, folder_ids: frozenset[int]) -> None:
        self._call(self._watcher.on_folders_changed, folder_ids)

    def access_changed(self, epoch: int) -> None:
        self._call(self._watcher.on_access_changed, epoch)

    def names_changed(self, last_id: int) -> None:
        self._call(self._watcher.on_names_changed, last_id)

    def feed_state(self, live: bool) -> None:
        self._call(self._watcher.on_feed_state, live)


def watcher_for(services: Any) -> FolderWatcher:
    """The process's watcher for these services (one per Services object, so
    two listeners of one process share it), with the store's change feed
    where it has one (PostgreSQL)."""
    w: FolderWatcher | None = getattr(services, "_imap_folder_watcher", None)
    if w is None:
        make_feed = getattr(services.store, "change_feed", None)
        feed = make_feed() if make_feed is not None else None
        w = FolderWatcher(services.store, services.runner, services.reactor, feed=feed)
        services._imap_folder_watcher = w
    return w
