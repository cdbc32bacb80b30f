"""Login throttling across connections, worker processes and nodes.

The state lives in the store (`MessageStore.login_failures`), so every
process and node sees the same counts and locks. `Policy` hooks it around
its login decisions with two decorators, leaving the decisions themselves
alone: `throttled_login` (secret-based logins: passwords; one-time codes and
tokens may use it too) and `counted_certificate_login` (SASL EXTERNAL).

The rule, per scope (an account: the login name as typed, lower-cased,
existing or not, so a lock tells nothing about which accounts exist; and a
client address), with the `policy.lockout` settings:

- every refused login is a failure; `threshold` failures within `window`
  seconds (a sliding window) lock;
- the first lock lasts `base_delay`; once locked, every further failure
  (after that lock ended) locks again for twice as long, up to the scope's
  maximum;
- a whole window with neither a failure nor a lock forgets everything;
- a successful login forgets its account's failures, never its address's
  (one good account must not clear an address that sprays passwords).

While a scope is locked, a secret-based login is refused before its secret
counts, even a right one: it costs the same (the account's read and a full
password hash, outside the verified-password cache), writes the same (the
`refused` count) and is answered by both protocols exactly like a wrong
password (reasons `account-locked` / `address-locked` map to the reply of
`bad-credentials`). It is not a failure: it neither adds to the count nor
lengthens the lock. Its audit event says `locked`, with the lock's end.

Certificates prove possession of a key that cannot be guessed online: a
certificate login that succeeds is never refused by a lock; one that is
refused (unknown certificate, not pinned, ...) counts against its address.

Behind a hospital's NAT every agent shares one address, so the address lock
is deliberately weaker than the account lock: a higher threshold, a shorter
maximum (`address_max_delay`), no effect on certificate logins (cards and
APP systems keep working), and refusals while locked do not extend it.
`mssctl account unlock --address IP` lifts it at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from policy.passwords import spend_verification
from policy.reasons import Reason
from storage.interface import (
    MAX_THROTTLE_SUBJECT,
    LoginFailures,
    MessageStore,
    NotFound,
    ThrottleKey,
    ThrottleScope,
)

if TYPE_CHECKING:
    from conf.settings import LockoutSettings
    from policy.audit import AuditSink
    from policy.decisions import Peer

F = TypeVar("F", bound=Callable[..., Any])

LOCKED = "locked"  # the audit result of a login refused while locked

ACCOUNT, ADDRESS = ThrottleScope.ACCOUNT, ThrottleScope.ADDRESS


@dataclass(frozen=True, slots=True)
class Rule:
    """The lockout rule of one scope (see the module docstring). Pure."""

    threshold: int  # 0: the scope is not throttled
    window: float  # seconds
    base_delay: float
    max_delay: float

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def locked(self, state: LoginFailures, now: datetime) -> bool:
        return state.locked_until is not None and now < state.locked_until

    def forgotten(self, state: LoginFailures, now: datetime) -> bool:
        """A whole window passed with neither a failure nor a lock."""
        quiet_since = max(state.last_failure, state.locked_until or state.last_failure)
        return (now - quiet_since).total_seconds() >= self.window

    def counted(self, state: LoginFailures, now: datetime) -> int:
        """The failures inside the window ending now."""
        cutoff = now - timedelta(seconds=self.window)
        return sum(1 for t in state.recent if t > cutoff)

    def delay(self, level: int) -> float:
        """Seconds of the `level`-th lock in a row: base, doubled each time, capped."""
        return min(self.max_delay, self.base_delay * 2.0 ** min(level - 1, 64))

    def after_failure(
        self, key: ThrottleKey, state: LoginFailures | None, now: datetime
    ) -> LoginFailures:
        if state is None or self.forgotten(state, now):
            state = LoginFailures(key[0], key[1], now)
        cutoff = now - timedelta(seconds=self.window)
        # Only the last `threshold` times can matter.
        recent = (*(t for t in state.recent if t > cutoff), now)[-max(self.threshold, 1):]
        if self.locked(state, now):
            # Only a certificate can fail while locked: it counts, but the
            # lock stays as it is.
            return replace(state, last_failure=now, recent=recent)
        level, until = state.level, state.locked_until
        if level > 0 or len(recent) >= self.threshold:
            level += 1
            until = now + timedelta(seconds=self.delay(level))
        return replace(state, last_failure=now, recent=recent, level=level, locked_until=until)


@dataclass(frozen=True, slots=True)
class Lock:
    """A scope locked at the time of a check."""

    scope: ThrottleScope
    subject: str
    until: datetime

    @property
    def reason(self) -> Reason:
        """The decision's reason: `account-locked` or `address-locked`."""
        return Reason(f"{self.scope.value}-locked")


@dataclass(frozen=True, slots=True)
class Check:
    """What `LoginThrottle.check` found before a login."""

    keys: tuple[ThrottleKey, ...]
    lock: Lock | None = None
    account_counted: bool = False  # the account had failures: a success clears them


def login_key(login: str) -> str:
    """The account subject of a login name: as `Policy` reads it, cut to the
    store's limit (a longer name names no account)."""
    return login.strip().lower()[:MAX_THROTTLE_SUBJECT]


class LoginThrottle:
    """Counts, checks and lifts locks; records its audit events (the lock
    itself, and each login refused while locked). Thread-safe: no state
    outside the store."""

    def __init__(
        self,
        settings: LockoutSettings,
        store: MessageStore,
        audit: AuditSink,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.audit = audit
        self._clock = clock
        self.rules = {
            ACCOUNT: Rule(settings.account_failures, settings.window, settings.base_delay,
                          settings.max_delay),
            ADDRESS: Rule(settings.address_failures, settings.window, settings.base_delay,
                          min(settings.address_max_delay, settings.max_delay)),
        }

    def keys(self, login: str | None, address: str) -> tuple[ThrottleKey, ...]:
        out: list[ThrottleKey] = []
        if login and self.rules[ACCOUNT].enabled:
            out.append((ACCOUNT, login_key(login)))
        if address and self.rules[ADDRESS].enabled:
            out.append((ADDRESS, address[:MAX_THROTTLE_SUBJECT]))
        return tuple(out)

    def check(self, login: str | None, address: str) -> Check:
        """One read: is the account or the address locked now? The account's
        lock is reported first when both are."""
        keys = self.keys(login, address)
        if not keys:
            return Check(keys)
        now = self._clock()
        states = sorted(self.store.login_failures(keys), key=lambda s: s.scope is not ACCOUNT)
        lock = next((Lock(s.scope, s.subject, s.locked_until) for s in states
                     if s.locked_until is not None and self.rules[s.scope].locked(s, now)), None)
        return Check(keys, lock, any(s.scope is ACCOUNT for s in states))

    def refuse(self, check: Check, peer: Peer, login: str, method: str) -> None:
        """Records a login refused because of `check.lock`: its audit event,
        and its count on the locked state, in one write transaction over the
        same keys as a failure's (the same work as a wrong password)."""
        lock = check.lock
        assert lock is not None
        self.audit.record(
            login or "-", "login", peer.listener, LOCKED,
            method=method, reason=lock.reason, until=lock.until.isoformat(),
            peer=peer.address, tls=peer.tls,
        )
        locked_key = (lock.scope, lock.subject)

        def count(key: ThrottleKey, state: LoginFailures | None) -> LoginFailures | None:
            if key == locked_key and state is not None:
                return replace(state, refused=state.refused + 1)
            return state

        self.store.update_login_failures(check.keys, count)

    def failed(self, login: str | None, peer: Peer, method: str) -> None:
        """Counts a refused login against its account (when `login` is
        given) and its address; audits each lock this starts."""
        keys = self.keys(login, peer.address)
        if not keys:
            return
        now = self._clock()
        started: list[LoginFailures] = []

        def count(key: ThrottleKey, state: LoginFailures | None) -> LoginFailures:
            new = self.rules[key[0]].after_failure(key, state, now)
            if new.locked_until != (state.locked_until if state else None):
                started.append(new)
            return new

        self.store.update_login_failures(keys, count)
        for new in started:
            assert new.locked_until is not None
            self.audit.record(
                login or "-", "lock", new.subject, LOCKED,
                scope=new.scope.value, until=new.locked_until.isoformat(),
                delay=(new.locked_until - now).total_seconds(), level=new.level,
                failures=len(new.recent), method=method, peer=peer.address,
            )

    def succeeded(self, check: Check) -> None:
        """A login succeeded: its account's failures are forgotten (a write
        only when there were some)."""
        if check.account_counted:
            key = next(k for k in check.keys if k[0] is ACCOUNT)
            self.store.clear_login_failures(key)

    def states(self, scope: ThrottleScope | None = None) -> list[tuple[LoginFailures, bool]]:
        """Every state still remembered, with whether it is locked now."""
        now = self._clock()
        return [(s, self.rules[s.scope].locked(s, now))
                for s in self.store.list_login_failures(scope)
                if not self.rules[s.scope].forgotten(s, now)]

    def unlock(self, scope: ThrottleScope, subject: str, actor: str) -> LoginFailures | None:
        """Forgets the failures and lock of an account or address (`mssctl
        account unlock`); audited as action `unlock` by `actor`. Returns
        what was forgotten (None when nothing was)."""
        subject = login_key(subject) if scope is ACCOUNT else subject.strip()
        now = self._clock()
        old = self.store.clear_login_failures((scope, subject))
        until = None
        if old is not None and old.locked_until is not None and self.rules[scope].locked(old, now):
            until = old.locked_until.isoformat()
        self.audit.record(
            actor, "unlock", subject, "ok", scope=scope.value, was_locked=until is not None,
            locked_until=until, failures=self.rules[scope].counted(old, now) if old else 0,
        )
        return old

    def purge(self) -> int:
        """Deletes the states the rule has forgotten; returns how many."""
        window = max(rule.window for rule in self.rules.values())
        return self.store.purge_login_failures(self._clock() - timedelta(seconds=window))


# ---------------------------------------------------------------- Policy hooks


def password_work(store: MessageStore, login: str, password: str) -> None:
    """What checking a password costs (the account's read, a full hash),
    spent by a login refused while locked."""
    try:
        encoded = store.get_account(login).password_hash
    except NotFound:
        encoded = None
    spend_verification(password, encoded)


def throttled_login(
    method: str, equal_work: Callable[[MessageStore, str, str], None] = password_work
) -> Callable[[F], F]:
    """Wraps a `Policy` method ``(self, peer, login, secret, ...) ->
    AuthResult``: checks the locks first (refusing a locked login after
    `equal_work`, see the module docstring), then counts a refusal or
    clears the account's failures after a success. The wrapped method's own
    decision and audit event are unchanged."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(policy: Any, peer: Peer, login: str, secret: str, *more: Any,
                    **kw: Any) -> Any:
            throttle: LoginThrottle = policy.throttle
            name = login_key(login)
            check = throttle.check(name, peer.address)
            if check.lock is not None:
                equal_work(throttle.store, name, secret)
                throttle.refuse(check, peer, name, method)
                from policy.decisions import AuthResult, Decision, Verdict

                return AuthResult(None, Decision(Verdict.DENY, check.lock.reason))
            result = fn(policy, peer, login, secret, *more, **kw)
            if result.identity is None:
                throttle.failed(name, peer, method)
            else:
                throttle.succeeded(check)
            return result

        return cast(F, guarded)

    return decorate


def counted_address_login(method: str) -> Callable[[F], F]:
    """Wraps a `Policy` login whose secret cannot be guessed online (a
    certificate's private key, a provider's signed token): never refused by
    a lock; a refusal counts against the client address only, a temporary
    failure (the provider could not be asked) not at all."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(policy: Any, peer: Peer, *args: Any, **kw: Any) -> Any:
            from policy.decisions import Verdict

            result = fn(policy, peer, *args, **kw)
            if result.identity is None and result.decision.verdict is not Verdict.TEMPFAIL:
                policy.throttle.failed(None, peer, method)
            return result

        return cast(F, guarded)

    return decorate


counted_certificate_login = counted_address_login("external")


__all__ = [
    "LOCKED",
    "Check",
    "Lock",
    "LoginThrottle",
    "Rule",
    "counted_address_login",
    "counted_certificate_login",
    "login_key",
    "password_work",
    "throttled_login",
]
