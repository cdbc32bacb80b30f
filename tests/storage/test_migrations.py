"""Alembic: `upgrade head` builds exactly the schema of storage.models (the
equivalent of `alembic check`), on SQLite and PostgreSQL, and the revision
chain is usable from an installed package (`storage.migrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from storage import head_revision, migrate, open_store, schema_revision
from storage.interface import StoreError
from storage.models import Base


def test_upgrade_head_matches_models(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, Base.metadata)
            assert diffs == [], diffs
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"messages", "bodies", "expunged", "queue", "audit", "grants"} <= tables
    assert schema_revision(store_url) == head_revision()
    migrate(store_url)  # idempotent


def test_open_refuses_unmigrated_database(tmp_path: Path, key_file: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(StoreError, match="upgrade"):
        open_store(url, key_file)
    open_store(url, key_file, create=True).close()
    open_store(url, key_file).close()


def test_downgrade_then_upgrade(tmp_path: Path) -> None:
    from alembic import command

    from storage import _alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    command.downgrade(_alembic_config(url), "base")
    assert schema_revision(url) is None
    migrate(url)
    assert schema_revision(url) == head_revision()


def test_sqlite_pragmas(store: Any) -> None:
    """The shared `store` fixture (tests/conftest.py): SQLite, WAL, FULL sync."""
    assert [d.name for d in store.list_domains()] == ["hopital.test"]
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
