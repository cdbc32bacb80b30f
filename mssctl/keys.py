"""`mssctl keys rotate|reencrypt`: encryption keys of the message store.

Rotation appends a new key to the key file (it becomes the key new blobs are
written with) and re-encrypts existing blobs in batches, each batch its own
transaction, so it can run while the server runs: the store re-reads the key
file when it changes, so running workers read blobs under the new key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mssctl.common import (
    EXIT_OK,
    AdminChange,
    CliError,
    add_config_option,
    admin_change,
    describe_store_error,
    load,
    opened_store,
)
from storage.interface import MessageStore, StoreError


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="encryption keys of stored messages")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    rotate = verbs.add_parser("rotate", help="add a new current key, then re-encrypt")
    rotate.add_argument("--no-reencrypt", action="store_true",
                        help="only add the key (run `keys reencrypt` later)")
    rotate.add_argument("--batch", type=int, default=500, help="messages per transaction")
    add_config_option(rotate)
    rotate.set_defaults(func=cmd_rotate)
    reenc = verbs.add_parser("reencrypt", help="move every blob to the current key")
    reenc.add_argument("--batch", type=int, default=500, help="messages per transaction")
    add_config_option(reenc)
    reenc.set_defaults(func=cmd_reencrypt)


def _reencrypt(store: MessageStore, batch: int, change: AdminChange) -> int:
    from mssctl.migrate import Progress

    total = 0
    # A count rewritten in place on a terminal (stderr); nothing when the
    # output goes to a file or a pipe: the summary line says it all.
    progress = Progress(sys.stderr, "re-encrypted", unit="blobs")
    try:
        while True:
            done = store.reencrypt(batch=max(1, batch))
            if done == 0:
                break
            total += done
            change.details["reencrypted"] = total
            progress.step(done)
    except StoreError as exc:
        raise CliError(f"re-encryption stopped after {total}: {describe_store_error(exc)}") \
            from None
    finally:
        progress.clear()
    print(f"re-encrypted {total} blob(s); every blob is under the current key")
    return total


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = load(args)
    from storage.crypto import KeyFileError, add_key

    with (
        opened_store(settings) as store,
        admin_change(settings, "keys-rotate", str(settings.key_file), store=store,
                     reencrypt=not args.no_reencrypt) as change,
    ):
        try:
            key_id = add_key(settings.key_file)
        except KeyFileError as exc:
            raise CliError(str(exc)) from None
        change.details["key_id"] = key_id
        print(f"new current key {key_id} added to {settings.key_file}")
        if args.no_reencrypt:
            print("old messages stay under their key until `mssctl keys reencrypt`")
            return EXIT_OK
        change.details["reencrypted"] = 0
        _reencrypt(store, args.batch, change)
    return EXIT_OK


def cmd_reencrypt(args: argparse.Namespace) -> int:
    settings = load(args)
    with (
        opened_store(settings) as store,
        admin_change(settings, "keys-reencrypt", str(settings.key_file), store=store,
                     reencrypted=0) as change,
    ):
        _reencrypt(store, args.batch, change)
    return EXIT_OK
