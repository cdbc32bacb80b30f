"""`mssctl db upgrade`: bring the database schema to the latest revision."""

from __future__ import annotations

import argparse
from typing import Any

from mssctl.common import EXIT_OK, CliError, add_config_option, describe_store_error, load


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="database schema")
    nouns = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = nouns.add_parser("upgrade", help="apply every pending migration (alembic upgrade head)")
    add_config_option(up)
    up.set_defaults(func=upgrade)


def upgrade(args: argparse.Namespace) -> int:
    settings = load(args)
    from storage import migrate
    from storage.interface import StoreError

    try:
        migrate(settings.database.url)
    except StoreError as exc:
        raise CliError(f"migration failed: {describe_store_error(exc)}") from None
    print("database is at the latest schema revision")
    return EXIT_OK
