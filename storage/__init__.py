"""The message store: one typed interface (`storage.interface`), one SQLAlchemy
implementation (`storage.store.SqlStore`), Alembic migrations shipped inside the
package (`storage/migrations`, `storage/alembic.ini`).

    store = open_store("sqlite:////var/lib/mss/mss.db", Path("/etc/mss/keys"), create=True)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

    from storage.store import SqlStore

_HERE = Path(__file__).resolve().parent


def _alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Runs ``alembic upgrade <revision>`` (head by default) on the database.

    Raises StoreUnavailable when the database cannot be reached, StoreError
    when a migration step fails (the transaction is rolled back)."""
    from alembic import command
    from sqlalchemy.exc import SQLAlchemyError

    from storage.engine import make_engine, translate
    from storage.interface import StoreError, StoreUnavailable

    # Through our engine, so SQLite gets WAL and the same pragmas as the daemons.
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Batch migrations rebuild tables (copy, DROP, rename): with
                # foreign keys on, the DROP would cascade into the children.
                # Set on the raw connection: inside a transaction it is a no-op.
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            cfg = _alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    except SQLAlchemyError as exc:
        err = translate(exc)
        if isinstance(err, StoreUnavailable):
            raise err from exc
        raise StoreError(f"migration failed: {type(exc.__cause__ or exc).__name__}") from exc
    finally:
        engine.dispose()


def schema_revision(url: str) -> str | None:
    """The revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    from storage.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@lru_cache(maxsize=1)
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("")).get_current_head()
    assert head is not None
    return head


def open_store(
    url: str,
    key_file: Path,
    *,
    create: bool = False,
    busy_timeout: float = 30.0,
    pool_size: int = 8,
) -> SqlStore:
    """Opens the store. `create=True` migrates the database to the current
    schema first (creating it); otherwise a database not at the current
    revision (or a missing SQLite file) is refused with StoreError.

    Raises StoreUnavailable when the database cannot be reached, and
    storage.crypto.KeyFileError when the key file is missing or unsafe.
    `busy_timeout`: seconds a write waits for the database lock (SQLite) or a
    pooled connection (PostgreSQL) before StoreUnavailable.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from storage.engine import make_engine, sqlite_path, translate
    from storage.interface import StoreError
    from storage.store import SqlStore

    db_file = sqlite_path(url)
    if not create and db_file is not None and not db_file.exists():
        # Opening would create an empty file as a side effect.
        raise StoreError(f"no database at {db_file}: run `mssctl db upgrade` (or init)")
    try:
        if create:
            migrate(url)
        current = schema_revision(url)
    except SQLAlchemyError as exc:
        raise translate(exc) from exc
    if current != head_revision():
        raise StoreError(
            f"database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `mssctl db upgrade`"
        )
    engine = make_engine(url, busy_timeout=busy_timeout, pool_size=pool_size)
    try:
        return SqlStore(engine, Path(key_file), busy_timeout=busy_timeout)
    except BaseException:
        engine.dispose()
        raise


__all__ = ["migrate", "open_store", "schema_revision", "head_revision"]
