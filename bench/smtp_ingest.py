#!/usr/bin/env python3
"""SMTP ingest benchmark: N parallel connections deliver 4 KB messages to local
mailboxes; every message is durably committed (SQLite, synchronous=FULL) before
its 250. Prints messages/s, the server's CPU per message and the peak RSS of
the server workers, with the load average (the machine may be shared).

    .venv/bin/python bench/smtp_ingest.py [--messages 20000] [--connections 20]
        [--workers 2] [--driver asyncio|smtp-source] [--mailboxes 20] [--postgres]
        [--nodes 2] [--postfix] [--rounds N] [--metrics]

`--postgres`: the store in a throwaway PostgreSQL cluster (tests/pg_support.py)
with its durability settings on (fsync, synchronous_commit), instead of SQLite;
PostgreSQL's CPU per message (the postmaster and its backends) is printed too.
`--nodes N` (with --postgres): one node, then N nodes on one database (a new
database each, same data), in the same run: each node a server process of its
own (own settings file, own port, own audit file; same database URL and key
file, as two machines would have), --workers workers each, the connections
split evenly over the nodes; prints the ratios.
`--postfix` (with --driver smtp-source): then the same load against a private
Postfix started in a temporary directory (class Postfix: own config, queue and
data directories, a loopback port, the `virtual` agent delivering to one
Maildir per recipient; needs root, as the system's Postfix does); the clock
stops when smtp-source has its last 250 (Postfix: queued and fsynced) and again
when the last message is in a Maildir; prints both rates and the ratios. Ours
has one figure: our 250 comes after the commit to the store. `--rounds N`
repeats the run, Postfix first every other round (the host's load drifts).
`--metrics`: the workers count as `mssctl serve` does with `metrics:` set.

Drivers: `asyncio` (built in: MAIL, RCPT and DATA pipelined, recipients spread
over --mailboxes) or `smtp-source` (Postfix's load generator from the Debian
`postfix` package, one message after another on each of -s sessions, all to
one mailbox; its CPU is counted as client CPU).

The server is `python -m mssmtpd.devserve` (build_factory + adoptStreamPort,
one SO_REUSEPORT socket per worker, like `mssctl serve`: the SMTP listeners of
`serve` without its IMAP listeners, relay poller and periodic jobs) on
127.0.0.1, port 0, with a plaintext MX listener (the figure is about the store
path, as Postfix's Maildir figure is).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

DOMAIN = "bench.test"


def setup(directory: Path, mailboxes: int, workers: int, url: str | None = None,
          metrics: bool = False) -> Path:
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
        **({"metrics": {"port": 0, "directory": directory / "metrics"}} if metrics else {}),
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


def smtp_source(port: int, messages: int, connections: int) -> subprocess.Popen[bytes]:
    """Postfix's load generator, started (the caller waits for it)."""
    return subprocess.Popen(
        ["smtp-source", "-s", str(connections), "-m", str(messages), "-l", "4096", "-d",
         "-f", "sender@remote.example", "-t", f"user0@{DOMAIN}", "-M", "bench.client",
         f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
    )


MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
virtual   unix  - n n -    - virtual
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A private Postfix (Debian's `postfix` package): its own config, queue
    and data directories, log file and Maildirs in `directory`, smtpd on a
    free loopback port, the bench domain delivered by the `virtual` agent to
    one Maildir per recipient (owned by `nobody`: no system users). Started
    with `postfix -c DIR start-fg` (the master in the foreground, so that its
    process tree is this one's child) and stopped by `postfix -c DIR stop`.
    The system's Postfix (/etc/postfix, port 25) is not touched. Otherwise
    Postfix's defaults (queue files fsynced before the 250, `in_flow_delay`),
    except that no daemon is chrooted (Debian's master.cf chroots most)."""

    def __init__(self, directory: Path, mailboxes: int) -> None:
        self.dir = directory
        self.mailboxes = mailboxes
        self.etc = directory / "etc"
        self.maildirs = directory / "maildirs"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        import pwd
        import socket

        if os.geteuid() != 0:
            raise SystemExit("--postfix needs root (the master starts as root, then "
                             "runs as mail_owner)")
        if shutil.which("postfix") is None:
            raise SystemExit("postfix not found (apt-get install postfix)")
        nobody = pwd.getpwnam("nobody")
        for sub in (self.etc, self.dir / "queue", self.dir / "data", self.maildirs):
            sub.mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir / "data", "postfix", "postfix")
        shutil.chown(self.maildirs, nobody.pw_uid, nobody.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        (self.etc / "vmailbox").write_text(
            "".join(f"user{i}@{DOMAIN} user{i}/\n" for i in range(self.mailboxes)))
        d = self.dir
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.{DOMAIN}
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.maildirs}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
""")
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        self._postfix("check")

    def _postfix(self, *command: str) -> None:
        done = subprocess.run(["postfix", "-c", str(self.etc), *command], check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            # Postfix reports to stderr only on a terminal: its log says why.
            raise SystemExit(f"postfix {' '.join(command)} failed: "
                             f"{done.stdout.decode(errors='replace')}{self.log_tail()}")

    def start(self) -> None:
        import socket

        with open(self.dir / "master.out", "ab") as out:
            self.proc = subprocess.Popen(["postfix", "-c", str(self.etc), "start-fg"],
                                         stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit("postfix did not start: " + self.log_tail())
            time.sleep(0.1)

    def delivered(self) -> int:
        """Messages in the Maildirs (new/ of each; nothing reads them)."""
        total = 0
        for box in self.maildirs.iterdir():
            try:
                total += len(os.listdir(box / "new"))
            except FileNotFoundError:
                pass
        return total

    def queued(self) -> int:
        """Queue files not yet delivered (incoming, active, deferred)."""
        return sum(len(files) for sub in ("incoming", "active", "deferred")
                   for _, _, files in os.walk(self.dir / "queue" / sub))

    def log_tail(self) -> str:
        log = self.dir / "postfix.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


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


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and every process descending from it, with what
    their exited children used once reaped (Postfix's daemons exit after 100
    uses; PostgreSQL's backends when a connection closes)."""
    from imap_sessions import tree_pids

    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick
    return total


def postmaster_pid(cluster: Any) -> int | None:
    data = getattr(cluster, "data", None)
    if data is None:
        return None
    return int((Path(data) / "postmaster.pid").read_text().split()[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="workers per node")
    ap.add_argument("--mailboxes", type=int, default=20)
    ap.add_argument("--driver", choices=["asyncio", "smtp-source"], default="asyncio")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--postgres", action="store_true",
                    help="store in a throwaway PostgreSQL cluster (durable settings)")
    ap.add_argument("--nodes", type=int, default=1,
                    help="with --postgres: one node, then this many on one database "
                         "(the connections split evenly), in the same run")
    ap.add_argument("--postfix", action="store_true",
                    help="then the same smtp-source load against a private Postfix "
                         "delivering to Maildirs (--driver smtp-source)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat N times; with --postfix, Postfix goes first every other round")
    ap.add_argument("--no-audit-mirror", action="store_true",
                    help="diagnostic: audit to the file only (not into the store)")
    ap.add_argument("--metrics", action="store_true",
                    help="count as `mssctl serve` does with `metrics:` set (multiprocess mode)")
    args = ap.parse_args()
    if args.postfix and args.driver != "smtp-source":
        ap.error("--postfix compares like with like: use --driver smtp-source")
    if args.nodes > 1 and not args.postgres:
        ap.error("--nodes needs --postgres (SQLite serves the processes of one machine)")
    if args.driver == "smtp-source" and shutil.which("smtp-source") is None:
        print("smtp-source not found (Debian package postfix)", file=sys.stderr)
        return 2
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M %Z')}")
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
            return run(args, lambda: cluster.url(cluster.new_database()),
                       postmaster_pid(cluster))
    return run(args, None, None)


def run(args: argparse.Namespace, new_url: Callable[[], str] | None,
        postmaster: int | None) -> int:
    code = 0
    for r in range(args.rounds):
        if args.rounds > 1:
            print(f"---- round {r + 1} of {args.rounds} (load average "
                  f"{os.getloadavg()[0]:.1f})")
        # Alternate which server goes first: on a shared host the load drifts.
        code = run_round(args, new_url, postmaster, postfix_first=r % 2 == 1) or code
    return code


def run_round(args: argparse.Namespace, new_url: Callable[[], str] | None,
              postmaster: int | None, postfix_first: bool) -> int:
    messages = args.messages - args.messages % (args.connections * args.nodes)
    code = 0
    pf: dict[str, Any] | None = None
    if args.postfix and postfix_first:
        pf = run_postfix(args, messages)
        report_postfix(pf)
    mss: list[dict[str, Any]] = []
    for nodes in ([1, args.nodes] if args.nodes > 1 else [1]):
        r = run_mss(args, messages, new_url() if new_url else None, nodes, postmaster)
        report_mss(args, r, heading=args.nodes > 1 or args.postfix)
        code = code or (0 if r["stored"] == messages else 1)
        mss.append(r)
    if len(mss) > 1:
        one, more = mss[0], mss[-1]
        print(f"{more['nodes']} nodes / 1 node: {more['rate'] / one['rate']:.2f}x the messages/s, "
              f"{more['cpu_ms'] / one['cpu_ms']:.2f}x the server CPU per message"
              + (f", {more['pg_ms'] / one['pg_ms']:.2f}x PostgreSQL's"
                 if one.get("pg_ms") and more.get("pg_ms") else ""))
    if args.postfix:
        if pf is None:
            pf = run_postfix(args, messages)
            report_postfix(pf)
        code = code or (0 if pf["delivered"] == messages else 1)
        ours = mss[0]["rate"]
        print(f"mss / Postfix: {ours / pf['accept_rate']:.2f} of Postfix's accept rate, "
              f"{ours / pf['delivered_rate']:.2f} of its delivered rate (mss 250 = committed "
              f"to the store; Postfix 250 = queued and fsynced, delivered later); server "
              f"CPU per message {mss[0]['cpu_ms'] / pf['cpu_ms']:.2f}x Postfix's")
    return code


def node_settings(first: Path, directory: Path, k: int) -> Path:
    """Node k's settings: node 0's (same database URL, key file, domains),
    its own audit file (and metrics directory); its ports are port 0."""
    data = json.loads(first.read_text())
    data["audit"]["path"] = str(directory / f"audit-{k}.log")
    if data.get("metrics"):
        data["metrics"]["directory"] = str(directory / f"metrics-{k}")
    path = directory / f"settings-{k}.json"
    path.write_text(json.dumps(data))
    return path


def start_node(directory: Path, settings: Path, k: int, args: argparse.Namespace
               ) -> tuple[subprocess.Popen[bytes], int]:
    ports_file = directory / f"ports-{k}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mssmtpd.devserve", "--settings", str(settings),
         "--ports-file", str(ports_file), "--workers", str(args.workers),
         "--log-level", "warning", "--stats-file", str(directory / "stats.jsonl"),
         *(["--no-audit-mirror"] if args.no_audit_mirror else [])],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join(
            x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)},
    )
    deadline = time.monotonic() + 30
    while not ports_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("server did not start")
        time.sleep(0.05)
    return proc, int(json.loads(ports_file.read_text())["mx"])


def drive(args: argparse.Namespace, ports: list[int], messages: int) -> None:
    """The load, the connections split evenly over `ports` (one per node)."""
    if args.driver == "asyncio":
        asyncio.run(drive_asyncio_over(ports, messages, args.connections, args.mailboxes))
        return
    share, sessions = messages // len(ports), args.connections // len(ports)
    procs = [smtp_source(port, share, sessions) for port in ports]
    for pr in procs:
        if pr.wait() != 0:
            raise RuntimeError(f"smtp-source exited {pr.returncode}")


async def drive_asyncio_over(ports: list[int], messages: int, connections: int,
                             mailboxes: int) -> None:
    per = messages // connections
    stats = [0]
    await asyncio.gather(*(session(ports[c % len(ports)], per, c * per, mailboxes, stats)
                           for c in range(connections)))


def run_mss(args: argparse.Namespace, messages: int, url: str | None, nodes: int,
            postmaster: int | None) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="mss-bench-"))
    first = setup(directory, args.mailboxes, args.workers, url, args.metrics)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = []
        for k in range(nodes):
            proc, port = start_node(
                directory, first if k == 0 else node_settings(first, directory, k), k, args)
            procs.append(proc)
            ports.append(port)
        # Warm up (imports, connection pools) before timing.
        asyncio.run(drive_asyncio_over(ports, args.connections * 2, args.connections,
                                       args.mailboxes))
        warm = count_messages(directory, args.mailboxes, url)
        workers = [w for proc in procs for w in (children(proc.pid) or [proc.pid])]
        user0, sys0 = workers_cpu(workers)
        pg0 = tree_cpu_s(postmaster) if postmaster else 0.0
        client0 = os.times()
        start = time.perf_counter()
        drive(args, ports, messages)
        elapsed = time.perf_counter() - start
        client1 = os.times()
        pg = tree_cpu_s(postmaster) - pg0 if postmaster else 0.0
        user1, sys1 = workers_cpu(workers)
        rss = [peak_rss_kb(pid) for pid in workers]
        stored = count_messages(directory, args.mailboxes, url) - warm
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        stats = [json.loads(line) for line in (directory / "stats.jsonl").read_text().splitlines()
                 ] if (directory / "stats.jsonl").exists() else []
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    user, system = user1 - user0, sys1 - sys0
    per = 1000 / messages
    return {"nodes": nodes, "messages": messages, "stored": stored, "elapsed": elapsed,
            "rate": messages / elapsed, "user": user, "system": system,
            "cpu_ms": (user + system) * per, "workers": len(workers),
            "client_ms": (sum(client1[:4]) - sum(client0[:4])) * per,  # incl. smtp-source
            "pg_ms": pg * per if postmaster else None, "rss": rss, "stats": stats}


def report_mss(args: argparse.Namespace, r: dict[str, Any], heading: bool) -> None:
    if heading:
        print(f"== mss: {r['nodes']} node{'s' if r['nodes'] > 1 else ''} x "
              f"{args.workers} workers" + (" on one PostgreSQL database"
                                           if args.postgres else ""))
    messages, elapsed, per = r["messages"], r["elapsed"], 1000 / r["messages"]
    print(f"driver={args.driver} connections={args.connections} workers={args.workers} "
          f"nodes={r['nodes']} cpus={os.cpu_count()} "
          f"metrics={'on' if args.metrics else 'off'}")
    print(f"messages sent: {messages}, committed in the store: {r['stored']}")
    print(f"elapsed: {elapsed:.2f} s")
    print(f"throughput: {messages / elapsed:.0f} messages/s")
    print(f"server CPU: {r['cpu_ms']:.2f} ms per message "
          f"(user {r['user'] * per:.2f}, system {r['system'] * per:.2f}; "
          f"{r['workers']} workers: {(r['user'] + r['system']) / elapsed:.2f} cores busy)")
    if r["pg_ms"] is not None:
        print(f"PostgreSQL CPU: {r['pg_ms']:.2f} ms per message "
              f"({r['pg_ms'] * messages / 1000 / elapsed:.2f} cores busy)")
    print(f"client CPU: {r['client_ms']:.2f} ms per message "
          f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"peak RSS per worker: {', '.join(f'{x / 1024:.1f} MiB' for x in r['rss'])}")
    commits = sum(s["commits"] for s in r["stats"])
    if commits:
        carried = sum(s["messages"] for s in r["stats"])
        print(f"group commit: {carried} messages in {commits} delivery transactions "
              f"({carried / commits:.1f} per commit, warm-up included)")


def run_postfix(args: argparse.Namespace, messages: int) -> dict[str, Any]:
    """The same smtp-source load against a private Postfix; the clock stops
    twice: when smtp-source has its last 250 (accepted: queued and fsynced),
    and when the last message is in a Maildir (delivered)."""
    directory = Path(tempfile.mkdtemp(prefix="mss-bench-postfix-"))
    postfix = Postfix(directory, args.mailboxes)
    try:
        postfix.setup()
        postfix.start()
        assert postfix.proc is not None
        warm = args.connections * 2  # as for mss
        smtp_source(postfix.port, warm, args.connections).wait()
        wait_delivered(postfix, warm, 60)
        cpu0 = tree_cpu_s(postfix.proc.pid)
        client0 = os.times()
        start = time.perf_counter()
        drive(args, [postfix.port], messages)
        accepted = time.perf_counter() - start
        client1 = os.times()
        delivered = wait_delivered(postfix, warm + messages, 300) - warm
        done = time.perf_counter() - start
        cpu = tree_cpu_s(postfix.proc.pid) - cpu0
        rss = peak_rss_kb(postfix.proc.pid)
    finally:
        postfix.stop()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    per = 1000 / messages
    return {"messages": messages, "delivered": delivered, "accepted_s": accepted,
            "delivered_s": done, "accept_rate": messages / accepted,
            "delivered_rate": delivered / done, "cpu_ms": cpu * per,
            "client_ms": (sum(client1[:4]) - sum(client0[:4])) * per,
            "master_rss": rss, "connections": args.connections}


def wait_delivered(postfix: Postfix, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        got = postfix.delivered()
        if got >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.02)  # polling the Maildirs with a deadline


def report_postfix(r: dict[str, Any]) -> None:
    print(f"== Postfix {postfix_version()} (private instance, virtual delivery to Maildir, "
          f"defaults otherwise), same smtp-source load: {r['connections']} sessions")
    print(f"messages sent: {r['messages']}, in the Maildirs: {r['delivered']}")
    print(f"accepted (last 250, queued and fsynced): {r['accepted_s']:.2f} s, "
          f"{r['accept_rate']:.0f} messages/s")
    print(f"delivered (last file in a Maildir): {r['delivered_s']:.2f} s, "
          f"{r['delivered_rate']:.0f} messages/s")
    print(f"server CPU: {r['cpu_ms']:.2f} ms per message (every Postfix process, exited "
          f"ones included: {r['cpu_ms'] * r['messages'] / 1000 / r['delivered_s']:.2f} "
          f"cores busy until delivered)")
    print(f"client CPU: {r['client_ms']:.2f} ms per message "
          f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def postfix_version() -> str:
    done = subprocess.run(["postconf", "-d", "-h", "mail_version"], check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
