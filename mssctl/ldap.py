"""`mssctl ldap sync [--dry-run]`, `mssctl ldap status`: the hospital's
directory made into accounts, boxes and grants (`policy.ldapsync`)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from mssctl.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    admin_actor,
    load,
    opened_store,
    store_errors,
)


def register(sub: Any) -> None:
    p = sub.add_parser("ldap", help="the hospital's directory (LDAP): sync and status")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sync = verbs.add_parser("sync", help="make accounts, boxes and grants follow the directory")
    sync.add_argument("--dry-run", action="store_true",
                      help="print the changes it would make, and make none")
    add_config_option(sync)
    sync.set_defaults(func=cmd_sync)
    status = verbs.add_parser("status", help="the last synchronisation's result")
    add_config_option(status)
    status.set_defaults(func=cmd_status)


def holder_name(role: str) -> str:
    """Who holds the lease: host, process and role, for `ldap status`."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


class _Progress:
    """`reading people: 1200` … on stderr, rewritten in place; only when
    stdout is a terminal."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, what: str, count: int) -> None:
        label = {"people": "reading people", "groups": "reading groups",
                 "changes": "changes made"}.get(what, what)
        sys.stderr.write(f"\r{label}: {count}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def cmd_sync(args: argparse.Namespace) -> int:
    from policy.audit import FileAuditSink
    from policy.ldapsync import sync_with_lease

    settings = load(args)
    if settings.ldap is None:
        raise CliError("no ldap section in the settings: nothing to synchronise with",
                       EXIT_USAGE)
    progress = _Progress() if sys.stdout.isatty() else None
    with opened_store(settings) as store, store_errors("ldap sync"):
        try:
            audit = FileAuditSink(None if args.dry_run else settings.audit.path,
                                  None if args.dry_run else store)
        except OSError as exc:
            raise CliError(f"cannot write the audit log {settings.audit.path}: "
                           f"{exc.strerror or exc}; nothing was changed") from None
        try:
            run = sync_with_lease(settings.ldap, store, audit, holder_name("mssctl"),
                                  dry_run=args.dry_run, progress=progress,
                                  started_by=admin_actor())
        finally:
            if progress is not None:
                progress.end()
            audit.close()
    if run.skipped is not None:
        status = store_status(settings)
        print(f"mssctl: {run.skipped}{status}", file=sys.stderr)
        return EXIT_FAILURE
    report = run.report
    if report is None:
        print(f"mssctl: ldap sync failed: {run.error}; nothing was changed", file=sys.stderr)
        return EXIT_FAILURE
    for change in report.changes:
        print(change.text)
    for problem in report.problems:
        print(f"mssctl: warning: {problem}", file=sys.stderr)
    for failure in report.failed:
        print(f"mssctl: failed: {failure}", file=sys.stderr)
    seen = f"{report.people} people, {report.groups} groups"
    n = len(report.changes)
    if report.dry_run:
        if n:
            print(f"dry run: {n} change(s) would be made ({seen}); nothing was changed")
        else:
            print(f"dry run: no changes ({seen})")
    elif n:
        made = n - len(report.failed)
        print(f"{made} change(s) made ({seen}) in {report.duration:.1f} s")
    else:
        print(f"no changes ({seen})")
    return EXIT_FAILURE if report.failed else EXIT_OK


def store_status(settings: Any) -> str:
    from policy.ldapsync import SYNC_NAME

    with opened_store(settings) as store:
        status = store.directory_sync_status(SYNC_NAME)
    if status is None or status.lease_holder is None or status.lease_until is None:
        return ""
    return f" (held by {status.lease_holder} until {status.lease_until.isoformat()})"


def cmd_status(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from policy.ldapsync import SYNC_NAME

    settings = load(args)
    if settings.ldap is None:
        raise CliError("no ldap section in the settings", EXIT_USAGE)
    with opened_store(settings) as store, store_errors("ldap status"):
        status = store.directory_sync_status(SYNC_NAME)
    interval = settings.ldap.sync_interval
    print(f"directory     {', '.join(settings.ldap.urls)}")
    print(f"periodic      {f'every {interval:g} s in serve' if interval else 'off'}")
    if status is None or status.last_started is None:
        print("last sync     never")
        return EXIT_OK
    if status.last_finished is None or status.last_result is None:
        print("last sync     none finished yet")
    else:
        print(f"last sync     {status.last_finished.isoformat()} ({status.last_result}, "
              f"{status.last_duration or 0:.1f} s, by {status.last_holder or '-'})")
        counts = " ".join(f"{k}={v}" for k, v in sorted(status.last_counts.items()))
        print(f"counts        {counts or '-'}")
        print(f"error         {status.last_error or '-'}")
    now = datetime.now(UTC)
    if status.lease_holder and status.lease_until and status.lease_until > now:
        print(f"lease         held by {status.lease_holder} until "
              f"{status.lease_until.isoformat()}")
    else:
        print("lease         free")
    return EXIT_OK
