"""`mssctl account pin LOGIN --cert FILE.pem | --fingerprint SHA256 [--unpin]`:
certificates pinned to an account (see `policy.certmap`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mssctl.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    admin_change,
    load,
    opened_store,
    store_errors,
)


def register_verbs(verbs: Any) -> None:
    """Adds the verb to the `account` parser."""
    pin = verbs.add_parser(
        "pin", help="pin a certificate to an account (then only pinned certificates log in)")
    pin.add_argument("login")
    which = pin.add_mutually_exclusive_group()
    which.add_argument("--cert", metavar="FILE.pem", type=Path,
                       help="the certificate (PEM; the first one of the file)")
    which.add_argument("--fingerprint", metavar="SHA256",
                       help="its SHA-256 fingerprint (hex, colons allowed)")
    pin.add_argument("--unpin", action="store_true",
                     help="remove that pin (with neither --cert nor --fingerprint: every pin)")
    add_config_option(pin)
    pin.set_defaults(func=cmd_pin)


def fingerprint_argument(text: str) -> str:
    """--fingerprint / --cert-fingerprint, in the stored form."""
    from certs.identity import parse_fingerprint

    try:
        return parse_fingerprint(text)
    except ValueError as exc:
        raise CliError(f"--fingerprint: {exc}: {text!r}", EXIT_USAGE) from None


def fingerprint_of_file(path: Path) -> str:
    from cryptography import x509

    from certs.identity import certificate_fingerprint

    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise CliError(f"--cert: cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    except ValueError:
        raise CliError(f"--cert: {path} holds no PEM certificate", EXIT_USAGE) from None
    return certificate_fingerprint(certs[0])


def cmd_pin(args: argparse.Namespace) -> int:
    login = args.login.strip().lower()
    fingerprint: str | None = None
    if args.cert is not None:
        fingerprint = fingerprint_of_file(args.cert)
    elif args.fingerprint is not None:
        fingerprint = fingerprint_argument(args.fingerprint)
    elif not args.unpin:
        raise CliError("give --cert FILE.pem or --fingerprint SHA256", EXIT_USAGE)
    settings = load(args)
    action = "account-unpin" if args.unpin else "account-pin"
    with (
        opened_store(settings) as store,
        admin_change(settings, action, login, store=store, fingerprint=fingerprint) as change,
        store_errors(f"account {login}"),
    ):
        if args.unpin:
            removed = store.remove_cert_pins(login, fingerprint)
            change.details["removed"] = removed
        else:
            assert fingerprint is not None
            store.add_cert_pin(login, fingerprint)
    if args.unpin:
        print(f"{removed} pin(s) removed from {login}")
    else:
        print(f"certificate {fingerprint} pinned to {login}")
    return EXIT_OK
