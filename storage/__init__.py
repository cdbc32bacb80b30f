"""The message store: one typed interface (`storage.interface`), one SQLAlchemy
implementation (`storage.store.SqlStore`), Alembic migrations shipped inside the
package (`storage/migrations`, `storage/alembic.ini`).

    store = open_store("sqlite:////var/lib/mss/mss.db", Path("/etc/mss/keys"), create=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.store import SqlStore

_HERE = Path(__file__).resolve().parent


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Runs ``alembic upgrade <revision>`` (head by default) on the database."""
    from alembic import command

    from storage.engine import make_engine

    # Through our engine, so SQLite gets WAL and the same pragmas as the daemons.
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            cfg = _alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
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
    revision is refused (StoreError: run `mssctl db upgrade`).

    Raises storage.crypto.KeyFileError when the key file is missing or unsafe.
    """
    from storage.engine import make_engine
    from storage.interface import StoreError
    from storage.store import SqlStore

    if create:
        migrate(url)
    else:
        current = schema_revision(url)
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
