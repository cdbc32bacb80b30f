"""What a listener needs at run time, built once by `mssctl serve` (or a test)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from conf.settings import Settings
from policy.audit import AuditSink
from policy.auth import Authenticator
from policy.connections import ConnectionCounts
from policy.decisions import Policy
from storage.interface import MessageStore
from storage.threaded import InlineRunner, StoreRunner

log = logging.getLogger(__name__)


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

    def record_audit(self, actor: str, action: str, target: str, result: str,
                     **details: Any) -> defer.Deferred[None]:
        """Records an event from the reactor thread without waiting for the
        database (through the runner unless the sink never blocks). A lost
        event is logged, never raised: the decision it records stands."""

        def record() -> None:
            self.audit.record(actor, action, target, result, **details)

        if getattr(self.audit, "nonblocking", False):
            d: defer.Deferred[None] = defer.maybeDeferred(record)
        else:
            d = self.runner.run(record)
        d.addErrback(lambda f: log.warning("audit event lost: %s", f.getErrorMessage()))
        return d
