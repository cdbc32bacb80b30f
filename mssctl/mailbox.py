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
    add_json_option,
    admin_change,
    json_time,
    load,
    opened_store,
    print_json,
    print_table,
    store_errors,
)
from policy.decisions import ALL_RIGHTS
from storage.interface import (
    DirectoryFields,
    Grant,
    Mailbox,
    MailboxType,
    check_directory_text,
)

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
                     help="legal entity or person responsible (ORG, APP)")
    add.add_argument("--quota", type=parse_size, default=None, help="e.g. 500M, 2G")
    _directory_options(add, creating=True)
    add.add_argument("--private-seen", action="store_true",
                     help="keep \\Seen per agent: each one has her own read/unread state "
                          "(default: shared, as every other flag)")
    add_config_option(add)
    add.set_defaults(func=cmd_add)

    lst = verbs.add_parser("list", help="list mailboxes")
    add_json_option(lst)
    add_config_option(lst)
    lst.set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="one mailbox: directory fields, usage, folders, grants")
    show.add_argument("address")
    add_json_option(show)
    add_config_option(show)
    show.set_defaults(func=cmd_show)

    set_ = verbs.add_parser(
        "set", help="change a mailbox's options and what the national directory publishes of it")
    set_.add_argument("address")
    seen = set_.add_mutually_exclusive_group()
    seen.add_argument("--private-seen", dest="private_seen", action="store_true", default=None,
                      help="keep \\Seen per agent (for each agent from her next login; "
                           "every agent starts with every message unread)")
    seen.add_argument("--shared-seen", dest="private_seen", action="store_false",
                      help="\\Seen on the message, shared by every agent (the default)")
    set_.add_argument("--name", help="display name")
    set_.add_argument("--responsible", help="legal entity or person responsible (ORG, APP)")
    _directory_options(set_, creating=False)
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
    add_config_option(grant)
    grant.set_defaults(func=cmd_grant)

    revoke = verbs.add_parser("revoke", help="remove an account's access to a mailbox")
    revoke.add_argument("address")
    revoke.add_argument("login")
    add_config_option(revoke)
    revoke.set_defaults(func=cmd_grant, rights="", valid_from=None, valid_until=None,
                        send_as=False)

    grants = verbs.add_parser("grants", help="who may use a mailbox")
    grants.add_argument("address")
    add_json_option(grants)
    add_config_option(grants)
    grants.set_defaults(func=cmd_grants)


def _directory_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    """--description, --service, --unlisted (and --listed to change it)."""
    parser.add_argument("--description", default="" if creating else None,
                        help="what the box is for, published in the national directory")
    parser.add_argument("--service", default="" if creating else None,
                        help="the service the box belongs to (e.g. Cardiologie)")
    listing = parser.add_mutually_exclusive_group()
    listing.add_argument("--unlisted", dest="unlisted", action="store_true",
                         default=False if creating else None,
                         help="unlisted (liste rouge): exported to the national directory "
                              "flagged, so that it is not shown there")
    if not creating:
        listing.add_argument("--listed", dest="unlisted", action="store_false",
                             help="shown in the national directory (the default)")


def _directory_text(name: str, value: str | None) -> None:
    if value is not None:
        try:
            check_directory_text(name, value)
        except ValueError as exc:
            why = str(exc).removeprefix(f"{name}: ")
            raise CliError(f"--{name.replace('display_', '')}: {why}", EXIT_USAGE) from None


def mailbox_json(m: Mailbox, owner: str | None) -> dict[str, Any]:
    """A mailbox in the JSON output of `mailbox list` and `mailbox show`."""
    return {
        "address": m.address,
        "type": m.mailbox_type.value,
        "active": m.active,
        "owner": owner,
        "quota_bytes": m.quota_bytes,
        "seen": "private" if m.private_seen else "shared",
        "name": m.display_name,
        "description": m.description,
        "service": m.service,
        "responsible": m.responsible,
        "unlisted": m.unlisted,
    }


def grant_json(g: Grant, login: str) -> dict[str, Any]:
    return {
        "login": login,
        "rights": g.rights,
        "send_as": g.send_as,
        "valid_from": json_time(g.valid_from),
        "valid_until": json_time(g.valid_until),
    }


def cmd_add(args: argparse.Namespace) -> int:
    settings = load(args)
    address = args.address.strip().lower()
    if "@" not in address:
        raise CliError(f"{args.address}: expected an address local@domain", EXIT_USAGE)
    mtype = MailboxType(args.mailbox_type)
    if mtype is not MailboxType.ORG and not args.owner:
        raise CliError(f"a {mtype.value} mailbox needs --owner LOGIN", EXIT_USAGE)
    for name in ("display_name", "description", "service", "responsible"):
        _directory_text(name, getattr(args, "name" if name == "display_name" else name))
    with (
        opened_store(settings) as store,
        admin_change(settings, "mailbox-add", address, store=store,
                     mailbox_type=mtype.value, owner=args.owner, name=args.name,
                     responsible=args.responsible, quota=_size_text(args.quota),
                     private_seen=args.private_seen, description=args.description,
                     service=args.service, unlisted=args.unlisted),
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
            description=args.description,
            service=args.service,
            unlisted=args.unlisted,
        )
    seen = ", private \\Seen" if mailbox.private_seen else ""
    print(f"mailbox {mailbox.address} added ({mailbox.mailbox_type.value}{seen})")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store, store_errors():
        mailboxes = store.list_mailboxes()
        owners = {a.id: a.login for a in store.list_accounts()}
    if args.json:
        print_json({"mailboxes": [
            mailbox_json(m, owners.get(m.owner_account_id) if m.owner_account_id else None)
            for m in sorted(mailboxes, key=lambda m: m.address)]})
        return EXIT_OK
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


def cmd_show(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store, store_errors(f"mailbox {args.address}"):
        m = store.get_mailbox(args.address)
        owner = store.get_account_by_id(m.owner_account_id) if m.owner_account_id else None
        used, count = store.mailbox_usage(m.id)
        folders = [f.name for f in store.list_folders(m.id)]
        logins = {a.id: a.login for a in store.list_accounts()}
        grants = [g for g in store.grants_for_mailbox(m.id) if g.rights or g.send_as]
    doc = mailbox_json(m, owner.login if owner else None)
    doc.update(
        owner_idnat=owner.idnat if owner else None,
        used_bytes=used,
        messages=count,
        folders=folders,
        grants=[grant_json(g, logins.get(g.account_id, str(g.account_id))) for g in grants],
    )
    if args.json:
        print_json(doc)
        return EXIT_OK
    lines = [
        ("address", m.address),
        ("type", m.mailbox_type.value),
        ("state", "active" if m.active else "disabled"),
        ("owner", f"{owner.login} (IdNat_PS {owner.idnat or 'none'})" if owner else "-"),
        ("name", m.display_name or "-"),
        ("description", m.description or "-"),
        ("service", m.service or "-"),
        ("responsible", m.responsible or "-"),
        ("directory", "unlisted (liste rouge)" if m.unlisted else "listed"),
        ("seen", "private per agent" if m.private_seen else "shared"),
        ("quota", _size_text(m.quota_bytes)),
        ("usage", f"{used} bytes in {count} message(s)"),
        ("folders", ", ".join(folders) or "-"),
        ("grants", ", ".join(f"{g['login']} {g['rights'] or '-'}"
                             f"{' send-as' if g['send_as'] else ''}" for g in doc["grants"])
         or "-"),
    ]
    for key, value in lines:
        print(f"{key + ':':<12} {value}")
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    fields = DirectoryFields(display_name=args.name, description=args.description,
                             service=args.service, responsible=args.responsible,
                             unlisted=args.unlisted)
    changed = fields.changed()
    if args.private_seen is None and not changed:
        raise CliError("one of the arguments --private-seen/--shared-seen, --name, "
                       "--description, --service, --responsible, --unlisted/--listed is required",
                       EXIT_USAGE)
    for name, value in changed.items():
        _directory_text(name, value if isinstance(value, str) else None)
    settings = load(args)
    address = args.address.strip().lower()
    details: dict[str, Any] = {"private_seen": args.private_seen, **changed}
    with (
        opened_store(settings) as store,
        admin_change(settings, "mailbox-set", address, store=store, **details) as change,
        store_errors(f"mailbox {args.address}"),
    ):
        before = store.get_mailbox(address)
        if changed:
            before = store.set_directory_fields(address, fields)
            for name in changed:
                change.details[f"{name}_before"] = getattr(before, name)
        if args.private_seen is not None:
            change.details["private_seen_before"] = before.private_seen
            store.set_private_seen(address, args.private_seen)
    if args.private_seen is not None:
        print(f"mailbox {address}: \\Seen "
              f"{'private per agent' if args.private_seen else 'shared'}")
    if changed:
        print(f"mailbox {address}: " + ", ".join(
            f"{name} {'yes' if value is True else 'no' if value is False else repr(value)}"
            for name, value in changed.items()))
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
    action = "mailbox-grant" if args.rights or args.send_as else "mailbox-revoke"
    with (
        opened_store(settings) as store,
        admin_change(settings, action, args.address.strip().lower(), store=store,
                     login=args.login.strip().lower(), rights=args.rights,
                     valid_from=args.valid_from, valid_until=args.valid_until) as change,
        store_errors(f"{args.address} / {args.login}"),
    ):
        mailbox = store.get_mailbox(args.address)
        account = store.get_account(args.login)
        change.details["rights_before"] = next(
            (g.rights for g in store.grants_for_mailbox(mailbox.id)
             if g.account_id == account.id), "")
        grant = store.set_grant(account.id, mailbox.id, args.rights,
                                valid_from=args.valid_from, valid_until=args.valid_until,
                                send_as=args.send_as)
        change.details["send_as"] = grant.send_as
    if grant.rights or grant.send_as:
        rights = f"rights {grant.rights}" if grant.rights else "no IMAP rights"
        also = ", and may send as it" if grant.send_as else ""
        print(f"{account.login} may use {mailbox.address} with {rights}{also}")
    else:
        print(f"{account.login} no longer has access to {mailbox.address}")
    return EXIT_OK


def cmd_grants(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store, store_errors(f"mailbox {args.address}"):
        mailbox = store.get_mailbox(args.address)
        grants = store.grants_for_mailbox(mailbox.id)
        logins = {a.id: a.login for a in store.list_accounts()}
    if args.json:
        print_json({"mailbox": mailbox.address, "grants": [
            grant_json(g, logins.get(g.account_id, str(g.account_id)))
            for g in grants if g.rights or g.send_as]})
        return EXIT_OK
    rows = [
        [
            logins.get(g.account_id, str(g.account_id)),
            g.rights or "-",
            "yes" if g.send_as else "no",
            g.valid_from.isoformat() if g.valid_from else "-",
            g.valid_until.isoformat() if g.valid_until else "-",
        ]
        for g in grants
        if g.rights or g.send_as
    ]
    print_table(rows, ["LOGIN", "RIGHTS", "SEND-AS", "FROM", "UNTIL"])
    return EXIT_OK
