"""`build_factory(services, listener)`: the IMAP listener's protocol factory.

For an implicit-TLS listener (993) the factory is wrapped in TLS with the
context of `services.tls` and a deadline on the handshake (`certs.tlsconn`);
for STARTTLS the protocol switches itself. All connections of the process
share one `FolderWatcher` (per `Services`), the single periodic task that
notices mail delivered by other processes. The factory counts each address's
connections, all worker processes together (`services.connections`), against
`limits.imap_connections_per_ip`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import ServerFactory

from certs.tlsconn import implicit_tls_factory
from conf.settings import ListenerSettings, TLSMode
from imapd.protocol import IMAPServerProtocol
from imapd.watcher import watcher_for
from policy.connections import ListenerConnections
from policy.services import Services


class IMAPServerFactory(ServerFactory):
    def __init__(self, services: Services, listener: ListenerSettings) -> None:
        self.services = services
        self.listener = listener
        self.watcher = watcher_for(services)
        self._per_ip = ListenerConnections(services.connections, listener.name,
                                           services.settings.limits.imap_connections_per_ip)
        self.metrics = services.metrics

    def buildProtocol(self, addr: Any) -> IMAPServerProtocol:
        proto = IMAPServerProtocol(self.services, self.listener, self.watcher)
        proto.factory = self
        return proto

    def connection_opened(self, ip: str) -> bool:
        """Counts the connection; False (and audited) when the address is
        over its limit. Counted until `connection_closed`, refused or not."""
        if self.metrics is not None:
            self.metrics.connection_opened(self.listener.name)
        if self._per_ip.opened(ip):
            return True
        self.services.record_audit(ip, "connection", self.listener.name, "deny",
                                   reason="too-many-connections",
                                   listener=self.listener.name, peer=ip)
        return False

    def connection_closed(self, ip: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_closed(self.listener.name)
        self._per_ip.closed(ip)

    def connections(self, ip: str) -> int:
        return self._per_ip.count(ip)


def build_factory(services: Services, listener: ListenerSettings) -> Any:
    factory = IMAPServerFactory(services, listener)
    if listener.tls is TLSMode.IMPLICIT:
        return implicit_tls_factory(services, listener, factory)
    return factory
