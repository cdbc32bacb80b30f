"""`mssctl queue list|retry|delete`: the outbound queue."""

from __future__ import annotations

import argparse
from typing import Any

from mssctl.common import (
    EXIT_OK,
    CliError,
    add_config_option,
    describe_store_error,
    load,
    opened_store,
    print_table,
)
from storage.interface import StoreError


def register(sub: Any) -> None:
    p = sub.add_parser("queue", help="outbound queue")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = verbs.add_parser("list", help="list queued messages")
    add_config_option(lst)
    lst.set_defaults(func=cmd_list)
    retry = verbs.add_parser("retry", help="make an entry due now")
    retry.add_argument("entry_id", type=int, metavar="ID")
    add_config_option(retry)
    retry.set_defaults(func=cmd_retry)
    delete = verbs.add_parser("delete", help="drop an entry (no bounce is sent)")
    delete.add_argument("entry_id", type=int, metavar="ID")
    add_config_option(delete)
    delete.set_defaults(func=cmd_delete)


def cmd_list(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store:
        try:
            entries = store.list_queue()
        except StoreError as exc:
            raise CliError(describe_store_error(exc)) from None
    rows = [
        [
            str(e.id),
            e.sender or "<>",
            ",".join(e.recipients),
            str(e.size),
            str(e.attempts),
            e.next_attempt.strftime("%Y-%m-%d %H:%M:%S"),
            (e.last_error or "-")[:60],
        ]
        for e in entries
    ]
    print_table(rows, ["ID", "SENDER", "RECIPIENTS", "SIZE", "TRIES", "NEXT", "LAST ERROR"])
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store:
        try:
            store.retry_entry(args.entry_id)
        except StoreError as exc:
            raise CliError(f"queue entry {args.entry_id}: {describe_store_error(exc)}") from None
    print(f"queue entry {args.entry_id} is due now")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store:
        try:
            store.remove_entry(args.entry_id)
        except StoreError as exc:
            raise CliError(f"queue entry {args.entry_id}: {describe_store_error(exc)}") from None
    print(f"queue entry {args.entry_id} deleted")
    return EXIT_OK
