"""What a listener needs at run time, built once by `mssctl serve` (or a test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conf.settings import Settings
from policy.audit import AuditSink, record_nonblocking
from policy.auth import Authenticator
from policy.connections import ConnectionCounts
from policy.decisions import Policy
from policy.metrics import Metrics
from storage.interface import MessageStore
from storage.threaded import InlineRunner, StoreRunner


@dataclass
class Services:
    settings: Settings
    store: MessageStore
    policy: Policy
    audit: AuditSink
    runner: StoreRunner | InlineRunner  # runs store/policy calls off the reactor
    authenticator: Authenticator
    reactor: Any
    # certs.tls.ServerTLS: OpenSSL context factories for the listeners (None
    # when no listener uses TLS, e.g. in some protocol tests).
    tls: Any = None
    # Open connections per address, shared by the workers of `mssctl serve`
    # (created before the fork); a process of its own gets a private table.
    connections: ConnectionCounts = field(default_factory=ConnectionCounts)
    # The Prometheus instruments of this process; None: metrics are off.
    metrics: Metrics | None = None

    def record_audit(self, actor: str, action: str, target: str, result: str,
                     **details: Any) -> None:
        """Records an event from the reactor thread without waiting for the
        database (`policy.audit.record_nonblocking`). A lost event is logged,
        never raised: the decision it records stands."""
        record_nonblocking(self.audit, self.runner.run, actor, action, target, result,
                           **details)
