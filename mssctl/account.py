"""`mssctl account add|passwd|disable|enable|list|show|totp`: who logs in (and
`unlock`/`locks` from `mssctl.lockout`, `pin` from `mssctl.pins`)."""

from __future__ import annotations

import argparse
from typing import Any

from mssctl import lockout, pins
from mssctl.common import (
    EXIT_OK,
    CliError,
    add_config_option,
    add_json_option,
    admin_change,
    json_time,
    load,
    opened_store,
    print_json,
    print_table,
    read_password,
    store_errors,
)
from policy.passwords import hash_password
from storage.interface import Account, AccountClass

CLASSES = [c.value for c in AccountClass]


def register(sub: Any) -> None:
    p = sub.add_parser("account", help="accounts (who logs in)")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = verbs.add_parser("add", help="create an account")
    add.add_argument("login", help="login, usually the address of the person's own mailbox")
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--class", dest="account_class", choices=CLASSES, default="staff")
    add.add_argument("--idnat", help="national health id (IdNat_PS) of the card holder")
    add.add_argument("--cert-subject",
                     help="certificate subject DN or organisation id allowed to log in")
    add.add_argument("--cert-fingerprint", action="append", default=[], metavar="SHA256",
                     help="pin a certificate by its SHA-256 fingerprint (repeatable); "
                     "then only pinned certificates log in")
    pw = add.add_mutually_exclusive_group()
    pw.add_argument("--password", help="password (else prompted, or one line of stdin)")
    pw.add_argument("--no-password", action="store_true",
                    help="certificate login only")
    add_config_option(add)
    add.set_defaults(func=cmd_add)

    passwd = verbs.add_parser("passwd", help="set an account's password")
    passwd.add_argument("login")
    pw = passwd.add_mutually_exclusive_group()
    pw.add_argument("--password", help="new password (else prompted, or one line of stdin)")
    pw.add_argument("--clear", action="store_true", help="remove the password")
    add_config_option(passwd)
    passwd.set_defaults(func=cmd_passwd)

    for verb, active in (("disable", False), ("enable", True)):
        sp = verbs.add_parser(verb, help=f"{verb} an account")
        sp.add_argument("login")
        add_config_option(sp)
        sp.set_defaults(func=cmd_set_active, active=active)

    lst = verbs.add_parser("list", help="list accounts")
    add_json_option(lst)
    add_config_option(lst)
    lst.set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="one account, with its login lock state")
    show.add_argument("login")
    add_json_option(show)
    add_config_option(show)
    show.set_defaults(func=cmd_show)

    lockout.register_verbs(verbs)
    pins.register_verbs(verbs)
    totp = verbs.add_parser("totp", help="one-time codes (second factor of password logins)")
    totp_verbs = totp.add_subparsers(dest="totp_action", metavar="ACTION", required=True)
    enable = totp_verbs.add_parser(
        "enable", help="give the account a new code secret; prints its otpauth:// URI "
        "and a QR code for an authenticator app")
    enable.add_argument("login")
    enable.add_argument("--replace", action="store_true",
                        help="replace an existing secret (the old app entry stops working)")
    enable.add_argument("--no-qr", action="store_true", help="print the URI only")
    add_config_option(enable)
    enable.set_defaults(func=cmd_totp_enable)
    disable = totp_verbs.add_parser("disable", help="remove the account's code secret")
    disable.add_argument("login")
    add_config_option(disable)
    disable.set_defaults(func=cmd_totp_disable)


def cmd_add(args: argparse.Namespace) -> int:
    cert_pins = [pins.fingerprint_argument(f) for f in args.cert_fingerprint]
    settings = load(args)
    password_hash = None
    if not args.no_password:
        password_hash = hash_password(read_password(args.password, prompt="Password"))
    login = args.login.strip().lower()
    with (
        opened_store(settings) as store,
        admin_change(settings, "account-add", login, store=store, name=args.name,
                     account_class=args.account_class, idnat=args.idnat,
                     cert_subject=args.cert_subject, password=bool(password_hash)),
        store_errors(f"account {args.login}"),
    ):
        account = store.add_account(
            login,
            args.name,
            AccountClass(args.account_class),
            idnat=args.idnat,
            cert_subject=args.cert_subject,
            password_hash=password_hash,
            cert_pins=cert_pins,
        )
    print(f"account {account.login} added ({account.account_class.value})")
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace) -> int:
    settings = load(args)
    new_hash = None if args.clear else hash_password(
        read_password(args.password, prompt="New password")
    )
    login = args.login.strip().lower()
    with (
        opened_store(settings) as store,
        admin_change(settings, "account-passwd", login, store=store,
                     password="removed" if args.clear else "changed"),
        store_errors(f"account {args.login}"),
    ):
        store.set_password_hash(login, new_hash)
    print(f"password of {args.login} {'removed' if args.clear else 'changed'}")
    return EXIT_OK


def cmd_set_active(args: argparse.Namespace) -> int:
    settings = load(args)
    login = args.login.strip().lower()
    action = "account-enable" if args.active else "account-disable"
    with (
        opened_store(settings) as store,
        admin_change(settings, action, login, store=store, active=args.active),
        store_errors(f"account {args.login}"),
    ):
        store.set_account_active(login, args.active)
    print(f"account {args.login} {'enabled' if args.active else 'disabled'}")
    return EXIT_OK


def account_json(a: Account) -> dict[str, Any]:
    """An account in the JSON output of `account list` and `account show`
    (whether it has a password, never the hash)."""
    return {
        "login": a.login,
        "name": a.display_name,
        "class": a.account_class.value,
        "active": a.active,
        "password": a.password_hash is not None,
        "idnat": a.idnat,
        "cert_subject": a.cert_subject,
    }


def cmd_list(args: argparse.Namespace) -> int:
    settings = load(args)
    with opened_store(settings) as store, store_errors():
        accounts = store.list_accounts()
        locks = lockout.account_locks(settings, store)
    if args.json:
        entries = []
        for a in sorted(accounts, key=lambda a: a.login):
            state, locked = locks.get(a.login, (None, False))
            entries.append(account_json(a) | {
                "locked_until": json_time(state.locked_until)
                if locked and state and state.locked_until else None})
        print_json({"accounts": entries})
        return EXIT_OK
    rows = []
    for a in sorted(accounts, key=lambda a: a.login):
        state, locked = locks.get(a.login, (None, False))
        rows.append([
            a.login,
            a.account_class.value,
            "active" if a.active else "disabled",
            "yes" if a.password_hash else "no",
            lockout.stamp(state.locked_until) if locked and state and state.locked_until
            else "-",
            a.idnat or "-",
            a.cert_subject or "-",
            a.display_name or "-",
        ])
    print_table(rows, ["LOGIN", "CLASS", "STATE", "PASSWORD", "LOCKED-UNTIL", "IDNAT",
                       "CERTIFICATE", "NAME"])
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    login = args.login.strip().lower()
    settings = load(args)
    with opened_store(settings) as store, store_errors(f"account {login}"):
        a = store.get_account(login)
        pinned = store.cert_pins(a.id)
        if args.json:
            doc = account_json(a) | {
                "pinned": pinned,
                "totp": store.totp_factor(a.id) is not None,
                "mailboxes": [m.address for m in store.mailboxes_owned_by(a.id)],
                "login_lock": lockout.account_lock_json(settings, store, a.login),
            }
        else:
            lock = lockout.account_lock_line(settings, store, a.login)
    if args.json:
        print_json(doc)
        return EXIT_OK
    lines = [
        ("login", a.login),
        ("name", a.display_name or "-"),
        ("class", a.account_class.value),
        ("state", "active" if a.active else "disabled"),
        ("password", "yes" if a.password_hash else "no"),
        ("idnat", a.idnat or "-"),
        ("certificate", a.cert_subject or "-"),
        ("pinned", ", ".join(pinned) if pinned else "-"),
        ("login lock", lock),
    ]
    for key, value in lines:
        print(f"{key + ':':<12} {value}")
    return EXIT_OK


def cmd_totp_enable(args: argparse.Namespace) -> int:
    from conf.settings import AuthMethod
    from policy import totp

    settings = load(args)
    login = args.login.strip().lower()
    issuer = settings.policy.totp_issuer or settings.domains[0]
    secret = totp.new_secret()
    with (
        opened_store(settings) as store,
        admin_change(settings, "totp-enable", login, store=store,
                     replaced=bool(args.replace)),
        store_errors(f"account {login}"),
    ):
        account = store.get_account(login)
        if store.totp_factor(account.id) is not None and not args.replace:
            raise CliError(f"account {login} already has a one-time code secret "
                           "(--replace to give it a new one)")
        store.set_totp_secret(account.id, secret)
    uri = totp.provisioning_uri(secret, login, issuer)
    allowed = settings.policy.login_methods.allowed(account.account_class.value)
    print(f"one-time codes enabled for {login}: log in with the password immediately "
          f"followed by the current {totp.DIGITS}-digit code (no separator)")
    if AuthMethod.PASSWORD_TOTP not in allowed:
        print(f"note: policy.login_methods.{account.account_class.value} does not include "
              "password+totp: this class does not log in with codes")
    print(f"add it to an authenticator app (issuer {issuer}, account {login}):")
    print(uri)
    if not args.no_qr:
        import io

        import segno

        out = io.StringIO()
        segno.make(uri, error="m").terminal(out=out, compact=True)
        print(out.getvalue(), end="")
    return EXIT_OK


def cmd_totp_disable(args: argparse.Namespace) -> int:
    settings = load(args)
    login = args.login.strip().lower()
    with (
        opened_store(settings) as store,
        admin_change(settings, "totp-disable", login, store=store) as change,
        store_errors(f"account {login}"),
    ):
        account = store.get_account(login)
        had = store.totp_factor(account.id) is not None
        store.set_totp_secret(account.id, None)
        change.details["had_secret"] = had
    print(f"one-time codes disabled for {login}" if had
          else f"account {login} had no one-time code secret")
    return EXIT_OK
