"""Several nodes on one PostgreSQL: group commit and change notification,
measured on a throwaway cluster (tests/pg_support.py) with PostgreSQL's
durability settings on (fsync, synchronous_commit: every commit waits for
its WAL flush).

Prints:
- IMAP-style writes (APPEND of a 1 KB message) by 8 threads, each call its
  own transaction, against the same calls through `write_batch` as the
  daemons' writer lane runs them (up to 32 calls per transaction);
- SMTP deliveries through `deliver_many` (group commit of the SMTP server)
  in batches of 1, 16 and 64, with and without the NOTIFY trigger;
- the delay from a delivery's commit to its notification on another
  connection (`PgChangeFeed`), median and 99th percentile of 300.

Run: .venv/bin/python bench/pg_scale.py [--url postgresql+psycopg2://...]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from storage import open_store  # noqa: E402
from storage.crypto import generate_key_file  # noqa: E402
from storage.interface import Delivery, MailboxType  # noqa: E402

MSG = (b"From: a@perf.test\r\nTo: b@perf.test\r\nSubject: perf\r\n"
       b"Message-ID: <x@perf.test>\r\n\r\n" + b"line of text\r\n" * 64)
THREADS = 8
MAX_BATCH = 32  # storage.threaded.MAX_BATCH


def boxes(store: Any, n: int) -> list[Any]:
    out = []
    for i in range(n):
        mb = store.add_mailbox(f"b{i}@perf.test", MailboxType.ORG)
        out.append((mb, store.get_folder(mb.id, "INBOX")))
    return out


def appends_each_own_transaction(store: Any, folders: list[Any], per_thread: int) -> float:
    def work(fid: int) -> None:
        for _ in range(per_thread):
            store.append(fid, store.prepare(MSG))

    threads = [threading.Thread(target=work, args=(folders[i % len(folders)].id,))
               for i in range(THREADS)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return THREADS * per_thread / (time.perf_counter() - t)


def appends_group_committed(store: Any, folders: list[Any], per_thread: int,
                            lanes: int = 1) -> float:
    """8 producer threads (sessions) queue their calls; a writer thread
    takes what is queued (up to 32) into one batch, as StoreRunner does
    (`lanes` such writers on one queue)."""
    calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
    total = THREADS * per_thread

    def producer(fid: int) -> None:
        for _ in range(per_thread):
            ev = threading.Event()
            # Parsed and encrypted by the session's read thread, as the
            # daemon does: the writer lane only writes.
            calls.put((fid, store.prepare(MSG), ev))
            ev.wait()  # a session waits for its reply before its next command

    def writer() -> None:
        while True:
            first = calls.get()
            if first is None:
                return
            taken = [first]
            while len(taken) < MAX_BATCH:
                try:
                    more = calls.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    calls.put(None)
                    break
                taken.append(more)
            with store.write_batch() as batch:
                for fid, prepared, _ in taken:
                    batch.call(store.append, fid, prepared)
            for _, _, ev in taken:
                ev.set()

    threads = [threading.Thread(target=producer, args=(folders[i % len(folders)].id,))
               for i in range(THREADS)]
    writers = [threading.Thread(target=writer) for _ in range(lanes)]
    t = time.perf_counter()
    for w in writers:
        w.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t
    for _ in writers:
        calls.put(None)
    for w in writers:
        w.join()
    return total / dt
    return total / (time.perf_counter() - t)


def deliveries(store: Any, mailbox_ids: list[int], size: int, n: int) -> tuple[float, float]:
    batches = max(2, n // size)
    cpu, t = time.process_time(), time.perf_counter()
    for b in range(batches):
        store.deliver_many([Delivery(MSG, (mailbox_ids[(b * size + i) % len(mailbox_ids)],))
                            for i in range(size)])
    cpu, dt = time.process_time() - cpu, time.perf_counter() - t
    return batches * size / dt, cpu / (batches * size) * 1000


class _Latency:
    def __init__(self) -> None:
        self.events: queue.SimpleQueue[tuple[float, frozenset[int]]] = queue.SimpleQueue()

    def folders_changed(self, folder_ids: frozenset[int]) -> None:
        self.events.put((time.perf_counter(), folder_ids))

    def access_changed(self, epoch: int) -> None:
        pass

    def feed_state(self, live: bool) -> None:
        self.events.put((time.perf_counter(), frozenset({-1 if live else -2})))


def notify_latency(store: Any, mailbox_id: int, folder_id: int, n: int) -> list[float]:
    feed = store.change_feed()
    listener = _Latency()
    feed.start(listener)
    assert listener.events.get(timeout=10)[1] == frozenset({-1})
    out = []
    try:
        for _ in range(n):
            store.deliver(Delivery(MSG, (mailbox_id,)))
            committed = time.perf_counter()
            while True:
                at, ids = listener.events.get(timeout=10)
                if folder_id in ids:
                    break
            out.append(max(0.0, at - committed))
    finally:
        feed.stop()
    return out


def run(url: str, key: Path) -> None:
    store = open_store(url, key, create=True)
    store.add_domain("perf.test")
    folders = [f for _, f in boxes(store, THREADS)]
    for _ in range(20):  # warm the pool
        store.append(folders[0].id, MSG)
    per = 60
    own = appends_each_own_transaction(store, folders, per)
    print(f"APPEND by {THREADS} sessions, one transaction each ({THREADS} connections): "
          f"{own:.0f}/s")
    for lanes in (1, 2, 4):
        grouped = appends_group_committed(store, folders, per, lanes)
        print(f"APPEND by {THREADS} sessions, group-committed (write_batch, <= {MAX_BATCH} "
              f"calls) by {lanes} writer thread(s): {grouped:.0f}/s ({grouped / own:.2f}x)")
    mids = [f.mailbox_id for f in folders]
    for size in (1, 16, 64):
        rate, cpu = deliveries(store, mids, size, 640)
        print(f"deliver_many x{size}: {rate:.0f}/s, {cpu:.3f} ms CPU per delivery")
    with store.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE folders DISABLE TRIGGER folders_notify")
    rate, cpu = deliveries(store, mids, 16, 640)
    print(f"deliver_many x16 without the NOTIFY trigger: {rate:.0f}/s, {cpu:.3f} ms CPU")
    with store.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE folders ENABLE TRIGGER folders_notify")
    lat = sorted(notify_latency(store, folders[0].mailbox_id, folders[0].id, 300))
    print(f"commit to notification on another connection: median "
          f"{statistics.median(lat) * 1000:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.2f} ms")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="a PostgreSQL database URL (default: a throwaway cluster)")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    key = d / "keys"
    generate_key_file(key)
    if args.url:
        run(args.url, key)
        return
    from pg_support import pg_binaries, running_cluster

    bindir = pg_binaries()
    if bindir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    with running_cluster(bindir, durable=True) as cluster:
        print(f"throwaway PostgreSQL {bindir.parent.name}, fsync and synchronous_commit on")
        run(cluster.url(cluster.new_database()), key)


if __name__ == "__main__":
    main()
