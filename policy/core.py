"""The state every part of the policy shares: settings, store, audit sink,
whitelist, flow matrix, the per-process mailbox cache, the login throttle, the
clock; and the one way a refusal is recorded (`_deny`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conf.settings import Settings
from policy.audit import AuditSink
from policy.reasons import Reason
from policy.throttle import LoginThrottle
from policy.verdicts import MAILBOX_CACHE_TTL, Decision, Verdict
from storage.interface import Grant, Mailbox, MessageStore

if TYPE_CHECKING:
    from policy.flows import FlowMatrixHolder
    from policy.whitelist import Whitelist


class PolicyCore:
    """The decisions' shared state (see `policy.decisions.Policy`)."""

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        audit: AuditSink,
        whitelist: Whitelist | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        mailbox_cache_ttl: float = MAILBOX_CACHE_TTL,
        flows: FlowMatrixHolder | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.whitelist = whitelist
        self._clock = clock
        self._mailbox_ttl = mailbox_cache_ttl
        # The flow matrix (`policy.flows_file`), replaced whole on reload.
        self.flows = flows
        # address -> (monotonic expiry, active Mailbox); see MAILBOX_CACHE_TTL.
        self._mailboxes: dict[str, tuple[float, Mailbox]] = {}
        # Failed logins and locks, shared through the store (policy.throttle).
        self.throttle = LoginThrottle(settings.policy.lockout, store, audit, clock)


    def now(self) -> datetime:
        """The policy's clock (aware UTC): grant windows are judged by it."""
        return self._clock()



    def _grant_current(self, grant: Grant) -> bool:
        """A grant of RFC 4314 rights counts only inside its validity window
        (delegations during a mission end by themselves)."""
        return bool(grant.rights) and self._grant_in_window(grant)

    def _grant_in_window(self, grant: Grant) -> bool:
        now = self.now()
        start, until = _aware(grant.valid_from), _aware(grant.valid_until)
        if start is not None and now < start:
            return False
        return not (until is not None and now >= until)

    def _current_grants(self, account_id: int) -> list[Grant]:
        return [g for g in self.store.grants_for_account(account_id) if self._grant_current(g)]

    def _deny(
        self, actor: str, action: str, target: str, reason: Reason, **details: object
    ) -> Decision:
        self.audit.record(actor or "-", action, target, "deny", reason=reason, **details)
        return Decision(Verdict.DENY, reason)


def _aware(value: datetime | None) -> datetime | None:
    """Stores may hand back naive datetimes (SQLite): they are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
