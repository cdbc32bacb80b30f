"""`build_factory(services, listener)`: the IMAP listener's protocol factory.

For an implicit-TLS listener (993) the factory is wrapped in
`TLSMemoryBIOFactory` with the context of `services.tls`; for STARTTLS the
protocol switches itself. All connections of the process share one
`FolderWatcher` (per `Services`), the single periodic task that notices mail
delivered by other processes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import ServerFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from conf.settings import ListenerSettings, TLSMode
from imapd.protocol import IMAPServerProtocol
from imapd.watcher import watcher_for
from policy.services import Services


class IMAPServerFactory(ServerFactory):
    def __init__(self, services: Services, listener: ListenerSettings) -> None:
        self.services = services
        self.listener = listener
        self.watcher = watcher_for(services)

    def buildProtocol(self, addr: Any) -> IMAPServerProtocol:
        proto = IMAPServerProtocol(self.services, self.listener, self.watcher)
        proto.factory = self
        return proto


def build_factory(services: Services, listener: ListenerSettings) -> Any:
    factory = IMAPServerFactory(services, listener)
    if listener.tls is TLSMode.IMPLICIT:
        if services.tls is None:
            raise ValueError(f"listener {listener.name!r} needs TLS but no TLS is configured")
        return TLSMemoryBIOFactory(
            services.tls.server_context_factory(listener), False, factory  # type: ignore[arg-type]
        )
    return factory
