"""Running blocking store and policy calls off the reactor thread.

Every call that may touch the database goes through `StoreRunner.run`, which
returns a Deferred fired on the reactor thread with the result (or failure).

`StoreRunner` is a plain queue and worker threads rather than Twisted's
`ThreadPool` + `deferToThreadPool`: no context propagation, no Team/worker
coordination objects per call, and results that finish close together reach
the reactor through one `callFromThread` (one wake-up of the reactor for a
burst of results instead of one each). Measured with 20 callers in flight
on the reactor: ~17 us of CPU per round trip instead of ~49 us.

Writes may take a lane of their own (`run_write`), given a `batch` factory
(the store's `write_batch`, SQLite and PostgreSQL): one writer thread takes every write
call queued meanwhile, and those that come while it waits for the lock or
runs, and runs them in one transaction (up to MAX_BATCH), each in its own
savepoint, committed once (group commit). Concurrent sessions then share the
database write lock and its fsync instead of queueing for them one by one,
and reads never wait behind a write for a thread. A result is handed back
only after the commit: an acknowledged write is on disk.

Reads the caller knows to be short may skip the threads (`run_quick`): on
SQLite, whose reads in WAL mode take no lock, they run right on the reactor
thread. A round trip to a store thread and back costs far more than such a
read: measured on the 2-core development VM, 155 us of CPU for an empty
call (two cross-CPU wake-ups and the GIL changing hands twice), where
a session's STATUS reads in about 100 us.

On SQLite the writer lane runs a few nice levels below the rest of its
process (`renice_this_thread`; raising one's own nice needs no privilege).
A write handed to a writer of higher priority woke it on the reactor's CPU
while the reactor held the GIL: the writer ran, found the GIL taken and slept
again, and the reactor had waited for it; two context switches a write for
nothing. At lower priority the writer runs on an idle CPU, or when the
reactor next waits, and takes what was queued meanwhile into its batch.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from storage.interface import MessageStore, WouldWait, WriteBatch

T = TypeVar("T")

# (deferred, function, args, kwargs); None tells a worker to exit.
_Task = tuple["defer.Deferred[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]

# Write calls one batch takes at most (one transaction, one fsync).
MAX_BATCH = 32

BatchFactory = Callable[[], AbstractContextManager[WriteBatch]]

log = logging.getLogger(__name__)

# Nice levels the SQLite writer lane runs below its process (runner_for).
# Measured with bench/imap_sessions.py on 2 busy cores (2026-12-08; perf
# stat of one worker, two runs each): 5 levels above, as the lane ran
# before, 5.2-5.7 context switches and 8.8-9.3 futex calls a command; 3
# below, 3.6-4.0 and 5.6-7.5, server CPU per command 5-13 % lower in three
# alternated pairs. Batches grow (1.8 -> 2.5-3.2 writes), the lock is held
# longer (a median 1.1 -> 3-4 ms) and a write waits longer (3.8 -> 4.3-5.5
# ms); the commands/s rose a little in each pair.
WRITER_NICE = 3

# `run_quick`: a quick call that took longer than QUICK_BUDGET (seconds of
# the reactor's time: a cold page cache, a folder larger than its caller
# thought) sends the quick calls of the next QUICK_COOLDOWN seconds to the
# threads, as every call went before. Slow by its own doing: it read from
# the disk, or it used more than QUICK_BUDGET_CPU of CPU itself. A call that
# was slow only because the thread waited for a CPU or for the GIL (a busy
# machine: measured under bench/imap_sessions.py, calls of 1-2 ms of CPU
# took 10-15 ms, and the quick calls of a worker were off for 5 of every
# 20 s) does not count: any callback of the reactor waits alike, and a
# thread would add a hand-off to the wait. Up to QUICK_WAIT_CAP: beyond, the
# call counts whatever it did (it may wait for what getrusage does not see:
# a lock, a page another thread is reading in, a network file system).
QUICK_BUDGET = 0.010
QUICK_BUDGET_CPU = QUICK_BUDGET / 2
QUICK_WAIT_CAP = 4 * QUICK_BUDGET
QUICK_COOLDOWN = 5.0
# And quick calls in a row (a FETCH of a whole folder, batch after batch,
# each under the budget) take at most QUICK_WINDOW_BUDGET of any
# QUICK_WINDOW seconds of the reactor: beyond, they go to the threads (and
# the reactor serves the other sessions between two) until the window ends.
QUICK_WINDOW = 0.050
QUICK_WINDOW_BUDGET = 0.020

QuickScope = Callable[[], AbstractContextManager[None]]
# (CPU seconds, blocking reads) of the calling thread so far: `thread_usage`.
Usage = Callable[[], tuple[float, int]]


class _CollectorTime(threading.local):
    """CPU seconds the garbage collector has taken on this thread."""

    seconds = 0.0
    started = 0.0


_collector = _CollectorTime()


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _collector.started = time.thread_time()
    else:
        _collector.seconds += time.thread_time() - _collector.started


gc.callbacks.append(_on_collection)


def thread_usage() -> tuple[float, int]:
    """The calling thread's CPU seconds (user and system) and its blocking
    reads so far (blocks read from the disk, major page faults: a page
    cache hit is neither), from getrusage(RUSAGE_THREAD), about 1 us. The
    garbage collector's time is left out: a full collection (20-26 ms in
    a worker) runs in whichever call allocates at the wrong moment."""
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime + ru.ru_stime - _collector.seconds, ru.ru_inblock + ru.ru_majflt


def renice_this_thread(levels: int) -> tuple[bool, int]:
    """Adds `levels` to the calling thread's nice value (on Linux nice is a
    property of each thread; `PRIO_PROCESS` with 0 names the caller): a
    positive number lowers its priority, which anyone may do; a negative one
    raises it, which root, CAP_SYS_NICE or an RLIMIT_NICE (systemd's
    `LimitNICE=`) allows. Returns (done, the thread's nice value now)."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = min(19, max(-20, current + levels))
    try:
        os.setpriority(os.PRIO_PROCESS, 0, wanted)
    except OSError:  # EPERM, or EACCES on older kernels
        return False, current
    return True, wanted


def call_here(quick: QuickScope, fn: Callable[..., T], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> defer.Deferred[T] | None:
    """Calls `fn` on this thread inside `quick()`: its fired Deferred, or
    None when it reached `WouldWait` (nothing was written)."""
    try:
        with quick():
            result = fn(*args, **kwargs)
    except WouldWait:
        return None
    except Exception:  # noqa: BLE001 - handed to the Deferred, as `run` does
        return defer.fail(Failure())  # type: ignore[no-untyped-call]
    return defer.succeed(result)


class StoreRunner:
    def __init__(self, reactor: Any, threads_count: int = 8, name: str = "store",
                 batch: BatchFactory | None = None, writers: int = 1,
                 writer_nice: int = 0, quick: QuickScope | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 usage: Usage = thread_usage) -> None:
        self._reactor = reactor
        # run_quick: the store's `no_waiting` where its reads never wait.
        self._quick = quick
        self._clock = clock
        self._usage = usage
        self._quick_off_until = 0.0
        self._window_start = 0.0
        self._window_spent = 0.0  # seconds of quick calls in this window
        self.quick_overruns = 0  # quick calls that took longer than QUICK_BUDGET
        self.quick_waits = 0  # ... only for waiting for a CPU or the GIL
        self.quick_retries = 0  # quick calls stopped by WouldWait: run on a thread
        self._batch = batch
        # Nice levels the writer lanes add to the process's (see
        # renice_this_thread); told once per runner how it went.
        self._writer_nice = writer_nice
        self._nice_told = False
        self._writes: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        # Writer lanes taking batches from the one queue: SQLite has one
        # write lock, so one; PostgreSQL commits side by side (see runner_for).
        self._writer_count = max(1, writers)
        self._writer_threads: list[threading.Thread] = []
        self._max = max(1, threads_count)
        self._name = name
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a task
        self._queued = 0  # tasks put and not yet taken
        self._results: deque[tuple[defer.Deferred[Any], bool, Any]] = deque()
        self._delivery_scheduled = False
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        with self._lock:
            workers, self._threads = self._threads, []
            writers, self._writer_threads = self._writer_threads, []
        for _ in workers:
            self._tasks.put(None)
        for writer in writers:
            self._writes.put(None)
            workers.append(writer)
        for worker in workers:
            worker.join()
        with self._lock:
            self._idle = 0

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        if not self._started:
            self.start()
        d: defer.Deferred[T] = defer.Deferred()
        with self._lock:
            self._queued += 1
            spawn = self._queued > self._idle and len(self._threads) < self._max
            if spawn:
                worker = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(worker)
        self._tasks.put((d, fn, args, kwargs))
        if spawn:
            worker.start()
        return d

    def run_quick(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        """`run` for a read its caller knows to be short (one folder's status,
        the folder list, a bounded batch of messages): where the runner was
        given `quick` (the store's `no_waiting`, on SQLite), the call runs
        right here, on the calling (reactor) thread, and the Deferred comes
        back fired. A call that reaches a write, a large body or many rows
        (`WouldWait`, raised before any of them is done) runs again on a
        thread: its reads must be repeatable, and what else it did is undone
        by `quick` (the audit events it recorded are dropped: see
        `runner_for`'s `hold`).
        After a quick call that took longer than QUICK_BUDGET by its own
        doing (it read from the disk, or its CPU passed QUICK_BUDGET_CPU), or
        longer than QUICK_WAIT_CAP whatever it did, they all go to the
        threads for QUICK_COOLDOWN seconds; and once quick calls took
        QUICK_WINDOW_BUDGET of the current QUICK_WINDOW, until it ends."""
        quick = self._quick
        if quick is None:
            return self.run(fn, *args, **kwargs)
        started = self._clock()
        if started - self._window_start >= QUICK_WINDOW:
            self._window_start, self._window_spent = started, 0.0
        if started < self._quick_off_until or self._window_spent >= QUICK_WINDOW_BUDGET:
            return self.run(fn, *args, **kwargs)
        cpu, reads = self._usage()
        d = call_here(quick, fn, args, kwargs)
        took = self._clock() - started
        self._window_spent += took
        if took > QUICK_BUDGET:
            cpu_after, reads_after = self._usage()
            cpu = cpu_after - cpu
            if took > QUICK_WAIT_CAP or cpu > QUICK_BUDGET_CPU or reads_after > reads:
                self.quick_overruns += 1
                self._quick_off_until = started + took + QUICK_COOLDOWN
                log.debug("quick store call %s took %.1f ms (%.1f ms of CPU, %d blocking "
                          "reads): quick calls go to threads for %.0f s",
                          getattr(fn, "__qualname__", fn), 1000 * took, 1000 * cpu,
                          reads_after - reads, QUICK_COOLDOWN)
            else:
                self.quick_waits += 1
        if d is None:
            self.quick_retries += 1
            log.debug("quick store call %s stopped (a write, a large body, many rows): "
                      "run on a thread", getattr(fn, "__qualname__", fn))
            return self.run(fn, *args, **kwargs)
        return d

    def run_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        """`run` for a call that writes: on the writer lane when there is one
        (see the module docstring). The call must write through the store's
        fixed-SQL paths and do its reading before its first write: from that
        write until the batch commits, the database write lock is held."""
        if self._batch is None:
            return self.run(fn, *args, **kwargs)
        if not self._started:
            self.start()
        d: defer.Deferred[T] = defer.Deferred()
        with self._lock:
            # (A writer that died would leave every later write waiting.)
            alive = [w for w in self._writer_threads if w.ident is None or w.is_alive()]
            new = [threading.Thread(target=self._write_work, name=f"{self._name}-writer-{i}",
                                    daemon=True)
                   for i in range(len(alive), self._writer_count)]
            self._writer_threads = alive + new
        self._writes.put((d, fn, args, kwargs))
        for writer in new:
            writer.start()
        return d

    # ------------------------------------------------------------ workers

    def _write_work(self) -> None:
        if self._writer_nice:
            self._renice_writer()
        writes = self._writes
        assert self._batch is not None
        open_batch = self._batch
        while True:
            task = writes.get()
            if task is None:
                return
            taken = [task]
            stop = self._take_queued(taken, MAX_BATCH)
            outcomes: list[tuple[defer.Deferred[Any], bool, Any]] = []
            try:
                with open_batch() as batch:
                    pending = list(taken)
                    while pending:
                        for d, fn, args, kwargs in pending:
                            try:
                                outcomes.append((d, True, batch.call(fn, *args, **kwargs)))
                            except BaseException:  # noqa: BLE001 - handed to its Deferred
                                outcomes.append((d, False, Failure()))  # type: ignore[no-untyped-call]
                        # Writes that came while this batch waited for the
                        # lock or ran join it before the commit, rather than
                        # wait for a lock hand-over and a commit of their own.
                        pending = []
                        if not stop:
                            stop = self._take_queued(pending, MAX_BATCH - len(taken))
                            taken.extend(pending)
            except BaseException:  # noqa: BLE001 - begin or commit failed: nothing committed
                failure = Failure()  # type: ignore[no-untyped-call]
                outcomes = [(d, False, failure) for d, _, _, _ in taken]
            del taken, task
            self._hand_back(outcomes)
            del outcomes
            if stop:
                return

    def _renice_writer(self) -> None:
        levels = self._writer_nice
        before = os.getpriority(os.PRIO_PROCESS, 0)  # the process's (inherited)
        done, nice = renice_this_thread(levels)
        with self._lock:
            told, self._nice_told = self._nice_told, True
        if told:
            return
        where = "below" if levels > 0 else "above"
        if done:
            # (Fewer levels than asked at either end of the range.)
            log.info("%s writer thread at nice %d, %d %s the rest of the process",
                     self._name, nice, abs(nice - before), where)
        else:
            log.info("%s writer thread left at nice %d: running it %d levels %s the "
                     "rest of the process needs CAP_SYS_NICE or an RLIMIT_NICE that allows "
                     "nice %d (systemd: LimitNICE=%d)", self._name, nice, abs(levels), where,
                     nice + levels, nice + levels)

    def _take_queued(self, into: list[_Task], limit: int) -> bool:
        """Moves queued write calls into `into` (up to `limit` in all), without
        waiting. True when the stop signal was met."""
        while len(into) < limit:
            try:
                more = self._writes.get_nowait()
            except queue.Empty:
                return False
            if more is None:
                return True
            into.append(more)
        return False

    def _hand_back(self, outcomes: list[tuple[defer.Deferred[Any], bool, Any]]) -> None:
        with self._lock:
            self._results.extend(outcomes)
            schedule = not self._delivery_scheduled
            self._delivery_scheduled = True
        if schedule:
            self._reactor.callFromThread(self._deliver)

    def _work(self) -> None:
        tasks = self._tasks
        while True:
            with self._lock:
                self._idle += 1
            task = tasks.get()
            with self._lock:
                self._idle -= 1
                if task is not None:
                    self._queued -= 1
            if task is None:
                return
            d, fn, args, kwargs = task
            try:
                result: Any = fn(*args, **kwargs)
                ok = True
            except BaseException:  # noqa: BLE001 - handed to the Deferred, as deferToThread does
                result, ok = Failure(), False  # type: ignore[no-untyped-call]
            del task, fn, args, kwargs
            self._hand_back([(d, ok, result)])
            del d, result

    def _deliver(self) -> None:
        """On the reactor thread: fires every result finished so far."""
        with self._lock:
            ready = list(self._results)
            self._results.clear()
            self._delivery_scheduled = False
        for d, ok, result in ready:
            if ok:
                d.callback(result)
            else:
                d.errback(result)


# Writer lanes on PostgreSQL: one lane runs its batch's statements one round
# trip after another, where separate transactions would overlap theirs (and
# PostgreSQL already shares one WAL flush among commits that meet); a few
# lanes keep both (bench/pg_scale.py).
PG_WRITERS = 4


def nested_scopes(outer: QuickScope, inner: QuickScope) -> QuickScope:
    """One scope entering `outer`, then `inner`."""

    @contextmanager
    def scope() -> Iterator[None]:
        with outer(), inner():
            yield

    return scope


def runner_for(reactor: Any, store: MessageStore, threads_count: int, *,
               quick_reads: bool = True, hold: QuickScope | None = None) -> StoreRunner:
    """The daemons' runner: `threads_count` threads for calls, and writer
    lanes with group commit where the store batches writes: one on SQLite
    (one write lock, its lane WRITER_NICE levels below the reactor), up to
    PG_WRITERS on a database with row locks. On SQLite, quick reads run on
    the caller's thread (`StoreRunner.run_quick`) unless `quick_reads` is
    False (the caller's thread must not block: e.g. an audit sink that
    writes to the database as it records). PostgreSQL's reads are round
    trips to another process: never on the reactor. `hold`: entered around
    each quick call too (the audit sink's `held`: a call made again on a
    thread records its decisions once)."""
    engine = getattr(store, "engine", None)
    sqlite = engine is not None and engine.dialect.name == "sqlite"
    quick: QuickScope | None = None
    if sqlite and quick_reads:
        quick = store.no_waiting if hold is None else nested_scopes(hold, store.no_waiting)
    if not store.batches_writes:
        return StoreRunner(reactor, threads_count, quick=quick)
    if not sqlite:
        return StoreRunner(reactor, threads_count, batch=store.write_batch,
                           writers=min(PG_WRITERS, max(1, threads_count)))
    return StoreRunner(reactor, threads_count, batch=store.write_batch, writers=1,
                       writer_nice=WRITER_NICE, quick=quick)


class InlineRunner:
    """Runs calls synchronously: for protocol tests on StringTransport, where
    the result must be there before the next line of the transcript.
    `quick`: quick calls run inside it as `StoreRunner.run_quick` runs them
    (the store's `no_waiting`), and again without it when they reach
    `WouldWait`; counted in `quick_calls` and `quick_retries`."""

    def __init__(self, quick: QuickScope | None = None) -> None:
        self._quick = quick
        self.quick_calls = 0
        self.quick_retries = 0

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        return defer.maybeDeferred(fn, *args, **kwargs)

    def run_quick(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        if self._quick is None:
            return defer.maybeDeferred(fn, *args, **kwargs)
        self.quick_calls += 1
        d = call_here(self._quick, fn, args, kwargs)
        if d is None:
            self.quick_retries += 1
            return self.run(fn, *args, **kwargs)
        return d

    def run_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        return defer.maybeDeferred(fn, *args, **kwargs)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
