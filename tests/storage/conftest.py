"""Backends for the storage contract suite: every test taking `any_store` (or
`store_url`) runs against SQLite and against PostgreSQL.

PostgreSQL: one throwaway cluster per pytest session (so one per xdist worker),
started with initdb + pg_ctl from /usr/lib/postgresql/*/bin in a temp dir, as
the unprivileged `postgres` user when we are root (initdb refuses root),
listening on 127.0.0.1 only, on a free port, with its unix socket in the temp
dir, and stopped at session end. Each test gets an empty migrated database
(one per session, emptied between tests; tests that damage
their database ask for a fresh one with `pg_cluster.new_database()`). When the binaries are missing the
PostgreSQL tests are skipped, except under CI=true where they FAIL.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storage import migrate, open_store
from storage.crypto import generate_key_file

TEMPLATE_DB = "mss_template"


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


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

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://postgres@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

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
            self.admin_db(self.reusable, "; ".join(f'DELETE FROM "{t.name}"' for t in tables))
        return self.reusable

    def new_database(self, template: str | None = TEMPLATE_DB) -> str:
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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries not found (initdb) and CI=true")
        pytest.skip("PostgreSQL binaries not found (initdb)")
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
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
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
    cluster = PgCluster("127.0.0.1", port, itertools.count())
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


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file, copied for each test (cheaper than
    running the migrations every time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "mss.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated, empty database on the backend under test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, tmp_path / "mss.db")
        return f"sqlite:///{tmp_path / 'mss.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.url(cluster.empty_database())


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    generate_key_file(path)
    return path


@pytest.fixture
def open_any(store_url: str, key_file: Path) -> Iterator[Callable[..., Any]]:
    """Opens (more) stores on the database under test; all closed at the end."""
    opened: list[Any] = []

    def _open(**kwargs: Any) -> Any:
        s = open_store(store_url, key_file, **kwargs)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def any_store(open_any: Callable[..., Any]) -> Any:
    """A SqlStore on SQLite or PostgreSQL with the domain "hopital.test"."""
    s = open_any()
    s.add_domain("hopital.test")
    return s


# Helpers of the root conftest, re-exported: `from conftest import make_settings`
# may find this module instead of tests/conftest.py (same module name).
from store_support import (  # noqa: E402, F401
    TEST_DOMAIN,
    copy_store_template,
    make_settings,
    store_paths,
)
