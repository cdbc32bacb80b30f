#!/usr/bin/env python3
"""Long IMAP sessions, side by side with Dovecot (issue 12).

Ten mail clients (a process each) log in once and then loop, as Thunderbird
and Outlook do all day, over LIST, STATUS, SELECT, FETCH (flags, headers, a
body), STORE, STORE \\Deleted + EXPUNGE and APPEND, for --seconds, against:

1. `mssctl serve --workers 2` (SO_REUSEPORT) of an instance made by `mssctl
   init` here, with one plaintext IMAP listener on 127.0.0.1 (the figure is
   the server's, not OpenSSL's), SQLite store, --users accounts each with a
   box of the default folders and --messages messages in INBOX;
2. a private Dovecot (Debian's `dovecot-imapd`): its own configuration, base
   and state directories, log and maildirs in a temporary directory, a
   passwd-file of the same users and password, a loopback port; started with
   `dovecot -F` and stopped by this script, filled with the same messages
   over IMAP.

Both get the same client (bench/imap_bench.py's `Client`), the same users and
messages. Prints commands/s overall and per command, the mean latency of each
command, the server's CPU per command (every process of the server: `mssctl
serve` and its workers; Dovecot's master, auth and imap processes), and the
ratio; `--command-cpu S` then measures the server's CPU for each kind of
command alone (one session, S seconds each). `--rounds N` alternates the two
servers N times (the machine may be shared: alternate runs see the same
drift). `--py-spy FILE` records one mss
worker with py-spy (speedscope JSON; `--py-spy-format raw` for collapsed
stacks; `--py-spy-gil` for the GIL holder only) during its measured window.

`--postgres`: mss's store in a throwaway PostgreSQL cluster (tests/pg_support.py,
durable settings: fsync, synchronous_commit) instead of SQLite; PostgreSQL's
CPU counts as the server's and is also printed apart. `--nodes N` (with
--postgres): one node, then N `mssctl serve` nodes on one database (own
settings, port and audit file each; same database and key file), the clients
spread over them, each node with --workers workers.

    .venv/bin/python bench/imap_sessions.py [--seconds 30] [--clients 10]
        [--users 100] [--only mss,dovecot] [--rounds 1] [--command-cpu 3]
        [--py-spy FILE] [--postgres [--nodes 2]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from imap_bench import PASSWORD, Client, cpu_s, message  # noqa: E402

DOMAIN = "hopital.test"
FOLDERS = ("Sent", "Drafts", "Trash", "Junk", "Archive")  # and INBOX: `mailbox add`'s
HEADERS = "BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)]"

# One round of a long session: (label, command). {n} is the message the
# round works on, {flag} alternates so that STORE always changes something.
ROUND: tuple[tuple[str, str], ...] = (
    ("LIST", 'LIST "" "*"'),
    ("STATUS", "STATUS Sent (MESSAGES UIDNEXT UNSEEN)"),
    ("SELECT", "SELECT INBOX"),
    ("FETCH flags", "UID FETCH 1:* (FLAGS)"),
    ("FETCH headers", f"FETCH 1:10 (UID RFC822.SIZE FLAGS {HEADERS})"),
    ("FETCH body", "FETCH {n} (BODY.PEEK[])"),
    ("STORE", "STORE {n} {flag}FLAGS (\\Flagged)"),
    ("APPEND", ""),  # APPEND INBOX with a literal
    ("STORE deleted", "STORE 1 +FLAGS.SILENT (\\Deleted)"),
    ("EXPUNGE", "EXPUNGE"),
)
LABELS = tuple(label for label, _ in ROUND)


def user(i: int) -> str:
    return f"user{i}@{DOMAIN}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_greeting(port: int, proc: subprocess.Popen[bytes], log: Path,
                  timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): "
                               f"{log.read_text(errors='replace')[-3000:]}")
        try:
            c = Client(port, timeout=2)
        except OSError:
            time.sleep(0.1)
            continue
        c.close()
        if c.greeting.startswith(b"* OK"):
            return
    raise RuntimeError(f"no greeting on port {port}: {log.read_text(errors='replace')[-3000:]}")


def tree_pids(root: int) -> list[int]:
    """`root` and every process descending from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu(root: int) -> dict[int, float]:
    out = {}
    for pid in tree_pids(root):
        try:
            out[pid] = cpu_s(pid)
        except OSError:
            pass
    return out


# ---------------------------------------------------------------- servers


class Mss:
    """An instance made by `mssctl init`, served by `mssctl serve`."""

    name = "mss"

    def __init__(self, directory: Path, users: int, messages: int, workers: int,
                 url: str | None = None, nodes: int = 1) -> None:
        self.dir = directory
        self.users, self.messages, self.workers = users, messages, workers
        # `url`: a PostgreSQL database instead of SQLite; `nodes`: that many
        # `mssctl serve` processes on it (own settings, port and audit file
        # each; same database and key file, as machines of one cluster).
        self.url, self.nodes = url, nodes
        self.port = 0
        self.ports: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = directory / "serve.log"
        self.name = "mss" if url is None else f"mss-pg-{nodes}node{'s' if nodes > 1 else ''}"

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(ROOT))

    def setup(self) -> None:
        import yaml

        if self.dir.exists():
            shutil.rmtree(self.dir)
        subprocess.run([sys.executable, "-m", "mssctl.main", "init", str(self.dir)],
                       check=True, env=self.env(), cwd=ROOT, stdout=subprocess.DEVNULL)
        self.port = free_port()
        path = self.dir / "mss.yaml"
        settings = yaml.safe_load(path.read_text())
        settings["listeners"] = [{"name": "imap", "address": "127.0.0.1", "port": self.port,
                                  "role": "imap", "tls": "none"}]
        settings["policy"]["login_methods"]["staff"] = ["password"]
        settings["limits"]["imap_connections_per_ip"] = 1000
        settings["limits"]["connections_per_ip"] = 1000
        settings["workers"] = self.workers
        if self.url is not None:
            settings["database"]["url"] = self.url
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        for k in range(1, self.nodes):
            node = dict(settings, listeners=[dict(settings["listeners"][0], port=free_port())])
            node["audit"] = dict(settings["audit"], path=str(self.dir / f"audit-{k}.log"))
            (self.dir / f"mss-{k}.yaml").write_text(yaml.safe_dump(node, sort_keys=False))

        from policy.passwords import hash_password
        from storage import open_store
        from storage.interface import AccountClass, MailboxType

        if self.url is not None:
            # `mssctl init` made and filled a SQLite file: the database of
            # record is this one (made here, with the domain init adds).
            store = open_store(self.url, self.dir / "keys", create=True)
            try:
                store.add_domain(DOMAIN)
            finally:
                store.close()
        store = open_store(self.url or f"sqlite:///{self.dir / 'mss.db'}", self.dir / "keys")
        try:
            pw = hash_password(PASSWORD, n=2**4)  # the login is not what is measured
            for i in range(self.users):
                acc = store.add_account(user(i), user(i), AccountClass.STAFF, password_hash=pw)
                store.add_mailbox(user(i), MailboxType.PER, owner_account_id=acc.id)
                inbox = store.get_folder(store.get_mailbox(user(i)).id, "INBOX")
                with store.write_batch() as batch:
                    for m in range(self.messages):
                        batch.call(store.append, inbox.id, message(m),
                                   flags=("\\Seen",) if m % 3 else ())
        finally:
            store.close()

    def start(self) -> None:
        import yaml

        self.procs, self.ports = [], []
        for k in range(self.nodes):
            config = self.dir / ("mss.yaml" if k == 0 else f"mss-{k}.yaml")
            port = yaml.safe_load(config.read_text())["listeners"][0]["port"]
            log_path = self.log if k == 0 else self.dir / f"serve-{k}.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mssctl.main", "serve", "--config",
                     str(config), "--workers", str(self.workers), "--log-level", "warning"],
                    env=self.env(), cwd=ROOT, stdout=log, stderr=log)
            self.procs.append(proc)
            self.ports.append(port)
            wait_greeting(port, proc, log_path)
        self.proc = self.procs[0]

    def worker_pids(self) -> list[int]:
        return [p for proc in self.procs for p in tree_pids(proc.pid) if p != proc.pid]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs, self.proc = [], None


class Dovecot:
    """A private Dovecot: nothing of the system's configuration or state."""

    name = "dovecot"

    def __init__(self, directory: Path, users: int, messages: int) -> None:
        self.dir = directory
        self.users, self.messages = users, messages
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "dovecot.log"

    def setup(self) -> None:
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists():
            raise SystemExit("dovecot not found: apt-get install dovecot-imapd")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        # Dovecot drops privileges to this user when run as root (and refuses
        # mail access as root); unprivileged, it stays who it is.
        account = pwd.getpwnam("nobody") if os.getuid() == 0 else pwd.getpwuid(os.getuid())
        uname, gid = account.pw_name, account.pw_gid
        import grp

        gname = grp.getgrgid(gid).gr_name
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir()
        os.chmod(self.dir, 0o755)
        os.chown(self.dir / "mail", account.pw_uid, gid)
        passwd = self.dir / "passwd"
        passwd.write_text("".join(f"{user(i)}:{{PLAIN}}{PASSWORD}::::::\n"
                                  for i in range(self.users)))
        os.chmod(passwd, 0o644)
        self.port = free_port()
        d = self.dir
        self.conf = d / "dovecot.conf"
        # Dovecot's defaults otherwise (mail_fsync = optimized, index files).
        self.conf.write_text(f"""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {uname}
default_internal_user = {uname}
default_internal_group = {gname}
first_valid_uid = {min(account.pw_uid, 500)}
first_valid_gid = {min(gid, 500)}
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = static
  args = uid={uname} gid={gname} home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap {{
  process_limit = 1024
}}
""")
        self.start()
        try:
            for i in range(self.users):
                c = Client(self.port)
                c.cmd(f'LOGIN {user(i)} "{PASSWORD}"')
                for folder in FOLDERS:
                    c.cmd(f"CREATE {folder}")
                for m in range(self.messages):
                    flags = "(\\Seen) " if m % 3 else ""
                    c.cmd(f"APPEND INBOX {flags}".rstrip(), literal=message(m))
                c.cmd("LOGOUT")
                c.close()
        finally:
            self.stop()

    def start(self) -> None:
        with open(self.dir / "dovecot.out", "ab") as out:
            self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)],
                                         stdout=out, stderr=out)
        wait_greeting(self.port, self.proc, self.dir / "dovecot.out")
        # imap-login greets before the auth process answers: until then a
        # LOGIN gets "NO [UNAVAILABLE] Temporary authentication failure".
        deadline = time.monotonic() + 30
        while True:
            c = Client(self.port)
            try:
                c.cmd(f'LOGIN {user(0)} "{PASSWORD}"')
                c.cmd("LOGOUT")
                break
            except RuntimeError as exc:
                if b"UNAVAILABLE" not in str(exc).encode() or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                c.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------- the load


def session_client(port: int, login: str, slot: int, counts: Any, sums: Any, errors: Any,
                   stop: Any, measuring: Any, ready: Any) -> None:
    """One long session: logged in once, then rounds until told to stop."""
    clock = time.perf_counter
    nsteps = len(ROUND)
    c = Client(port)
    c.cmd(f'LOGIN {login} "{PASSWORD}"')
    ready.release()
    body = message(7)
    rounds = 0
    try:
        while not stop.is_set():
            rounds += 1
            exists = 10
            for i, (_, text) in enumerate(ROUND):
                t = clock()
                try:
                    if not text:
                        c.cmd("APPEND INBOX", literal=body)
                    else:
                        untagged, _ = c.cmd(text.format(
                            n=max(1, exists // 2), flag="+" if rounds % 2 else "-"))
                        if i == 2:  # SELECT
                            exists = next(int(x.split()[1]) for x in untagged
                                          if x.endswith(b" EXISTS\r\n"))
                except RuntimeError:
                    errors[slot] += 1
                    continue
                if measuring.is_set():
                    counts[slot * nsteps + i] += 1
                    sums[slot * nsteps + i] += clock() - t
    except (OSError, ConnectionError):
        errors[slot] += 1
    finally:
        try:
            c.cmd("LOGOUT")
        except (OSError, ConnectionError, RuntimeError):
            pass
        c.close()


def run_load(ports: list[int], server_roots: Callable[[], list[int]], *, clients: int,
             users: int, seconds: float, warmup: float = 2.0,
             during: Callable[[float], Any] | None = None,
             database_root: int | None = None) -> dict[str, Any]:
    """`ports`: the server's (one per node; client i uses ports[i % n]);
    `server_roots`: the pids whose process trees are the server;
    `database_root`: PostgreSQL's postmaster, counted apart and in the total."""
    import multiprocessing

    mp = multiprocessing.get_context("fork")
    nsteps = len(ROUND)
    counts = mp.Array("q", clients * nsteps)
    sums = mp.Array("d", clients * nsteps)
    errors = mp.Array("q", clients)
    stop, measuring, ready = mp.Event(), mp.Event(), mp.Semaphore(0)
    spread = max(1, users // clients)
    procs = [mp.Process(target=session_client, daemon=True,
                        args=(ports[i % len(ports)], user((i * spread) % users), i, counts,
                              sums, errors,
                              stop, measuring, ready))
             for i in range(clients)]
    try:
        for pr in procs:
            pr.start()
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError("a client could not log in")
        time.sleep(warmup)
        roots = server_roots()
        cpu0 = {p: c for root in roots for p, c in tree_cpu(root).items()}
        db0 = sum(tree_cpu(database_root).values()) if database_root else 0.0
        own0 = {pr.pid: cpu_s(pr.pid) for pr in procs if pr.pid is not None}
        measuring.set()
        t = time.perf_counter()
        extra = during(seconds) if during is not None else None
        time.sleep(max(0.0, seconds - (time.perf_counter() - t)))
        measuring.clear()
        elapsed = time.perf_counter() - t
        cpu1 = {p: c for root in roots for p, c in tree_cpu(root).items()}
        db = sum(tree_cpu(database_root).values()) - db0 if database_root else 0.0
        own = sum(cpu_s(p) - c for p, c in own0.items())
        # Processes that came and went during the window are not counted
        # (none should: sessions are long, logins are over).
        cpu = sum(v - cpu0.get(p, 0.0) for p, v in cpu1.items()) + db
        got_counts, got_sums = counts[:], sums[:]
        stop.set()
        for pr in procs:
            pr.join(30)
        per = {}
        total = 0
        for i, label in enumerate(LABELS):
            n = sum(got_counts[c * nsteps + i] for c in range(clients))
            s = sum(got_sums[c * nsteps + i] for c in range(clients))
            total += n
            per[label] = {"per_s": n / elapsed, "ms": 1000 * s / max(n, 1)}
        return {"commands_per_s": total / elapsed, "commands": total,
                "errors": sum(errors[:]),
                "server_cpu_ms_per_command": 1000 * cpu / max(total, 1),
                "server_cpu_cores": cpu / elapsed,
                "database_cpu_ms_per_command": 1000 * db / max(total, 1) if database_root
                else None,
                "client_cpu_ms_per_command": 1000 * own / max(total, 1),
                "per_command": per, "extra": extra}
    finally:
        stop.set()
        for pr in procs:
            if pr.is_alive():
                pr.terminate()


def command_cpu(port: int, root: int, seconds: float) -> dict[str, float]:
    """Server CPU per command of each kind alone (ms): one session runs each
    command of the round over and over for `seconds` (its own round's
    APPENDs make the INBOX grow a little; EXPUNGE then finds nothing to
    remove, as most EXPUNGEs of a real client after the first do not)."""
    c = Client(port)
    c.cmd(f'LOGIN {user(1)} "{PASSWORD}"')
    c.cmd("SELECT INBOX")
    body = message(7)
    out: dict[str, float] = {}
    try:
        for label, text in ROUND:
            n = 0
            cpu0 = sum(tree_cpu(root).values())
            t = time.perf_counter()
            while time.perf_counter() - t < seconds:
                if text:
                    c.cmd(text.format(n=5, flag="+" if n % 2 else "-"))
                else:
                    c.cmd("APPEND INBOX", literal=body)
                n += 1
            out[label] = 1000 * (sum(tree_cpu(root).values()) - cpu0) / max(n, 1)
            c.cmd("SELECT INBOX")
    finally:
        c.close()
    return out


def py_spy(pid: int, out: Path, fmt: str, gil: bool) -> Callable[[float], Any]:
    def record(seconds: float) -> str:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        # --gil: only the thread holding the GIL, i.e. Python's CPU; without
        # it, threads blocked in C (fsync, a lock) count as busy too.
        subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                        "--rate", "200", "--format", fmt, "--output", str(out), "--nonblocking",
                        *(["--gil"] if gil else [])],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return str(out)

    return record


# ---------------------------------------------------------------- main


def report(name: str, r: dict[str, Any]) -> None:
    print(f"  {name:<8} {r['commands_per_s']:7.0f} commands/s, server CPU "
          f"{r['server_cpu_ms_per_command']:.3f} ms per command "
          f"({r['server_cpu_cores']:.2f} cores busy), load generator CPU "
          f"{r['client_cpu_ms_per_command']:.3f} ms per command"
          + (f" (PostgreSQL {r['database_cpu_ms_per_command']:.3f} ms of it)"
             if r.get("database_cpu_ms_per_command") is not None else "")
          + (f", ERRORS {r['errors']}" if r["errors"] else ""))
    cells = ", ".join(f"{label} {v['per_s']:.0f}/s {v['ms']:.2f} ms"
                      for label, v in r["per_command"].items())
    print(f"           per command (rate, mean latency): {cells}")
    if "command_cpu_ms" in r:
        cells = ", ".join(f"{label} {v:.2f}" for label, v in r["command_cpu_ms"].items())
        print(f"           server CPU per command alone (ms, one session): {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--messages", type=int, default=20, help="messages per INBOX at start")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="alternate the servers N times")
    ap.add_argument("--only", default="mss,dovecot")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the instances live (default: a temporary directory)")
    ap.add_argument("--command-cpu", type=float, default=0.0, metavar="SECONDS",
                    help="then server CPU per command of each kind alone, SECONDS each")
    ap.add_argument("--py-spy", type=Path, default=None, dest="py_spy",
                    help="record one mss worker with py-spy during its window")
    ap.add_argument("--py-spy-format", default="speedscope", choices=["speedscope", "raw"])
    ap.add_argument("--py-spy-gil", action="store_true",
                    help="sample only the thread holding the GIL (py-spy --gil)")
    ap.add_argument("--postgres", action="store_true",
                    help="mss on a throwaway PostgreSQL cluster (durable settings) instead of "
                         "SQLite; its CPU counts as the server's")
    ap.add_argument("--nodes", type=int, default=1,
                    help="with --postgres: then this many `mssctl serve` nodes on one "
                         "database, the clients spread over them")
    args = ap.parse_args()
    if args.nodes > 1 and not args.postgres:
        ap.error("--nodes needs --postgres (SQLite serves the processes of one machine)")
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_support import pg_binaries, running_cluster

        bindir = pg_binaries()
        if bindir is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        with running_cluster(bindir, durable=True) as cluster:
            run(args, cluster)
    else:
        run(args, None)


def postmaster_pid(cluster: Any) -> int | None:
    pidfile = cluster.data / "postmaster.pid" if cluster.data is not None else None
    if pidfile is None or not pidfile.exists():
        return None
    return int(pidfile.read_text().split()[0])


def run(args: argparse.Namespace, cluster: Any) -> None:
    only = set(args.only.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mss-imap-sessions-"))
    own_workdir = args.workdir is None
    # Dovecot's auth process runs as the `dovecot` user and reads the
    # passwd-file inside: mkdtemp's 0700 would make every LOGIN "temporary
    # authentication failure".
    workdir.chmod(0o755)
    servers: list[Any] = []
    if "mss" in only:
        if cluster is None:
            servers.append(Mss(workdir / "mss", args.users, args.messages, args.workers))
        else:
            for nodes in sorted({1, args.nodes}):
                servers.append(Mss(workdir / f"mss-{nodes}", args.users, args.messages,
                                   args.workers, url=cluster.url(cluster.new_database()),
                                   nodes=nodes))
    database_root = postmaster_pid(cluster) if cluster is not None else None
    if "dovecot" in only:
        servers.append(Dovecot(workdir / "dovecot", args.users, args.messages))
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    try:
        for s in servers:
            t = time.perf_counter()
            s.setup()
            print(f"  {s.name}: {args.users} users, {args.messages} messages each, set up in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        for _ in range(args.rounds):
            for s in servers:
                s.start()
                try:
                    during = None
                    if args.py_spy is not None and isinstance(s, Mss):
                        during = py_spy(s.worker_pids()[0], args.py_spy, args.py_spy_format,
                                       args.py_spy_gil)
                    assert s.proc is not None
                    mss = isinstance(s, Mss)
                    ports = s.ports if mss else [s.port]
                    roots = [p.pid for p in s.procs] if mss else [s.proc.pid]
                    results[s.name].append(run_load(
                        ports, lambda roots=roots: roots, clients=args.clients,
                        users=args.users, seconds=args.seconds, during=during,
                        database_root=database_root if mss else None))
                    if args.command_cpu:
                        results[s.name][-1]["command_cpu_ms"] = command_cpu(
                            ports[0], roots[0], args.command_cpu)
                finally:
                    s.stop()
    finally:
        for s in servers:
            s.stop()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"IMAP long sessions: {args.clients} clients (a process each) logged in once, "
          f"{args.seconds:.0f} s each; {args.users} users; mss with {args.workers} workers "
          f"per node ({'PostgreSQL, durable' if cluster is not None else 'SQLite'}, plaintext "
          f"listener); load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores at the end")
    print(f"  one round: {', '.join(LABELS)}")
    # The interpreter's own build moves our figures, not Dovecot's: Debian's
    # python3 (built with PGO and LTO) against one built without
    # --enable-optimizations gave 15-20 % more commands/s (README).
    print(f"  mss and the load generator run on Python {platform.python_version()} "
          f"from {sys.base_prefix}")
    for i in range(args.rounds):
        for name, runs in results.items():
            report(name, runs[i])
        for name in results:
            if name.startswith("mss") and "dovecot" in results:
                ratio = (results[name][i]["commands_per_s"]
                         / max(results["dovecot"][i]["commands_per_s"], 1e-9))
                print(f"  {name} / dovecot: {ratio:.2f} of Dovecot's commands/s")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
