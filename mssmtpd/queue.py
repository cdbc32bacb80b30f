"""Outbound queue logic that needs no network: backoff, routes, DSN messages.

The queue itself lives in the store (`enqueue`, `due_entries`,
`record_attempt`): it survives restarts and is shared by worker processes.
`mssmtpd.relay` does the network part.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from storage.interface import DSNParams, QueueEntry


def next_delay(attempts: int, initial: float, cap: float) -> float:
    """Exponential backoff: initial, 2*initial, 4*initial ... capped.

    `attempts` counts the attempts already made (>= 1 after the first)."""
    exponent = max(0, attempts - 1)
    if exponent > 60:
        return cap
    return float(min(cap, initial * (2**exponent)))


def is_expired(entry: QueueEntry, now: datetime, lifetime: float) -> bool:
    created = entry.created if entry.created.tzinfo else entry.created.replace(tzinfo=UTC)
    return now - created >= timedelta(seconds=lifetime)


def parse_route(route: str) -> tuple[str, int]:
    """Static route "host:port" or "[v6]:port" or "host" (port 25)."""
    route = route.strip()
    if route.startswith("["):
        host, _, rest = route[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 25
        return host, port
    if route.count(":") == 1:
        host, _, port_text = route.partition(":")
        return host, int(port_text)
    return route, 25


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def group_by_domain(recipients: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rcpt in recipients:
        groups.setdefault(domain_of(rcpt), []).append(rcpt)
    return groups


def notify_of(dsn: DSNParams, rcpt: str) -> frozenset[str] | None:
    """The NOTIFY set of a recipient, None when the client gave none."""
    value = dsn.notify.get(rcpt) or dsn.notify.get(rcpt.lower())
    if not value:
        return None
    return frozenset(v.strip().upper() for v in value.split(",") if v.strip())


def wants_failure_dsn(dsn: DSNParams, rcpt: str) -> bool:
    notify = notify_of(dsn, rcpt)
    return notify is None or "FAILURE" in notify  # RFC 3461 4.1: default is FAILURE(,DELAY)


def wants_success_dsn(dsn: DSNParams, rcpt: str) -> bool:
    notify = notify_of(dsn, rcpt)
    return notify is not None and "SUCCESS" in notify


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    recipient: str
    action: str  # "failed" | "delivered" | "relayed" | "delayed"
    status: str  # RFC 3463, e.g. "5.1.1", "4.4.7", "2.0.0"
    diagnostic: str | None = None  # "smtp; 550 5.1.1 ..." as the remote said it
    remote_mta: str | None = None


def _header_section(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


def _safe(text: str) -> str:
    return "".join(c if 0x20 <= ord(c) < 0x7F else " " for c in text)


def _safe_utf8(text: str) -> str:
    return "".join(c if 0x20 <= ord(c) != 0x7F else " " for c in text)


def build_dsn(
    *,
    reporting_mta: str,
    sender: str,
    statuses: Sequence[RecipientStatus],
    dsn: DSNParams,
    original: bytes,
    arrival: datetime | None = None,
    now: datetime | None = None,
) -> bytes:
    """An RFC 3464 multipart/report to `sender` (sent with the null sender).

    RET=HDRS returns only the header section; RET=FULL (and the default for
    failures) returns the whole message.
    """
    now = now or datetime.now(UTC)
    # RFC 6533: an SMTPUTF8 address cannot go in an ASCII DSN; then the
    # report is message/global-delivery-status with "utf-8" address types.
    addresses = [sender, *(s.recipient for s in statuses), *dsn.orcpt.values()]
    intl = not all(a.isascii() for a in addresses) or not (dsn.envid or "").isascii()
    safe = _safe_utf8 if intl else _safe
    failed = any(s.action == "failed" for s in statuses)
    kind = "Failure" if failed else "Success"
    boundary = "=_dsn_" + secrets.token_hex(12)
    human = []
    for s in statuses:
        if s.action == "failed":
            human.append(f"Your message could not be delivered to {s.recipient} ({s.status}).")
        elif s.action == "delayed":
            human.append(f"Delivery to {s.recipient} is delayed ({s.status}).")
        else:
            human.append(f"Your message was {s.action} to {s.recipient}.")
        if s.diagnostic:
            human.append(f"  The remote server said: {_safe(s.diagnostic)}")
    fields = [f"Reporting-MTA: dns; {reporting_mta}"]
    if dsn.envid:
        fields.append(f"Original-Envelope-Id: {safe(dsn.envid)}")
    if arrival is not None:
        fields.append(f"Arrival-Date: {format_datetime(arrival)}")
    per_rcpt = []
    for s in statuses:
        final_type = "rfc822" if s.recipient.isascii() else "utf-8"
        block = [f"Final-Recipient: {final_type}; {safe(s.recipient)}"]
        orcpt = dsn.orcpt.get(s.recipient)
        if orcpt:
            addr_type, _, addr = orcpt.partition(";")
            if not addr.isascii():
                addr_type = "utf-8"
            block.insert(0, f"Original-Recipient: {addr_type}; {safe(addr)}")
        block.append(f"Action: {s.action}")
        block.append(f"Status: {s.status}")
        if s.remote_mta:
            block.append(f"Remote-MTA: dns; {_safe(s.remote_mta)}")
        if s.diagnostic:
            block.append(f"Diagnostic-Code: smtp; {_safe(s.diagnostic)}")
        block.append(f"Last-Attempt-Date: {format_datetime(now)}")
        per_rcpt.append("\r\n".join(block))
    status_part = "\r\n".join(fields) + "\r\n\r\n" + "\r\n\r\n".join(per_rcpt) + "\r\n"
    headers_only = dsn.ret == "HDRS"
    returned = _header_section(original) if headers_only else original
    returned_type = "text/rfc822-headers" if headers_only else "message/rfc822"
    status_type = "delivery-status"
    if intl:
        status_type = "global-delivery-status"
        returned_type = "message/global-headers" if headers_only else "message/global"
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{safe(sender)}>\r\n"
        f"Subject: Delivery Status Notification ({kind})\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: <dsn.{secrets.token_hex(10)}@{reporting_mta}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={status_type};\r\n\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated delivery status notification.\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain; charset={'utf-8' if intl else 'us-ascii'}\r\n"
        "\r\n" + "\r\n".join(human) + "\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/{status_type}\r\n"
        "\r\n" + status_part +
        f"--{boundary}\r\n"
        f"Content-Type: {returned_type}\r\n"
        "\r\n"
    ).encode("utf-8" if intl else "ascii")
    if returned and not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return head + returned + f"--{boundary}--\r\n".encode("ascii")
