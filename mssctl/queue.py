"""`mssctl queue list|retry|delete`: the outbound queue."""

from __future__ import annotations

import argparse
from typing import Any

from mssctl.common import (
    EXIT_OK,
    add_config_option,
    add_json_option,
    admin_change,
    json_time,
    load,
    opened_store,
    print_json,
    print_table,
    store_errors,
)


def register(sub: Any) -> None:
    p = sub.add_parser("queue", help="outbound queue")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = verbs.add_parser("list", help="list queued messages")
    add_json_option(lst)
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
    with opened_store(settings) as store, store_errors():
        entries = store.list_queue()
    if args.json:
        print_json({"queue": [
            {
                "id": e.id,
                "sender": e.sender,  # "" for the null sender
                "recipients": list(e.recipients),
                "size": e.size,
                "attempts": e.attempts,
                "created": json_time(e.created),
                "next_attempt": json_time(e.next_attempt),
                "last_error": e.last_error,
                # where it came from (what the flow matrix decides on at relay)
                "origin": None if e.origin is None else {
                    "listener": e.origin.listener,
                    "client_ip": e.origin.client_ip,
                    "account": e.origin.account,
                    "auth_method": e.origin.auth_method,
                    "peer_dn": e.origin.peer_dn,
                },
            }
            for e in entries]})
        return EXIT_OK
    rows = [
        [
            str(e.id),
            e.sender or "<>",
            ",".join(e.recipients),
            str(e.size),
            str(e.attempts),
            e.next_attempt.strftime("%Y-%m-%d %H:%M:%S"),
            # Whole: it says what to fix (which certificate, which answer).
            e.last_error or "-",
        ]
        for e in entries
    ]
    print_table(rows, ["ID", "SENDER", "RECIPIENTS", "SIZE", "TRIES", "NEXT", "LAST ERROR"])
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    settings = load(args)
    with (
        opened_store(settings) as store,
        admin_change(settings, "queue-retry", f"queue:{args.entry_id}", store=store),
        store_errors(f"queue entry {args.entry_id}"),
    ):
        store.retry_entry(args.entry_id)
    print(f"queue entry {args.entry_id} is due now")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    settings = load(args)
    with (
        opened_store(settings) as store,
        admin_change(settings, "queue-delete", f"queue:{args.entry_id}", store=store) as change,
        store_errors(f"queue entry {args.entry_id}"),
    ):
        entry = next((e for e in store.list_queue() if e.id == args.entry_id), None)
        if entry is not None:  # what was dropped, never its content
            change.details.update(sender=entry.sender or "<>", recipients=list(entry.recipients),
                                  size=entry.size, attempts=entry.attempts)
        store.remove_entry(args.entry_id)
    print(f"queue entry {args.entry_id} deleted")
    return EXIT_OK
