"""Factories for the SMTP listeners (`build_factory`) as `mssctl serve` uses them."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.protocol import Factory, ServerFactory

from certs.tlsconn import implicit_tls_factory
from conf.settings import ListenerRole, ListenerSettings, TLSMode
from mssmtpd.delivery import LocalDelivery
from mssmtpd.protocol import SMTPServerProtocol
from policy.connections import ListenerConnections
from policy.services import Services


class SMTPFactory(ServerFactory):
    """One per listener; counts connections per client address, all worker
    processes together (`services.connections`)."""

    def __init__(self, services: Services, listener: ListenerSettings) -> None:
        self.services = services
        self.listener = listener
        self.delivery = LocalDelivery(services)
        self._per_ip = ListenerConnections(services.connections, listener.name,
                                           services.settings.limits.connections_per_ip)
        self.metrics = services.metrics

    def buildProtocol(self, addr: Any) -> SMTPServerProtocol:
        return SMTPServerProtocol(self)

    def connection_opened(self, ip: str) -> bool:
        """Counts the connection; False when the address is over its limit
        (the connection is still counted until it closes)."""
        if self.metrics is not None:
            self.metrics.connection_opened(self.listener.name)
        return self._per_ip.opened(ip)

    def connection_closed(self, ip: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_closed(self.listener.name)
        self._per_ip.closed(ip)

    def connections(self, ip: str) -> int:
        return self._per_ip.count(ip)


def build_factory(services: Services, listener: ListenerSettings) -> Factory:
    """The factory for one SMTP listener (role mx or submission).

    For an implicit-TLS listener (465) the factory is already wrapped in TLS,
    with a deadline on the handshake; STARTTLS listeners upgrade in the
    protocol.
    """
    if listener.role not in (ListenerRole.MX, ListenerRole.SUBMISSION):
        raise ValueError(f"listener {listener.name!r} is not an SMTP listener")
    factory = SMTPFactory(services, listener)
    if listener.tls is TLSMode.IMPLICIT:
        return cast(Factory, implicit_tls_factory(services, listener, factory))
    return factory
