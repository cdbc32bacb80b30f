"""`mssctl directory export`: this operator's mailboxes in the shape the
national directory publishes them (issue 10).

One row per active mailbox, by address: its type (PER, ORG, APP), address,
the holder's IdNat_PS for a PER box (from the owning account), display
name, description, service, the responsible entity or person of an ORG or
APP box, and the unlisted flag. Unlisted boxes ("liste rouge") are exported
with the flag set, not left out: the national side must know the box
belongs to the trust space to hide it from searches while still accepting
mail for it, and an export is a whole snapshot (a box left out is a box
withdrawn). Disabled boxes are left out: they refuse mail.

A PER box is published with its holder's national id: one whose owner has
no IdNat_PS is an error (every such box named, nothing written), unless
``--skip-incomplete`` leaves those boxes out with a warning each.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mssctl.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    admin_change,
    json_time,
    load,
    opened_store,
    store_errors,
)
from storage.interface import DirectoryEntry, MailboxType

# The columns of the CSV and the keys of each JSON entry, in this order.
COLUMNS = ("type", "address", "idnat_ps", "name", "description", "service", "responsible",
           "unlisted")
FORMAT_NAME = "mss-directory-export"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Export:
    """What an export publishes, and the boxes it left out (with why)."""

    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]]  # (address, reason)


def register(sub: Any) -> None:
    p = sub.add_parser("directory", help="the national directory (annuaire MSSanté)")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = verbs.add_parser(
        "export", help="this operator's mailboxes as the national directory publishes them",
        description="Every active mailbox, by address: type (PER/ORG/APP), address, the "
        "holder's IdNat_PS (PER), name, description, service, responsible (ORG/APP) and the "
        "unlisted flag (unlisted boxes are exported flagged, for the national side to hide). "
        "Disabled boxes are left out. A PER box whose owning account has no IdNat_PS is an "
        "ERROR: every such box is named and nothing is written (exit status 1), unless "
        "--skip-incomplete leaves them out with a warning each on stderr.")
    export.add_argument("--format", choices=("csv", "json"), default="csv",
                        help="csv (RFC 4180: header row, CRLF, quoted as needed; the default) "
                             "or json (one document)")
    export.add_argument("--output", "-o", metavar="FILE", type=Path,
                        help="write to FILE (replaced whole, mode 0600) instead of stdout")
    export.add_argument("--skip-incomplete", action="store_true",
                        help="leave out PER boxes whose owner has no IdNat_PS (a warning "
                             "each) instead of refusing the export")
    add_config_option(export)
    export.set_defaults(func=cmd_export)


def build_export(entries: list[DirectoryEntry]) -> Export:
    """The rows the directory publishes, from the store's entries."""
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for e in entries:
        m = e.mailbox
        if not m.active:
            continue
        per = m.mailbox_type is MailboxType.PER
        if per and not e.owner_idnat:
            why = (f"owner {e.owner_login} has no IdNat_PS" if e.owner_login
                   else "no owning account (hence no IdNat_PS)")
            skipped.append((m.address, why))
            continue
        rows.append({
            "type": m.mailbox_type.value,
            "address": m.address,
            "idnat_ps": e.owner_idnat if per else None,
            "name": m.display_name,
            "description": m.description,
            "service": m.service,
            "responsible": None if per else m.responsible,
            "unlisted": m.unlisted,
        })
    return Export(rows, skipped)


def render_csv(rows: list[dict[str, Any]]) -> str:
    """RFC 4180: a header row, CRLF line ends, fields quoted when they hold a
    comma, a double quote (doubled) or a line break; None is empty and
    booleans are ``true``/``false``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([
            ("true" if v else "false") if isinstance(v, bool) else ("" if v is None else v)
            for v in (row[c] for c in COLUMNS)
        ])
    return out.getvalue()


def render_json(rows: list[dict[str, Any]], *, domains: list[str], generated: datetime) -> str:
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "generated": json_time(generated),
        "domains": domains,
        "count": len(rows),
        "mailboxes": [{c: row[c] for c in COLUMNS} for row in rows],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _write_whole(path: Path, text: str) -> None:
    """Replaces `path` with `text` at once (a reader never sees half an
    export), mode 0600: the file names unlisted boxes."""
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_export(args: argparse.Namespace) -> int:
    settings = load(args)
    out_path: Path | None = args.output
    if out_path is not None and out_path.is_dir():
        raise CliError(f"--output: {out_path} is a directory", EXIT_USAGE)
    with opened_store(settings) as store:
        with store_errors():
            export = build_export(store.directory_entries())
        if export.skipped and not args.skip_incomplete:
            lines = [f"{address}: a PER box is published with its holder's IdNat_PS, and {why}"
                     for address, why in export.skipped]
            raise CliError(
                f"{len(lines)} PER box(es) cannot be exported (nothing was written; "
                "--skip-incomplete leaves them out):\n  " + "\n  ".join(lines))
        for address, why in export.skipped:
            print(f"mssctl: warning: {address} left out: {why}", file=sys.stderr)
        if args.format == "csv":
            text = render_csv(export.rows)
        else:
            text = render_json(export.rows, domains=list(settings.domains),
                               generated=datetime.now(UTC))
        with admin_change(settings, "directory-export",
                          str(out_path) if out_path is not None else "-", store=store,
                          format=args.format, mailboxes=len(export.rows),
                          unlisted=sum(1 for r in export.rows if r["unlisted"]),
                          skipped=[a for a, _ in export.skipped] or None):
            if out_path is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                try:
                    _write_whole(out_path, text)
                except OSError as exc:
                    raise CliError(f"--output: cannot write {out_path}: "
                                   f"{exc.strerror or exc}") from None
    if out_path is not None:
        print(f"{len(export.rows)} mailbox(es) exported to {out_path} ({args.format})",
              file=sys.stderr)
    return EXIT_OK
