"""The outbound relay: takes due entries from the durable queue and sends them.

`RelayService(services).start()` polls `store.due_entries` every
`settings.queue.poll_interval` seconds. Entries are leased by the store, so
several worker processes can run a relay each. For every entry and domain: ask
the policy (`may_relay_to`), find the route (static `settings.queue.routes`,
else DNS MX), connect with mandatory TLS (peer verified against our trust
anchors, our client certificate presented), then record per-recipient results.
Temporary failures retry with exponential backoff; past
`settings.queue.lifetime`, or on a permanent failure, the sender gets a DSN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from twisted.internet import defer, endpoints, task
from twisted.python.failure import Failure

from certs.tls import peer_certificate
from mssmtpd import relayerrors
from mssmtpd.client import ClientJob, Outcome, RelayFailure, SMTPClientProtocol
from mssmtpd.delivery import send_dsn_sync
from mssmtpd.queue import (
    RecipientStatus,
    build_dsn,
    group_by_domain,
    is_expired,
    next_delay,
    parse_route,
    wants_failure_dsn,
    wants_success_dsn,
)
from mssmtpd.replies import flow_reply
from policy.decisions import Verdict
from storage.interface import QueueEntry

log = logging.getLogger(__name__)


def _status_of(reply: str, default: str) -> str:
    parts = reply.split(" ")
    if len(parts) > 1 and parts[1].count(".") == 2 and parts[1][0].isdigit():
        return parts[1]
    return default


class RelayService:
    def __init__(self, services: Any, *, batch: int = 20) -> None:
        self.services = services
        self.settings = services.settings
        self.reactor = services.reactor
        self.batch = batch
        self._loop: task.LoopingCall | None = None
        self._running: defer.Deferred[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.settings.queue.poll_interval, now=True)

    def stop(self) -> defer.Deferred[None]:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._running is not None:
            d: defer.Deferred[None] = defer.Deferred()
            self._running.addBoth(lambda _: d.callback(None))
            return d
        return defer.succeed(None)

    def _tick(self) -> None:
        if self._running is not None:
            return  # the previous round is still sending
        self._running = self.run_once()

        def done(result: object) -> None:
            self._running = None
            if isinstance(result, Failure):
                log.error("relay round failed: %s", result.getTraceback())

        self._running.addBoth(done)

    # ------------------------------------------------------------ one round

    @defer.inlineCallbacks
    def run_once(self) -> Any:
        """Processes the entries due now; fires when all are recorded."""
        runner = self.services.runner
        now = datetime.now(UTC)
        entries = yield runner.run(self.services.store.due_entries, now, self.batch)
        if entries:
            results = yield defer.DeferredList([self._process(e) for e in entries],
                                               consumeErrors=True)
            for ok, value in results:
                if not ok:
                    # The entry stays leased, then due again: nothing is lost.
                    log.error("queue entry not processed: %s", value.getErrorMessage())
        return len(entries)

    @defer.inlineCallbacks
    def _process(self, entry: QueueEntry) -> Any:
        runner = self.services.runner
        store = self.services.store
        try:
            body = yield runner.run(store.queue_body, entry.id)
        except Exception:
            log.exception("queue entry %s unreadable", entry.id)
            return
        delivered: list[str] = []
        failed: list[RecipientStatus] = []
        deferred: dict[str, str] = {}
        success: list[RecipientStatus] = []
        # The flow matrix again: it may have changed since the message came in.
        refused = yield runner.run(self.services.policy.recheck_relay, entry)
        for rcpt, decision in refused.items():
            flow = decision.flow
            assert flow is not None
            reply = flow_reply(flow)
            text = f"{reply.code} {reply.status} {reply.text} (flow rule {flow.rule})"
            if decision.verdict is Verdict.TEMPFAIL:
                deferred[rcpt] = text
            else:
                failed.append(RecipientStatus(rcpt, "failed", reply.status or "5.7.1", text))
        pending = [r for r in entry.recipients if r not in refused]
        for domain, rcpts in group_by_domain(pending).items():
            decision = yield runner.run(self.services.policy.may_relay_to, domain)
            if not decision.allowed:
                failed += [RecipientStatus(r, "failed", "5.7.1",
                                           "550 5.7.1 destination not in the trust space")
                           for r in rcpts]
                continue
            try:
                outcome: Outcome = yield self._send_domain(domain, entry, rcpts, body)
            except Exception as exc:  # noqa: BLE001 - any surprise is a temporary failure
                if not isinstance(exc, RelayFailure):
                    log.exception("relay to %s failed unexpectedly (entry %s)", domain, entry.id)
                    exc = RelayFailure("451 4.3.0 local error while relaying")
                if exc.permanent:
                    failed += [RecipientStatus(r, "failed", _status_of(exc.text, "5.0.0"),
                                               exc.text) for r in rcpts]
                else:
                    for r in rcpts:
                        deferred[r] = exc.text
                continue
            for r in rcpts:
                code, text = outcome.results.get(r, (451, "451 4.4.0 no answer"))
                if 200 <= code < 300:
                    delivered.append(r)
                    if wants_success_dsn(entry.dsn, r) and not outcome.peer_dsn:
                        success.append(RecipientStatus(r, "relayed", "2.0.0", text,
                                                       outcome.remote_mta))
                elif code >= 500:
                    failed.append(RecipientStatus(r, "failed", _status_of(text, "5.0.0"), text,
                                                  outcome.remote_mta))
                else:
                    deferred[r] = f"{text} (answer of {outcome.remote_mta})"
        now = datetime.now(UTC)
        if deferred and is_expired(entry, now, self.settings.queue.lifetime):
            failed += [RecipientStatus(r, "failed", "4.4.7", why) for r, why in deferred.items()]
            deferred = {}
        yield self._notify(entry, body, failed, success)
        next_attempt = None
        if deferred:
            delay = next_delay(entry.attempts + 1, self.settings.queue.retry_initial,
                               self.settings.queue.retry_max)
            next_attempt = now + timedelta(seconds=delay)
        error = next(iter(deferred.values()), None) or (failed[0].diagnostic if failed else None)
        yield runner.run(
            store.record_attempt, entry.id,
            delivered=delivered, failed=[s.recipient for s in failed],
            error=error, next_attempt=next_attempt,
        )
        for r in delivered:
            self.services.audit.record("relay", "relay", r, "ok", queue_id=entry.id)
        for s in failed:
            self.services.audit.record("relay", "relay", s.recipient, "fail", queue_id=entry.id,
                                       status=s.status, error=s.diagnostic)
        for r, why in deferred.items():
            self.services.audit.record("relay", "relay", r, "deferred", queue_id=entry.id,
                                       error=why)

    def _notify(self, entry: QueueEntry, body: bytes, failed: Sequence[RecipientStatus],
                success: Sequence[RecipientStatus]) -> defer.Deferred[Any]:
        """DSNs are sent before the attempt is recorded: a crash in between
        may repeat a DSN but never lose one."""
        if not entry.sender:
            return defer.succeed(None)  # never answer a bounce (RFC 3461 6.2)
        to_report = [s for s in failed if wants_failure_dsn(entry.dsn, s.recipient)]
        to_report += list(success)
        if not to_report:
            return defer.succeed(None)
        raw = build_dsn(
            reporting_mta=self.settings.hostname, sender=entry.sender, statuses=to_report,
            dsn=entry.dsn, original=body, arrival=entry.created,
        )
        sent: defer.Deferred[Any] = self.services.runner.run(
            send_dsn_sync, self.services, entry.sender, raw)
        return sent

    # ------------------------------------------------------------ network

    @defer.inlineCallbacks
    def _routes(self, domain: str) -> Any:
        static = self.settings.queue.routes.get(domain)
        if static:
            return [parse_route(static)]
        from twisted.names import client as dns_client
        from twisted.names import error as dns_error

        try:
            answers, _, _ = yield dns_client.lookupMailExchange(domain)  # type: ignore[no-untyped-call]
        except dns_error.DomainError as exc:
            raise RelayFailure(f"550 5.1.2 no such domain {domain}", permanent=True) from exc
        except Exception as exc:
            raise RelayFailure(f"451 4.4.3 DNS lookup failed for {domain}") from exc
        mxs = sorted(
            ((a.payload.preference, str(a.payload.name)) for a in answers if a.type == 15),
        )
        if not mxs:
            return [(domain, 25)]  # RFC 5321 5.1: implicit MX
        if len(mxs) == 1 and mxs[0][1] in ("", "."):
            raise RelayFailure(f"556 5.1.10 {domain} accepts no mail", permanent=True)
        return [(name, 25) for _, name in mxs]

    @defer.inlineCallbacks
    def _send_domain(self, domain: str, entry: QueueEntry, rcpts: list[str],
                     body: bytes) -> Any:
        routes = yield self._routes(domain)
        last: RelayFailure = RelayFailure(f"451 4.4.1 no route to {domain}")
        for host, port in routes:
            try:
                outcome = yield self._send_to(domain, host, port, entry, rcpts, body)
            except Exception as exc:  # noqa: BLE001 - any surprise is a temporary failure
                if not isinstance(exc, RelayFailure):
                    log.exception("relay to %s failed unexpectedly (entry %s)", domain, entry.id)
                    exc = RelayFailure("451 4.3.0 local error while relaying")
                if exc.permanent:
                    raise
                last = exc
                continue
            outcome.remote_mta = host
            return outcome
        raise last

    def _send_to(self, domain: str, host: str, port: int, entry: QueueEntry, rcpts: list[str],
                 body: bytes) -> defer.Deferred[Outcome]:
        tls = self.services.tls
        if tls is None:
            return defer.fail(RelayFailure("451 4.7.5 TLS not configured for relaying"))
        creator = tls.client_creator(host)
        job = ClientJob(sender=entry.sender, recipients=tuple(rcpts), body=body,
                        dsn=entry.dsn, helo=self.settings.hostname)
        timeout = self.settings.queue.connect_timeout
        proto = SMTPClientProtocol(
            job, creator, self.reactor, timeout=max(timeout, 30.0), host=host,
            explain_tls=lambda reason, conn: relayerrors.tls_failure(
                host, reason, conn, tls.trust),
            check_peer=lambda transport: self._check_peer(domain, host, transport))
        endpoint = endpoints.HostnameEndpoint(self.reactor, host, port, timeout=timeout)
        connecting: defer.Deferred[Any] = endpoints.connectProtocol(  # type: ignore[no-untyped-call]
            endpoint, proto)

        def connect_failed(failure: Failure) -> None:
            if isinstance(failure.value, RelayFailure):
                raise failure.value
            raise RelayFailure(relayerrors.connect_failure(host, port, failure))

        connecting.addErrback(connect_failed)
        connecting.addCallback(lambda _: proto.done)
        return cast("defer.Deferred[Outcome]", connecting)

    def _check_peer(self, domain: str, host: str, transport: Any) -> str | None:
        """After the handshake (chain and host name verified): the receiving
        MTA must be the operator the whitelist lists for `domain`."""
        cert = peer_certificate(transport)
        if cert is None:
            return f"451 4.7.5 {host} presented no certificate"
        from certs.identity import rfc4514_subject

        # The form the whitelist and the inbound check use (serialNumber=,
        # not 2.5.4.5=).
        dn = rfc4514_subject(cert)
        decision = self.services.policy.check_relay_peer(domain, dn)
        return None if decision.allowed else relayerrors.dn_mismatch(host, domain, dn)
