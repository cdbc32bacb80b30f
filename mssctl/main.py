"""`mssctl`: the one administration command (entry point `mssctl.main:main`).

One module per noun registers its subcommands; each handler returns an exit
status: 0 ok, 1 operational error, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mssctl import (
    account,
    audit,
    backup,
    db,
    directory,
    doctor,
    init,
    keys,
    mailbox,
    migrate,
    peer,
    policy,
    queue,
    serve,
)
from mssctl.common import EXIT_FAILURE, EXIT_USAGE, CliError, ConfigProblems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mssctl",
        description="Administer an MSS secure health mail server (IMAP + SMTP).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (init, serve, doctor, db, backup, account, mailbox, directory, queue, peer,
                   keys, audit, policy, migrate):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigProblems as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"mssctl: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("mssctl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
    return code


if __name__ == "__main__":
    sys.exit(main())
