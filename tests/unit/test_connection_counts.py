"""policy.connections: per-address counts shared by forked workers."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from policy.connections import ConnectionCounts, ListenerConnections

KEY = bytes(range(32))  # fixed: which addresses share a bucket is then fixed too


def test_counts_per_scope_and_address() -> None:
    counts = ConnectionCounts(key=KEY)
    assert counts.opened("smtp", "192.0.2.1") == 1
    assert counts.opened("smtp", "192.0.2.1") == 2
    assert counts.opened("imap", "192.0.2.1") == 1
    assert counts.opened("smtp", "2001:db8::1") == 1
    counts.closed("smtp", "192.0.2.1")
    assert counts.count("smtp", "192.0.2.1") == 1
    assert counts.count("imap", "192.0.2.1") == 1


def test_closing_more_than_opened_never_goes_below_zero() -> None:
    counts = ConnectionCounts(key=KEY)
    counts.closed("smtp", "192.0.2.1")
    assert counts.count("smtp", "192.0.2.1") == 0
    assert counts.opened("smtp", "192.0.2.1") == 1


def test_a_listener_refuses_over_its_limit_and_counts_the_refused() -> None:
    per_ip = ListenerConnections(ConnectionCounts(key=KEY), "submission", 2)
    assert [per_ip.opened("192.0.2.1") for _ in range(3)] == [True, True, False]
    assert per_ip.count("192.0.2.1") == 3
    per_ip.closed("192.0.2.1")
    assert not per_ip.opened("192.0.2.1")  # the two first are still open
    per_ip.closed("192.0.2.1")
    per_ip.closed("192.0.2.1")
    assert per_ip.opened("192.0.2.1")


def test_addresses_sharing_a_bucket_share_a_limit() -> None:
    counts = ConnectionCounts(buckets=1, key=KEY)
    counts.opened("smtp", "192.0.2.1")
    assert counts.opened("smtp", "192.0.2.2") == 2


def test_the_bucket_depends_on_the_key() -> None:
    addresses = [f"192.0.2.{i}" for i in range(64)]
    a, b = ConnectionCounts(key=KEY), ConnectionCounts(key=bytes(32))
    assert [a._bucket("smtp", x) for x in addresses] != [b._bucket("smtp", x) for x in addresses]


def _in_child(body: Callable[[], None]) -> None:
    """Runs `body()` in a forked child; fails if the child failed."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_forked_worker_counts_in_its_slot_and_the_parent_sees_it() -> None:
    counts = ConnectionCounts(slots=3, key=KEY)
    counts.use_slot(0)
    counts.opened("smtp", "192.0.2.1")

    def worker() -> None:
        counts.use_slot(2)
        for _ in range(3):
            counts.opened("smtp", "192.0.2.1")
        counts.opened("smtp", "192.0.2.9")
        assert counts.count("smtp", "192.0.2.1") == 4  # the parent's one included

    _in_child(worker)
    assert counts.count("smtp", "192.0.2.1") == 4
    assert counts.count("smtp", "192.0.2.9") == 1
    # The worker of slot 2 died with its connections: its counts go with it.
    counts.reset_slot(2)
    assert counts.count("smtp", "192.0.2.1") == 1
    assert counts.count("smtp", "192.0.2.9") == 0


def test_slots_are_checked() -> None:
    counts = ConnectionCounts(slots=2)
    with pytest.raises(ValueError):
        counts.use_slot(2)
    with pytest.raises(ValueError):
        counts.reset_slot(-1)
