"""The store's part of the directory sync, on SQLite and PostgreSQL: the
lease (one holder at a time, even from two connections racing; a lapsed
lease is taken over), the last result, accounts' directory fields, managed
grants, and `bulk_writes` (one transaction, a failing call undone alone)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage.interface import AccountClass, AlreadyExists, MailboxType


def test_one_lease_holder_at_a_time_and_a_lapsed_lease_is_taken_over(
        any_store: Any, open_any: Callable[..., Any]) -> None:
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    until = now + timedelta(seconds=60)
    stores = [any_store, open_any(), open_any(), open_any()]
    won: list[str] = []
    barrier = threading.Barrier(len(stores))

    def race(i: int) -> None:
        barrier.wait()
        if stores[i].take_directory_lease("ldap", f"node{i}", now, until):
            won.append(f"node{i}")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    holder = won[0]
    other = "node-x"
    assert not any_store.take_directory_lease("ldap", other, now + timedelta(seconds=59),
                                              until + timedelta(seconds=59))
    # The holder may renew; once it lapses, another takes it.
    assert any_store.take_directory_lease("ldap", holder, now, until)
    later = until + timedelta(seconds=1)
    assert any_store.take_directory_lease("ldap", other, later, later + timedelta(seconds=60))
    status = any_store.directory_sync_status("ldap")
    assert (status.lease_holder, status.lease_until, status.last_started) == (
        other, later + timedelta(seconds=60), later)
    any_store.release_directory_lease("ldap", holder)  # not the holder: nothing
    assert any_store.directory_sync_status("ldap").lease_holder == other
    any_store.release_directory_lease("ldap", other)
    assert any_store.directory_sync_status("ldap").lease_holder is None


def test_no_second_run_within_the_interval(any_store: Any) -> None:
    start = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    assert any_store.take_directory_lease("ldap", "a", start, start + timedelta(minutes=30))
    any_store.release_directory_lease("ldap", "a")
    soon = start + timedelta(minutes=5)
    assert not any_store.take_directory_lease("ldap", "b", soon, soon + timedelta(minutes=30),
                                              not_started_after=soon - timedelta(minutes=10))
    later = start + timedelta(minutes=15)
    assert any_store.take_directory_lease("ldap", "b", later, later + timedelta(minutes=30),
                                          not_started_after=later - timedelta(minutes=10))


def test_last_result_is_kept(any_store: Any) -> None:
    assert any_store.directory_sync_status("ldap") is None
    start = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    any_store.record_directory_sync("ldap", holder="h:1:serve", started=start,
                                    finished=start + timedelta(seconds=4.5), result="fail",
                                    counts={"people": 3}, error="no directory server answered")
    status = any_store.directory_sync_status("ldap")
    assert (status.last_result, status.last_duration, status.last_counts, status.last_error,
            status.last_holder, status.last_finished) == (
        "fail", 4.5, {"people": 3}, "no directory server answered", "h:1:serve",
        start + timedelta(seconds=4.5))


def test_directory_fields_and_managed_grants(any_store: Any) -> None:
    dn = "uid=a,ou=people,dc=hopital,dc=test"
    a = any_store.add_account("a@hopital.test", "A", AccountClass.STAFF, directory_dn=dn)
    any_store.add_account("hand@hopital.test", "H", AccountClass.STAFF)
    assert [x.login for x in any_store.directory_accounts()] == ["a@hopital.test"]
    epoch = any_store.access_epoch()
    b = any_store.update_account("a@hopital.test", display_name="A2", active=False,
                                 directory_disabled=True)
    assert (b.display_name, b.active, b.directory_disabled, b.directory_dn) == (
        "A2", False, True, dn)
    assert any_store.access_epoch() == epoch + 1
    with pytest.raises(ValueError):
        any_store.update_account("a@hopital.test", password_hash="x")
    box = any_store.add_mailbox("svc@hopital.test", MailboxType.ORG)
    g = any_store.set_grant(a.id, box.id, "lr", send_as=True, managed_by="ldap")
    assert any_store.list_grants() == [g] and g.managed_by == "ldap"
    # An admin's change to it makes it the admin's.
    any_store.set_grant(a.id, box.id, "lrs")
    assert [x.managed_by for x in any_store.list_grants()] == [None]


def test_bulk_writes_share_one_transaction_and_undo_a_failing_call_alone(
        any_store: Any, open_any: Callable[..., Any]) -> None:
    other = open_any()
    with any_store.bulk_writes():
        a = any_store.add_account("one@hopital.test", "One", AccountClass.STAFF)
        with pytest.raises(AlreadyExists):
            any_store.add_account("one@hopital.test", "Again", AccountClass.STAFF)
        any_store.add_mailbox("one@hopital.test", MailboxType.PER, owner_account_id=a.id)
        # Its own reads see its writes; another connection does not yet.
        assert any_store.get_account("one@hopital.test").display_name == "One"
        assert other.find_mailbox("one@hopital.test") is None
    assert other.get_mailbox("one@hopital.test").owner_account_id == a.id
    with pytest.raises(RuntimeError), any_store.bulk_writes():
        any_store.add_account("two@hopital.test", "Two", AccountClass.STAFF)
        raise RuntimeError("the block fails: nothing of it stays")
    assert [x.login for x in other.list_accounts()] == ["one@hopital.test"]
