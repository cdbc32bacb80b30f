"""What every `mssctl` subcommand shares: exit codes, errors, config, store,
and the audit of admin changes (`admin_change`)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from conf.loader import ConfigError, load_settings
from conf.settings import Settings

if TYPE_CHECKING:
    from storage.interface import MessageStore

EXIT_OK = 0
EXIT_FAILURE = 1  # operational error: store down, not found, already exists
EXIT_USAGE = 2  # bad command line or configuration file

CONFIG_ENV = "MSS_CONFIG"
DEFAULT_CONFIG = "mss.yaml"


class CliError(Exception):
    """An error to print as ``mssctl: <message>`` and exit with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ConfigProblems(CliError):
    """The configuration file is wrong: one line per problem, exit status 2."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines), EXIT_USAGE)
        self.lines = list(lines)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help=f"settings file (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG})",
    )


def config_path(args: argparse.Namespace) -> Path:
    value = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return Path(value)


def load(args: argparse.Namespace, *, check_files: bool = False) -> Settings:
    try:
        return load_settings(config_path(args), check_files=check_files)
    except ConfigError as exc:
        raise ConfigProblems(exc.lines) from None


@contextmanager
def opened_store(settings: Settings) -> Iterator[MessageStore]:
    """The store named by the settings; store errors become CliErrors."""
    from storage import open_store
    from storage.crypto import KeyFileError
    from storage.interface import StoreError

    try:
        store = open_store(settings.database.url, settings.key_file)
    except KeyFileError as exc:
        raise CliError(f"key_file: {exc}", EXIT_USAGE) from None
    except StoreError as exc:
        raise CliError(f"cannot open the store: {describe_store_error(exc)}") from None
    except OSError as exc:
        raise CliError(f"cannot open the store: {exc.strerror or exc}") from None
    try:
        yield store
    finally:
        store.close()


@contextmanager
def store_errors(subject: str = "") -> Iterator[None]:
    """Store errors raised in the block become ``CliError("<subject>: <what>")``."""
    from storage.interface import StoreError

    try:
        yield
    except StoreError as exc:
        text = describe_store_error(exc)
        raise CliError(f"{subject}: {text}" if subject else text) from None


# ---------------------------------------------------------------- admin audit


def admin_actor() -> str:
    """Who runs this command, as audit events name them: ``admin:<user>``,
    or ``admin:<user>(sudo:<who>)`` when run through sudo (SUDO_USER)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry
        user = f"uid{os.getuid()}"
    sudo = os.environ.get("SUDO_USER", "").strip()
    if sudo and sudo != user:
        return f"admin:{user}(sudo:{sudo})"
    return f"admin:{user}"


@dataclass
class AdminChange:
    """What `admin_change` yields: the details of the event (the changed
    fields; never a password), completed by the command as it learns more,
    and the store that keeps a copy (None: the file only)."""

    details: dict[str, Any] = field(default_factory=dict)
    store: MessageStore | None = None


def record_admin(settings: Settings, store: MessageStore | None, action: str, target: str,
                 result: str, **details: Any) -> None:
    """One admin event: written to the audit file (authoritative), then to
    the store's audit table (what `mssctl audit query` reads). Raises
    CliError when the audit file cannot be written."""
    from policy.audit import FileAuditSink

    try:
        sink = FileAuditSink(settings.audit.path, None)
    except OSError as exc:
        raise CliError(f"cannot write the audit log {settings.audit.path}: "
                       f"{exc.strerror or exc}") from None
    try:
        event = sink.record(admin_actor(), action, target, result,
                            **{k: v for k, v in details.items() if v is not None})
    finally:
        sink.close()
    if store is not None:
        from storage.interface import StoreError

        try:
            store.record_audit([event])
        except StoreError as exc:
            print(f"mssctl: warning: audit event only in {settings.audit.path} "
                  f"(store: {describe_store_error(exc)})", file=sys.stderr)


@contextmanager
def admin_change(settings: Settings, action: str, target: str, *,
                 store: MessageStore | None = None, **details: Any) -> Iterator[AdminChange]:
    """ONE audit event for the change made in the block: result "ok", or
    "fail" with the reason when it raises (the error still propagates).
    The audit file is checked before the block runs, so a change that
    could not be audited is not made. Every `mssctl` command that changes
    something goes through here."""
    from policy.audit import FileAuditSink
    from storage.interface import StoreError

    try:
        FileAuditSink(settings.audit.path, None).close()
    except OSError as exc:
        raise CliError(f"cannot write the audit log {settings.audit.path}: "
                       f"{exc.strerror or exc}; nothing was changed") from None
    change = AdminChange(dict(details), store)
    try:
        yield change
    except BaseException as exc:
        if isinstance(exc, CliError):
            reason = exc.message
        elif isinstance(exc, StoreError):
            reason = describe_store_error(exc)
        else:
            reason = type(exc).__name__
        record_admin(settings, change.store, action, target, "fail", reason=reason,
                     **change.details)
        raise
    record_admin(settings, change.store, action, target, "ok", **change.details)


def describe_store_error(exc: BaseException) -> str:
    from storage.interface import AlreadyExists, NotFound, QuotaExceeded, StoreUnavailable

    kinds: dict[type[BaseException], str] = {
        NotFound: "not found",
        AlreadyExists: "already exists",
        QuotaExceeded: "over quota",
        StoreUnavailable: "the database is unavailable",
    }
    for kind, text in kinds.items():
        if isinstance(exc, kind):
            detail = str(exc)
            return f"{text}: {detail}" if detail else text
    return str(exc) or type(exc).__name__


def read_password(args_password: str | None, *, prompt: str, stdin: TextIO | None = None) -> str:
    """--password, else a prompt (twice) on a terminal, else one line of stdin."""
    if args_password is not None:
        password = args_password
    else:
        stream = stdin if stdin is not None else sys.stdin
        if stream.isatty():
            password = getpass.getpass(f"{prompt}: ")
            if getpass.getpass(f"{prompt} (again): ") != password:
                raise CliError("the passwords do not match", EXIT_USAGE)
        else:
            password = stream.readline().rstrip("\r\n")
    if not password:
        raise CliError("empty password", EXIT_USAGE)
    return password


def print_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*headers).rstrip())
    for row in rows:
        print(fmt.format(*row).rstrip())


# ---------------------------------------------------------------- --json


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="one JSON document on stdout (stable keys, times in ISO 8601 UTC)")


def json_time(value: datetime | None) -> str | None:
    """A time as the JSON output writes it: ISO 8601, UTC, ``Z``
    (``2026-12-07T05:34:53Z``); None stays None (null)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def print_json(document: Any) -> None:
    """The whole output of a ``--json`` command: one JSON document, keys in
    the order the command built them (fixed per command)."""
    print(json.dumps(document, indent=2, ensure_ascii=False))
