"""A throwaway PostgreSQL cluster for tests of every tier (storage, e2e),
importable from any test module:

    from pg_support import PgCluster, pg_binaries, running_cluster

The session fixture `pg_cluster` (tests/conftest.py) wraps `running_cluster`:
one cluster per pytest session (so one per xdist worker), started with
initdb + pg_ctl from /usr/lib/postgresql/*/bin in a temp dir, as the
unprivileged `postgres` user when we are root (initdb refuses root),
listening on 127.0.0.1 only, on a free port, with its unix socket in the temp
dir, durability settings off, and stopped (immediately) at the end. A
database migrated to the current schema, TEMPLATE_DB, is made at start:
`new_database()` copies it (CREATE DATABASE ... TEMPLATE), `empty_database()`
reuses one per session emptied between tests, and `url(name)` is the
SQLAlchemy URL (psycopg2, user postgres, trust authentication).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TEMPLATE_DB = "mss_template"


def pg_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl (newest Debian version first),
    or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


_pg_bin = pg_binaries  # the historical name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    host: str
    port: int
    _counter: Iterator[int]
    reusable: str | None = None
    data: Path | None = None  # the data directory (its postmaster.pid: benchmarks)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://postgres@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        self.admin_db("postgres", sql)

    def admin_db(self, dbname: str, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname=dbname)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def empty_database(self) -> str:
        """A migrated database with no rows: made once per session, then
        emptied for each test (much cheaper than CREATE DATABASE)."""
        from storage.models import Base

        if self.reusable is None:
            self.reusable = self.new_database()
        else:
            # DELETE beats TRUNCATE on a handful of rows (no new files).
            tables = reversed(Base.metadata.sorted_tables)
            self.admin_db(self.reusable, "; ".join(f'DELETE FROM "{t.name}"' for t in tables)
                          # the rows the migrations seed
                          + "; INSERT INTO access_epoch (id, value) VALUES (1, 0)"
                          + "; INSERT INTO uidvalidity (id, last) VALUES (1, 0)")
        return self.reusable

    def new_database(self, template: str | None = TEMPLATE_DB) -> str:
        """A new database, a copy of the migrated empty TEMPLATE_DB (or, with
        template=None, a blank one); returns its name, for `url(name)`."""
        name = f"t{os.getpid()}_{next(self._counter)}"
        self.admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name


def _initdb(bindir: Path, run: Callable[..., None], data: Path) -> None:
    """A fresh data directory at `data`: a copy of a pristine initdb output
    cached in the temp dir (initdb takes seconds; copying it, a fraction)."""
    cache = Path(tempfile.gettempdir()) / f"mss-pg-initdb-{bindir.parent.name}-{os.geteuid()}"
    if not (cache / "PG_VERSION").exists():
        fresh = Path(tempfile.mkdtemp(prefix="mss-pg-initdb-"))
        if os.geteuid() == 0:
            shutil.chown(fresh, "postgres", "postgres")
        try:
            run(
                str(bindir / "initdb"),
                "-D",
                str(fresh / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            try:
                os.rename(fresh / "data", cache)  # atomic: never a half-made cache
            except OSError:
                pass  # another worker made it first
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
    subprocess.run(["cp", "-a", str(cache), str(data)], check=True)


@contextmanager
def running_cluster(bindir: Path, *, durable: bool = False) -> Iterator[PgCluster]:
    """Starts a cluster with the binaries of `bindir` (see `pg_binaries`),
    makes TEMPLATE_DB, yields it, and stops and deletes it on exit.
    `durable`: PostgreSQL's own durability settings (fsync, synchronous
    commit: what a benchmark of commits must measure) instead of off."""
    from storage import migrate

    base = Path(tempfile.mkdtemp(prefix="mss-pg-"))
    data = base / "data"
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    os.chmod(base, 0o700)

    def run(*args: str) -> None:
        subprocess.run(
            [*as_postgres, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    port = _free_port()
    _initdb(bindir, run, data)
    # Durability settings off: these tests are about semantics, and speed
    # matters (the crash test runs on SQLite).
    opts = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base}"
        " -c max_connections=200"
    )
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    try:
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(base / "log"),
            "-w",
            "start",
        )
    except subprocess.CalledProcessError as exc:
        log = (base / "log").read_text(errors="replace") if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {exc.stdout!r}\n{log}") from exc
    cluster = PgCluster("127.0.0.1", port, itertools.count(), data=data)
    try:
        cluster.admin(f'CREATE DATABASE "{TEMPLATE_DB}"')
        migrate(cluster.url(TEMPLATE_DB))
        yield cluster
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)
