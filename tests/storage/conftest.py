"""Backends for the storage contract suite: every test taking `any_store` (or
`store_url`) runs against SQLite and against PostgreSQL.

PostgreSQL: the session fixture `pg_cluster` of tests/conftest.py (the
cluster machinery is in tests/pg_support.py, shared with tests/e2e). Each
test gets an empty migrated database (one per session, emptied between tests;
tests that damage their database ask for a fresh one with
`pg_cluster.new_database()`). When the binaries are missing the PostgreSQL
tests are skipped, except under CI=true where they FAIL.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_support import TEMPLATE_DB, PgCluster  # noqa: F401 - PgCluster, TEMPLATE_DB re-exported

from storage import migrate, open_store
from storage.crypto import generate_key_file

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
