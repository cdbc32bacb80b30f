"""Policy's short-lived RCPT cache and `decides_without_store`: which SMTP
decisions need no database round trip (so may run on the reactor thread),
and that a cached answer stays correct where it matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf.settings import ListenerRole
from policy.audit import FileAuditSink
from policy.decisions import Peer, Policy
from storage.interface import MailboxType

D = "hopital.test"


class CountingStore:
    def __init__(self, store: Any) -> None:
        self._store = store
        self.lookups = 0

    def find_mailbox(self, address: str) -> Any:
        self.lookups += 1
        return self._store.find_mailbox(address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def make(tmp_path: Path, store: Any, settings_factory: Any, *, file: bool = True,
         ttl: float = 5.0) -> tuple[Policy, CountingStore, FileAuditSink]:
    counting = CountingStore(store)
    audit = FileAuditSink(tmp_path / "audit.log" if file else None, counting)
    return Policy(settings_factory(tmp_path), counting, audit, mailbox_cache_ttl=ttl), \
        counting, audit


MX = Peer("192.0.2.1", 2525, "mx", ListenerRole.MX)
SUB = Peer("192.0.2.1", 2587, "submission", ListenerRole.SUBMISSION)


def test_rcpt_lookups_are_cached_only_when_positive(tmp_path, store, settings_factory):
    store.add_mailbox(f"cardio@{D}", MailboxType.ORG)
    policy, counting, audit = make(tmp_path, store, settings_factory)
    assert not policy.decides_without_store(MX, f"cardio@{D}")  # not looked up yet
    for _ in range(3):
        assert policy.check_rcpt(MX, None, "a@remote.test", f"Cardio@{D}").decision.allowed
    assert counting.lookups == 1
    assert policy.decides_without_store(MX, f"cardio@{D}")
    # Unknown and disabled mailboxes are asked for every time (a new mailbox
    # is found at once).
    for _ in range(2):
        assert policy.check_rcpt(MX, None, "a@x.test", f"new@{D}").decision.reason \
            == "unknown-recipient"
    assert counting.lookups == 3
    store.add_mailbox(f"new@{D}", MailboxType.ORG)
    assert policy.check_rcpt(MX, None, "a@x.test", f"new@{D}").decision.allowed
    store.add_mailbox(f"off@{D}", MailboxType.ORG)
    store.set_mailbox_active(f"off@{D}", False)
    for _ in range(2):
        assert policy.check_rcpt(MX, None, "a@x.test", f"off@{D}").decision.reason \
            == "mailbox-disabled"
    assert not policy.decides_without_store(MX, f"off@{D}")
    audit.close()


def test_cache_expires(tmp_path, store, settings_factory):
    store.add_mailbox(f"cardio@{D}", MailboxType.ORG)
    policy, counting, audit = make(tmp_path, store, settings_factory, ttl=0.0)
    policy.check_rcpt(MX, None, "a@remote.test", f"cardio@{D}")
    store.set_mailbox_active(f"cardio@{D}", False)
    # TTL 0: no caching, the change is seen at once.
    assert policy.check_rcpt(MX, None, "a@x.test", f"cardio@{D}").decision.reason \
        == "mailbox-disabled"
    assert counting.lookups == 2
    assert not policy.decides_without_store(MX, f"cardio@{D}")
    audit.close()


def test_which_decisions_need_the_store(tmp_path, store, settings_factory):
    policy, _, audit = make(tmp_path, store, settings_factory)
    assert policy.decides_without_store(MX)  # MAIL on MX: settings and certificates only
    assert not policy.decides_without_store(SUB)  # submission: the account's mailboxes
    assert policy.decides_without_store(MX, "x@remote.test")  # relay: settings, whitelist
    audit.close()
    # A sink that writes each event to the store (no file) makes every
    # decision wait for the database.
    policy, _, audit = make(tmp_path, store, settings_factory, file=False)
    assert not policy.decides_without_store(MX)
    assert not policy.decides_without_store(MX, "x@remote.test")


def test_with_a_flow_matrix_a_local_sender_on_mx_is_decided_off_the_reactor(
        tmp_path, store, settings_factory):
    """The matrix looks a local sender's box up: an MX client claiming any
    address of our domains must not make the reactor thread wait on the
    database (only a cached box spares the lookup)."""
    from pathlib import Path as P

    from policy.flows import FlowMatrixHolder

    store.add_mailbox(f"cardio@{D}", MailboxType.ORG)
    policy, counting, _ = make(tmp_path, store, settings_factory)
    policy.flows = FlowMatrixHolder.load(
        P(__file__).resolve().parents[2] / "conf" / "defaults" / "flows.yaml")
    policy._local_mailbox(f"cardio@{D}")  # what RCPT does: caches the recipient
    assert policy.decides_without_store(MX, f"cardio@{D}", "a@remote.example")
    assert not policy.decides_without_store(MX, f"cardio@{D}", f"nobody@{D}")
    assert not policy.decides_without_store(SUB, f"cardio@{D}", "a@remote.example")
