"""certs.tlsconn: the handshake deadline of implicit-TLS listeners, in memory
(Twisted's iosim pump and a Clock)."""

from __future__ import annotations

from typing import Any

import pytest
from pki import tls_settings
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from certs.tls import ServerTLS
from certs.tlsconn import HandshakeDeadlineFactory
from conf.settings import ClientCertMode, ListenerSettings

TIMEOUT = 10.0


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


@pytest.fixture(scope="module")
def server_tls(dev_pki: Any) -> ServerTLS:
    return ServerTLS(tls_settings(dev_pki))


def serve(server_tls: ServerTLS, clock: Clock, client: Protocol) -> tuple[Recorder, list[str], Any]:
    """A server protocol behind the deadline, connected to `client`."""
    listener = ListenerSettings(name="imaps", port=0, role="imap", tls="implicit",
                                client_cert=ClientCertMode.NONE)
    server = Recorder()
    timeouts: list[str] = []
    factory = HandshakeDeadlineFactory(
        server_tls.server_context_factory(listener), Factory.forProtocol(lambda: server),
        listener="imaps", handshake_timeout=TIMEOUT, clock=clock, on_timeout=timeouts.append)
    sp = factory.buildProtocol(None)
    peer = IPv4Address("TCP", "192.0.2.5", 40000)
    server_transport = iosim.FakeTransport(sp, isServer=True, peerAddress=peer)
    pump = iosim.connect(sp, server_transport, client, iosim.makeFakeClient(client), clock=clock)
    return server, timeouts, pump


def test_a_client_that_never_starts_tls_is_aborted(server_tls: ServerTLS) -> None:
    clock = Clock()
    silent = Recorder()
    server, timeouts, pump = serve(server_tls, clock, silent)
    clock.advance(TIMEOUT - 0.5)
    pump.flush()
    assert timeouts == [] and server.lost is None
    clock.advance(0.5)
    pump.flush()
    assert timeouts == ["192.0.2.5"]
    assert server.lost is not None  # the wrapped protocol saw the end
    assert clock.getDelayedCalls() == []


def test_a_completed_handshake_is_not_timed_out(server_tls: ServerTLS, dev_pki: Any) -> None:
    clock = Clock()
    ca = Certificate.loadPEM(dev_pki.ca_bundle.read_bytes())
    client = Recorder()
    client_tls = TLSMemoryBIOFactory(optionsForClientTLS("localhost", trustRoot=ca), True,
                                     Factory.forProtocol(lambda: client), clock=clock)
    server, timeouts, pump = serve(server_tls, clock, client_tls.buildProtocol(None))
    pump.flush()
    clock.advance(TIMEOUT * 3)
    pump.flush()
    assert timeouts == [] and server.lost is None
    client.transport.write(b"hello\r\n")  # type: ignore[union-attr]
    clock.advance(0)
    pump.flush()
    assert server.data == b"hello\r\n"
