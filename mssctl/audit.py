"""`mssctl audit query`: read the audit events kept in the store.

Every node mirrors its audit file into the store's audit table (see
`policy.audit`), so this answers for the whole installation. One line per
event (time, actor, action, target, result, details), or with ``--json`` the
JSON lines of the audit file. The event schema is in README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mssctl.common import EXIT_OK, add_config_option, load, opened_store, store_errors

DEFAULT_LIMIT = 1000
_PLAIN = re.compile(r"^[^\s\"'=]+$")  # a detail value printed bare
_BARE = re.compile(r"^[^\s\"']+$")  # a field printed bare


def parse_time(text: str, *, end: bool = False) -> datetime:
    """An ISO date or date-time; without a zone, UTC. A date alone is its
    first instant, or with `end` the first instant of the next day (so that
    ``--until 2026-11-27`` includes that whole day)."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date or date-time such as 2026-11-27 or 2026-11-27T14:30, "
            f"got {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _until(text: str) -> datetime:
    return parse_time(text, end=True)


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return n


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="the audit trail")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = verbs.add_parser(
        "query", help="list stored audit events, oldest first",
        description="List audit events from the store (every node's events), oldest first. "
        "Times are ISO dates or date-times, UTC unless they carry an offset.")
    q.add_argument("--actor", help="who acted: an account login, admin:<user>, a certificate "
                   "subject...; a trailing * matches a prefix (admin:*)")
    q.add_argument("--mailbox", metavar="ADDR",
                   help="events whose target is this mailbox or one of its folders")
    q.add_argument("--action", dest="actions", action="append", default=[], metavar="X",
                   help="only this action (repeatable), e.g. store, expunge, mailbox-revoke")
    q.add_argument("--since", type=parse_time, metavar="T", help="from this time on")
    q.add_argument("--until", type=_until, metavar="T",
                   help="before this time (a date alone: up to the end of that day)")
    q.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                   help=f"the N most recent matching events (default {DEFAULT_LIMIT})")
    q.add_argument("--json", action="store_true",
                   help="JSON lines, as in the audit file")
    add_config_option(q)
    q.set_defaults(func=cmd_query)


def _field(text: str) -> str:
    """A field of the line; quoted (JSON) when it has spaces (certificate
    subjects), so that every line splits the same way."""
    return text if text and _BARE.match(text) else json.dumps(text, ensure_ascii=False)


def detail_text(details: dict[str, Any]) -> str:
    """key=value pairs; values with spaces, quotes or structure as JSON."""
    out = []
    for key, value in details.items():
        if value is None:
            continue
        if isinstance(value, str) and _PLAIN.match(value):
            text = value
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int | float):
            text = str(value)
        else:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        out.append(f"{key}={text}")
    return " ".join(out)


def cmd_query(args: argparse.Namespace) -> int:
    from policy.audit import event_record

    settings = load(args)
    actor = args.actor
    prefix = bool(actor) and actor.endswith("*")
    if prefix:
        actor = actor[:-1]
    with opened_store(settings) as store, store_errors():
        events = store.audit_events(
            actor=actor or None, actor_prefix=prefix, since=args.since, until=args.until,
            actions=args.actions, mailbox=args.mailbox.strip().lower() if args.mailbox else None,
            limit=args.limit + 1, newest=True,
        )
    if len(events) > args.limit:
        events = events[1:]
        print(f"mssctl: only the {args.limit} most recent matching events are shown "
              "(--limit, --since)", file=sys.stderr)
    for e in events:
        if args.json:
            print(json.dumps(event_record(e), ensure_ascii=False))
            continue
        when = e.time.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        line = " ".join([when, _field(e.actor), e.action, _field(e.target), e.result])
        details = detail_text(e.details)
        print(f"{line} {details}" if details else line)
    return EXIT_OK
