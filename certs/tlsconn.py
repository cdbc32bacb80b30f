"""TLS connections of the listeners: a deadline on the handshake of the
implicit-TLS listeners (465, 993), and closing a TLS connection for good.

Twisted's TLS layer (`TLSMemoryBIOProtocol`) closes TCP only once the TLS
session has ended: `loseConnection()` before the handshake completes waits
for the handshake to send what the application already wrote (SMTP's
greeting on 465), and after it waits for the peer's close_notify. A client
that connects and never speaks TLS, or never answers our close_notify, would
hold its socket, and its place in the per-address count, for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import connectionDone
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from conf.settings import ListenerSettings

if TYPE_CHECKING:
    from policy.services import Services

log = logging.getLogger(__name__)


def tls_layer(transport: Any) -> TLSMemoryBIOProtocol | None:
    """The TLS protocol of a connection: the transport itself (implicit TLS)
    or, after `startTLS`, the protocol of the TCP transport."""
    if isinstance(transport, TLSMemoryBIOProtocol):
        return transport
    protocol = getattr(transport, "protocol", None)
    return protocol if isinstance(protocol, TLSMemoryBIOProtocol) else None


def handshake_done(tls: TLSMemoryBIOProtocol) -> bool:
    # Twisted has no public accessor for this flag; tests/unit/test_certs_tlsconn.py
    # and the e2e handshake tests notice if it changes.
    return bool(tls._handshakeDone)


def close_connection(transport: Any, clock: Any, grace: float) -> None:
    """Closes a connection, TLS or not, without waiting for the peer.

    With TLS after the handshake, our close_notify goes out with what was
    written before, then TCP closes (RFC 8446 6.1: no need to wait for the
    peer's). Before the handshake, what was written (a refusal) can only
    leave once the peer completes it: TCP closes `grace` seconds later
    whatever happened (at once if nothing was written: Twisted aborts)."""
    transport.loseConnection()
    tls = tls_layer(transport)
    lower: Any = getattr(tls, "transport", None)
    if tls is None or lower is None:
        return
    if handshake_done(tls) or clock is None:
        lower.loseConnection()
    else:
        clock.callLater(grace, lower.loseConnection)


class _DeadlineTLSProtocol(BufferingTLSTransport):
    """Twisted's TLS transport, aborted if the handshake is not complete
    `factory.handshake_timeout` seconds after the connection opened."""

    factory: HandshakeDeadlineFactory
    _deadline: Any = None  # IDelayedCall

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        self._deadline = factory.clock.callLater(factory.handshake_timeout, self._expired)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)  # type: ignore[no-untyped-call]
        if self._deadline is not None and handshake_done(self):
            self._cancel_deadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def _cancel_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _expired(self) -> None:
        self._deadline = None
        if handshake_done(self):
            return
        transport: Any = self.transport
        peer = getattr(transport.getPeer(), "host", "?")
        factory = self.factory
        log.info("TLS handshake timeout on listener %s from %s (%.1f s)",
                 factory.listener, peer, factory.handshake_timeout)
        if factory.on_timeout is not None:
            try:
                factory.on_timeout(peer)
            except Exception:
                log.exception("TLS handshake timeout: reporting failed")
        self.abortConnection()  # type: ignore[no-untyped-call]


class HandshakeDeadlineFactory(TLSMemoryBIOFactory):
    """`TLSMemoryBIOFactory` for a server listener whose connections must
    complete the TLS handshake within `handshake_timeout` seconds, or be
    aborted; `on_timeout(peer address)` reports it (audit)."""

    protocol = _DeadlineTLSProtocol

    def __init__(self, context: Any, wrapped: Any, *, listener: str,
                 handshake_timeout: float, clock: Any,
                 on_timeout: Callable[[str], object] | None = None) -> None:
        super().__init__(context, False, wrapped, clock=clock)
        self.listener = listener
        self.handshake_timeout = handshake_timeout
        self.clock = clock
        self.on_timeout = on_timeout


def implicit_tls_factory(services: Services, listener: ListenerSettings,
                         wrapped: Any) -> HandshakeDeadlineFactory:
    """An implicit-TLS listener's factory: the listener's context from
    `services.tls`, the handshake deadline `limits.tls_handshake_timeout`,
    and a timeout audited as a refused connection."""
    if services.tls is None:
        raise ValueError(f"listener {listener.name!r} needs TLS but no TLS is configured")

    def timed_out(peer: str) -> None:
        services.record_audit(peer, "connection", listener.name, "deny",
                              reason="tls-handshake-timeout", listener=listener.name, peer=peer)

    return HandshakeDeadlineFactory(
        services.tls.server_context_factory(listener), wrapped, listener=listener.name,
        handshake_timeout=services.settings.limits.tls_handshake_timeout,
        clock=services.reactor, on_timeout=timed_out)
