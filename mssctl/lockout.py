"""`mssctl account unlock LOGIN | --address IP` and `mssctl account locks`:
the login throttle's locks (`policy.throttle`), as every worker sees them."""

from __future__ import annotations

import argparse
import ipaddress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mssctl.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    add_json_option,
    admin_actor,
    json_time,
    load,
    opened_store,
    print_json,
    print_table,
    store_errors,
)

if TYPE_CHECKING:
    from conf.settings import Settings
    from policy.audit import AuditSink
    from policy.throttle import LoginThrottle
    from storage.interface import LoginFailures, MessageStore


def register_verbs(verbs: Any) -> None:
    """Adds the verbs to the `account` parser."""
    unlock = verbs.add_parser(
        "unlock", help="lift the login lock of an account (or of a client address)")
    unlock.add_argument("login", nargs="?", help="the account's login")
    unlock.add_argument("--address", metavar="IP", help="a client address instead")
    add_config_option(unlock)
    unlock.set_defaults(func=cmd_unlock)

    locks = verbs.add_parser("locks", help="failed logins and locks, of accounts and addresses")
    add_json_option(locks)
    add_config_option(locks)
    locks.set_defaults(func=cmd_locks)


def throttle(settings: Settings, store: MessageStore, audit: AuditSink | None = None
             ) -> LoginThrottle:
    from policy.audit import FileAuditSink
    from policy.throttle import LoginThrottle

    return LoginThrottle(settings.policy.lockout, store, audit or FileAuditSink(None),
                         lambda: datetime.now(UTC))


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(state: LoginFailures, locked: bool, counted: int) -> str:
    """One line: the lock (if any) and the failures still counted."""
    parts = [f"locked until {stamp(state.locked_until)}" if locked and state.locked_until
             else "not locked"]
    parts.append(f"{counted} failure(s) in the window")
    if state.level:
        parts.append(f"{state.level} lock(s) in a row")
    if state.refused:
        parts.append(f"{state.refused} login(s) refused while locked")
    return ", ".join(parts)


def account_locks(settings: Settings, store: MessageStore) -> dict[str, tuple[LoginFailures, bool]]:
    """login -> (state, locked now), for the accounts the throttle remembers."""
    from storage.interface import ThrottleScope

    return {s.subject: (s, locked)
            for s, locked in throttle(settings, store).states(ThrottleScope.ACCOUNT)}


def account_lock_line(settings: Settings, store: MessageStore, login: str) -> str:
    from storage.interface import ThrottleScope

    t = throttle(settings, store)
    now = datetime.now(UTC)
    for state, locked in t.states(ThrottleScope.ACCOUNT):
        if state.subject == login:
            return describe(state, locked, t.rules[state.scope].counted(state, now))
    return "not locked, no failed login in the window"


def lock_json(state: LoginFailures | None, locked: bool, counted: int) -> dict[str, Any]:
    """A login lock in the JSON output (`account show`, `account locks`)."""
    return {
        "locked": locked,
        "locked_until": json_time(state.locked_until) if state and locked else None,
        "failures": counted,
        "locks_in_a_row": state.level if state else 0,
        "refused_while_locked": state.refused if state else 0,
        "last_failure": json_time(state.last_failure) if state else None,
    }


def account_lock_json(settings: Settings, store: MessageStore, login: str) -> dict[str, Any]:
    from storage.interface import ThrottleScope

    t = throttle(settings, store)
    now = datetime.now(UTC)
    for state, locked in t.states(ThrottleScope.ACCOUNT):
        if state.subject == login:
            return lock_json(state, locked, t.rules[state.scope].counted(state, now))
    return lock_json(None, False, 0)


def cmd_unlock(args: argparse.Namespace) -> int:
    from policy.audit import FileAuditSink
    from storage.interface import ThrottleScope

    if (args.login is None) == (args.address is None):
        raise CliError("give a LOGIN or --address IP (one of them)", EXIT_USAGE)
    if args.address is not None:
        try:
            subject = str(ipaddress.ip_address(args.address.strip()))
        except ValueError:
            raise CliError(f"--address: not an IP address: {args.address!r}",
                           EXIT_USAGE) from None
        scope, what = ThrottleScope.ADDRESS, f"address {subject}"
    else:
        subject = args.login.strip().lower()
        scope, what = ThrottleScope.ACCOUNT, f"account {subject}"
    settings = load(args)
    with opened_store(settings) as store, store_errors(what):
        if scope is ThrottleScope.ACCOUNT:
            store.get_account(subject)  # NotFound for a typo
        audit = FileAuditSink(settings.audit.path, store, batch=False)
        try:
            old = throttle(settings, store, audit).unlock(scope, subject, admin_actor())
        finally:
            audit.close()
    now = datetime.now(UTC)
    if old is not None and old.locked_until is not None and old.locked_until > now:
        print(f"{what} unlocked (was locked until {stamp(old.locked_until)})")
    elif old is not None:
        print(f"{what} was not locked; its failed logins are forgotten")
    else:
        print(f"{what} was not locked")
    return EXIT_OK


def cmd_locks(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store, store_errors():
        t = throttle(settings, store)
        states = t.states()
    now = datetime.now(UTC)
    if args.json:
        print_json({"locks": [
            {"scope": s.scope.value, "subject": s.subject}
            | lock_json(s, locked, t.rules[s.scope].counted(s, now))
            for s, locked in states]})
        return EXIT_OK
    rows = [
        [
            s.scope.value,
            s.subject,
            stamp(s.locked_until) if locked and s.locked_until else "-",
            str(t.rules[s.scope].counted(s, now)),
            str(s.level),
            str(s.refused),
        ]
        for s, locked in states
    ]
    print_table(rows, ["SCOPE", "SUBJECT", "LOCKED-UNTIL", "FAILURES", "LOCKS", "REFUSED"])
    return EXIT_OK
