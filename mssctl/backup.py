"""`mssctl backup DEST [--with-keys]`: a consistent copy of the SQLite store,
made while `serve` runs (SQLite's online backup API, `storage.backup`).

DEST is a new (or empty) directory; it receives the database copy, a
manifest (`backup.json`: when, which schema, which key ids the copy needs)
and, with ``--with-keys``, a copy of the key file (mode 0600). Without it the
command says that the key file must be saved separately: it encrypts every
stored message, and a backup without it cannot be read. For PostgreSQL the
command explains to use pg_dump or base backups. The restore procedure is in
README.md ("Backup and restore").
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mssctl.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    admin_change,
    json_time,
    load,
    store_errors,
)

if TYPE_CHECKING:
    from conf.settings import Settings
    from storage.interface import MessageStore

MANIFEST = "backup.json"

POSTGRES_ADVICE = (
    "the database is PostgreSQL: back it up with PostgreSQL's tools, `pg_dump -Fc` (a "
    "logical dump, consistent while the server runs) or base backups with WAL archiving "
    "(pg_basebackup, for point-in-time recovery); see README.md, \"Backup and restore\". "
    "Save the key file (key_file) with it, separately: it encrypts every stored message")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backup", help="copy the SQLite database while the server runs",
        description="Copies the SQLite database into DEST (a new or empty directory) with "
        "SQLite's online backup API: a consistent copy, taken while `serve` runs and writes. "
        "The key file, which encrypts every stored message, is NOT copied unless --with-keys: "
        "save it separately, a copy without it cannot be read. PostgreSQL: use pg_dump or "
        "base backups (the command says so).")
    p.add_argument("dest", metavar="DEST", type=Path, help="a new or empty directory")
    p.add_argument("--with-keys", action="store_true",
                   help="also copy the key file into DEST (mode 0600); then DEST alone reads "
                        "the messages: keep it as private as the key file")
    add_config_option(p)
    p.set_defaults(func=cmd_backup)


def _prepare_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise CliError(f"{dest} exists and is not a directory", EXIT_USAGE)
    if dest.is_dir() and any(dest.iterdir()):
        raise CliError(f"{dest} is not empty: give a new or empty directory "
                       "(a backup never overwrites another)", EXIT_USAGE)
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {dest}: {exc.strerror or exc}") from None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_key_file(settings: Settings, dest: Path, taken: set[str]) -> Path:
    from storage.crypto import KeyFileError, KeyRing

    try:
        KeyRing.load(settings.key_file)  # a key file we could not use is not worth copying
        data = settings.key_file.read_bytes()
    except (KeyFileError, OSError) as exc:
        raise CliError(f"key_file: {exc}; the database copy is in {dest}, "
                       "without the key file") from None
    target = dest / settings.key_file.name
    if target.name in taken:  # named like the database or the manifest
        target = dest / "keys"
    _write_private(target, data)
    return target


def _audit_store(settings: Settings) -> MessageStore | None:
    """The store, to keep a copy of the audit event (`audit query`); None
    when it cannot be opened (a backup must not depend on it)."""
    from storage import open_store

    try:
        return open_store(settings.database.url, settings.key_file, pool_size=1)
    except Exception:  # noqa: BLE001 - the audit file alone is enough
        return None


def cmd_backup(args: argparse.Namespace) -> int:
    from storage.backup import backup_sqlite
    from storage.engine import sqlite_path

    settings = load(args)
    source = sqlite_path(settings.database.url)
    if source is None:
        raise CliError(POSTGRES_ADVICE, EXIT_USAGE)
    dest: Path = args.dest
    _prepare_dest(dest)
    mirror = _audit_store(settings)
    try:
        with admin_change(settings, "backup", str(dest), store=mirror,
                          database=str(source), with_keys=args.with_keys) as change:
            started = datetime.now(UTC)
            with store_errors(f"backup of {source}"):
                try:
                    info = backup_sqlite(source, dest / source.name)
                except FileExistsError:
                    raise CliError(f"{dest / source.name} exists") from None
            key_copy = _copy_key_file(settings, dest, {MANIFEST, info.path.name}) if args.with_keys else None
            manifest = {
                "format": "mss-backup",
                "version": 1,
                "created": json_time(started),
                "database": {
                    "file": info.path.name,
                    "source": str(source),
                    "schema_revision": info.schema_revision,
                    "size": info.size,
                    "mailboxes": info.mailboxes,
                    "messages": info.messages,
                    "key_ids": list(info.key_ids),
                },
                "key_file": {
                    "included": key_copy is not None,
                    "file": key_copy.name if key_copy is not None else None,
                    "source": str(settings.key_file),
                },
            }
            _write_private(dest / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
            change.details.update(size=info.size, schema_revision=info.schema_revision,
                                  mailboxes=info.mailboxes, messages=info.messages,
                                  key_ids=list(info.key_ids))
    finally:
        if mirror is not None:
            mirror.close()
    print(f"database copied to {info.path} ({info.size} bytes, schema {info.schema_revision}, "
          f"{info.mailboxes} mailbox(es), {info.messages} message(s)), "
          f"as of {json_time(started)}")
    keys = ", ".join(info.key_ids) or "none yet"
    if key_copy is not None:
        print(f"key file copied to {key_copy} (mode 0600; keys {keys}): this directory now "
              "reads every message, keep it as private as the key file")
    else:
        print(f"NOT in this backup: the key file {settings.key_file} (keys {keys}), which "
              "encrypts every stored message. Save it separately (not beside the database "
              "copies): without it these messages cannot be read. --with-keys copies it here.")
    print("Also keep the settings file and the files it names (certificates, keys, flow "
          "matrix, whitelist); restoring: README.md, \"Backup and restore\".")
    return EXIT_OK
