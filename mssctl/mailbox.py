"""`mssctl mailbox add|list|set|disable|enable|grant|revoke|grants`: addresses
that receive mail."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from mssctl.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    admin_change,
    load,
    opened_store,
    print_table,
    store_errors,
)
from policy.decisions import ALL_RIGHTS
from storage.interface import MailboxType, NotFound

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
RFC4314_RIGHTS = set(ALL_RIGHTS)


def parse_size(text: str) -> int | None:
    """'500M' -> bytes; 'none' or 'unlimited' -> None."""
    if text.strip().lower() in ("none", "unlimited", "0"):
        return None
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size such as 500M or 2G, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date such as 2026-12-31, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _size_text(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit.lower()] and n % _UNITS[unit.lower()] == 0:
            return f"{n // _UNITS[unit.lower()]}{unit}"
    return str(n)


def register(sub: Any) -> None:
    p = sub.add_parser("mailbox", help="mailboxes (PER, ORG, APP)")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = verbs.add_parser("add", help="create a mailbox and its default folders")
    add.add_argument("address")
    add.add_argument("--type", dest="mailbox_type", choices=[t.value for t in MailboxType],
                     default="PER", help="PER personal, ORG functional, APP applicative")
    add.add_argument("--owner", help="login of the holding account (PER, APP)")
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--responsible", default="",
                     help="legal entity or person responsible (ORG)")
    add.add_argument("--quota", type=parse_size, default=None, help="e.g. 500M, 2G")
    add.add_argument("--private-seen", action="store_true",
                     help="keep \\Seen per agent: each one has her own read/unread state "
                          "(default: shared, as every other flag)")
    add_config_option(add)
    add.set_defaults(func=cmd_add)

    lst = verbs.add_parser("list", help="list mailboxes")
    add_config_option(lst)
    lst.set_defaults(func=cmd_list)

    set_ = verbs.add_parser("set", help="change a mailbox's options")
    set_.add_argument("address")
    seen = set_.add_mutually_exclusive_group(required=True)
    seen.add_argument("--private-seen", dest="private_seen", action="store_true", default=None,
                      help="keep \\Seen per agent (for each agent from her next login; "
                           "every agent starts with every message unread)")
    seen.add_argument("--shared-seen", dest="private_seen", action="store_false",
                      help="\\Seen on the message, shared by every agent (the default)")
    add_config_option(set_)
    set_.set_defaults(func=cmd_set)

    for verb, active in (("disable", False), ("enable", True)):
        sp = verbs.add_parser(verb, help=f"{verb} a mailbox (a disabled one refuses mail)")
        sp.add_argument("address")
        add_config_option(sp)
        sp.set_defaults(func=cmd_set_active, active=active)

    grant = verbs.add_parser("grant", help="give an account access to a mailbox (RFC 4314)")
    grant.add_argument("address")
    grant.add_argument("login")
    grant.add_argument("--rights", default=ALL_RIGHTS,
                       help=f"RFC 4314 letters (default {ALL_RIGHTS}); '' revokes")
    grant.add_argument("--from", dest="valid_from", type=parse_date, default=None)
    grant.add_argument("--until", dest="valid_until", type=parse_date, default=None)
    send_as = grant.add_mutually_exclusive_group()
    send_as.add_argument("--send-as", dest="send_as", action="store_true", default=None,
                         help="may also submit mail From: this mailbox (a Sender: header "
                              "then names the agent)")
    send_as.add_argument("--no-send-as", dest="send_as", action="store_false",
                         help="may no longer send as it (default: keep what the grant had)")
    grant.add_argument("--folder", default="", metavar="NAME",
                       help="grant the rights on this folder only (e.g. INBOX, Archive/2024), "
                            "on top of the grant on the whole mailbox; IMAP SETACL changes "
                            "the same grant")
    add_config_option(grant)
    grant.set_defaults(func=cmd_grant)

    revoke = verbs.add_parser("revoke", help="remove an account's access to a mailbox")
    revoke.add_argument("address")
    revoke.add_argument("login")
    revoke.add_argument("--folder", default="", metavar="NAME",
                        help="remove the grant on this folder only")
    add_config_option(revoke)
    revoke.set_defaults(func=cmd_grant, rights="", valid_from=None, valid_until=None,
                        send_as=False)

    grants = verbs.add_parser("grants", help="who may use a mailbox")
    grants.add_argument("address")
    add_config_option(grants)
    grants.set_defaults(func=cmd_grants)


def cmd_add(args: argparse.Namespace) -> int:
    settings = load(args)
    address = args.address.strip().lower()
    if "@" not in address:
        raise CliError(f"{args.address}: expected an address local@domain", EXIT_USAGE)
    mtype = MailboxType(args.mailbox_type)
    if mtype is not MailboxType.ORG and not args.owner:
        raise CliError(f"a {mtype.value} mailbox needs --owner LOGIN", EXIT_USAGE)
    with (
        opened_store(settings) as store,
        admin_change(settings, "mailbox-add", address, store=store,
                     mailbox_type=mtype.value, owner=args.owner, name=args.name,
                     responsible=args.responsible, quota=_size_text(args.quota),
                     private_seen=args.private_seen),
        store_errors(f"mailbox {address}"),
    ):
        owner_id = store.get_account(args.owner).id if args.owner else None
        mailbox = store.add_mailbox(
            address,
            mtype,
            display_name=args.name,
            owner_account_id=owner_id,
            responsible=args.responsible,
            quota_bytes=args.quota,
            private_seen=args.private_seen,
        )
    seen = ", private \\Seen" if mailbox.private_seen else ""
    print(f"mailbox {mailbox.address} added ({mailbox.mailbox_type.value}{seen})")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store, store_errors():
        mailboxes = store.list_mailboxes()
        owners = {a.id: a.login for a in store.list_accounts()}
    rows = [
        [
            m.address,
            m.mailbox_type.value,
            "active" if m.active else "disabled",
            owners.get(m.owner_account_id, "-") if m.owner_account_id else "-",
            _size_text(m.quota_bytes),
            "private" if m.private_seen else "shared",
            m.display_name or "-",
        ]
        for m in sorted(mailboxes, key=lambda m: m.address)
    ]
    print_table(rows, ["ADDRESS", "TYPE", "STATE", "OWNER", "QUOTA", "SEEN", "NAME"])
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    settings = load(args)
    address = args.address.strip().lower()
    with (
        opened_store(settings) as store,
        admin_change(settings, "mailbox-set", address, store=store,
                     private_seen=args.private_seen) as change,
        store_errors(f"mailbox {args.address}"),
    ):
        change.details["private_seen_before"] = store.get_mailbox(address).private_seen
        store.set_private_seen(address, args.private_seen)
    print(f"mailbox {address}: \\Seen {'private per agent' if args.private_seen else 'shared'}")
    return EXIT_OK


def cmd_set_active(args: argparse.Namespace) -> int:
    settings = load(args)
    address = args.address.strip().lower()
    action = "mailbox-enable" if args.active else "mailbox-disable"
    with (
        opened_store(settings) as store,
        admin_change(settings, action, address, store=store, active=args.active),
        store_errors(f"mailbox {args.address}"),
    ):
        store.set_mailbox_active(address, args.active)
    print(f"mailbox {args.address} {'enabled' if args.active else 'disabled'}")
    return EXIT_OK


def cmd_grant(args: argparse.Namespace) -> int:
    settings = load(args)
    unknown = set(args.rights) - RFC4314_RIGHTS
    if unknown:
        raise CliError(
            f"--rights: unknown RFC 4314 right(s) {''.join(sorted(unknown))!r}; "
            f"expected letters among {ALL_RIGHTS}",
            EXIT_USAGE,
        )
    folder = args.folder.strip().strip("/")
    if args.folder and not folder:
        raise CliError(f"--folder: {args.folder!r} names no folder", EXIT_USAGE)
    if folder and args.send_as:
        raise CliError("--send-as is a right on the whole mailbox: not with --folder",
                       EXIT_USAGE)
    action = "mailbox-grant" if args.rights or args.send_as else "mailbox-revoke"
    folder_detail = {"folder": folder} if folder else {}
    with (
        opened_store(settings) as store,
        admin_change(settings, action, args.address.strip().lower(), store=store,
                     login=args.login.strip().lower(), rights=args.rights,
                     valid_from=args.valid_from, valid_until=args.valid_until,
                     **folder_detail) as change,
        store_errors(f"{args.address} / {args.login}"),
    ):
        mailbox = store.get_mailbox(args.address)
        account = store.get_account(args.login)
        if folder and args.rights:
            try:
                folder = store.get_folder(mailbox.id, folder).name
            except NotFound:
                raise CliError(f"{mailbox.address} has no folder {folder!r}") from None
        change.details["rights_before"] = next(
            (g.rights for g in store.grants_for_mailbox(mailbox.id)
             if g.account_id == account.id and g.folder == folder), "")
        grant = store.set_grant(account.id, mailbox.id, args.rights,
                                valid_from=args.valid_from, valid_until=args.valid_until,
                                send_as=None if folder else args.send_as, folder=folder)
        change.details["send_as"] = grant.send_as
    where = f"{mailbox.address} folder {grant.folder}" if grant.folder else mailbox.address
    if grant.rights or grant.send_as:
        rights = f"rights {grant.rights}" if grant.rights else "no IMAP rights"
        also = ", and may send as it" if grant.send_as else ""
        print(f"{account.login} may use {where} with {rights}{also}")
    else:
        print(f"{account.login} no longer has access to {where}"
              + (" (beyond the grant on the whole mailbox, if any)" if grant.folder else ""))
    return EXIT_OK


def cmd_grants(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store, store_errors(f"mailbox {args.address}"):
        mailbox = store.get_mailbox(args.address)
        grants = store.grants_for_mailbox(mailbox.id)
        logins = {a.id: a.login for a in store.list_accounts()}
    rows = [
        [
            logins.get(g.account_id, str(g.account_id)),
            g.folder or "*",
            g.rights or "-",
            "yes" if g.send_as else "no",
            g.valid_from.isoformat() if g.valid_from else "-",
            g.valid_until.isoformat() if g.valid_until else "-",
        ]
        for g in grants
        if g.rights or g.send_as
    ]
    print_table(rows, ["LOGIN", "FOLDER", "RIGHTS", "SEND-AS", "FROM", "UNTIL"])
    return EXIT_OK
