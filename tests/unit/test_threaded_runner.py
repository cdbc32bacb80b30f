"""storage.threaded.StoreRunner: calls run on worker threads, results fire on
the reactor thread (here: the test thread pumping `callFromThread`)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from storage.threaded import StoreRunner


class PumpedReactor:
    """The two reactor methods StoreRunner uses; `pump` runs what worker
    threads handed over, on the calling thread, as the reactor would."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()
        self.triggers: list[Callable[[], Any]] = []
        self.thread = threading.get_ident()
        self.wakeups = 0

    def callFromThread(self, fn: Callable[..., Any], *args: Any) -> None:  # noqa: N802
        self.wakeups += 1
        self.calls.put(lambda: fn(*args))

    def addSystemEventTrigger(self, phase: str, event: str, fn: Callable[[], Any]) -> None:  # noqa: N802
        self.triggers.append(fn)

    def pump_until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out")
            try:
                self.calls.get(timeout=left)()
            except queue.Empty:
                pass


def results(ds: list[defer.Deferred[Any]]) -> list[Any]:
    out: list[Any] = []
    for d in ds:
        d.addBoth(out.append)
    return out


def test_results_fire_on_the_reactor_thread_in_call_order_per_caller() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=4)
    fired_on: list[int] = []
    ds = [runner.run(lambda x: x * 2, i) for i in range(50)]

    def note_thread(value: int) -> int:
        fired_on.append(threading.get_ident())
        return value

    for d in ds:
        d.addCallback(note_thread)
    got = results(ds)
    reactor.pump_until(lambda: len(got) == 50)
    assert sorted(got) == [i * 2 for i in range(50)]
    assert set(fired_on) == {reactor.thread}
    runner.stop()


def test_work_runs_off_the_calling_thread_with_kwargs() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=2)
    got = results([runner.run(lambda *, k: (threading.get_ident(), k), k="v")])
    reactor.pump_until(lambda: bool(got))
    ident, value = got[0]
    assert value == "v" and ident != reactor.thread
    runner.stop()


def test_exceptions_become_failures_with_the_original_exception() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=2)

    def boom() -> None:
        raise KeyError("missing")

    got = results([runner.run(boom), runner.run(lambda: "after")])
    reactor.pump_until(lambda: len(got) == 2)
    failures = [g for g in got if isinstance(g, Failure)]
    assert len(failures) == 1 and failures[0].check(KeyError)  # type: ignore[no-untyped-call]
    assert "after" in got  # a failing call does not kill its worker
    runner.stop()


def test_calls_run_concurrently_up_to_the_thread_limit() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=3)
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def blocking() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(5)
        with lock:
            running -= 1

    got = results([runner.run(blocking) for _ in range(6)])
    deadline = time.monotonic() + 5
    while peak < 3 and time.monotonic() < deadline:
        time.sleep(0.001)  # polling a condition with a deadline, not a delay
    assert peak == 3
    gate.set()
    reactor.pump_until(lambda: len(got) == 6)
    assert peak == 3  # never more than the limit
    runner.stop()


def test_a_burst_of_results_wakes_the_reactor_less_than_once_each() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=4)
    gate = threading.Event()
    ds = [runner.run(gate.wait, 5) for _ in range(4)]
    ds += [runner.run(lambda: True) for _ in range(200)]
    gate.set()
    got = results(ds)
    # The "reactor" is busy elsewhere until every call has finished.
    deadline = time.monotonic() + 5
    while len(runner._results) < 204:
        assert time.monotonic() < deadline, "workers did not finish"
        time.sleep(0.001)  # polling a condition with a deadline, not a delay
    reactor.pump_until(lambda: len(got) == 204)
    assert reactor.wakeups == 1  # one hand-over for the whole burst
    runner.stop()


def test_stop_joins_workers_and_run_restarts_them() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=2, name="restart")
    got = results([runner.run(lambda: 1)])
    reactor.pump_until(lambda: bool(got))
    before = [t for t in threading.enumerate() if t.name.startswith("restart-")]
    assert before
    runner.stop()
    assert not any(t.is_alive() for t in before)
    got2 = results([runner.run(lambda: 2)])
    reactor.pump_until(lambda: bool(got2))
    assert got2 == [2]
    runner.stop()


@pytest.mark.parametrize("threads", [1, 8])
def test_shutdown_trigger_is_registered_once(threads: int) -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=threads, name=f"trigger{threads}")
    got = results([runner.run(lambda: 0), runner.run(lambda: 0)])
    reactor.pump_until(lambda: len(got) == 2)
    assert len(reactor.triggers) == 1
    workers = [t for t in threading.enumerate() if t.name.startswith(f"trigger{threads}-")]
    assert 1 <= len(workers) <= threads
    reactor.triggers[0]()  # the reactor shutting down
    assert not any(t.is_alive() for t in workers)


# ---------------------------------------------------------------- writer lane


class RecordingBatches:
    """A `batch` factory standing in for the store's `write_batch`: records
    which calls each batch ran, and whether the batch was committed."""

    def __init__(self, *, fail_commit: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.committed: list[bool] = []
        self.fail_commit = fail_commit
        self.thread: set[int] = set()

    def __call__(self) -> Any:
        from contextlib import contextmanager

        outer = self

        class Batch:
            def __init__(self) -> None:
                self.calls: list[Any] = []

            def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
                outer.thread.add(threading.get_ident())
                self.calls.append(args)
                return fn(*args, **kwargs)

        @contextmanager
        def batch() -> Any:
            b = Batch()
            outer.batches.append(b.calls)
            yield b
            if outer.fail_commit:
                outer.committed.append(False)
                raise RuntimeError("commit failed")
            outer.committed.append(True)

        return batch()


def test_run_write_without_a_batch_factory_is_run() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=2)
    got = results([runner.run_write(lambda x: x + 1, 41)])
    reactor.pump_until(lambda: len(got) == 1)
    assert got == [42]
    runner.stop()


def test_writes_queued_meanwhile_share_one_batch_and_fire_after_its_commit() -> None:
    reactor = PumpedReactor()
    batches = RecordingBatches()
    runner = StoreRunner(reactor, threads_count=2, batch=batches)
    gate = threading.Event()
    first = runner.run_write(gate.wait, 5)  # holds the writer until the others are queued
    rest = [runner.run_write(lambda i: ("done", i, batches.committed[:]), i) for i in range(5)]
    gate.set()
    got = results([first, *rest])
    reactor.pump_until(lambda: len(got) == 6)
    assert got[0] is True
    # The five calls that came while the first ran joined its batch, in call
    # order (no lock hand-over and commit of their own)...
    assert [len(b) for b in batches.batches] == [6]
    assert [r[1] for r in got[1:]] == [0, 1, 2, 3, 4]
    # ...and ran before that batch committed; they fired after it did.
    assert all(r[2] == [] for r in got[1:])
    assert batches.committed == [True]
    assert threading.get_ident() not in batches.thread and len(batches.thread) == 1
    runner.stop()


def test_a_failing_write_fails_alone_in_its_batch() -> None:
    reactor = PumpedReactor()
    batches = RecordingBatches()
    runner = StoreRunner(reactor, threads_count=1, batch=batches)
    gate = threading.Event()

    def boom(_: int) -> None:
        raise KeyError("nope")

    ds = [runner.run_write(gate.wait, 5), runner.run_write(lambda i: i, 1),
          runner.run_write(boom, 2), runner.run_write(lambda i: i, 3)]
    gate.set()
    got = results(ds)
    reactor.pump_until(lambda: len(got) == 4)
    assert got[0] is True and got[1] == 1 and got[3] == 3
    assert isinstance(got[2], Failure) and got[2].check(KeyError)
    assert batches.committed == [True]
    runner.stop()


def test_when_the_commit_fails_every_write_of_the_batch_fails() -> None:
    reactor = PumpedReactor()
    batches = RecordingBatches(fail_commit=True)
    runner = StoreRunner(reactor, threads_count=1, batch=batches)
    got = results([runner.run_write(lambda i: i, i) for i in range(3)])
    reactor.pump_until(lambda: len(got) == 3)
    assert all(isinstance(f, Failure) and f.check(RuntimeError) for f in got)
    # Nothing was acknowledged: later writes still run.
    batches.fail_commit = False
    more = results([runner.run_write(lambda: "ok")])
    reactor.pump_until(lambda: len(more) == 1)
    assert more == ["ok"]
    runner.stop()


def test_reads_do_not_wait_behind_a_stuck_write() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=1, batch=RecordingBatches())
    gate = threading.Event()
    write = results([runner.run_write(gate.wait, 5)])
    read = results([runner.run(lambda: "read")])
    reactor.pump_until(lambda: len(read) == 1)
    assert read == ["read"] and write == []
    gate.set()
    reactor.pump_until(lambda: len(write) == 1)
    runner.stop()


def test_stop_joins_the_writer() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=1, batch=RecordingBatches(), name="lane")
    got = results([runner.run_write(lambda: 1)])
    reactor.pump_until(lambda: len(got) == 1)
    runner.stop()
    assert not any(t.name == "lane-writer" for t in threading.enumerate())


def test_a_batch_takes_at_most_max_batch_calls() -> None:
    from storage.threaded import MAX_BATCH

    reactor = PumpedReactor()
    batches = RecordingBatches()
    runner = StoreRunner(reactor, threads_count=1, batch=batches)
    gate = threading.Event()
    ds = [runner.run_write(gate.wait, 5)]
    ds += [runner.run_write(lambda i: i, i) for i in range(MAX_BATCH + 3)]
    gate.set()
    got = results(ds)
    reactor.pump_until(lambda: len(got) == len(ds))
    # The others' turn (another process's writers) comes at least every
    # MAX_BATCH calls.
    assert [len(b) for b in batches.batches] == [MAX_BATCH, 4]
    assert got[1:] == list(range(MAX_BATCH + 3))
    runner.stop()


def test_a_writer_that_died_is_replaced() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=1, batch=RecordingBatches(), name="phoenix")
    got = results([runner.run_write(lambda: 1)])
    reactor.pump_until(lambda: len(got) == 1)
    [first] = runner._writer_threads
    runner._writes.put(None)  # the writer thread ends, as if it had died
    first.join(5)
    more = results([runner.run_write(lambda: 2)])
    reactor.pump_until(lambda: len(more) == 1)  # not left waiting forever
    assert more == [2] and first not in runner._writer_threads
    assert len(runner._writer_threads) == 1
    runner.stop()


def test_several_writer_lanes_each_batch_and_all_stop() -> None:
    """PostgreSQL's runner has several writer lanes on one queue: every
    write is done once, in some lane's batch, and stop() ends every lane."""
    reactor = PumpedReactor()
    batches = RecordingBatches()
    runner = StoreRunner(reactor, threads_count=4, batch=batches, name="lanes", writers=3)
    got = results([runner.run_write(lambda i=i: i) for i in range(60)])
    reactor.pump_until(lambda: len(got) == 60)
    assert sorted(got) == list(range(60))
    assert len(runner._writer_threads) == 3
    lanes = list(runner._writer_threads)
    runner.stop()
    assert all(not t.is_alive() for t in lanes)


# ------------------------------------------------------- the writer lane's priority

_NICE_CHILD = """
import logging, os, sys
from storage.threaded import StoreRunner
from test_threaded_runner import PumpedReactor, RecordingBatches

logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
reactor = PumpedReactor()
runner = StoreRunner(reactor, threads_count=1, batch=RecordingBatches(), name="lane",
                     writer_nice=int(sys.argv[1]))
def nice():
    return os.getpriority(os.PRIO_PROCESS, 0)
written, read = [], []
runner.run_write(nice).addBoth(written.append)
runner.run(nice).addBoth(read.append)
runner.run_write(nice).addBoth(written.append)
reactor.pump_until(lambda: len(written) == 2 and len(read) == 1)
runner.stop()
print("NICE", written[0], written[1], read[0], nice())
"""


def _nice_child(levels: int, *, sys_nice: bool, start_nice: int = 0) -> tuple[list[int], str]:
    """Runs a runner in a process with RLIMIT_NICE 0, with or without
    CAP_SYS_NICE (root without it in its bounding set): the nice values of
    the writer lane's two calls, of a read, and of the main thread; its log.
    (RLIMIT_NICE 25, what systemd's LimitNICE=-5 sets, allows the same as
    the capability; raising a hard limit needs CAP_SYS_RESOURCE, which the
    test containers do not give.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if os.geteuid() != 0:
        pytest.skip("choosing the process's capabilities needs root (the CI runs as root)")
    here = Path(__file__).resolve().parent
    root = here.parent.parent
    drop = [] if sys_nice else ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-all"]
    out = subprocess.run(
        ["nice", "-n", str(start_nice), "prlimit", "--nice=0:0", *drop,
         sys.executable, "-c", _NICE_CHILD, str(levels)],
        capture_output=True, text=True, timeout=60, cwd="/",
        env={"PYTHONPATH": f"{root}:{here}", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        check=False)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("NICE "))
    return [int(x) for x in line.split()[1:]], out.stdout


def test_the_writer_lane_runs_below_the_process_without_any_right() -> None:
    """The daemons' setting (WRITER_NICE levels below): no capability and
    no RLIMIT_NICE needed; the reads and the rest of the process stay at 0,
    and the log says so once."""
    values, log = _nice_child(3, sys_nice=False)
    assert values == [3, 3, 0, 0], log
    assert log.count("lane writer thread at nice 3, 3 below the rest of the process") == 1, log


def test_the_writer_lane_runs_above_the_process_where_allowed() -> None:
    """With the right to lower its nice, the writer thread runs at -5, the
    reads and the rest of the process stay at 0, and the log says so once."""
    values, log = _nice_child(-5, sys_nice=True)
    assert values == [-5, -5, 0, 0], log
    assert log.count("lane writer thread at nice -5, 5 above the rest of the process") == 1, log


def test_the_writer_lane_stays_at_the_process_nice_when_not_allowed() -> None:
    """Without the right to lower its nice, the writes still run (at the
    process's nice) and the log names what would allow it."""
    values, log = _nice_child(-5, sys_nice=False)
    assert values == [0, 0, 0, 0], log
    assert "lane writer thread left at nice 0" in log, log
    assert "needs CAP_SYS_NICE or an RLIMIT_NICE that allows nice -5 " \
           "(systemd: LimitNICE=-5)" in log, log


def test_the_writer_lane_stops_at_nice_19_and_says_how_far_below_it_is() -> None:
    values, log = _nice_child(3, sys_nice=False, start_nice=18)
    assert values == [19, 19, 18, 18], log
    assert "lane writer thread at nice 19, 1 below the rest of the process" in log, log


def test_with_no_levels_the_writer_lane_keeps_the_process_nice() -> None:
    values, log = _nice_child(0, sys_nice=True)
    assert values == [0, 0, 0, 0], log
    assert "writer thread" not in log, log


def test_runner_for_renices_the_writer_lane_on_sqlite_only() -> None:
    from collections.abc import Iterator
    from contextlib import contextmanager, nullcontext
    from types import SimpleNamespace

    from storage.threaded import PG_WRITERS, WRITER_NICE, runner_for

    def store(dialect: str) -> Any:
        return SimpleNamespace(batches_writes=True, write_batch=RecordingBatches(),
                               engine=SimpleNamespace(dialect=SimpleNamespace(name=dialect)),
                               no_waiting=nullcontext)

    sqlite = runner_for(PumpedReactor(), store("sqlite"), 4)
    pg = runner_for(PumpedReactor(), store("postgresql"), 8)
    # Below the reactor: a write must not wake a thread that preempts it.
    assert WRITER_NICE > 0
    assert (sqlite._writer_count, sqlite._writer_nice) == (1, WRITER_NICE)
    assert (pg._writer_count, pg._writer_nice) == (PG_WRITERS, 0)
    # Quick reads run on the reactor thread on SQLite only, and not when the
    # caller says its thread must not block (an audit sink writing as it records).
    assert sqlite._quick is nullcontext and pg._quick is None
    assert runner_for(PumpedReactor(), store("sqlite"), 4, quick_reads=False)._quick is None
    # With the audit sink's `held`: both scopes around each quick call.
    entered: list[str] = []

    @contextmanager
    def hold() -> Iterator[None]:
        entered.append("hold")
        yield

    held = runner_for(PumpedReactor(), store("sqlite"), 4, hold=hold)
    assert held._quick is not None
    with held._quick():
        pass
    assert entered == ["hold"]


# ------------------------------------------------------------ run_quick


class QuickScope:
    """Stands for the store's `no_waiting`: counts the calls made inside."""

    def __init__(self) -> None:
        self.inside = False
        self.entered = 0

    def __call__(self) -> Any:
        scope = self

        class _Block:
            def __enter__(self) -> None:
                scope.inside, scope.entered = True, scope.entered + 1

            def __exit__(self, *exc: Any) -> None:
                scope.inside = False

        return _Block()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Usage:
    """A thread's (CPU seconds, blocking reads), moved by the test."""

    def __init__(self) -> None:
        self.cpu = 5.0
        self.reads = 7

    def __call__(self) -> tuple[float, int]:
        return self.cpu, self.reads


def test_a_quick_call_runs_on_the_calling_thread_inside_the_scope_and_comes_back_fired() -> None:
    reactor = PumpedReactor()
    scope = QuickScope()
    runner = StoreRunner(reactor, threads_count=2, quick=scope)
    got = results([runner.run_quick(lambda k: (threading.get_ident(), scope.inside, k), k=3)])
    assert got == [(reactor.thread, True, 3)]  # fired before run_quick returned
    assert reactor.wakeups == 0 and runner._threads == []  # no thread, no hand-back
    failed = results([runner.run_quick(lambda: 1 // 0)])
    assert isinstance(failed[0], Failure) and failed[0].check(ZeroDivisionError)
    assert not scope.inside
    runner.stop()


def test_without_a_scope_a_quick_call_is_an_ordinary_one() -> None:
    reactor = PumpedReactor()
    runner = StoreRunner(reactor, threads_count=2)  # PostgreSQL's runner
    got = results([runner.run_quick(threading.get_ident)])
    assert got == []
    reactor.pump_until(lambda: bool(got))
    assert got[0] != reactor.thread
    runner.stop()


def test_a_quick_call_that_would_wait_runs_again_on_a_thread() -> None:
    from storage.interface import WouldWait

    reactor = PumpedReactor()
    scope = QuickScope()
    runner = StoreRunner(reactor, threads_count=2, quick=scope)
    tries: list[tuple[int, bool]] = []

    def claim() -> str:
        tries.append((threading.get_ident(), scope.inside))
        if scope.inside:
            raise WouldWait("a write")
        return "claimed"

    got = results([runner.run_quick(claim)])
    reactor.pump_until(lambda: bool(got))
    assert got == ["claimed"] and runner.quick_retries == 1
    assert tries[0] == (reactor.thread, True)
    assert tries[1][0] != reactor.thread and tries[1][1] is False
    runner.stop()


def test_after_a_slow_quick_call_quick_calls_go_to_the_threads_for_a_while() -> None:
    from storage.threaded import QUICK_BUDGET, QUICK_COOLDOWN

    reactor = PumpedReactor()
    clock = Clock()
    usage = Usage()
    scope = QuickScope()
    runner = StoreRunner(reactor, threads_count=2, quick=scope, clock=clock, usage=usage)

    def slow() -> int:
        clock.now += QUICK_BUDGET * 2  # a folder larger than thought: all of it CPU
        usage.cpu += QUICK_BUDGET * 2
        return threading.get_ident()

    assert results([runner.run_quick(slow)]) == [reactor.thread]
    assert runner.quick_overruns == 1
    clock.now += QUICK_COOLDOWN / 2
    later = results([runner.run_quick(threading.get_ident)])
    reactor.pump_until(lambda: bool(later))
    assert later[0] != reactor.thread and scope.entered == 1
    clock.now += QUICK_COOLDOWN
    assert results([runner.run_quick(threading.get_ident)]) == [reactor.thread]
    assert runner.quick_overruns == 1 and scope.entered == 2
    runner.stop()


@pytest.mark.parametrize("budgets, cpu, reads, own", [
    (2, 0.001, 0, False),  # 1 ms of CPU in 20: waiting for a CPU or the GIL
    (2, 0.001, 3, True),  # read from the disk: a cold page cache
    (2, 0.008, 0, True),  # its own CPU
    (5, 0.001, 0, True),  # waiting longer than QUICK_WAIT_CAP: counts anyway
])
def test_a_slow_quick_call_counts_only_when_slow_by_its_own_doing(
        budgets: int, cpu: float, reads: int, own: bool) -> None:
    from storage.threaded import QUICK_BUDGET, QUICK_WAIT_CAP

    assert QUICK_BUDGET * 2 < QUICK_WAIT_CAP < QUICK_BUDGET * 5

    reactor = PumpedReactor()
    clock = Clock()
    usage = Usage()
    runner = StoreRunner(reactor, threads_count=2, quick=QuickScope(), clock=clock, usage=usage)

    def slow() -> int:
        clock.now += QUICK_BUDGET * budgets
        usage.cpu += cpu
        usage.reads += reads
        return threading.get_ident()

    assert results([runner.run_quick(slow)]) == [reactor.thread]
    assert (runner.quick_overruns, runner.quick_waits) == ((1, 0) if own else (0, 1))
    clock.now += 0.1
    later = results([runner.run_quick(threading.get_ident)])
    reactor.pump_until(lambda: bool(later))
    assert (later[0] == reactor.thread) is not own
    runner.stop()


def test_thread_usage_counts_this_threads_cpu_only() -> None:
    from storage.threaded import thread_usage

    cpu, reads = thread_usage()
    other = threading.Thread(target=lambda: sum(i * i for i in range(3_000_000)))
    other.start()
    other.join()
    assert thread_usage()[0] - cpu < 0.05  # another thread's CPU is not ours
    spun = time.thread_time()
    while time.thread_time() - spun < 0.05:  # 50 ms of this thread's CPU
        pass
    cpu_after, reads_after = thread_usage()
    assert cpu_after - cpu >= 0.04 and reads_after >= reads


def test_thread_usage_leaves_the_garbage_collectors_time_out() -> None:
    import gc

    from storage.threaded import thread_usage

    class Node:
        def __init__(self) -> None:
            self.me = self

    heap = [Node() for _ in range(300_000)]
    cpu, _ = thread_usage()
    started = time.thread_time()
    gc.collect()
    collected_in = time.thread_time() - started
    assert collected_in > 0.01
    assert thread_usage()[0] - cpu < collected_in / 2
    del heap


def test_quick_calls_in_a_row_take_at_most_a_share_of_the_reactors_time() -> None:
    # Each call is under QUICK_BUDGET, but a FETCH of a whole folder makes
    # them one after another without the reactor turning: once they took
    # QUICK_WINDOW_BUDGET of the window, the next go to the threads (the
    # reactor serves the others between two) until the window ends.
    from storage.threaded import QUICK_BUDGET, QUICK_WINDOW, QUICK_WINDOW_BUDGET

    reactor = PumpedReactor()
    clock = Clock()
    runner = StoreRunner(reactor, threads_count=2, quick=QuickScope(), clock=clock)
    step = QUICK_BUDGET / 2

    def read() -> int:
        clock.now += step
        return threading.get_ident()

    where: list[int] = []
    for _ in range(int(QUICK_WINDOW_BUDGET / step) + 3):
        got = results([runner.run_quick(read)])
        reactor.pump_until(lambda: bool(got))
        where.append(got[0])
    here = [w == reactor.thread for w in where]
    assert here[: int(QUICK_WINDOW_BUDGET / step)] == [True] * int(QUICK_WINDOW_BUDGET / step)
    assert here[-1] is False and runner.quick_overruns == 0
    clock.now += QUICK_WINDOW  # a new window
    assert results([runner.run_quick(threading.get_ident)]) == [reactor.thread]
    runner.stop()
