#!/usr/bin/env python3
"""IMAP figures quoted in the README (issue 4).

Runs real server processes (tests/e2e/imap_support.py: the production
`imapd.server.build_factory` with a `StoreRunner`, SQLite store) on
127.0.0.1 and measures with plain sockets:

1. SELECT of a 100,000-message folder                 (target < 0.2 s)
2. UID FETCH 1:* (UID FLAGS) on it                    (target < 2 s)
3. FETCH 1:1000 (ENVELOPE BODYSTRUCTURE)              (target < 0.5 s)
4. memory per idle authenticated connection (RSS)     (target < 200 KB)
5. 1,000 concurrent IDLE connections held, and how fast a delivery made by
   another process reaches all of them
6. mixed load: 10 concurrent clients (a process each, as ten mail clients
   are), each session = login, select, fetch, store, expunge, append,
   logout; sessions/s with 2 worker processes sharing the port
   (SO_REUSEPORT), i.e. both cores, and the mean wall time of each step.

The listeners are plaintext (tls: none) so the figures are the server's, not
OpenSSL's. Accounts get production-cost password hashes (scrypt N=2^14), so
LOGIN costs what it costs in service (policy/passwords.py caches verified
credentials per process, as Dovecot's auth_cache does). The 100k folder is
built once (append 1,000 then copy in one transaction per doubling) and cached
under --workdir.

The machine may be shared: each figure comes with the server's CPU time for
it (from /proc), which moves much less than wall time under load; the mixed
load also reports server CPU per session and how busy the workers were.

    .venv/bin/python bench/imap_bench.py [--messages 100000] [--idle 1000]
        [--only big,connections,mixed] [--seconds 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e"), str(ROOT / "tests")]

from imap_support import PASSWORD, ServerProcess, make_world  # noqa: E402

BIG_USER = "user0@hopital.test"
LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class Client:
    """A blocking IMAP client that understands literals, for measuring."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pos = 0
        self.n = 0
        self.greeting = self.line()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed")
        # Drop what was consumed before appending: reading a 4 MB answer line
        # by line must not copy the buffer once per line.
        self.buf = self.buf[self.pos :] + data
        self.pos = 0

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                out = self.buf[self.pos : end + 2]
                self.pos = end + 2
                return out
            self._fill()

    def exact(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            self._fill()
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def cmd(self, text: str | bytes, *, literal: bytes | None = None) -> tuple[list[bytes], bytes]:
        self.n += 1
        tag = b"b%d" % self.n
        raw = text.encode() if isinstance(text, str) else text
        if literal is not None:
            self.sock.sendall(tag + b" " + raw + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + raw + b"\r\n")
        untagged: list[bytes] = []
        while True:
            line = self.line()
            m = LITERAL.search(line)
            while m:
                line += self.exact(int(m.group(1)))
                more = self.line()
                line += more
                m = LITERAL.search(more)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text!r}: {line!r}")
                return untagged, line
            untagged.append(line)

    def login(self, user: str) -> None:
        self.cmd(f'LOGIN {user} "{PASSWORD}"')

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def timed(client: Client, text: str) -> tuple[float, list[bytes]]:
    t = time.perf_counter()
    untagged, _ = client.cmd(text)
    return time.perf_counter() - t, untagged


def message(i: int) -> bytes:
    return (
        f"From: Laboratoire <labo@hopital.test>\r\nTo: <{BIG_USER}>\r\n"
        f"Subject: resultat d'analyse {i}\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\n"
        f"Message-ID: <bench-{i}@hopital.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Resultat {i}: normal.\r\n--XX\r\nContent-Type: application/pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n"
    ).encode()


def build_world(workdir: Path, messages: int, users: int) -> dict[str, Any]:
    marker = workdir / f"world-{messages}-{users}.json"
    if marker.exists():
        config = dict(json.loads(marker.read_text()))
        from storage import migrate

        migrate(config["url"])  # the cached database may predate a migration
        return config
    if workdir.exists():
        shutil.rmtree(workdir)
    config = make_world(workdir, None, users=users)
    from storage import open_store

    store = open_store(config["url"], Path(config["key_file"]))
    mb = store.get_mailbox(BIG_USER)
    inbox = store.get_folder(mb.id, "INBOX")
    seed = min(1000, messages)
    t = time.perf_counter()
    for i in range(seed):
        store.append(inbox.id, message(i), flags=("\\Seen",) if i % 3 else ())
    have = seed
    while have < messages:
        uids = [e.uid for e in store.index(inbox.id)][: messages - have]
        store.copy(inbox.id, uids, inbox.id)
        have += len(uids)
    # A small mailbox per mixed-load user.
    for u in range(1, users):
        ubox = store.get_folder(store.get_mailbox(f"user{u}@hopital.test").id, "INBOX")
        for i in range(20):
            store.append(ubox.id, message(i))
    store.close()
    print(f"  built a {messages}-message folder in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    marker.write_text(json.dumps(config))
    return dict(config)


def fsync_rate(directory: Path, seconds: float = 1.0) -> float:
    """What bounds every write transaction with synchronous=FULL."""
    import os

    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    n, t = 0, time.perf_counter()
    try:
        while time.perf_counter() - t < seconds:
            os.write(fd, b"x" * 128)
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
        path.unlink()
    return n / (time.perf_counter() - t)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def production_hashes(config: dict[str, Any], users: int) -> None:
    """Give every bench account a hash at the production cost (scrypt
    N=2^14): the test world uses a cheap one, which would hide LOGIN's cost."""
    from policy.passwords import hash_password
    from storage import open_store

    store = open_store(config["url"], Path(config["key_file"]))
    try:
        for u in range(users):
            login = f"user{u}@hopital.test"
            if not (store.get_account(login).password_hash or "").startswith("scrypt$16384$"):
                store.set_password_hash(login, hash_password(PASSWORD))
    finally:
        store.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_big_folder(port: int, pid: int) -> dict[str, float]:
    """Wall time as the client sees it, and the server's CPU time for the
    same command (the machine may be shared: CPU is the stable figure)."""
    out: dict[str, float] = {}

    def op(name: str, text: str) -> list[bytes]:
        cpu = cpu_s(pid)
        wall, untagged = timed(c, text)
        out[name], out[name + "_cpu"] = wall, cpu_s(pid) - cpu
        return untagged

    c = Client(port, timeout=300)
    op("login", f'LOGIN {BIG_USER} "{PASSWORD}"')
    untagged = op("select", "SELECT INBOX")  # cold: first read of the index
    exists = next(int(x.split()[1]) for x in untagged if x.endswith(b" EXISTS\r\n"))
    c.cmd("SELECT Sent")
    op("select_warm", "SELECT INBOX")
    lines = op("uid_fetch_flags", "UID FETCH 1:* (UID FLAGS)")
    assert len(lines) == exists, (len(lines), exists)
    lines = op("fetch_envelope_bodystructure_1000", "FETCH 1:1000 (ENVELOPE BODYSTRUCTURE)")
    assert len(lines) == min(1000, exists)
    c.cmd("LOGOUT")
    c.close()
    out["exists"] = exists
    return out


def bench_memory(port: int, pid: int, n: int) -> float:
    # Warm up (imports, caches, first login) before the baseline.
    warm = [Client(port) for _ in range(5)]
    for c in warm:
        c.login("user11@hopital.test")
    time.sleep(0.5)
    before = rss_kb(pid)
    clients = []
    for i in range(n):
        c = Client(port)
        c.login("user11@hopital.test")
        clients.append(c)
    time.sleep(0.5)
    after = rss_kb(pid)
    for c in clients + warm:
        c.close()
    return (after - before) / n


def bench_idle(port: int, config: dict[str, Any], n: int) -> dict[str, float]:
    import selectors

    clients: list[Client] = []
    t = time.perf_counter()
    for i in range(n):
        c = Client(port)
        c.login("user11@hopital.test")
        c.cmd("SELECT INBOX")
        c.sock.sendall(b"i IDLE\r\n")
        assert c.line().startswith(b"+ ")
        clients.append(c)
    setup = time.perf_counter() - t
    from storage import open_store
    from storage.interface import Delivery

    store = open_store(config["url"], Path(config["key_file"]))
    mb = store.get_mailbox("user11@hopital.test")
    sel = selectors.DefaultSelector()
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    t0 = time.perf_counter()
    store.deliver(Delivery(raw=message(99999), mailbox_ids=(mb.id,)))
    store.close()
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            c.buf += data
            if b" EXISTS\r\n" in c.buf[c.pos :]:
                seen.add(id(c))
                sel.unregister(c.sock)
    all_s = time.perf_counter() - t0
    for c in clients:
        c.close()
    return {"held": n, "setup_s": setup, "announced": len(seen), "all_announced_s": all_s}


MIXED_STEPS = ("connect", "login", "select", "fetch", "fetch_body", "store", "expunge",
               "append", "logout")


def mixed_client(port: int, user: str, slot: int, done: Any, step_sums: Any, errors: Any,
                 stop: Any, measuring: Any) -> None:
    """One mail client (its own process, as ten real clients would be: a
    thread each in one Python process would queue them on its GIL)."""
    clock = time.perf_counter
    nsteps = len(MIXED_STEPS)
    while not stop.is_set():
        t0 = clock()
        try:
            c = Client(port)
        except OSError:
            errors[slot] += 1
            time.sleep(0.1)
            continue
        try:
            times = [t0, clock()]
            c.login(user)
            times.append(clock())
            for command in ("SELECT INBOX", "FETCH 1:10 (FLAGS ENVELOPE RFC822.SIZE)",
                            "FETCH 1 (BODY[])", "STORE 1 +FLAGS (\\Deleted)", "EXPUNGE"):
                c.cmd(command)
                times.append(clock())
            c.cmd("APPEND INBOX", literal=message(7))
            times.append(clock())
            c.cmd("LOGOUT")
            times.append(clock())
            done[slot] += 1
            if measuring.is_set():
                for i, (a, b) in enumerate(zip(times, times[1:])):
                    step_sums[slot * nsteps + i] += b - a
        except (OSError, RuntimeError):
            errors[slot] += 1
        finally:
            c.close()


def bench_mixed(config: dict[str, Any], workdir: Path, seconds: float, clients: int,
                workers: int, store_threads: int = 0) -> dict[str, Any]:
    import multiprocessing

    servers = []
    ports: dict[str, int] = {}
    for w in range(workers):
        cfg = dict(config, ports=ports, **({"threads": store_threads} if store_threads else {}))
        srv = ServerProcess(cfg, workdir, f"mixed-{w}")
        got = srv.start()
        ports = ports or got
        servers.append(srv)
    port = ports["plain"]
    mp = multiprocessing.get_context("fork")
    nsteps = len(MIXED_STEPS)
    done = mp.Array("q", clients)
    errors = mp.Array("q", clients)
    step_sums = mp.Array("d", clients * nsteps)
    stop, measuring = mp.Event(), mp.Event()
    procs = [mp.Process(target=mixed_client, daemon=True,
                        args=(port, f"user{1 + i % 10}@hopital.test", i, done, step_sums,
                              errors, stop, measuring))
             for i in range(clients)]
    try:
        for pr in procs:
            pr.start()
        time.sleep(1.0)  # warm-up
        pids = [srv.proc.pid for srv in servers if srv.proc is not None]
        client_pids = [pr.pid for pr in procs if pr.pid is not None]
        cpu0 = sum(cpu_s(p) for p in pids)
        own0 = sum(cpu_s(p) for p in client_pids)
        start_done = done[:]
        measuring.set()
        t = time.perf_counter()
        time.sleep(seconds)
        elapsed = time.perf_counter() - t
        per_client = [b - a for a, b in zip(start_done, done[:])]
        cpu = sum(cpu_s(p) for p in pids) - cpu0
        own = sum(cpu_s(p) for p in client_pids) - own0
        measuring.clear()
        sums = step_sums[:]
        stop.set()
        for pr in procs:
            pr.join(30)
        finished = sum(per_client)
        # Sessions that ended after the window closed added steps too: the
        # step means are over every session measured, close enough.
        measured = max(finished, 1)
        return {"sessions_per_s": finished / elapsed, "sessions": finished,
                "errors": sum(errors[:]),
                "server_cpu_ms_per_session": 1000 * cpu / max(finished, 1),
                "server_cpu_share": cpu / elapsed / workers,
                # The load generator runs on the same cores: its CPU is not
                # available to the server.
                "client_cpu_ms_per_session": 1000 * own / max(finished, 1),
                # Where a session's wall time goes, as the client sees it.
                "step_ms": {name: round(1000 * sum(sums[c * nsteps + i] for c in range(clients))
                                        / measured, 2)
                            for i, name in enumerate(MIXED_STEPS)}}
    finally:
        stop.set()
        for pr in procs:
            if pr.is_alive():
                pr.terminate()
        for srv in servers:
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--memory-connections", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0,
                    help="store threads per worker (default: the world's setting)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "run" / "bench-imap")
    ap.add_argument("--only", default="big,connections,mixed",
                    help="comma-separated parts to run: big, connections, mixed")
    args = ap.parse_args()
    only = set(args.only.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    config = build_world(args.workdir, args.messages, users=12)
    production_hashes(config, users=12)
    results: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    if "big" in only:
        srv = ServerProcess(config, args.workdir, "single")
        ports = srv.start()
        assert srv.proc is not None
        try:
            results["big"] = bench_big_folder(ports["plain"], srv.proc.pid)
        finally:
            srv.stop()
    if "connections" in only:
        # A fresh process, so freed memory of the big folder does not hide growth.
        srv = ServerProcess(config, args.workdir, "connections")
        ports = srv.start()
        assert srv.proc is not None
        try:
            results["memory_kb_per_connection"] = bench_memory(
                ports["plain"], srv.proc.pid, args.memory_connections)
            results["idle"] = bench_idle(ports["plain"], config, args.idle)
        finally:
            srv.stop()
    if "mixed" in only:
        results["fsync_per_s"] = fsync_rate(args.workdir)
        results["mixed"] = bench_mixed(
            config, args.workdir, args.seconds, args.clients, args.workers, args.threads)
    report(args, results)
    print(json.dumps(results), file=sys.stderr)


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:

    big, idle, mixed = results.get("big"), results.get("idle"), results.get("mixed")

    def fig(key: str) -> str:
        assert big is not None
        return f"{big[key]:.3f} s (server CPU {big[key + '_cpu']:.3f} s)"

    print(f"IMAP benchmark (SQLite store, plaintext listener, scrypt N=2^14 passwords; "
          f"load average {results['load_average']:.1f} on {os.cpu_count()} cores at start)")
    if big is None or idle is None or mixed is None:
        print("  (partial run: see the JSON below)")
        return
    rows = [
        ("LOGIN (first, full scrypt)", fig("login")),
        (f"SELECT of a {big['exists']}-message folder, cold", fig("select") + "  (target < 0.2)"),
        ("SELECT of it again, warm", fig("select_warm") + "  (target < 0.2)"),
        ("UID FETCH 1:* (UID FLAGS) on it", fig("uid_fetch_flags") + "  (target < 2)"),
        ("FETCH 1:1000 (ENVELOPE BODYSTRUCTURE)",
         fig("fetch_envelope_bodystructure_1000") + "  (target < 0.5)"),
        ("memory per idle authenticated connection",
         f"{results['memory_kb_per_connection']:.1f} KB  (target < 200)"),
        ("concurrent IDLE connections held",
         f"{idle['held']} (set up in {idle['setup_s']:.1f} s; a delivery by another process "
         f"reached {idle['announced']} of them in {idle['all_announced_s']:.2f} s)"),
        (f"mixed load, {args.clients} clients, {args.workers} workers",
         f"{mixed['sessions_per_s']:.0f} sessions/s  (target >= 130; SO_REUSEPORT)"),
    ]
    for label, value in rows:
        print(f"  {label:<44} {value}")
    print(f"    server CPU per session {mixed['server_cpu_ms_per_session']:.1f} ms, workers "
          f"{100 * mixed['server_cpu_share']:.0f}% busy; load generator CPU per session "
          f"{mixed['client_cpu_ms_per_session']:.1f} ms; disk does "
          f"{results['fsync_per_s']:.0f} fsync/s")
    print("    (session = login, select, fetch 10 envelopes, fetch a body, store, expunge, "
          "append, logout: 4 writes; each client a process of its own)")
    steps = ", ".join(f"{k} {v:.1f}" for k, v in mixed["step_ms"].items())
    print(f"    ms per step: {steps}")
    if mixed["errors"]:
        print(f"    ERRORS: {mixed['errors']} sessions failed")


if __name__ == "__main__":
    main()
