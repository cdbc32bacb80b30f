"""`mssctl db upgrade`: bring the database schema to the latest revision.
`mssctl db sort-keys`: compute the SORT / THREAD keys of messages stored
before revision 0013 (otherwise the first SORT or THREAD of each folder does
it, and on a large folder the client waits)."""

from __future__ import annotations

import argparse
from typing import Any

from mssctl.common import (
    EXIT_OK,
    CliError,
    add_config_option,
    admin_change,
    describe_store_error,
    load,
    opened_store,
)


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="database schema")
    nouns = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = nouns.add_parser("upgrade", help="apply every pending migration (alembic upgrade head)")
    add_config_option(up)
    up.set_defaults(func=upgrade)
    keys = nouns.add_parser("sort-keys", help="compute the SORT/THREAD keys of older messages")
    keys.add_argument("--batch", type=int, default=500, help="messages per transaction")
    add_config_option(keys)
    keys.set_defaults(func=sort_keys)


def sort_keys(args: argparse.Namespace) -> int:
    settings = load(args)
    from storage.crypto import DecryptionError
    from storage.interface import StoreError

    with (
        opened_store(settings) as store,
        admin_change(settings, "db-sort-keys", "bodies", store=store, filled=0) as change,
    ):
        total = 0
        try:
            while done := store.fill_sort_keys(batch=max(1, args.batch)):
                total += done
                change.details["filled"] = total
                print(f"sort keys of {total} message(s) so far", flush=True)
        except StoreError as exc:
            raise CliError(f"stopped after {total}: {describe_store_error(exc)}") from None
        except DecryptionError as exc:  # a message under a key no longer in the key file
            raise CliError(f"stopped after {total}: {exc} (is the key file complete?)") \
                from None
    print(f"sort keys computed for {total} message(s); every message has them")
    return EXIT_OK


def upgrade(args: argparse.Namespace) -> int:
    settings = load(args)
    from sqlalchemy.engine import make_url

    from storage import head_revision, migrate, open_store, schema_revision
    from storage.interface import StoreError

    url = make_url(settings.database.url).render_as_string(hide_password=True)
    with admin_change(settings, "db-upgrade", url) as change:
        try:
            change.details["revision_before"] = schema_revision(settings.database.url)
        except Exception:  # noqa: BLE001 - migrate below says what is wrong
            change.details["revision_before"] = None
        try:
            migrate(settings.database.url)
        except StoreError as exc:
            raise CliError(f"migration failed: {describe_store_error(exc)}") from None
        change.details["revision"] = head_revision()
        try:  # the schema is current now: the store can keep a copy of the event
            change.store = open_store(settings.database.url, settings.key_file)
        except Exception:  # noqa: BLE001 - the audit file has it anyway
            change.store = None
    if change.store is not None:
        change.store.close()
    print("database is at the latest schema revision")
    return EXIT_OK
