"""Two `mssctl serve` nodes on one PostgreSQL database, for the several-nodes
end-to-end tests.

`pg_nodes(factory, pg_cluster, name)` makes two copies of the demo instance
(`MssInstance.demo`: same PKI, key file, demo people and passwords), copies
the demo data of the first one's SQLite file into a new database of the
throwaway cluster, and points both settings files at it. Each node keeps its
own ports, audit file, pid file and log, as two machines would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from integration_support import MssInstance
from sqlalchemy import create_engine, select, text

FEED_APPLICATION = "mss-change-feed"  # storage.notify.KEEPALIVE_PARAMS


def copy_sqlite_to_postgres(sqlite_file: Path, pg_url: str) -> None:
    """Every row of the store at `sqlite_file` into the (migrated, empty)
    database at `pg_url`, keeping ids, then the id sequences moved past them."""
    from storage.models import Base

    src = create_engine(f"sqlite:///{sqlite_file}")
    dst = create_engine(pg_url)
    try:
        with src.connect() as s, dst.begin() as d:
            tables = Base.metadata.sorted_tables
            for table in reversed(tables):
                d.execute(table.delete())
            for table in tables:
                rows = [dict(r._mapping) for r in s.execute(select(table))]
                if rows:
                    d.execute(table.insert(), rows)
                if "id" in table.c:
                    d.execute(text(
                        f"SELECT setval(seq, COALESCE((SELECT max(id) FROM {table.name}), 0)"
                        f" + 1, false) FROM pg_get_serial_sequence('{table.name}', 'id') "
                        "AS seq WHERE seq IS NOT NULL"))
    finally:
        src.dispose()
        dst.dispose()


def use_database(inst: MssInstance, url: str) -> None:
    """Points the instance's settings at `url` (its SQLite file removed)."""
    config = inst.directory / "mss.yaml"
    body = config.read_text()
    assert "url: sqlite:///mss.db" in body
    config.write_text(body.replace("url: sqlite:///mss.db", f"url: {url}"))
    for leftover in inst.directory.glob("mss.db*"):
        leftover.unlink()


def pg_nodes(factory: pytest.TempPathFactory, pg_cluster: Any, name: str,
             *, settings: dict[str, str] | None = None) -> tuple[MssInstance, MssInstance, str]:
    """(node A, node B, database URL). `settings`: text replacements applied
    to both settings files (e.g. a lockout threshold)."""
    a = MssInstance.demo(factory, f"{name}-a")
    b = MssInstance.demo(factory, f"{name}-b")
    # One instance's data and keys for both: B is a copy of the same template,
    # so its key file and PKI are the same; make sure of it.
    assert (a.directory / "keys").read_bytes() == (b.directory / "keys").read_bytes()
    url = pg_cluster.url(pg_cluster.new_database())
    copy_sqlite_to_postgres(a.directory / "mss.db", url)
    for inst in (a, b):
        use_database(inst, url)
        if settings:
            config = inst.directory / "mss.yaml"
            body = config.read_text()
            for old, new in settings.items():
                assert old in body, old
                body = body.replace(old, new)
            config.write_text(body)
    return a, b, url


def feed_backends(pg_cluster: Any, url: str) -> list[int]:
    """The pids of the listening connections (one per serving process)."""
    import psycopg2

    dbname = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(host=pg_cluster.host, port=pg_cluster.port, user="postgres",
                            dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                        "AND datname = %s", (FEED_APPLICATION, dbname))
            return [int(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()

