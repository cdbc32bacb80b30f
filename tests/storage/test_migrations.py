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


def test_0002_keeps_data_and_subscriptions(backend: str, tmp_path: Path, request: Any) -> None:
    """0001 -> 0002 rebuilds `folders` on SQLite: no cascade into messages,
    and the subscribed flags become subscription rows."""
    from sqlalchemy import text

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.url(cluster.new_database(template=None))
    migrate(url, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text("INSERT INTO domains (id, name) VALUES (1, 'h.test')"))
            c.execute(
                text(
                    "INSERT INTO mailboxes (id, address, domain_id, mailbox_type, display_name,"
                    " responsible, active, used_bytes, used_messages, last_uidvalidity)"
                    " VALUES (1, 'a@h.test', 1, 'ORG', '', '', true, 1, 1, 5)"
                )
            )
            for fid, name, sub in [(1, "INBOX", True), (2, "Old", False), (3, "Kept", True)]:
                c.execute(
                    text(
                        "INSERT INTO folders (id, mailbox_id, name, uidvalidity, uidnext,"
                        " highestmodseq, subscribed) VALUES (:i, 1, :n, :i, 2, 2, :s)"
                    ),
                    {"i": fid, "n": name, "s": sub},
                )
            c.execute(
                text(
                    "INSERT INTO bodies (id, key_id, size, body, meta) VALUES (1, 'k1', 1, :b, :b)"
                ),
                {"b": b"x"},
            )
            c.execute(
                text(
                    "INSERT INTO messages (folder_id, uid, modseq, flags, internal_date, size,"
                    " recent, body_id) VALUES (3, 1, 2, '', 0, 1, false, 1)"
                )
            )
        migrate(url)
        with engine.connect() as c:
            subs = c.execute(text("SELECT name FROM subscriptions ORDER BY name")).scalars()
            assert list(subs) == ["INBOX", "Kept"]
            assert c.execute(text("SELECT count(*) FROM messages")).scalar() == 1
            assert c.execute(text("SELECT count(*) FROM folders")).scalar() == 3
            ctx = MigrationContext.configure(c, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_0005_fills_the_mailbox_of_existing_audit_events(
    backend: str, tmp_path: Path, request: Any
) -> None:
    from sqlalchemy import text

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.url(cluster.new_database(template=None))
    migrate(url, "0002")
    engine = create_engine(url)
    try:
        targets = ["Cardio@h.test/INBOX", "cardio@h.test", "imaps", "<>", "/var/x@y",
                   "a@h.test,b@h.test"]
        with engine.begin() as c:
            for i, target in enumerate(targets):
                c.execute(
                    text("INSERT INTO audit (id, time, actor, action, target, result, details)"
                         " VALUES (:i, '2026-01-01 00:00:00', 'a', 'x', :t, 'ok', '{}')"),
                    {"i": i + 1, "t": target},
                )
        migrate(url)
        with engine.connect() as c:
            got = c.execute(text("SELECT mailbox FROM audit ORDER BY id")).scalars().all()
            ctx = MigrationContext.configure(c, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
        assert got == ["cardio@h.test", "cardio@h.test", None, None, None, None]
    finally:
        engine.dispose()


def _rows(c: Any, query: str) -> list[tuple[Any, ...]]:
    """Rows as tuples, blobs as bytes (psycopg hands out memoryviews)."""
    from sqlalchemy import text

    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
            for r in c.execute(text(query))]


TABLES_AFTER_0018 = {"shared_files"}  # 0019


def test_0018_moves_the_sort_keys_to_their_table_and_back(
    backend: str, tmp_path: Path, request: Any, key_file: Path
) -> None:
    """0017 -> 0018 moves each body's keys blob, with the body's key id, to
    `sort_keys` (none for a body without keys) and drops the column; 0018 ->
    0017 puts them back where they are under their body's key, and a store
    reopened after the round trip reads the keys it wrote at delivery
    without computing any again."""
    from alembic import command
    from sqlalchemy import text

    from storage import _alembic_config
    from storage.interface import AccountClass, MailboxType

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.url(cluster.new_database(template=None))
    migrate(url, "0017")
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            for i, (key_id, blob) in enumerate([("k1", b"keys-1"), ("k2", b"keys-2"),
                                                 ("k1", None)], 1):
                c.execute(text("INSERT INTO bodies (id, key_id, size, body, meta, sort_keys)"
                               " VALUES (:i, :k, 1, :b, :b, :s)"),
                          {"i": i, "k": key_id, "b": b"x" * 5000, "s": blob})
        migrate(url, "0018")
        with engine.begin() as c:
            assert _rows(c, "SELECT body_id, key_id, data FROM sort_keys ORDER BY body_id") == [
                (1, "k1", b"keys-1"), (2, "k2", b"keys-2")]
            assert "sort_keys" not in {col["name"] for col in inspect(c).get_columns("bodies")}
            ctx = MigrationContext.configure(c, opts={"compare_type": True})
            # the models are those of the head: only the tables of later
            # revisions may be missing
            assert [d for d in compare_metadata(ctx, Base.metadata)
                    if not (d[0] == "add_table" and d[1].name in TABLES_AFTER_0018)] == []
            # written after a rotation: under another key than its body's
            c.execute(text("INSERT INTO sort_keys (body_id, key_id, data) VALUES (3, 'k9', :d)"),
                      {"d": b"keys-3"})
        command.downgrade(_alembic_config(url), "0017")
        with engine.begin() as c:
            assert _rows(c, "SELECT id, sort_keys FROM bodies ORDER BY id") == [
                (1, b"keys-1"), (2, b"keys-2"), (3, None)]  # 3: computed again when needed
            assert "sort_keys" not in inspect(c).get_table_names()
            c.execute(text("DELETE FROM bodies"))

        migrate(url)  # a store with messages delivered at the head revision
        store = open_store(url, key_file)
        try:
            store.add_domain("hopital.test")
            acc = store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
            mb = store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
            inbox = store.get_folder(mb.id, "INBOX").id
            for n in range(3):
                store.append(inbox, f"Subject: Re: dossier {n}\r\nMessage-ID: <m{n}@h.test>"
                                    f"\r\n\r\n{'x' * 9000}\r\n".encode())
            delivered = store.sort_keys(inbox, [1, 2, 3])
        finally:
            store.close()
        with engine.begin() as c:
            blobs = _rows(c, "SELECT body_id, data FROM sort_keys ORDER BY body_id")
        assert len(blobs) == 3
        command.downgrade(_alembic_config(url), "0017")
        with engine.begin() as c:
            assert _rows(c, "SELECT id, sort_keys FROM bodies ORDER BY id") == blobs
        migrate(url)
        store = open_store(url, key_file)
        try:
            assert store.sort_keys(inbox, [1, 2, 3]) == delivered
            assert store.fill_sort_keys() == 0  # nothing was left to compute
        finally:
            store.close()
        with engine.begin() as c:
            assert _rows(c, "SELECT body_id, data FROM sort_keys ORDER BY body_id") == blobs
    finally:
        engine.dispose()
