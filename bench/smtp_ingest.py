#!/usr/bin/env python3
"""SMTP ingest benchmark: N parallel connections deliver 4 KB messages to local
mailboxes; every message is durably committed (SQLite, synchronous=FULL) before
its 250. Prints messages/s and the peak RSS of the server workers.

    .venv/bin/python bench/smtp_ingest.py [--messages 20000] [--connections 20]
        [--workers 2] [--driver asyncio|smtp-source] [--mailboxes 20] [--postgres]

`--postgres`: the store in a throwaway PostgreSQL cluster (tests/pg_support.py)
with its durability settings on (fsync, synchronous_commit), instead of SQLite.

Drivers: `asyncio` (built in: MAIL, RCPT and DATA pipelined, recipients spread
over --mailboxes) or `smtp-source` (Postfix's load generator from the Debian
`postfix` package, one message after another on each of -s sessions, all to
one mailbox; its CPU is counted as client CPU).

The server is `python -m mssmtpd.devserve` (build_factory + adoptStreamPort,
one SO_REUSEPORT socket per worker, like `mssctl serve`) on 127.0.0.1, port 0,
with a plaintext MX listener (the figure is about the store path, as
Postfix's Maildir figure is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOMAIN = "bench.test"


def setup(directory: Path, mailboxes: int, workers: int, url: str | None = None) -> Path:
    from conf.settings import Settings
    from storage import open_store
    from storage.crypto import generate_key_file
    from storage.interface import AccountClass, MailboxType

    url = url or f"sqlite:///{directory / 'mss.db'}"
    generate_key_file(directory / "keys")
    store = open_store(url, directory / "keys", create=True)
    store.add_domain(DOMAIN)
    for i in range(mailboxes):
        acc = store.add_account(f"user{i}@{DOMAIN}", f"User {i}", AccountClass.STAFF)
        store.add_mailbox(f"user{i}@{DOMAIN}", MailboxType.PER, owner_account_id=acc.id)
    store.close()
    settings = Settings.model_validate({
        "hostname": f"mx.{DOMAIN}",
        "domains": [DOMAIN],
        "listeners": [{"name": "mx", "port": 0, "role": "mx", "tls": "none"}],
        "database": {"url": url},
        "tls": {"cert_file": directory / "none.pem", "key_file": directory / "none.key"},
        "limits": {"connections_per_ip": 1000, "commands_before_mail": 1000},
        "audit": {"path": directory / "audit.log"},
        "key_file": directory / "keys",
        "workers": workers,
    })
    path = directory / "settings.json"
    path.write_text(settings.model_dump_json())
    return path


def body(i: int, size: int = 4096) -> bytes:
    head = (f"From: <sender@remote.example>\r\nTo: <user@{DOMAIN}>\r\n"
            f"Subject: bench {i}\r\nMessage-ID: <b{i}@remote.example>\r\n\r\n").encode()
    line = b"x" * 74 + b"\r\n"
    payload = line * (size // len(line) + 1)
    return head + payload[: size - len(head) - 2] + b"\r\n"


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed")
        if line[3:4] != b"-":
            return line


async def session(port: int, count: int, offset: int, mailboxes: int, stats: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.client\r\n")
    await _reply(reader)
    for n in range(count):
        i = offset + n
        rcpt = f"user{i % mailboxes}@{DOMAIN}"
        # PIPELINING: MAIL, RCPT and DATA in one write (RFC 2920).
        writer.write(f"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for expect in (b"250", b"250", b"354"):
            line = await _reply(reader)
            if not line.startswith(expect):
                raise RuntimeError(f"unexpected reply {line!r}")
        writer.write(body(i) + b".\r\n")
        line = await _reply(reader)
        if not line.startswith(b"250"):
            raise RuntimeError(f"message refused: {line!r}")
        stats[0] += 1
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def drive_asyncio(port: int, messages: int, connections: int, mailboxes: int) -> None:
    per = messages // connections
    stats = [0]
    await asyncio.gather(*(session(port, per, c * per, mailboxes, stats)
                           for c in range(connections)))


def drive_smtp_source(port: int, messages: int, connections: int) -> None:
    subprocess.run(
        ["smtp-source", "-s", str(connections), "-m", str(messages), "-l", "4096", "-d",
         "-f", "sender@remote.example", "-t", f"user0@{DOMAIN}", "-M", "bench.client",
         f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def workers_cpu(pids: list[int]) -> tuple[float, float]:
    times = [cpu_times(pid) for pid in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def count_messages(directory: Path, mailboxes: int, url: str | None = None) -> int:
    from storage import open_store

    store = open_store(url or f"sqlite:///{directory / 'mss.db'}", directory / "keys")
    try:
        total = 0
        for i in range(mailboxes):
            mb = store.get_mailbox(f"user{i}@{DOMAIN}")
            total += store.mailbox_usage(mb.id)[1]
        return total
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mailboxes", type=int, default=20)
    ap.add_argument("--driver", choices=["asyncio", "smtp-source"], default="asyncio")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--postgres", action="store_true",
                    help="store in a throwaway PostgreSQL cluster (durable settings)")
    ap.add_argument("--no-audit-mirror", action="store_true",
                    help="diagnostic: audit to the file only (not into the store)")
    args = ap.parse_args()
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_support import pg_binaries, running_cluster

        bindir = pg_binaries()
        if bindir is None:
            print("PostgreSQL is not installed (apt-get install postgresql)", file=sys.stderr)
            return 2
        with running_cluster(bindir, durable=True) as cluster:
            print(f"store: throwaway PostgreSQL {bindir.parent.name}, fsync and "
                  "synchronous_commit on")
            return run(args, cluster.url(cluster.new_database()))
    return run(args, None)


def run(args: argparse.Namespace, url: str | None) -> int:
    if args.driver == "smtp-source" and shutil.which("smtp-source") is None:
        print("smtp-source not found (Debian package postfix)", file=sys.stderr)
        return 2
    messages = args.messages - args.messages % args.connections
    directory = Path(tempfile.mkdtemp(prefix="mss-bench-"))
    settings = setup(directory, args.mailboxes, args.workers, url)
    ports_file = directory / "ports.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mssmtpd.devserve", "--settings", str(settings),
         "--ports-file", str(ports_file), "--workers", str(args.workers),
         "--log-level", "warning", "--stats-file", str(directory / "stats.jsonl"),
         *(["--no-audit-mirror"] if args.no_audit_mirror else [])],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join(
            x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)},
    )
    try:
        deadline = time.monotonic() + 30
        while not ports_file.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.05)
        port = json.loads(ports_file.read_text())["mx"]
        # Warm up (imports, connection pools) before timing.
        asyncio.run(drive_asyncio(port, args.connections * 2, args.connections, args.mailboxes))
        warm = count_messages(directory, args.mailboxes, url)
        workers = children(proc.pid) or [proc.pid]
        user0, sys0 = workers_cpu(workers)
        client0 = os.times()
        start = time.perf_counter()
        if args.driver == "asyncio":
            asyncio.run(drive_asyncio(port, messages, args.connections, args.mailboxes))
        else:
            drive_smtp_source(port, messages, args.connections)
        elapsed = time.perf_counter() - start
        client1 = os.times()
        user1, sys1 = workers_cpu(workers)
        user, system = user1 - user0, sys1 - sys0
        client = sum(client1[:4]) - sum(client0[:4])  # incl. smtp-source (a child)
        rss = [peak_rss_kb(pid) for pid in workers]
        stored = count_messages(directory, args.mailboxes, url) - warm
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stats = [json.loads(line) for line in (directory / "stats.jsonl").read_text().splitlines()
                 ] if (directory / "stats.jsonl").exists() else []
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"driver={args.driver} connections={args.connections} workers={args.workers} "
          f"cpus={os.cpu_count()}")
    print(f"messages sent: {messages}, committed in the store: {stored}")
    print(f"elapsed: {elapsed:.2f} s")
    print(f"throughput: {messages / elapsed:.0f} messages/s")
    per = 1000 / messages
    print(f"server CPU: {(user + system) * per:.2f} ms per message "
          f"(user {user * per:.2f}, system {system * per:.2f}; "
          f"{len(workers)} workers: {(user + system) / elapsed:.2f} cores busy)")
    print(f"client CPU: {client * per:.2f} ms per message "
          f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"peak RSS per worker: {', '.join(f'{r / 1024:.1f} MiB' for r in rss)}")
    commits = sum(s["commits"] for s in stats)
    if commits:
        carried = sum(s["messages"] for s in stats)
        print(f"group commit: {carried} messages in {commits} delivery transactions "
              f"({carried / commits:.1f} per commit, warm-up included)")
    return 0 if stored == messages else 1


if __name__ == "__main__":
    sys.exit(main())
