"""Committing an accepted message: local INBOXes and the outbound queue.

One store transaction puts the message into every local recipient's INBOX
(`MessageStore.deliver`); remote recipients go to the durable queue. The
client gets its 250 only after both have committed. Trace headers are
prepended, the body is never rewritten (the INBOX copy is byte-identical to
what the client sent apart from Return-Path and Received).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from mssmtpd.queue import RecipientStatus, build_dsn, wants_success_dsn
from mssmtpd.replies import R, Reply, local_error
from storage.interface import (
    Delivery,
    DSNParams,
    NotFound,
    QueueOrigin,
    QuotaExceeded,
    StoreUnavailable,
)
from storage.mime import parse_addresses
from storage.threaded import StoreRunner

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- pure helpers


_UNSAFE_RE = re.compile(r"[^\x20-\x7e]|[()\\]")


def _clean(text: str) -> str:
    """Nothing from the client may break a header: no CR/LF, no parentheses."""
    return _UNSAFE_RE.sub("", text)


def with_protocol(*, esmtp: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """RFC 3848 / RFC 6531 "with" keyword."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if utf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


@dataclass(frozen=True, slots=True)
class TraceInfo:
    hostname: str
    helo: str
    peer_ip: str
    esmtp: bool
    tls: tuple[str, str] | None  # (version, cipher)
    authenticated: str | None  # login of the authenticated account
    auth_method: str | None
    cert_subject: str | None  # client certificate subject, if any
    utf8: bool = False
    transaction_id: str = field(default_factory=lambda: secrets.token_hex(8))


def received_header(info: TraceInfo, recipients: Sequence[str], now: datetime | None = None) -> bytes:
    now = now or datetime.now(UTC)
    proto = with_protocol(
        esmtp=info.esmtp, tls=info.tls is not None, auth=info.authenticated is not None,
        utf8=info.utf8,
    )
    lines = [f"Received: from {_clean(info.helo)} ([{_clean(info.peer_ip)}])"]
    if info.tls is not None:
        lines.append(f"\t(using {_clean(info.tls[0])} with cipher {_clean(info.tls[1])})")
    if info.cert_subject and not info.authenticated:
        lines.append(f"\t(client certificate {_clean(info.cert_subject)})")
    if info.authenticated:
        how = f" by {_clean(info.auth_method)}" if info.auth_method else ""
        lines.append(f"\t(authenticated as {_clean(info.authenticated)}{how})")
    lines.append(f"\tby {_clean(info.hostname)} (mssmtpd) with {proto} id {info.transaction_id}")
    # "for" only with one recipient: never disclose the other (Bcc) recipients.
    if len(recipients) == 1:
        lines.append(f"\tfor <{_clean(recipients[0])}>; {format_datetime(now)}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{format_datetime(now)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def return_path_header(sender: str) -> bytes:
    return f"Return-Path: <{_clean(sender)}>\r\n".encode()


def header_section(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    if end < 0:
        return content if content.find(b"\r\n") < 0 or content.endswith(b"\r\n") else content
    return content[: end + 2]


def header_values(content: bytes, name: str) -> list[str]:
    """Unfolded values of a header field (pure, tolerant)."""
    want = name.lower().encode("ascii") + b":"
    out: list[bytes] = []
    current: bytearray | None = None
    for line in header_section(content).split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            current += b" " + line.strip()
            continue
        if current is not None:
            out.append(bytes(current))
            current = None
        if line.lower().startswith(want):
            current = bytearray(line[len(want):].strip())
    if current is not None:
        out.append(bytes(current))
    return [v.decode("utf-8", "replace") for v in out]


def from_mailboxes(content: bytes) -> list[str] | None:
    """The From: mailboxes (lower-cased addr-specs), read with the parser that
    builds IMAP's ENVELOPE (`storage.mime.parse_addresses`), so the address
    the policy checks is the one readers are shown; [] without a From:
    field. None when nobody can say who the message claims to be from:
    several From: fields, group syntax, an address without a domain, or a
    header the standard library's parser (what many other programs use)
    reads differently."""
    values = header_values(content, "From")
    if not values:
        return []
    if len(values) != 1 or len(values[0]) > MAX_FROM:
        return None
    try:
        return _read_from(values)
    except (RecursionError, ValueError):  # the standard library recurses per "("
        return None


# Longer than any real From: field (a few mailboxes); a longer one is not read.
MAX_FROM = 8192


def _read_from(values: list[str]) -> list[str] | None:
    parsed = parse_addresses(values[0]) or []
    ours: list[str] = []
    for _name, _adl, local, host in parsed:
        if not local or not host:  # a group marker, or no domain
            return None
        ours.append(f"{local}@{host}".lower())
    theirs = [addr.lower() for _, addr in getaddresses(values)]
    if not ours or ours != theirs:
        return None
    return ours


def message_id(content: bytes) -> str | None:
    values = header_values(content, "Message-ID")
    return values[0].strip()[:998] if len(values) == 1 and values[0].strip() else None


def with_sender(content: bytes, address: str) -> bytes:
    """The message with one `Sender:` naming `address` at the top of its
    header section; any Sender: field the client wrote (with its folded
    lines) is dropped (RFC 5322 3.6.2: the agent who actually sent it)."""
    head = header_section(content)
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and dropping:
            continue
        dropping = line[:7].lower() == b"sender:"
        if not dropping:
            kept.append(line)
    return (b"Sender: <" + address.encode("utf-8") + b">\r\n"
            + b"\r\n".join(kept) + content[len(head):])


# ---------------------------------------------------------------- committing


@dataclass(frozen=True, slots=True)
class Job:
    sender: str
    local_mailbox_ids: tuple[int, ...]
    local_addresses: tuple[str, ...]
    remote: tuple[str, ...]
    content: bytes
    trace: TraceInfo
    dsn: DSNParams
    actor: str
    success_dsn_for: tuple[str, ...] = ()
    # The flow's source, kept with the queue entry for the matrix at relay.
    origin: QueueOrigin | None = None


# How long a message accepted while no commit is running waits for others to
# share its commit (group commit). Messages accepted while a commit runs wait
# for it to end anyway and go together in the next one.
GATHER_SECONDS = 0.005


class LocalDelivery:
    """Commits accepted messages through `services.runner`.

    Group commit: when the store offers ``deliver_many(deliveries)`` (one
    transaction, each delivery all-or-nothing, results or a StoreError per
    delivery), messages accepted while a commit is running are committed
    together by the next one, and a message arriving when none is running
    waits `gather` seconds for company; one fsync then serves many clients.
    Each client gets its reply only after the commit that holds its message.
    Without ``deliver_many``, each message is its own transaction.
    """

    def __init__(
        self, services: Any, *, max_batch: int = 64, gather: float | None = None
    ) -> None:
        self.services = services
        self.max_batch = max_batch
        self._pending: list[tuple[Job, defer.Deferred[Reply]]] = []
        self._flushing = False
        self._timer: Any = None  # IDelayedCall of the gathering wait
        self.batched = callable(getattr(services.store, "deliver_many", None))
        if gather is None:
            # Waiting for company pays only when commits run on the store's
            # thread pool, concurrently with the reactor. Other runners (the
            # inline one of protocol transcripts, test steppers) commit at once.
            pooled = isinstance(services.runner, StoreRunner)
            gather = GATHER_SECONDS if pooled and services.reactor is not None else 0.0
        self.gather = gather
        self.commits = 0  # transactions run (statistics, for the benchmark)
        self.committed = 0  # messages they carried

    def commit(self, job: Job) -> defer.Deferred[Reply]:
        if not self.batched:
            d: defer.Deferred[Reply] = self.services.runner.run(self.commit_sync, job)

            def failed(failure: Failure) -> Reply:
                return self._error_reply(failure.value or Exception("unknown"), job)

            return d.addErrback(failed)
        waiter: defer.Deferred[Reply] = defer.Deferred()
        self._pending.append((job, waiter))
        if self._flushing:
            return waiter  # goes with the next commit, when this one ends
        if len(self._pending) >= self.max_batch or self.gather <= 0:
            self._flush()
        elif self._timer is None:
            self._timer = self.services.reactor.callLater(self.gather, self._gathered)
        return waiter

    def _gathered(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._flushing or not self._pending:
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self._flushing = True
        self.commits += 1
        self.committed += len(batch)

        def done(results: list[Reply | BaseException]) -> None:
            if len(results) != len(batch):
                # A store breaking its contract must not leave clients waiting:
                # the errback below answers them all.
                raise RuntimeError(f"{len(results)} delivery results for {len(batch)} messages")
            for (job, waiter), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    waiter.callback(self._error_reply(result, job))
                else:
                    waiter.callback(result)

        def failed(failure: Failure) -> None:
            for job, waiter in batch:
                if not waiter.called:
                    waiter.callback(self._error_reply(failure.value or Exception("unknown"), job))

        def next_batch(_: object) -> None:
            self._flushing = False
            # Those that arrived meanwhile have waited a whole commit: now.
            self._flush()

        d = self.services.runner.run(self.commit_batch_sync, [job for job, _ in batch])
        d.addCallback(done).addErrback(failed).addBoth(next_batch)

    def _error_reply(self, exc: BaseException, job: Job) -> Reply:
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable during delivery id=%s", job.trace.transaction_id)
            return R.STORE_UNAVAILABLE
        if isinstance(exc, QuotaExceeded):
            return R.QUOTA_EXCEEDED_TEMP
        if isinstance(exc, NotFound):
            # A mailbox vanished between RCPT and DATA: let the client retry.
            return R.LOCAL_ERROR
        ref = secrets.token_hex(6)
        log.error("delivery failed ref=%s id=%s", ref, job.trace.transaction_id, exc_info=exc)
        return local_error(ref)

    def _local_raw(self, job: Job) -> bytes:
        received = received_header(job.trace, list(job.local_addresses) + list(job.remote))
        return return_path_header(job.sender) + received + job.content

    def commit_sync(self, job: Job) -> Reply:
        """Runs on a store thread; returns only after a durable commit."""
        if job.local_mailbox_ids:
            self.services.store.deliver(
                Delivery(raw=self._local_raw(job), mailbox_ids=job.local_mailbox_ids))
        return self._after_local(job)

    def commit_batch_sync(self, jobs: list[Job]) -> list[Reply | BaseException]:
        """Local parts of every job in one store transaction, then the rest."""
        local = [j for j in jobs if j.local_mailbox_ids]
        outcomes: dict[int, Any] = {}
        if local:
            results = self.services.store.deliver_many(
                [Delivery(raw=self._local_raw(j), mailbox_ids=j.local_mailbox_ids) for j in local])
            outcomes = {id(j): r for j, r in zip(local, results, strict=True)}
        replies: list[Reply | BaseException] = []
        for job in jobs:
            outcome = outcomes.get(id(job))
            if isinstance(outcome, BaseException):
                replies.append(outcome)
                continue
            try:
                replies.append(self._after_local(job))
            except Exception as exc:  # noqa: BLE001 - reported per message
                replies.append(exc)
        return replies

    def _after_local(self, job: Job) -> Reply:
        """Queue the remote part, record the decision, answer NOTIFY=SUCCESS."""
        store = self.services.store
        all_rcpts = list(job.local_addresses) + list(job.remote)
        queued_id: int | None = None
        if job.remote:
            received = received_header(job.trace, all_rcpts)
            entry = store.enqueue(job.sender, list(job.remote), received + job.content, job.dsn,
                                  job.origin)
            queued_id = entry.id
        self.services.audit.record(
            job.actor, "deliver", ",".join(all_rcpts), "ok",
            id=job.trace.transaction_id, sender=job.sender or "<>",
            size=len(job.content), local=len(job.local_addresses),
            queued=queued_id,
        )
        if job.success_dsn_for and job.sender:
            statuses = [RecipientStatus(r, "delivered", "2.0.0") for r in job.success_dsn_for]
            try:
                send_dsn_sync(self.services, job.sender, build_dsn(
                    reporting_mta=self.services.settings.hostname, sender=job.sender,
                    statuses=statuses, dsn=job.dsn, original=job.content,
                ))
            except Exception:  # noqa: BLE001 - the message itself is committed
                log.warning("success DSN not sent id=%s", job.trace.transaction_id, exc_info=True)
        return R.DELIVERED.with_text(f"Message accepted for delivery id={job.trace.transaction_id}")


def success_dsn_recipients(dsn: DSNParams, local: Sequence[str]) -> tuple[str, ...]:
    return tuple(r for r in local if wants_success_dsn(dsn, r))


def send_dsn_sync(services: Any, sender: str, raw: bytes) -> None:
    """A DSN goes with the null sender: a local sender gets it in its INBOX,
    a remote one through the queue. Never called for a null-sender message."""
    store = services.store
    domain = sender.rpartition("@")[2]
    if services.settings.is_local_domain(domain):
        mailbox = store.find_mailbox(sender.lower())
        if mailbox is None or not mailbox.active:
            log.warning("DSN for unknown local sender %s dropped", sender)
            services.audit.record("MAILER-DAEMON", "dsn", sender, "fail", reason="no-mailbox")
            return
        store.deliver(Delivery(raw=return_path_header("") + raw, mailbox_ids=(mailbox.id,)))
    else:
        store.enqueue("", [sender], raw, DSNParams(notify={sender: "NEVER"}))
    services.audit.record("MAILER-DAEMON", "dsn", sender, "ok")
